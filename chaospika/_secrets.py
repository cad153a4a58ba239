"""Keep passwords out of logs, journals and error messages.

* `redact_url`: the password of a URL's userinfo and ``password=``/``token=``-style
  query values become ``***`` (``redis://:***@host:6379/0``).
* `redact_text`: the same for every URL inside free text, plus ``password=...``,
  ``"token": "..."``, ``Authorization: Bearer ...`` and ``--requirepass ...``-style
  pairs, plus the exact secret values registered for the run (`register_secrets`).
* `redact_argv` / `redact_env`: a command line and an environment as they may be
  shown: values of sensitive flags and variables (PASSWORD, PASSWD, SECRET, TOKEN,
  API_KEY, CREDENTIAL, ...) become ``***``, URL passwords ``***``.
* `redact`: recursively over the dicts and lists of an activity's output.
* `install_log_filter`: a `logging.Filter` on the ``chaostoolkit`` logger and its
  handlers that passes every record through `redact_text` (``chaos --log-file``).

Credentials from Chaos Toolkit ``secrets`` are looked up with `secret_lookup`: a
key (``redis_password``, ``db_password``) at the top level of the secrets the
activity received or in any of their scopes.
"""

import logging
import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "RedactingFilter",
    "forget_secrets",
    "install_log_filter",
    "is_sensitive_key",
    "masked",
    "redact",
    "redact_argv",
    "redact_env",
    "redact_text",
    "redact_url",
    "register_secrets",
    "secret_lookup",
    "secret_values",
]

MASK = "***"
# Shorter secret values are not masked as plain text: "1" or "on" would mask
# half of every message. Such values are still masked in URLs and key=value pairs.
MIN_SECRET_LENGTH = 4
# Names whose value is a credential (env variables, flags, query and dict keys).
SENSITIVE = (
    r"passw(?:or)?d|passphrase|secret|token|api[_-]?key|credential"
    r"|requirepass|masterauth|private[_-]?key|access[_-]?key|auth[_-]?key"
)
_SENSITIVE_KEY = re.compile(rf"(?:{SENSITIVE})", re.IGNORECASE)
# scheme://user:password@host... inside text; a token ends at whitespace or a quote.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# key=value, key: value, "key": "value", key='value' for sensitive keys.
_PAIR = re.compile(
    rf"(?P<key>[\w.\-]*(?:{SENSITIVE})[\w.\-]*)"
    r"(?P<sep>[\"']?\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?![\[{])[^\s,;&'\"})\]]+)",
    re.IGNORECASE,
)
# --requirepass value, --password value (separate words, also in a list's repr).
_FLAG = re.compile(
    rf"(?P<flag>--?[\w\-]*(?:{SENSITIVE})[\w\-]*)"
    r"(?P<sep>\s+|[\"']\s*,\s*[\"'])(?P<value>[^\s'\"\-][^\s'\"]*)",
    re.IGNORECASE,
)
# Authorization: Bearer xyz / Basic xyz, and a bare "Bearer xyz".
_AUTH_HEADER = re.compile(
    r"(?P<key>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|digest|token|negotiate)\s+)?)(?P<value>[^\s'\",;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(
    r"(?P<key>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})", re.IGNORECASE
)
# A mistyped URL ("redis//:pw@host", "redis:/u:pw@host"): what follows the first
# ":" after the last "/" before the "@" is taken for a password.
_LOOSE = re.compile(r"(?P<head>(?:^|[/\s'\"])[^\s/:@'\"]*:)(?P<value>[^\s@'\"]+)@")

_lock = threading.Lock()
_registered: set[str] = set()
_pattern: re.Pattern[str] | None = None


def is_sensitive_key(name: Any) -> bool:
    """True if `name` (a variable, flag, query or dict key) names a credential."""
    return isinstance(name, str) and bool(_SENSITIVE_KEY.search(name))


def masked(url: Any) -> str:
    """Return an SQLAlchemy URL (or any URL text) with its password as ``***``."""
    render = getattr(url, "render_as_string", None)
    if render is not None:
        return redact_text(render(hide_password=True))
    return redact_url(str(url))


def _mask_query(query: str) -> str:
    """Mask the values of sensitive ``key=value`` pairs of a query string."""
    parts = re.split(r"([&;])", query)
    for index, part in enumerate(parts):
        key, sep, value = part.partition("=")
        if sep and value and is_sensitive_key(key):
            parts[index] = f"{key}={MASK}"
    return "".join(parts)


def _mask_url(url: str) -> str:
    """Mask the userinfo password and sensitive query values of one URL token."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    head_end = len(rest)
    for mark in "?#":
        found = rest.find(mark)
        if found != -1:
            head_end = min(head_end, found)
    at = rest.rfind("@", 0, head_end)
    if at != -1 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        rest = f"{user}:{MASK}{rest[at:]}"
        head_end = head_end - at + len(user) + 1 + len(MASK)
    if head_end < len(rest):
        query_start = head_end + 1
        fragment = rest.find("#", query_start)
        if rest[head_end] == "?":
            end = fragment if fragment != -1 else len(rest)
            rest = rest[:query_start] + _mask_query(rest[query_start:end]) + rest[end:]
    return f"{scheme}://{rest}"


def redact_url(url: Any) -> str:
    """Return `url` as text without credentials: ``user:***@``, ``?password=***``.

    Also masks the run's registered secret values. Non-URL or malformed text is
    redacted like free text (`redact_text`), so a mistyped URL hides its
    password too.
    """
    if not isinstance(url, str):
        return redact_text(repr(url))
    text = redact_text(url)
    if "@" in text and not _URL.search(text):
        text = _LOOSE.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return text


def _sub_url(match: re.Match[str]) -> str:
    return _mask_url(match.group(0))


def _sub_key(match: re.Match[str]) -> str:
    return match.group("key") + MASK


def _sub_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    if value[:1] in "\"'" and len(value) >= 2:
        masked_value = value[0] + MASK + value[-1]
    else:
        masked_value = MASK
    bare = value.strip("\"'")
    if bare.startswith(MASK) or bare.rstrip(")") == match.group("key"):
        return match.group(0)  # masked already (a URL query), or source code
    if bare in ("None", "True", "False", "null", "true", "false"):
        return match.group(0)
    return match.group("key") + match.group("sep") + masked_value


def _secret_pattern() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _registered:
            forms: set[str] = set()
            for value in _registered:
                forms.update({value, quote(value, safe=""), quote_plus(value)})
            ordered = sorted(forms, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(form) for form in ordered))
        return _pattern


def redact_text(text: Any) -> str:
    """Return `text` with URL passwords, sensitive pairs and secret values masked."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _secret_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL.sub(_sub_url, text)
    text = _AUTH_HEADER.sub(_sub_key, text)
    text = _BEARER.sub(_sub_key, text)
    text = _PAIR.sub(_sub_pair, text)
    text = _FLAG.sub(lambda m: m.group("flag") + m.group("sep") + MASK, text)
    return text


def redact_argv(argv: Iterable[Any]) -> list[str]:
    """Return a command line fit to log: credentials of flags, ``K=V`` and URLs masked.

    ``--password x`` and ``--password=x`` (any flag naming a credential, such as
    ``--requirepass``), ``DB_PASSWORD=x`` words and URL passwords become ``***``.
    """
    shown: list[str] = []
    hide_next = False
    for word in (str(part) for part in argv):
        if hide_next:
            shown.append(MASK)
            hide_next = False
            continue
        name, sep, value = word.partition("=")
        if word.startswith("-") and is_sensitive_key(name):
            if sep:
                shown.append(f"{name}={MASK}")
            else:
                shown.append(word)
                hide_next = True
            continue
        if sep and value and "://" not in name and is_sensitive_key(name):
            shown.append(f"{name}={MASK}")
            continue
        shown.append(_redact_word(word))
    return shown


def _redact_word(word: str) -> str:
    """Redact one argv word or env value: secrets and URL passwords only."""
    pattern = _secret_pattern()
    if pattern is not None:
        word = pattern.sub(MASK, word)
    return _URL.sub(_sub_url, word)


def redact_env(env: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return `env` with sensitive variables as ``***`` and URL passwords masked."""
    if not env:
        return {}
    shown: dict[str, Any] = {}
    for key, value in env.items():
        if is_sensitive_key(key) and value not in (None, ""):
            shown[key] = MASK
        elif isinstance(value, str):
            shown[key] = _redact_word(value)
        else:
            shown[key] = value
    return shown


def redact(value: Any) -> Any:
    """Return `value` (an activity output) with every credential masked.

    Strings go through `redact_text`; in dicts, the string value of a key
    naming a credential becomes ``***``; lists of strings are read as command
    lines (`redact_argv`); lists, tuples and sets are walked.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if is_sensitive_key(key) and isinstance(item, str) and item:
                result[key] = MASK
            else:
                result[key] = redact(item)
        return result
    if isinstance(value, list | tuple) and all(isinstance(i, str) for i in value):
        return type(value)(redact_text(word) for word in redact_argv(value))
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(redact(item) for item in value)
    return value


def secret_values(secrets: Any) -> set[str]:
    """Return every secret value (string leaves, any depth) of a secrets mapping."""
    found: set[str] = set()
    if isinstance(secrets, Mapping):
        for item in secrets.values():
            found |= secret_values(item)
    elif isinstance(secrets, list | tuple | set):
        for item in secrets:
            found |= secret_values(item)
    elif isinstance(secrets, str | int | float) and not isinstance(secrets, bool):
        text = str(secrets)
        if len(text) >= MIN_SECRET_LENGTH:
            found.add(text)
    return found


def register_secrets(secrets: Any) -> set[str]:
    """Remember the values of `secrets` so that `redact_text` masks them everywhere.

    Activities call it with the ``secrets`` Chaos Toolkit passed them; the values
    stay registered for the life of the process (one ``chaos run``).
    """
    global _pattern
    values = secret_values(secrets)
    with _lock:
        if not values <= _registered:
            _registered.update(values)
            _pattern = None
    return values


def forget_secrets() -> None:
    """Forget every registered secret value (tests)."""
    global _pattern
    with _lock:
        _registered.clear()
        _pattern = None


def secret_lookup(secrets: Any, key: str) -> str | None:
    """Return the secret `key`: at the top of `secrets` or in any of its scopes."""
    if not isinstance(secrets, Mapping):
        return None
    value = secrets.get(key)
    if value is not None and not isinstance(value, Mapping):
        return str(value)
    for scope in secrets.values():
        if isinstance(scope, Mapping):
            value = scope.get(key)
            if value is not None and not isinstance(value, Mapping):
                return str(value)
    return None


class RedactingFilter(logging.Filter):
    """Redact each record's message, arguments, traceback and stack in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format: logging reports it itself
            record.msg = redact_text(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(redact(arg) for arg in record.args)
        else:
            record.msg, record.args = redact_text(message), ()
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = redact_text(text), None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_filter(name: str = "chaostoolkit") -> RedactingFilter:
    """Put one `RedactingFilter` on logger `name` and on each of its handlers.

    Idempotent: call it again after handlers were added (``chaos`` adds its
    console and ``--log-file`` handlers before it imports the extension).
    """
    logger = logging.getLogger(name)
    chosen = (
        next((f for f in logger.filters if isinstance(f, RedactingFilter)), None)
        or RedactingFilter()
    )
    for target in (logger, *logger.handlers):
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(chosen)
    return chosen
