"""flush_keys and its undo against Redis servers the tests start."""

import os
import stat
import threading
import time

import pytest
import redis
from chaoslib.exceptions import ActivityFailed
from redis_fault_helpers import assert_same_key, content_of, snapshot_of

from chaospika import ledger
from chaospika.redis import _snapshot
from chaospika.redis.actions import flush_keys, restore_flushed_keys


def fill_every_type(client: redis.Redis) -> None:
    """One key of each type (and encoding), some with a TTL, binary names too."""
    client.set("string", "value", px=60_000)
    client.set(b"bin\xff\x00key", b"\x00\x01\xfe", px=90_000)
    client.set("counter", 41)
    client.rpush("list", *range(5))
    client.rpush("big-list", *[f"item-{n}" * 20 for n in range(300)])
    client.sadd("set", "a", "b", "c")
    client.sadd("intset", 1, 2, 3)
    client.zadd("zset", {"a": 1.5, "b": -2})
    client.zadd("big-zset", {f"m{n}": n for n in range(300)})
    client.hset("hash", mapping={"f": "v", "n": 1})
    client.expire("hash", 120)
    client.hset("big-hash", mapping={f"f{n}": "v" * 100 for n in range(300)})
    for n in range(5):
        client.xadd("stream", {"order": n})
    client.xgroup_create("stream", "group", id="0")
    client.xgroup_create("stream", "idle-group", id="$")
    client.xreadgroup("group", "consumer-1", {"stream": ">"}, count=3)
    client.xreadgroup("group", "consumer-2", {"stream": ">"}, count=1)
    client.xack(
        "stream",
        "group",
        client.xpending_range("stream", "group", "-", "+", 1)[0]["message_id"],
    )
    client.xadd("empty-stream", {"x": 1}, id="7-3")
    client.xdel("empty-stream", "7-3")
    client.xgroup_create("empty-stream", "late", id="$")


def test_every_type_comes_back_byte_exact_with_the_ttl_it_had_left(redis_url):
    client = redis.Redis.from_url(redis_url)
    fill_every_type(client)
    before = snapshot_of(client)
    contents = {key: content_of(client, key) for key in before}
    client.set("short-lived", "x", px=1000)
    flushed_at = time.monotonic()

    result = flush_keys(redis_url)

    assert client.dbsize() == 0
    assert result["flushed_count"] == len(before) + 1 == 14
    short = len(b"\x00\x01x\n\x00") + 8  # the DUMP of "short-lived": "x" + trailer
    assert result["snapshot_bytes"] == sum(len(d) for d, _ in before.values()) + short
    assert os.path.exists(result["snapshot"])
    assert stat.S_IMODE(os.stat(result["snapshot"]).st_mode) == 0o600
    assert ledger.get(result["fault"]).data["state"] == "applied"
    time.sleep(max(0.0, flushed_at + 1.2 - time.monotonic()))  # short-lived expires

    restored = restore_flushed_keys(redis_url)
    elapsed_ms = (time.monotonic() - flushed_at) * 1000
    after = snapshot_of(client)

    assert restored["restored_count"] == 13 and restored["expired_count"] == 1
    assert set(after) == set(before)
    for key, (dump, pttl) in before.items():
        assert_same_key(client, key, dump, contents[key])
        if pttl == -1:
            assert after[key][1] == -1, key
        else:  # what it had left, minus the time the fault lasted (and no more)
            assert pttl - elapsed_ms - 2000 < after[key][1] <= pttl - 1000, key
    info = client.xinfo_groups("stream")
    assert {g["name"]: g["pending"] for g in info} == {b"group": 3, b"idle-group": 0}
    assert client.xinfo_stream("empty-stream")["last-generated-id"] == b"7-3"
    assert ledger.get(result["fault"]).data["state"] == "undone"

    # safe twice: through the action, the ledger, and the undo function itself
    assert restore_flushed_keys(redis_url)["faults"] == []
    assert ledger.undo(result["fault"])["already"] is True
    client.set("string", "changed since")
    args = ledger.get(result["fault"]).data["undo"]["args"]
    again = _snapshot.undo_flush(**args)
    assert again["already"] is True and again["restored_count"] == 13
    assert client.get("string") == b"changed since"


def test_a_pattern_in_another_db_leaves_everything_else(redis_url):
    base = redis_url.rsplit("/", 1)[0]
    db0, db3 = redis.Redis.from_url(f"{base}/0"), redis.Redis.from_url(f"{base}/3")
    db0.set("stock:a", 1)
    for n in range(40):
        db3.set(f"stock:{n}", n)
        db3.set(f"idem:{n}", n)

    result = flush_keys(f"{base}/3", pattern="stock:*")

    assert result["flushed_count"] == 40 and result["db"] == 3
    assert db3.dbsize() == 40 and db0.get("stock:a") == b"1"
    assert restore_flushed_keys(f"{base}/3")["restored_count"] == 40
    assert db3.dbsize() == 80


def test_more_keys_than_the_cap_are_refused_and_nothing_is_deleted(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.mset({f"k{n}": os.urandom(100) for n in range(30)})  # 3000+ bytes

    with pytest.raises(
        ActivityFailed,
        match="max_keys=10.*nothing deleted|nothing deleted.*max_keys=10",
    ):
        flush_keys(redis_url, max_keys=10)
    with pytest.raises(ActivityFailed, match="max_bytes=1000"):
        flush_keys(redis_url, max_bytes=1000)

    assert client.dbsize() == 30
    assert ledger.outstanding() == []  # refused faults are closed, not in force
    folder = os.path.join(os.environ["CHAOSPIKA_LEDGER_DIR"], "snapshots")
    assert os.listdir(folder) == []
    assert flush_keys(redis_url, max_keys=10, force=True)["flushed_count"] == 30
    assert client.dbsize() == 0


def test_a_key_written_again_during_the_fault_is_replaced_and_counted(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("stock:p", 7)
    client.set("other", 1)
    flush_keys(redis_url)
    client.set("stock:p", 1000)  # the application re-seeded it meanwhile

    restored = restore_flushed_keys(redis_url)

    assert restored["restored_count"] == 2 and restored["replaced_count"] == 1
    assert client.get("stock:p") == b"7"


ORDER = """
local stock = tonumber(redis.call('GET', KEYS[1]) or '')
if stock == nil then return 'unknown' end
if stock <= 0 then return 'sold_out' end
redis.call('DECR', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'order', ARGV[1])
return 'accepted'
"""


def test_an_order_placed_during_the_flush_is_never_half_in_the_snapshot(redis_url):
    """Stock decrement and stream entry are saved, and come back, together."""
    client = redis.Redis.from_url(redis_url)
    client.mset({f"idem:{n}": n for n in range(1500)})  # two SCAN pages
    outcomes: list[str] = []
    stop = threading.Event()

    def customers() -> None:
        buyer = redis.Redis.from_url(redis_url)
        order = buyer.register_script(ORDER)
        n = 0
        while not stop.is_set() and n < 200_000:
            outcomes.append(order(keys=["stock", "orders"], args=[n]).decode())
            n += 1

    for round_ in range(2):
        client.set("stock", 100_000)
        client.delete("orders")
        outcomes.clear()
        stop.clear()
        thread = threading.Thread(target=customers)
        thread.start()
        time.sleep(0.05)
        result = flush_keys(redis_url)
        time.sleep(0.05)
        stop.set()
        thread.join()
        assert "unknown" in outcomes and "accepted" in outcomes  # it was busy
        restore_flushed_keys(redis_url)
        sold = 100_000 - int(client.get("stock"))
        accepted = outcomes.count("accepted")  # all before the delete: none after
        assert sold == client.xlen("orders") == accepted > 0, (round_, result)


def test_a_flush_killed_before_writing_its_outcome_still_restores(
    redis_url, monkeypatch
):
    """The keys were deleted but the file does not say so: restored where missing."""
    client = redis.Redis.from_url(redis_url)
    client.mset({"a": 1, "b": 2, "c": 3})
    real_write = _snapshot._Writer.write

    def dies_before_the_outcome(self, *items):
        if any(item.get("t") == "deleted" for item in items):
            raise KeyboardInterrupt  # SIGINT right after the delete script
        real_write(self, *items)

    monkeypatch.setattr(_snapshot._Writer, "write", dies_before_the_outcome)
    with pytest.raises(KeyboardInterrupt):
        flush_keys(redis_url)
    monkeypatch.setattr(_snapshot._Writer, "write", real_write)
    assert client.dbsize() == 0
    client.set("c", "written by the application since")

    (report,) = ledger.undo_outstanding(by="cleanup")

    assert report["undone"] is True and report["result"]["restored_count"] == 2
    assert report["result"]["kept_count"] == 1
    assert client.mget("a", "b", "c") == [
        b"1",
        b"2",
        b"written by the application since",
    ]


def test_a_flush_that_loses_its_server_midway_says_where_the_keys_are(
    redis_url, monkeypatch
):
    client = redis.Redis.from_url(redis_url)
    client.mset({"a": 1, "b": 2})

    def unreachable(*args, **kwargs):
        raise redis.exceptions.ConnectionError("connection reset")

    monkeypatch.setattr(_snapshot, "_delete", unreachable)
    with pytest.raises(ActivityFailed, match="saved in .*snapshot.*chaospika cleanup"):
        flush_keys(redis_url)
    (fault,) = ledger.outstanding()
    assert fault.data["undo"]["args"]["snapshot"].endswith(".snapshot")
