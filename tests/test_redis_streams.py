"""Redis stream probes and the drain action against the test's own Redis server."""

import threading
import time

import pytest
import redis
from chaoslib.exceptions import ActivityFailed

from chaospika._ports import free_port
from chaospika.redis import _streams
from chaospika.redis.actions import wait_for_busy_consumer, wait_for_drain
from chaospika.redis.probes import (
    consumer_lag,
    pending_count,
    queue_backlog,
    stream_length,
    time_to_drain,
)

STREAM, GROUP = "orders:stream", "inventory"


def fill(conn, count, stream=STREAM):
    pipe = conn.pipeline()
    for number in range(count):
        pipe.xadd(stream, {"order_id": f"o{number}"})
    return pipe.execute()


def deliver(conn, count, consumer="c1"):
    """Deliver `count` entries to a consumer without acknowledging them."""
    reply = conn.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


def test_backlog_splits_into_lag_and_pending(redis_url, redis_conn):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 10)
    delivered = deliver(redis_conn, 4)
    redis_conn.xack(STREAM, GROUP, delivered[0])

    assert stream_length(redis_url, STREAM) == 10
    assert consumer_lag(redis_url, STREAM, GROUP) == 6
    assert pending_count(redis_url, STREAM, GROUP) == 3
    assert queue_backlog(redis_url, STREAM, GROUP) == {
        "lag": 6,
        "pending": 3,
        "backlog": 9,
        "length": 10,
    }


def test_lag_is_counted_when_the_server_does_not_report_it(redis_url, redis_conn):
    ids = fill(redis_conn, 5)
    redis_conn.xgroup_create(STREAM, GROUP, id="0")
    redis_conn.xgroup_setid(STREAM, GROUP, ids[1])
    assert redis_conn.xinfo_groups(STREAM)[0]["lag"] is None

    assert consumer_lag(redis_url, STREAM, GROUP) == 3


def test_counting_lag_pages_through_long_streams(redis_conn):
    ids = fill(redis_conn, 2 * _streams.PAGE + 7)
    assert _streams._count_after(redis_conn, STREAM, ids[5]) == 2 * _streams.PAGE + 1
    assert _streams._count_after(redis_conn, STREAM, "0-0") == 2 * _streams.PAGE + 7
    assert _streams._count_after(redis_conn, STREAM, ids[-1]) == 0


def consume_slowly(redis_url, batch, pause, stop):
    """A worker that acknowledges `batch` entries every `pause` seconds."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + 10
    while not stop.is_set() and time.monotonic() < deadline:
        reply = client.xreadgroup(GROUP, "worker", {STREAM: ">"}, count=batch)
        time.sleep(pause)
        if reply:
            client.xack(STREAM, GROUP, *[entry_id for entry_id, _ in reply[0][1]])
    client.close()


@pytest.fixture
def worker(redis_url):
    stop = threading.Event()
    thread = threading.Thread(target=consume_slowly, args=(redis_url, 10, 0.1, stop))
    yield thread
    stop.set()
    thread.join(15)


def test_wait_for_drain_waits_for_acknowledgements(redis_url, redis_conn, worker):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 50)
    worker.start()

    result = wait_for_drain(redis_url, STREAM, GROUP, timeout=10, interval=0.05)

    assert result["drained"] is True and result["backlog_at_start"] == 50
    assert 0.3 <= result["drain_seconds"] < 5
    assert queue_backlog(redis_url, STREAM, GROUP)["backlog"] == 0
    again = wait_for_drain(redis_url, STREAM, GROUP, timeout="1s")
    assert again["drain_seconds"] < 0.1 and again["backlog_at_start"] == 0
    assert time_to_drain(redis_url, STREAM, GROUP)["drain_seconds"] < 0.1


def test_time_to_drain_measures_recovery(redis_url, redis_conn, worker):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 30)
    worker.start()
    result = time_to_drain(redis_url, STREAM, GROUP, timeout=10, interval="50ms")
    assert result["drained"] is True
    assert 0.15 <= result["drain_seconds"] < 5 and result["backlog_at_start"] == 30


def test_not_drained_within_timeout_reports_the_backlog_left(redis_url, redis_conn):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 8)
    deliver(redis_conn, 3)

    began = time.monotonic()
    with pytest.raises(ActivityFailed, match=r"lag=5 pending=3 .*backlog at start 8"):
        wait_for_drain(redis_url, STREAM, GROUP, timeout=0.5, interval=0.1)
    assert 0.5 <= time.monotonic() - began < 2
    report = time_to_drain(redis_url, STREAM, GROUP, timeout=0)
    assert report["drained"] is False
    assert (report["lag"], report["pending"], report["backlog"]) == (5, 3, 8)


def test_busy_consumer_is_caught_early_in_its_batch(redis_url, redis_conn):
    """A consumer that read a batch and works on it for 300 ms is caught at ~50 ms."""
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 100)
    stop = threading.Event()

    def batches() -> None:
        conn = redis.Redis.from_url(redis_url, decode_responses=True)
        for _ in range(20):
            if stop.is_set():
                break
            reply = conn.xreadgroup(GROUP, "w", {STREAM: ">"}, count=5)
            time.sleep(0.3)  # working on the batch
            conn.xack(STREAM, GROUP, *[entry_id for entry_id, _ in reply[0][1]])
        conn.close()

    thread = threading.Thread(target=batches)
    thread.start()
    try:
        found = wait_for_busy_consumer(
            redis_url, STREAM, GROUP, busy_for="50ms", min_lag=10, timeout=5
        )
    finally:
        stop.set()
        thread.join(10)
    assert found["consumer"] == "w" and found["pending"] == 5
    assert 50 <= found["busy_ms"] < 250 and found["lag"] >= 10


def test_an_idle_group_is_never_busy(redis_url, redis_conn):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    fill(redis_conn, 5)
    deliver(redis_conn, 5)  # read once, and nothing waits for the group after it
    began = time.monotonic()
    with pytest.raises(ActivityFailed, match="would hit an idle target"):
        wait_for_busy_consumer(redis_url, STREAM, GROUP, timeout=0.5)
    assert time.monotonic() - began < 2


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda url: stream_length(url, "no:such:stream"), "stream"),
        (lambda url: stream_length(url, "plain"), "stream"),
        (lambda url: stream_length(url, ""), "stream"),
        (lambda url: consumer_lag(url, "no:such:stream", GROUP), "stream"),
        (lambda url: pending_count(url, STREAM, "nobody"), "group"),
        (lambda url: queue_backlog(url, STREAM, None), "group"),
        (lambda url: wait_for_drain(url, STREAM, "nobody"), "group"),
        (lambda url: wait_for_drain(url, STREAM, GROUP, timeout=-1), "timeout"),
        (lambda url: wait_for_drain(url, STREAM, GROUP, interval=0), "interval"),
        (lambda url: time_to_drain(url, STREAM, GROUP, interval="x"), "interval"),
        (
            lambda url: wait_for_busy_consumer(url, STREAM, GROUP, busy_for=-1),
            "busy_for",
        ),
        (lambda url: wait_for_busy_consumer(url, STREAM, GROUP, min_lag=0), "min_lag"),
        (lambda url: wait_for_busy_consumer(url, STREAM, GROUP, timeout=0), "timeout"),
        (lambda url: stream_length("http://127.0.0.1:1/", STREAM), "redis_url"),
        (lambda url: queue_backlog(None, STREAM, GROUP), "redis_url"),
    ],
)
def test_bad_arguments_name_the_argument(redis_url, redis_conn, call, argument):
    redis_conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    redis_conn.set("plain", "1")
    with pytest.raises(ActivityFailed, match=f"'{argument}'"):
        call(redis_url)


def test_unreachable_redis_fails_cleanly():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(ActivityFailed, match="cannot reach Redis at 127.0.0.1"):
        stream_length(url, STREAM)
