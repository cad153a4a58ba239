"""The toxics, one module each (as in Toxiproxy), behind one interface: `Stage`.

`parse_toxic(body)` turns an API body into a `Toxic` (400 when it is wrong);
`updated_toxic(toxic, body)` applies a partial update; `open_stage` starts a
toxic on one direction of one connection. Besides Toxiproxy's fields a toxic
may carry ``ttl`` (seconds, or "30s", "5m") or ``expires_at`` (Unix time): the
proxy then removes it by itself once that time has passed.
"""

import math
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._validate import require_duration
from chaospika.network.errors import bad_request
from chaospika.network.toxics.bandwidth import Bandwidth
from chaospika.network.toxics.base import STREAMS, Link, Stage, Toxic
from chaospika.network.toxics.latency import Latency
from chaospika.network.toxics.limit_data import LimitData
from chaospika.network.toxics.reset_peer import ResetPeer
from chaospika.network.toxics.slicer import Slicer
from chaospika.network.toxics.slow_close import SlowClose
from chaospika.network.toxics.timeout import Timeout

__all__ = [
    "TOXIC_TYPES",
    "Toxic",
    "open_stage",
    "parse_expiry",
    "parse_toxic",
    "updated_toxic",
]

TOXIC_TYPES: dict[str, type[Stage]] = {
    stage.type_name: stage
    for stage in (Latency, Bandwidth, Timeout, ResetPeer, SlowClose, Slicer, LimitData)
}


def open_stage(toxic: Toxic, link: Link) -> Stage:
    """A new stage of `toxic` on `link`."""
    return TOXIC_TYPES[toxic.type](toxic, link)


def parse_toxic(body: Any) -> Toxic:
    """A new toxic from an API body; raises ApiError 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("bad request body: a toxic must be a JSON object")
    kind = body.get("type")
    if kind not in TOXIC_TYPES:
        raise bad_request(
            f"invalid toxic type: {kind!r} (known: {', '.join(TOXIC_TYPES)})"
        )
    stream = body.get("stream") or "downstream"
    if stream not in STREAMS:
        raise bad_request(
            f"stream was invalid, can be either upstream or downstream: got {stream!r}"
        )
    name = body.get("name") or f"{kind}_{stream}"
    if not isinstance(name, str):
        raise bad_request(f"toxic name must be a string, got {name!r}")
    toxic = Toxic(name=name, type=kind, stream=stream, toxicity=1.0, attributes={})
    return updated_toxic(toxic, body)


def updated_toxic(toxic: Toxic, body: Any) -> Toxic:
    """A copy of `toxic` (new uid) with the body's toxicity, attributes, expiry."""
    if not isinstance(body, dict):
        raise bad_request("bad request body: a toxic must be a JSON object")
    stage = TOXIC_TYPES[toxic.type]
    attributes = dict(toxic.attributes)
    attributes.update(_attributes(stage, body.get("attributes") or {}))
    toxicity = toxic.toxicity
    if body.get("toxicity") is not None:
        toxicity = _number("toxicity", body["toxicity"], maximum=1.0)
    return Toxic(
        name=toxic.name,
        type=toxic.type,
        stream=toxic.stream,
        toxicity=toxicity,
        attributes={**stage.defaults, **attributes},
        expires_at=parse_expiry(body, toxic.expires_at),
    )


def _attributes(stage: type[Stage], given: Any) -> dict[str, float]:
    if not isinstance(given, dict):
        raise bad_request("bad request body: attributes must be a JSON object")
    unknown = sorted(set(given) - set(stage.defaults))
    if unknown:
        raise bad_request(
            f"unknown attribute(s) {unknown} for a {stage.type_name} toxic "
            f"(known: {sorted(stage.defaults)})"
        )
    checked = {}
    for key, value in given.items():
        number = _number(f"attribute {key}", value)
        checked[key] = int(number) if key in stage.integers else number
    return checked


def _number(what: str, value: Any, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"bad request body: {what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0 or (maximum and value > maximum):
        limit = f"between 0 and {maximum:g}" if maximum else ">= 0"
        raise bad_request(f"bad request body: {what} must be {limit}, got {value!r}")
    return value


def parse_expiry(body: dict[str, Any], current: float | None) -> float | None:
    """The Unix time a body's ``ttl`` or ``expires_at`` names (else `current`)."""
    if body.get("ttl") is not None:
        try:
            seconds = require_duration("ttl", body["ttl"], allow_equal=False)
        except ActivityFailed as error:
            raise bad_request(f"bad request body: {error}") from None
        return time.time() + seconds
    if body.get("expires_at") is not None:
        return _number("expires_at", body["expires_at"])
    return current
