"""The WebSocket probes against a real fan-out server on 127.0.0.1 (tests/ws/fanout.py)."""

import json
import socket
import threading
import time

import pytest
from chaoslib.discovery.discover import discover_probes
from chaoslib.exceptions import ActivityFailed
from fanout import FanoutServer
from websockets.sync.client import connect

from chaospika._ports import free_port
from chaospika.ws.probes import connection_flap, message_latency, scenarios_passed

JOIN = {"type": "join", "channel": "floor"}
JOINED = {"type": "joined"}
LIKE = {
    "type": "message",
    "channel": "floor",
    "sent_at": "{{sent_ms}}",
    "payload": {"like": "{{tag}}", "seq": "{{seq}}", "pad": "{{padding}}"},
}
SEED = {
    "success_rate": ["rate>0.9"],
    "message_latency_ms": ["p(95)<5000"],
    "failed_connections": ["count<50"],
    "delivery_rate": ["rate>0.99"],
}


def latency(url: str, **options):
    arguments = {
        "subscribers": 5,
        "messages": 40,
        "interval": "5ms",
        "message_template": LIKE,
        "subscribe_message": JOIN,
        "subscribe_ack": JOINED,
        "timeout": 20,
    }
    arguments.update(options)
    return message_latency(url, **arguments)


@pytest.fixture
def server():
    with FanoutServer() as running:
        yield running


def test_every_subscriber_gets_every_message_and_latencies_are_measured(server):
    started = time.monotonic()
    result = latency(server.url, thresholds=SEED)
    elapsed = time.monotonic() - started

    assert result["subscribed_count"] == result["subscribers_count"] == 5
    assert result["published_count"] == 40
    assert result["delivered_count"] == result["expected_count"] == 200
    assert result["delivered_ratio"] == 1.0 and result["duplicates_count"] == 0
    assert result["success_rate"] == 1.0 and result["connect_failures_count"] == 0
    assert 0 < result["latency_min_ms"] <= result["latency_p50_ms"]
    assert (
        result["latency_p50_ms"] <= result["latency_p95_ms"] <= result["latency_max_ms"]
    )
    assert result["latency_max_ms"] < 5000
    assert 0 < result["connect_p50_ms"] <= result["connect_max_ms"] < 5000
    assert result["thresholds_passed"] is True
    assert result["thresholds"]["delivery_rate"] == {"rate>0.99": True}
    assert server.joins == 5
    assert elapsed < 10


def test_other_traffic_on_the_channel_is_not_counted(server):
    stop = threading.Event()

    def chatter():
        with connect(server.url) as other:
            while not stop.is_set():
                other.send(json.dumps({"type": "message", "channel": "floor", "x": 1}))
                time.sleep(0.005)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        result = latency(server.url, subscribers=3, messages=30)
    finally:
        stop.set()
        thread.join(5)
    assert result["other_messages_count"] > 0
    assert result["delivered_count"] == 90 and result["delivered_ratio"] == 1.0


def test_a_stalled_subscriber_stalls_a_fan_out_that_waits_on_it():
    """The slow-subscriber bug: one client that stops reading holds up the others."""
    options = {
        "subscribers": 4,
        "messages": 240,
        "interval": "4ms",
        "stalled_subscribers": 1,
        "padding": 2048,
        "drain": 2,
        "thresholds": SEED,
    }
    with FanoutServer("blocking") as buggy:
        caught = latency(buggy.url, **options)
    with FanoutServer("broadcast") as correct:
        passed = latency(correct.url, **options)

    assert caught["stalled_subscribed_count"] == 1
    assert caught["delivered_ratio"] < 0.8, caught["delivered_ratio"]
    assert caught["thresholds"]["delivery_rate"] == {"rate>0.99": False}
    assert caught["thresholds_passed"] is False
    assert passed["stalled_subscribed_count"] == 1
    assert passed["delivered_ratio"] == 1.0 and passed["thresholds_passed"] is True


def test_listen_mode_measures_the_traffic_already_on_the_channel(server):
    stop = threading.Event()

    def publisher():
        with connect(server.url) as other:
            while not stop.is_set():
                sent_at = time.time() * 1000
                other.send(
                    json.dumps(
                        {"type": "message", "channel": "floor", "sent_at": sent_at}
                    )
                )
                time.sleep(0.01)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        result = latency(
            server.url,
            subscribers=3,
            messages=0,
            duration="600ms",
            latency_field="sent_at",
            thresholds={"success_rate": ["rate==1"]},
        )
    finally:
        stop.set()
        thread.join(5)
    assert result["mode"] == "listen"
    assert result["delivered_count"] >= 3 * 20
    assert 0 <= result["latency_p50_ms"] < 1000
    assert result["thresholds_passed"] is True
    assert "delivered_ratio" not in result


def test_duration_publishes_one_message_every_interval(server):
    result = latency(
        server.url, subscribers=2, messages=None, duration="300ms", interval="20ms"
    )
    assert result["messages_count"] == 15 and result["published_count"] == 15
    assert 0.25 < result["publish_seconds"] < 1.5


def test_timeout_bounds_the_probe_and_unsent_messages_count_as_undelivered(server):
    started = time.monotonic()
    result = latency(
        server.url, subscribers=2, messages=1000, interval="10ms", timeout=1.2
    )
    elapsed = time.monotonic() - started
    assert elapsed < 1.2 + 2.5, elapsed
    assert 0 < result["published_count"] < 1000
    assert result["delivered_ratio"] < 0.2


def test_unreachable_and_non_websocket_endpoints_fail_cleanly(server):
    refused = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(ActivityFailed, match="connection refused"):
        latency(refused, connect_timeout=2)
    plain = f"ws://127.0.0.1:{server.port}/plain"
    with pytest.raises(ActivityFailed, match="not a WebSocket endpoint.*HTTP 200"):
        latency(plain)
    with pytest.raises(ActivityFailed, match="HTTP 404"):
        connection_flap(f"ws://127.0.0.1:{server.port}/missing", clients=1, cycles=1)
    with pytest.raises(ActivityFailed, match="argument 'url' must start with ws://"):
        latency(server.url.replace("ws://", "http://"))
    with pytest.raises(ActivityFailed, match="argument 'url' is not a valid URL"):
        latency("ws://127.0.0.1:99999/ws")


def test_a_server_that_never_acknowledges_fails_within_the_connect_timeout(server):
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="no subscriber was subscribed"):
        latency(server.url, subscribe_ack={"type": "welcome"}, connect_timeout=0.5)
    assert time.monotonic() - started < 4


def test_a_silent_tcp_server_times_out_the_handshake():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(ActivityFailed, match="timed out"):
            latency(f"ws://127.0.0.1:{port}/ws", connect_timeout=0.5, timeout=3)
        assert time.monotonic() - started < 4
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"message_template": {"like": "{{seq}}"}}, "must contain the placeholder"),
        ({"message_template": {"x": "{{nope}}"}}, r"unknown placeholder \{\{nope\}\}"),
        ({"subscribers": 0}, "argument 'subscribers' must be >= 1"),
        ({"subscribers": 10_001}, "argument 'subscribers' must be <= 10000"),
        ({"messages": 100_001}, "argument 'messages' must be <= 100000"),
        ({"thresholds": {"http_req_duration": ["p(95)<1"]}}, "no metric"),
        ({"thresholds": {"message_latency_ms": ["p95<1"]}}, "unknown aggregation"),
        ({"messages": 0, "duration": 1}, "listen mode"),
        (
            {
                "messages": 0,
                "latency_field": "t",
                "duration": 1,
                "thresholds": {"delivery_rate": ["rate>0.9"]},
            },
            "needs published messages",
        ),
        ({"messages": 5, "duration": 1}, "give one of the arguments"),
        ({"subscribe_message": None}, "'subscribe_ack' needs a 'subscribe_message'"),
        ({"timeout": 0}, "argument 'timeout' must be > 0"),
        (
            {"profile": "huge", "profiles": {"big": {"subscribers": 3}}},
            "'profile' must be",
        ),
        ({"profile": "big", "profiles": {"big": {"colour": 3}}}, "not an argument"),
    ],
)
def test_bad_arguments_name_the_argument(options, message):
    with pytest.raises(ActivityFailed, match=message):
        latency("ws://127.0.0.1:9/ws", **options)


def test_a_profile_picks_the_argument_overrides(server):
    profiles = {
        "small": {
            "subscribers": 2,
            "thresholds": {"message_latency_ms": ["p(95)<5000"]},
        },
        "bigger": {"subscribers": 6, "thresholds": {"success_rate": ["rate>0.99"]}},
    }
    result = latency(server.url, messages=5, profile="bigger", profiles=profiles)
    assert result["profile"] == "bigger"
    assert result["subscribers_count"] == 6
    assert result["thresholds"] == {"success_rate": {"rate>0.99": True}}


def test_connection_flap_cycles_reconnects_and_gets_messages(server):
    result = connection_flap(
        server.url,
        clients=3,
        cycles=4,
        hold="150ms",
        subscribe_message=JOIN,
        subscribe_ack=JOINED,
        message_template=LIKE,
        interval="20ms",
        thresholds={
            "cycle_success": ["rate==1"],
            "success_rate": ["rate==1"],
            "failed_connections": ["count==0"],
            "reconnect_ms": ["p(95)<5000"],
        },
    )
    assert result["cycles_count"] == result["planned_cycles_count"] == 12
    assert result["succeeded_count"] == 12 and result["success_ratio"] == 1.0
    assert result["attempts_count"] == 12 and result["connect_failures_count"] == 0
    assert 0 < result["reconnect_p50_ms"] <= result["reconnect_max_ms"]
    assert result["success_rate"] == 1.0 and result["published_count"] > 0
    assert result["latency_p50_ms"] is not None
    assert result["thresholds_passed"] is True
    assert server.joins == 12


def test_connection_flap_duration_stops_starting_cycles(server):
    started = time.monotonic()
    result = connection_flap(
        server.url, clients=2, cycles=1000, hold="100ms", duration="500ms"
    )
    elapsed = time.monotonic() - started
    assert 2 * 3 <= result["cycles_count"] <= 2 * 6
    assert elapsed < 3
    with pytest.raises(ActivityFailed, match="success_rate needs a publisher"):
        connection_flap(server.url, thresholds={"success_rate": ["rate>0.9"]})


def test_connection_flap_reports_refused_reconnections_as_data():
    """A server that goes away mid-storm: failures are counted, not raised."""
    holder = {}
    with FanoutServer() as server:
        holder["url"] = server.url

        def flap():
            holder["result"] = connection_flap(
                server.url, clients=2, cycles=8, hold="100ms", connect_timeout=1
            )

        thread = threading.Thread(target=flap)
        thread.start()
        time.sleep(0.35)
    thread.join(20)
    result = holder["result"]
    assert result["connect_failures_count"] > 0
    assert result["connect_errors"].get("refused", 0) > 0
    assert result["succeeded_count"] < result["cycles_count"]
    assert "connection refused" in result["first_error"]


def test_scenarios_passed_reads_the_named_runs(server):
    names = ["a", "b"]
    assert scenarios_passed(names)["passed"] is True  # nothing ran yet
    latency(server.url, subscribers=2, messages=5, thresholds=SEED, name="a")
    half = scenarios_passed(names)
    assert half["passed"] is False and half["missing"] == ["b"]
    latency(
        server.url,
        subscribers=2,
        messages=5,
        thresholds={"message_latency_ms": ["p(50)<0"]},
        name="b",
    )
    done = scenarios_passed(names)
    assert done["passed"] is False and done["failed"] == ["b"]
    assert done["thresholds"]["b"] == {"message_latency_ms": {"p(50)<0": False}}
    with pytest.raises(ActivityFailed, match="argument 'names'"):
        scenarios_passed([])


def test_the_probes_are_discoverable():
    names = {activity["name"] for activity in discover_probes("chaospika.ws.probes")}
    assert names == {"message_latency", "connection_flap", "scenarios_passed"}
