"""Both real Toxiproxy clients drive the proxy: create, add latency, see it, delete."""

import pytest
from proxy_helpers import ping_p50_ms, redis_client, redis_port

chaostoxi_proxy = pytest.importorskip("chaostoxi.proxy.actions")
chaostoxi_probes = pytest.importorskip("chaostoxi.proxy.probes")
chaostoxi_toxic = pytest.importorskip("chaostoxi.toxic.actions")
toxiproxy = pytest.importorskip("toxiproxy")
from toxiproxy.api import APIConsumer


def _added_ms(port: int, before: float) -> float:
    client = redis_client(port)
    try:
        return ping_p50_ms(client, 10) - before
    finally:
        client.close()


def test_chaostoolkit_toxiproxy(proxy_api, redis_url, monkeypatch):
    monkeypatch.setenv("cache_PORT", "")  # the client exports <proxy>_PORT
    configuration = {"toxiproxy_url": proxy_api}
    assert chaostoxi_proxy.create_proxy(
        "cache",
        "127.0.0.1",
        redis_port(redis_url),
        listen_host="127.0.0.1",
        configuration=configuration,
    )
    port = int(configuration["cache_PORT"])
    assert chaostoxi_probes.proxy_exist("cache", configuration=configuration)
    before = _added_ms(port, 0.0)
    assert chaostoxi_toxic.create_latency_toxic(
        "cache", "slow", latency=100, configuration=configuration
    )
    assert 90.0 <= _added_ms(port, before) <= 115.0
    assert chaostoxi_toxic.delete_toxic("cache", "slow", configuration=configuration)
    assert _added_ms(port, before) < 50.0
    chaostoxi_proxy.delete_proxy("cache", configuration=configuration)
    assert not chaostoxi_probes.proxy_exist("cache", configuration=configuration)


def test_toxiproxy_python(proxy_api, redis_url, monkeypatch):
    host, port = proxy_api.removeprefix("http://").rsplit(":", 1)
    monkeypatch.setattr(APIConsumer, "host", host)
    monkeypatch.setattr(APIConsumer, "port", int(port))
    server = toxiproxy.Toxiproxy()
    assert server.running()
    proxy = server.create(upstream=f"127.0.0.1:{redis_port(redis_url)}", name="cache")
    listen_port = int(proxy.listen.rsplit(":", 1)[1])
    assert listen_port != 0
    before = _added_ms(listen_port, 0.0)
    proxy.add_toxic(type="latency", attributes={"latency": 100})
    assert list(proxy.toxics()) == ["latency_downstream"]
    assert 90.0 <= _added_ms(listen_port, before) <= 115.0
    assert proxy.destroy_toxic("latency_downstream")
    assert _added_ms(listen_port, before) < 50.0
    assert server.destroy(proxy)
    assert server.get_proxy("cache") is None
