"""A VU's cookie jar, as k6 keeps one: Set-Cookie is sent back, reset every iteration.

k6 (Go's net/http/cookiejar) stores the cookies a response sets and sends the
matching ones with the next requests of the same VU; at the start of every
iteration the jar is emptied (k6's default, `noCookiesReset: false`).

Matching here: the host (a `Domain` attribute also matches its subdomains), the
path (the cookie's `Path`, by default the request path's directory), `Secure`
cookies only over https; `Max-Age` <= 0 or an `Expires` in the past deletes a
cookie. Cookies are sent longest path first, then oldest first, as Go does.
Redirect hops followed by the engine are sent without cookies.
"""

import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["CookieJar", "has_set_cookie"]

_SET_COOKIE = re.compile(rb"\r\nset-cookie:", re.IGNORECASE)
_COOKIE_LINE = re.compile(rb"\r\ncookie:[^\r]*", re.IGNORECASE)


def has_set_cookie(first_chunk: bytes) -> bool:
    """True if a response's first bytes carry a Set-Cookie header (cheap check)."""
    end = first_chunk.find(b"\r\n\r\n")
    return _SET_COOKIE.search(first_chunk, 0, end if end >= 0 else None) is not None


class _Cookie:
    __slots__ = (
        "domain",
        "expires",
        "host_only",
        "name",
        "order",
        "path",
        "secure",
        "value",
    )

    def __init__(self, name: str, value: str, path: str, order: int) -> None:
        self.name, self.value, self.path, self.order = name, value, path, order
        self.domain = ""
        self.host_only = True
        self.secure = False
        self.expires: float | None = None


def _default_path(path: str) -> str:
    path = path.split("?", 1)[0]
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rindex("/")]


def _path_matches(request: str, cookie: str) -> bool:
    if request == cookie:
        return True
    return request.startswith(cookie) and (
        cookie.endswith("/") or request[len(cookie)] == "/"
    )


class CookieJar:
    """The cookies of one VU: {(domain, path, name): cookie}."""

    def __init__(self) -> None:
        self.cookies: dict[tuple[str, str, str], _Cookie] = {}
        self._order = 0

    def __bool__(self) -> bool:
        return bool(self.cookies)

    def clear(self) -> None:
        """Forget every cookie (k6 does at the start of each iteration)."""
        self.cookies.clear()

    def store(self, host: str, path: str, values: list[str]) -> None:
        """Remember the Set-Cookie header `values` of a response from host+path."""
        for text in values:
            self._store_one(host.lower(), path, text)

    def _store_one(self, host: str, path: str, text: str) -> None:
        pair, *attributes = text.split(";")
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            return
        self._order += 1
        cookie = _Cookie(
            name, value.strip().strip('"'), _default_path(path), self._order
        )
        cookie.domain = host
        max_age = None
        for attribute in attributes:
            key, _, argument = attribute.partition("=")
            key, argument = key.strip().lower(), argument.strip()
            if key == "path" and argument.startswith("/"):
                cookie.path = argument
            elif key == "domain" and argument:
                domain = argument.lstrip(".").lower()
                if host != domain and not host.endswith("." + domain):
                    return  # a domain this host may not set: ignored, as Go does
                cookie.domain, cookie.host_only = domain, False
            elif key == "secure":
                cookie.secure = True
            elif key == "max-age":
                try:
                    max_age = int(argument)
                except ValueError:
                    pass
            elif key == "expires" and cookie.expires is None:
                try:
                    cookie.expires = parsedate_to_datetime(argument).timestamp()
                except (TypeError, ValueError, IndexError):
                    pass
        if max_age is not None:
            cookie.expires = time.time() + max_age if max_age > 0 else 0.0
        key = (cookie.domain, cookie.path, cookie.name)
        if cookie.expires is not None and cookie.expires <= time.time():
            self.cookies.pop(key, None)
            return
        old = self.cookies.get(key)
        if old is not None:
            cookie.order = old.order  # Go keeps the creation time of a replaced one
        self.cookies[key] = cookie

    def header(self, host: str, path: str, secure: bool) -> str:
        """The Cookie header value for a request ("" when no cookie matches)."""
        host, path, now = host.lower(), path.split("?", 1)[0] or "/", time.time()
        found = []
        for key, cookie in list(self.cookies.items()):
            if cookie.expires is not None and cookie.expires <= now:
                del self.cookies[key]
                continue
            if cookie.host_only:
                if host != cookie.domain:
                    continue
            elif host != cookie.domain and not host.endswith("." + cookie.domain):
                continue
            if (cookie.secure and not secure) or not _path_matches(path, cookie.path):
                continue
            found.append(cookie)
        found.sort(key=lambda c: (-len(c.path), c.order))
        return "; ".join(f"{c.name}={c.value}" for c in found)

    def apply(self, host: str, secure: bool, data: bytes) -> bytes:
        """Request bytes with the matching cookies added (to a Cookie header if any)."""
        target = data.split(b" ", 2)[1].decode("latin-1")
        value = self.header(host, target, secure)
        if not value:
            return data
        end = data.find(b"\r\n\r\n")
        given = _COOKIE_LINE.search(data, 0, end)
        if given is not None:  # the request's own Cookie header: the jar's appended
            at = given.end()
            return data[:at] + b"; " + value.encode("latin-1") + data[at:]
        line = b"\r\nCookie: " + value.encode("latin-1")
        return data[:end] + line + data[end:]

    def store_response(self, host: str, path: str, response: Any) -> None:
        """Remember the cookies a Response sets (its raw headers are parsed once)."""
        raw = getattr(response, "_raw", None)
        if raw and has_set_cookie(raw[0]):
            self.store(host, path, response.header_values("set-cookie"))
