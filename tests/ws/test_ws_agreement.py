"""The probe's message latency agrees with the load engine's ws_msg_latency on the same traffic.

"Same traffic": the same messages, through the same fan-out server, on the same
channel, timed on the same clock; the probe's subscribers and the load
engine's are different sockets of one event loop (so that what is compared is
how each measures, not how two processes happen to be scheduled on a busy
machine). Both ways round: the load engine publishes (timestamp `{{now_ms}}`)
and the probe listens (listen mode, `latency_field`), and the probe publishes
(its own tags and clock) while the load engine's subscribers time the same
messages by the `sent_at` it puts in them.
"""

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_fixtures import stop_process

from chaospika._ports import free_port
from chaospika.loadengine import run_async
from chaospika.ws import probes
from chaospika.ws._measure import event_loop

JOIN = {"type": "join", "channel": "agree"}
SUBSCRIBERS = 2
MESSAGES = 200
EVERY = "10ms"
AGREEMENT_MS = 1.0


@pytest.fixture(scope="module")
def fanout_url():
    """The fan-out server as its own process (a process of its own, like a real server)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fanout.py")), str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "fan-out server did not start"
                time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        stop_process(process, timeout=5)


def subscribers(url: str, hold: str) -> dict:
    return {
        "executor": "per-vu-iterations",
        "vus": SUBSCRIBERS,
        "iterations": 1,
        "steps": [
            {"ws": {"url": url, "join": JOIN, "hold": hold, "latency_field": "sent_at"}}
        ],
    }


def probe_run(url: str, **options):
    arguments = {
        "url": url,
        "subscribers": SUBSCRIBERS,
        "messages": MESSAGES,
        "interval": EVERY,
        "message_template": None,
        "subscribe_message": JOIN,
        "subscribe_ack": {"type": "joined"},
        "publish_url": None,
        "stalled_subscribers": 0,
        "padding": 0,
        "latency_field": None,
        "duration": None,
        "settle": 0.2,
        "drain": 5.0,
        "connect_timeout": 10.0,
        "timeout": 30.0,
        "headers": None,
        "thresholds": None,
        "name": None,
    }
    arguments.update(options)
    return probes._latency_run(arguments, None, None)


def run_together(load_spec: dict, run) -> tuple:
    async def both():
        return await asyncio.gather(run_async(load_spec), run.run())

    with asyncio.Runner(loop_factory=event_loop) as runner:
        return runner.run(both())


def load_p50(result) -> tuple[float, int]:
    stats = result.registry.stats("ws_msg_latency", trend_stats=["med", "count"])
    return stats["med"], int(stats["count"])


def test_probe_listening_to_the_load_engines_messages_agrees_at_p50(fanout_url):
    spec = {
        "scenarios": {
            "dancers": subscribers(fanout_url, "3s"),
            "likes": {
                "executor": "per-vu-iterations",
                "vus": 1,
                "iterations": 1,
                "startTime": "600ms",
                "steps": [
                    {
                        "ws": {
                            "url": fanout_url,
                            "send": {
                                "every": EVERY,
                                "count": MESSAGES,
                                "message": {
                                    "type": "message",
                                    "channel": "agree",
                                    "sent_at": "{{now_ms}}",
                                },
                            },
                        }
                    }
                ],
            },
        }
    }
    run = probe_run(fanout_url, messages=0, latency_field="sent_at", duration="2.9s")
    load, result = run_together(spec, run)
    p50, count = load_p50(load)

    assert count == SUBSCRIBERS * MESSAGES
    assert result["delivered_count"] == SUBSCRIBERS * MESSAGES
    assert abs(result["latency_p50_ms"] - p50) < AGREEMENT_MS, (result, p50)


def test_load_engine_timing_the_probes_messages_agrees_at_p50(fanout_url):
    spec = {"scenarios": {"dancers": subscribers(fanout_url, "3.2s")}}
    run = probe_run(
        fanout_url,
        message_template={
            "type": "message",
            "channel": "agree",
            "sent_at": "{{sent_ms}}",
            "like": "{{tag}}",
        },
        subscribe_ack=None,
        settle=0.6,
    )
    load, result = run_together(spec, run)
    p50, count = load_p50(load)

    assert count == SUBSCRIBERS * MESSAGES
    assert result["delivered_ratio"] == 1.0
    assert abs(result["latency_p50_ms"] - p50) < AGREEMENT_MS, (result, p50)
