"""Network faults through a Toxiproxy-API proxy: toxics (latency...) and partitions.

Every activity takes `proxy_url`, the base URL of the proxy API (our
``chaospika proxy`` / ``python -m chaospika.network.server``, or a real Toxiproxy
server: same API), and `proxy`, the name of a proxy on it. Durations (`latency`,
`jitter`, `duration`, `ttl`) are seconds or strings such as "100ms", "2s" — not
Toxiproxy's integer milliseconds: 100 means 100 seconds (and is refused for a
latency); write "100ms".

Each fault is recorded in the fault ledger before it is applied, with its undo:
`chaospika.network.client.remove_toxic` for a toxic, `enable_proxy` for a
disabled proxy (idempotent; they raise `ActivityFailed` when the removal really
failed). With `ttl` the fault is dropped twice over: our proxy removes the toxic
(or enables the proxy) by itself at that time, whoever is alive; and a detached
ledger watchdog undoes it once the ttl has passed and no Chaos Toolkit process is
left (the watchdog is what a real Toxiproxy gets). `duration` makes the activity
wait that long and then remove the fault itself (our proxy is told to drop it a
second later, should nobody be left to do it).
"""

import logging
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaospika import ledger
from chaospika._secrets import redact_url
from chaospika._validate import (
    require_choice,
    require_duration,
    require_number,
    require_text,
    require_url,
)
from chaospika.ledger import watchdog
from chaospika.network import client

__all__ = [
    "add_toxic",
    "disable_proxy",
    "enable_proxy",
    "inject_latency",
    "remove_all_toxics",
    "remove_toxic",
]

logger = logging.getLogger("chaostoolkit")

TOXIC_KIND = "network.toxic"
PARTITION_KIND = "network.partition"
STREAMS = ("downstream", "upstream")
MAX_LATENCY_SECONDS = 60.0  # a larger latency is surely milliseconds written as seconds
MAX_DURATION_SECONDS = 24 * 3600.0
CLIENT = "chaospika.network.client"
DURATION_GRACE_SECONDS = 1.0


def proxy_api(proxy_url: Any) -> str:
    """`proxy_url` checked (an http(s) URL with a host), without a trailing slash."""
    require_url("proxy_url", proxy_url, ("http", "https"))
    return proxy_url.strip().rstrip("/")


def _durations(duration: Any, ttl: Any) -> tuple[float | None, float | None]:
    hold = None
    if duration is not None:
        hold = require_duration(
            "duration", duration, allow_equal=False, maximum=MAX_DURATION_SECONDS
        )
    life = None
    if ttl is not None:
        life = require_duration(
            "ttl", ttl, allow_equal=False, maximum=MAX_DURATION_SECONDS
        )
    return hold, life


def _expiry(hold: float | None, life: float | None) -> float | None:
    """What the proxy is told: the ttl, else the duration and a grace second.

    The activity itself ends the fault after `duration`; the proxy's own expiry
    is the fallback when nobody is left to do it.
    """
    if life is not None:
        return life
    return None if hold is None else hold + DURATION_GRACE_SECONDS


def _milliseconds(name: str, value: Any, maximum: float) -> int:
    """A duration argument as Toxiproxy's integer milliseconds."""
    seconds = require_duration(name, value)
    if seconds > maximum:
        raise ActivityFailed(
            f"argument '{name}' is {seconds:g} s, more than {maximum:g} s: it is a "
            f"duration in seconds or a string such as '100ms' (not Toxiproxy's "
            f"milliseconds); got {value!r}"
        )
    return round(seconds * 1000.0)


def _attributes(attributes: Any) -> dict[str, int | float]:
    """Toxic attributes: numbers by name; integral ones sent as integers (Go's int64)."""
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise ActivityFailed(
            f"argument 'attributes' must map attribute names to numbers, got {attributes!r}"
        )
    checked: dict[str, int | float] = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not key:
            raise ActivityFailed(f"argument 'attributes' has a bad name: {key!r}")
        number = require_number(f"attributes.{key}", value)
        checked[key] = int(number) if float(number).is_integer() else number
    return checked


def _check_proxy(api: str, proxy: str) -> dict[str, Any]:
    shown = client.get_proxy(api, proxy)
    if shown is None:
        raise ActivityFailed(
            f"argument 'proxy': no proxy named {proxy!r} at {redact_url(api)}"
        )
    return shown


def _apply_toxic(
    api: str,
    proxy: str,
    body: dict[str, Any],
    hold: float | None,
    life: float | None,
) -> dict[str, Any]:
    """Record, apply and (after `hold`) remove one toxic; return what was done."""
    name = body["name"]
    _check_proxy(api, proxy)
    if client.get_toxic(api, proxy, name) is not None:
        raise ActivityFailed(
            f"proxy {proxy!r} already has a toxic named {name!r} (left by an earlier "
            "run? `chaospika cleanup` or remove_toxic removes it); not adding another"
        )
    expiry = _expiry(hold, life)
    if expiry is not None:
        body = {**body, "ttl": round(expiry, 3)}
    undo = {
        "module": CLIENT,
        "func": "remove_toxic",
        "args": {"proxy_url": api, "proxy": proxy, "toxic": name},
    }
    target = {
        "proxy_url": redact_url(api),
        "proxy": proxy,
        "toxic": name,
        "type": body["type"],
        "stream": body["stream"],
        "label": f"toxic {name} of proxy {proxy} at {redact_url(api)}",
    }
    fault = ledger.record(TOXIC_KIND, target, undo, ttl=life)
    if life is not None:
        watchdog.arm(fault)
    try:
        answer = client.add_toxic(api, proxy, body)
    except ActivityFailed as error:
        _drop_unapplied(fault, error)
        raise
    self_expires = isinstance(answer, dict) and answer.get("expires_at") is not None
    ledger.applied(fault, self_expires=self_expires)
    logger.info(
        "proxy %s: toxic %s (%s %s, %s) added%s",
        proxy,
        name,
        body["type"],
        body["stream"],
        body["attributes"],
        f"; the proxy drops it in {expiry:g} s" if self_expires else "",
    )
    result = {
        "proxy": proxy,
        "toxic": name,
        "type": body["type"],
        "stream": body["stream"],
        "toxicity": body["toxicity"],
        "attributes": dict(body["attributes"]),
        "fault": fault.id,
        "self_expires": self_expires,
        "ttl_seconds": life,
        "duration_seconds": hold,
    }
    if hold is not None:
        time.sleep(hold)
        removed = ledger.undo(fault.id, by="duration")
        result["removed"] = True
        result["already_gone"] = bool((removed.get("result") or {}).get("already"))
    return result


def _drop_unapplied(fault: ledger.Fault, error: Exception) -> None:
    """The apply failed: undo whatever part of it reached the proxy (kept if that fails)."""
    try:
        ledger.undo(fault.id, by="not applied")
    except ActivityFailed as undo_error:
        logger.error(
            "fault %s: apply failed (%s) and so did its undo: %s",
            fault.id,
            error,
            undo_error,
        )


def add_toxic(
    proxy_url: str,
    proxy: str,
    toxic_type: str,
    attributes: dict = None,
    stream: str = "downstream",
    toxicity: float = 1.0,
    toxic: str = None,
    duration: float = None,
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Add a toxic of `toxic_type` to the proxy `proxy` at `proxy_url`.

    `toxic_type` and `attributes` are Toxiproxy's, in its units: latency
    (`latency`, `jitter` ms), bandwidth (`rate` KB/s), timeout (`timeout` ms),
    reset_peer (`timeout` ms), slow_close (`delay` ms), slicer (`average_size`,
    `size_variation` bytes, `delay` µs), limit_data (`bytes`). `stream` is
    "downstream" (upstream to client, the default) or "upstream"; `toxicity`
    the share of connections affected (0..1). `toxic` names it (default
    ``<type>_<stream>``); a toxic of that name already there is an error.

    Recorded in the fault ledger first (undo: remove the toxic). `duration`
    (seconds or "30s"): wait that long, then remove it (our proxy drops it a
    second later by itself if nobody did). `ttl` (seconds or "5m"):
    our proxy drops it by itself then, and a ledger watchdog removes it if no
    Chaos Toolkit process is left (also with a real Toxiproxy). Returns the toxic,
    its ledger `fault` id and `self_expires` (the proxy enforces the expiry).
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    kind = require_text("toxic_type", toxic_type)
    stream = require_choice("stream", stream, STREAMS)
    share = require_number("toxicity", toxicity, maximum=1.0)
    name = require_text("toxic", toxic) if toxic is not None else f"{kind}_{stream}"
    hold, life = _durations(duration, ttl)
    body = {
        "name": name,
        "type": kind,
        "stream": stream,
        "toxicity": share,
        "attributes": _attributes(attributes),
    }
    return _apply_toxic(api, proxy, body, hold, life)


def inject_latency(
    proxy_url: str,
    proxy: str,
    latency: str = "100ms",
    jitter: str = "0ms",
    stream: str = "downstream",
    toxicity: float = 1.0,
    toxic: str = None,
    duration: float = None,
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Delay the data of `proxy` by `latency` (± `jitter`): a latency toxic.

    `latency` and `jitter` are durations: "100ms", "0.25s", or a number of
    SECONDS (0.1) — not Toxiproxy's milliseconds; they are sent to the proxy as
    whole milliseconds, and a latency over 60 s is refused. `stream`
    "downstream" (the default, as in Toxiproxy) delays what the upstream sends
    back, so each request/response round trip takes `latency` longer;
    "upstream" delays what the client sends. `toxicity`, `toxic`, `duration`
    and `ttl` as in `add_toxic` (default name ``latency_<stream>``). Returns the
    toxic with `latency_ms` and `jitter_ms`, its ledger `fault` id and
    `self_expires`.
    """
    latency_ms = _milliseconds("latency", latency, MAX_LATENCY_SECONDS)
    jitter_ms = _milliseconds("jitter", jitter, MAX_LATENCY_SECONDS)
    if jitter_ms > latency_ms:
        logger.warning(
            "jitter %d ms > latency %d ms: some data is not delayed at all",
            jitter_ms,
            latency_ms,
        )
    result = add_toxic(
        proxy_url,
        proxy,
        "latency",
        {"latency": latency_ms, "jitter": jitter_ms},
        stream=stream,
        toxicity=toxicity,
        toxic=toxic,
        duration=duration,
        ttl=ttl,
    )
    return {**result, "latency_ms": latency_ms, "jitter_ms": jitter_ms}


def remove_toxic(
    proxy_url: str,
    proxy: str,
    toxic: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Remove the toxic `toxic` of `proxy`; safe to call twice (use it in rollbacks).

    A toxic already gone (expired, reset, removed, or its proxy deleted) is not
    an error (`already` true); a removal that fails (API unreachable, refused)
    raises ActivityFailed. The ledger records of that toxic are closed.
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    toxic = require_text("toxic", toxic)
    result = client.remove_toxic(api, proxy, toxic)
    match = {"proxy_url": redact_url(api), "proxy": proxy, "toxic": toxic}
    closed = ledger.resolve(TOXIC_KIND, match, "remove_toxic")
    logger.info(
        "proxy %s: toxic %s %s",
        proxy,
        toxic,
        "was already gone" if result["already"] else "removed",
    )
    return {**result, "faults_closed": closed}


def remove_all_toxics(
    proxy_url: str,
    proxy: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Remove every toxic of `proxy` (ours or not); safe to call twice.

    A proxy that does not exist has none (`proxy_found` false). A removal that
    fails raises ActivityFailed. The ledger records of its toxics are closed.
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    removed: list[str] = []
    found = client.get_proxy(api, proxy) is not None
    if found:
        for shown in client.list_toxics(api, proxy):
            if not client.remove_toxic(api, proxy, shown["name"])["already"]:
                removed.append(shown["name"])
    match = {"proxy_url": redact_url(api), "proxy": proxy}
    closed = ledger.resolve(TOXIC_KIND, match, "remove_all_toxics")
    logger.info("proxy %s: removed toxics %s", proxy, removed or "none")
    return {
        "proxy": proxy,
        "proxy_found": found,
        "removed": removed,
        "removed_count": len(removed),
        "faults_closed": closed,
    }


def disable_proxy(
    proxy_url: str,
    proxy: str,
    duration: float = None,
    ttl: float = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Partition: disable `proxy` (it stops listening and drops its connections).

    Clients behind it get their connections closed and new ones refused until
    the proxy is enabled again (`enable_proxy`, the ledger undo). Recorded in the
    fault ledger first. `duration` (seconds or "5s"): wait that long, then enable
    it (our proxy enables itself a second later if nobody did). `ttl` (seconds
    or "1m"): our proxy enables itself then, and a ledger
    watchdog enables it if no Chaos Toolkit process is left (also with a real
    Toxiproxy). A proxy already disabled is an error (nothing is recorded).
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    hold, life = _durations(duration, ttl)
    shown = _check_proxy(api, proxy)
    if not shown.get("enabled", True):
        raise ActivityFailed(
            f"proxy {proxy!r} is already disabled (left by an earlier run? "
            "`chaospika cleanup` or enable_proxy enables it)"
        )
    undo = {
        "module": CLIENT,
        "func": "enable_proxy",
        "args": {"proxy_url": api, "proxy": proxy},
    }
    target = {
        "proxy_url": redact_url(api),
        "proxy": proxy,
        "label": f"proxy {proxy} at {redact_url(api)} (disabled)",
    }
    fault = ledger.record(PARTITION_KIND, target, undo, ttl=life)
    if life is not None:
        watchdog.arm(fault)
    expiry = _expiry(hold, life)
    try:
        answer = client.disable_proxy(
            api, proxy, None if expiry is None else round(expiry, 3)
        )
    except ActivityFailed as error:
        _drop_unapplied(fault, error)
        raise
    self_expires = isinstance(answer, dict) and answer.get("enable_at") is not None
    ledger.applied(fault, self_expires=self_expires)
    started = time.monotonic()
    logger.info(
        "proxy %s disabled (%s)%s",
        proxy,
        shown.get("listen"),
        f"; it enables itself in {expiry:g} s" if self_expires else "",
    )
    result = {
        "proxy": proxy,
        "listen": shown.get("listen"),
        "upstream": shown.get("upstream"),
        "disabled": True,
        "fault": fault.id,
        "self_expires": self_expires,
        "ttl_seconds": life,
        "duration_seconds": hold,
    }
    if hold is not None:
        time.sleep(max(0.0, hold - (time.monotonic() - started)))
        ledger.undo(fault.id, by="duration")
        result["enabled_again"] = True
    return result


def enable_proxy(
    proxy_url: str,
    proxy: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """End a partition: enable `proxy` again; safe to call twice (use it in rollbacks).

    A proxy already enabled is not an error; one that cannot be enabled (its
    listen port taken, the API unreachable) raises ActivityFailed. The ledger
    records of its partition are closed.
    """
    api = proxy_api(proxy_url)
    proxy = require_text("proxy", proxy)
    if client.get_proxy(api, proxy) is None:
        raise ActivityFailed(
            f"argument 'proxy': no proxy named {proxy!r} at {redact_url(api)}"
        )
    result = client.enable_proxy(api, proxy)
    match = {"proxy_url": redact_url(api), "proxy": proxy}
    closed = ledger.resolve(PARTITION_KIND, match, "enable_proxy")
    logger.info("proxy %s enabled", proxy)
    return {**result, "faults_closed": closed}
