"""Helpers of the Redis fault tests."""

import subprocess
from pathlib import Path

import redis

from chaospika._ports import wait_for_port


def start_server_process(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    """Start a redis-server `argv` listening on `port`; wait until it accepts."""
    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    if not wait_for_port("127.0.0.1", port, 10):
        process.kill()
        process.wait()
        raise RuntimeError(f"redis-server did not listen on {port}: {log.read_text()}")
    return process


def snapshot_of(client: redis.Redis) -> dict[bytes, tuple[bytes, int]]:
    """{key: (DUMP, PTTL)} of every key of the client's db."""
    return {key: (client.dump(key), client.pttl(key)) for key in client.keys("*")}


# Encodings whose DUMP depends on the history of the hash table (collision chains
# come back in another order): compared by content; the others byte by byte.
UNORDERED = {b"hashtable", b"skiplist"}


def content_of(client: redis.Redis, key: bytes) -> tuple:
    """Type, encoding and value of `key`, in a form that compares exactly."""
    kind = client.type(key)
    encoding = client.object("encoding", key)
    if kind == b"string":
        value = client.get(key)
    elif kind == b"list":
        value = client.lrange(key, 0, -1)
    elif kind == b"set":
        value = sorted(client.smembers(key))
    elif kind == b"zset":
        value = client.zrange(key, 0, -1, withscores=True)
    elif kind == b"hash":
        value = sorted(client.hgetall(key).items())
    else:
        value = client.execute_command("XINFO", "STREAM", key, "FULL")
    return kind, encoding, repr(value)


def assert_same_key(client: redis.Redis, key: bytes, dump: bytes, content: tuple):
    """The key is what it was: same DUMP (or same content where order may vary)."""
    assert content_of(client, key) == content, key
    if content[1] not in UNORDERED:
        assert client.dump(key) == dump, key
