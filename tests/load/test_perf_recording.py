"""The hot path's shortcuts record exactly what the plain paths record.

`Registry.recorders` / `vu.http_recorder` (per-tag-set functions instead of
`Registry.add` lookups), the builtin in-order sum, and the WebSocket client's
mask pool and inlined frame handling.
"""

import asyncio
import io
import math
import os
import struct
import sys

import pytest

from chaospika.loadengine import percentiles, ws
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.output import JsonLinesOutput
from chaospika.loadengine.percentiles import in_order_sum
from chaospika.loadengine.registry import Registry
from chaospika.loadengine.vu import HTTP_METRICS, http_recorder, http_tags, record_http

STATS = ["avg", "min", "med", "max", "p(95)", "count"]
BASE = {"group": "", "scenario": "default"}


def _tags(status: int = 200, expected: bool = True, name: str = "home") -> dict:
    return http_tags(BASE, name, "GET", status, 0, "", expected, None)


def _requests(count: int) -> list[tuple]:
    """(failed, sent, received, sending, waiting, receiving, blocked, conn, tls) ns."""
    return [
        (i % 7 == 0, 80 + i % 3, 200 + i % 11, 1000 + 13 * i, 50_000 + 977 * i)
        + (2000 + i % 5, i % 3 * 1000, i % 2 * 5000, 0)
        for i in range(count)
    ]


def _registry(*selectors: str) -> Registry:
    registry = Registry()
    for selector in selectors:
        registry.submetric(selector)
    return registry


def _summary(registry: Registry) -> dict:
    result = {}
    for metric in registry.metrics():
        if metric.kind == "trend":
            result[metric.name] = registry.stats(metric.name, STATS)
        else:
            result[metric.name] = registry.stats(metric.name)
    return result


SELECTORS = (
    "http_req_duration{status:200}",
    "http_req_failed{name:home,method:GET}",
    "data_sent{expected_response:false}",
    "http_reqs{status:500}",
)


@pytest.mark.parametrize("status", [200, 500])
def test_http_recorder_records_what_record_http_records(status):
    plain, fast = _registry(*SELECTORS), _registry(*SELECTORS)
    tags = _tags(status, status < 400)
    record = http_recorder(fast, tags)
    for failed, sent, received, *times in _requests(3000):
        record_http(plain.add, tags, failed, sent, received, *times)
        record(failed, sent, received, *times)
    assert _summary(fast) == _summary(plain)
    assert fast.stats("http_reqs")["count"] == 3000
    matched = (
        "http_req_duration{status:200}" if status == 200 else "http_reqs{status:500}"
    )
    submetric = fast.metric(matched)
    submetric.fold()
    assert submetric.samples == 3000


def test_recorders_go_stale_when_a_submetric_appears():
    registry = Registry()
    epoch = registry.epoch
    registry.submetric("http_req_duration{status:200}")
    assert registry.epoch != epoch
    epoch = registry.epoch
    registry.submetric("http_req_duration{status:200}")  # known: no new epoch
    assert registry.epoch == epoch
    tags = _tags()
    record = http_recorder(registry, tags)
    registry.submetric("http_req_waiting{method:GET}")  # made after the recorder
    assert registry.epoch != epoch  # so callers renew it (steps.py, ws.py do)
    http_recorder(registry, tags)(False, 1, 2, 3, 4, 5)
    record(False, 1, 2, 3, 4, 5)
    waiting = registry.metric("http_req_waiting{method:GET}")
    waiting.fold()
    assert waiting.samples == 1  # the renewed recorder feeds it, the stale one not


def test_recorders_call_an_attached_output_for_every_sample():
    registry = Registry()
    epoch = registry.epoch
    output = JsonLinesOutput(io.StringIO(), {})
    output.attach(registry)
    assert registry.epoch != epoch  # recorders made before must be renewed
    record = http_recorder(registry, _tags())
    record(False, 80, 200, 1000, 2000, 3000)
    output.flush()
    names = [
        line for line in output.handle.getvalue().splitlines() if '"Point"' in line
    ]
    assert len(names) == len(HTTP_METRICS)
    assert registry.stats("http_reqs")["count"] == 1


def test_recorders_reject_an_unknown_metric():
    with pytest.raises(ScenarioError):
        Registry().recorders(("no_such_metric",), {})


@pytest.mark.parametrize("plain", [True, False])
def test_in_order_sum_adds_like_k6_on_either_path(monkeypatch, plain):
    if plain and sys.version_info >= (3, 12):
        pytest.skip("3.12's sum() compensates: in_order_sum never uses it there")
    monkeypatch.setattr(percentiles, "_PLAIN_SUM", plain)
    assert in_order_sum([0.1] * 100) == 9.99999999999998  # not fsum's 10.0
    assert in_order_sum([1e16, 1.0, -1e16]) == 0.0  # k6 loses the 1.0 too
    assert in_order_sum([1, 2, 3], 0.5) == 6.5
    registry = Registry()
    for _ in range(100):
        registry.add("data_sent", 0.1)
    assert registry.stats("data_sent")["count"] == 9.99999999999998


def test_trend_drops_non_finite_values_only():
    registry = Registry()
    registry.define("tt", "trend")
    for value in (1.0, math.nan, 2.0, math.inf, 3.0, -math.inf):
        registry.add("tt", value)
    assert registry.stats("tt", ["count", "avg", "max"]) == {
        "count": 3,
        "avg": 2.0,
        "max": 3.0,
    }


def _unmask(frame: bytes) -> tuple[int, bytes]:
    first, second = frame[0], frame[1]
    size, at = second & 0x7F, 2
    if size == 126:
        size, at = struct.unpack("!H", frame[2:4])[0], 4
    elif size == 127:
        size, at = struct.unpack("!Q", frame[2:10])[0], 10
    mask, payload = frame[at : at + 4], frame[at + 4 :]
    assert len(payload) == size
    return first, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_frames_are_masked_with_fresh_masks_and_unmask_to_the_payload(size):
    payload = os.urandom(size)
    masks = set()
    for _ in range(1500):  # more than one pool of 1,024 masks
        frame = ws._frame(ws._BINARY, payload)
        first, unmasked = _unmask(frame)
        assert first == 0x80 | ws._BINARY and unmasked == payload
        assert frame[1] & 0x80  # the mask bit: every client frame is masked
        masks.add(frame[2:6] if size < 126 else frame[4:8] if size < 65536 else None)
        if size >= 126:
            break
    assert size >= 126 or len(masks) > 1400  # random masks, not one reused


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _server_frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    return bytes((first, 126)) + struct.pack("!H", size) + payload


def test_inlined_text_frames_and_the_general_path_deliver_the_same():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        protocol = ws._WsProtocol(loop, b"key")
        protocol.connection_made(_Transport())
        protocol.upgraded = True
        got: list = []
        protocol.on_message = got.append
        stream = (
            _server_frame(0x81, "héllo".encode())  # whole text: the inlined path
            + _server_frame(0x82, b"\x00\x01")  # binary
            + _server_frame(0x01, b"par")  # fragmented text
            + _server_frame(0x80, b"ts")
            + _server_frame(0x81, b"x" * 300)  # 16-bit length
        )
        for at in range(0, len(stream), 7):  # split across reads: the buffer path
            protocol.data_received(stream[at : at + 7])
        assert got == ["héllo", b"\x00\x01", "parts", "x" * 300]
        protocol.data_received(_server_frame(0x81, b"whole"))  # one read, one frame
        frame = _server_frame(0x81, b"y" * 124)
        # 128 bytes that are not a whole 126-byte frame: a 16-bit length of 124
        protocol.data_received(bytes((0x81, 126)) + struct.pack("!H", 124) + frame[2:])
        assert got[4:] == ["whole", "y" * 124]
        protocol.on_message = None
        protocol.data_received(_server_frame(0x81, b"queued"))
        assert protocol.receive() == "queued"
        protocol.data_received(_server_frame(0x81, b"\xff\xfe"))  # bad UTF-8
        assert protocol.closed is not None and protocol.closed.code == 1007
        listening = ws._WsProtocol(loop, b"key")
        listening.connection_made(_Transport())
        listening.upgraded = True
        listening.on_message = got.append
        listening.data_received(_server_frame(0x81, b"\xff\xfe"))  # whole, bad UTF-8
        assert listening.closed is not None and listening.closed.code == 1007
        assert got[-1] == "y" * 124

    asyncio.run(scenario())
