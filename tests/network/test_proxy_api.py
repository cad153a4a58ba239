"""Toxiproxy's HTTP API: paths, JSON, status codes, the loopback-only rule."""

import requests

TIMEOUT = 5


def _post(url, json=None):
    return requests.post(url, json=json, timeout=TIMEOUT)


def test_status_codes_and_real_listen_port(proxy_api, redis_url):
    upstream = "127.0.0.1:" + redis_url.rsplit(":", 1)[1].split("/")[0]
    created = _post(f"{proxy_api}/proxies", {"name": "r", "upstream": upstream})
    assert created.status_code == 201
    shown = created.json()
    assert shown["listen"].startswith("127.0.0.1:")
    assert shown["listen"] != "127.0.0.1:0"
    assert shown == {
        "name": "r",
        "listen": shown["listen"],
        "upstream": upstream,
        "enabled": True,
        "toxics": [],
    }
    again = _post(f"{proxy_api}/proxies", {"name": "r", "upstream": upstream})
    assert again.status_code == 409
    assert again.json() == {"error": "proxy already exists", "status": 409}
    assert requests.get(f"{proxy_api}/proxies", timeout=TIMEOUT).json() == {"r": shown}
    assert requests.get(f"{proxy_api}/proxies/nope", timeout=TIMEOUT).status_code == 404

    toxics = f"{proxy_api}/proxies/r/toxics"
    toxic = _post(toxics, {"type": "latency", "attributes": {"latency": 10}})
    assert toxic.status_code == 200  # Toxiproxy answers a new toxic with 200
    assert toxic.json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 10, "jitter": 0},
    }
    assert _post(toxics, {"type": "latency"}).status_code == 409
    assert _post(toxics, {"type": "nope"}).status_code == 400
    assert _post(toxics, {"type": "latency", "stream": "sideways"}).status_code == 400
    assert _post(toxics, {"type": "latency", "toxicity": 2}).status_code == 400
    bad_attribute = {"type": "latency", "name": "x", "attributes": {"latancy": 1}}
    assert _post(toxics, bad_attribute).status_code == 400
    assert (
        _post(toxics, {"type": "latency", "attributes": {"latency": "a"}}).status_code
        == 400
    )
    broken = requests.post(toxics, data=b"{not json", timeout=TIMEOUT)
    assert broken.status_code == 400
    assert (
        _post(f"{proxy_api}/proxies/nope/toxics", {"type": "latency"}).status_code
        == 404
    )

    updated = _post(f"{toxics}/latency_downstream", {"attributes": {"latency": 20}})
    assert updated.json()["attributes"] == {"latency": 20, "jitter": 0}
    listed = requests.get(toxics, timeout=TIMEOUT).json()
    assert [t["name"] for t in listed] == ["latency_downstream"]
    assert requests.get(f"{toxics}/nope", timeout=TIMEOUT).status_code == 404
    assert (
        requests.delete(f"{toxics}/latency_downstream", timeout=TIMEOUT).status_code
        == 204
    )
    assert (
        requests.delete(f"{toxics}/latency_downstream", timeout=TIMEOUT).status_code
        == 404
    )
    assert requests.delete(f"{proxy_api}/proxies/r", timeout=TIMEOUT).status_code == 204
    assert requests.delete(f"{proxy_api}/proxies/r", timeout=TIMEOUT).status_code == 404


def test_only_loopback_addresses_by_default(proxy_api):
    for body in (
        {"name": "a", "upstream": "10.0.0.1:6379"},
        {"name": "b", "upstream": "example.com:80"},
        {"name": "c", "upstream": "127.0.0.1:6379", "listen": "0.0.0.0:0"},
        {"name": "d", "upstream": "127.0.0.1:6379", "listen": ":0"},
    ):
        refused = _post(f"{proxy_api}/proxies", body)
        assert refused.status_code == 400
        assert "not allowed" in refused.json()["error"]
    assert _post(f"{proxy_api}/proxies", {"name": "e"}).status_code == 400
    assert requests.get(f"{proxy_api}/proxies", timeout=TIMEOUT).json() == {}


def test_disable_enable_reset_populate_version(proxy_api, redis_url):
    upstream = "127.0.0.1:" + redis_url.rsplit(":", 1)[1].split("/")[0]
    populated = _post(
        f"{proxy_api}/populate",
        [{"name": "one", "upstream": upstream}, {"name": "two", "upstream": upstream}],
    )
    assert populated.status_code == 201
    names = [p["name"] for p in populated.json()["proxies"]]
    assert names == ["one", "two"]
    listen = populated.json()["proxies"][0]["listen"]

    down = _post(f"{proxy_api}/proxies/one", {"enabled": False})
    assert down.status_code == 200 and down.json()["enabled"] is False
    _post(f"{proxy_api}/proxies/one/toxics", {"type": "latency"})
    assert _post(f"{proxy_api}/reset").status_code == 204
    one = requests.get(f"{proxy_api}/proxies/one", timeout=TIMEOUT).json()
    assert one["enabled"] is True and one["toxics"] == [] and one["listen"] == listen

    bad = _post(f"{proxy_api}/populate", [{"name": "three"}])
    assert bad.status_code == 400
    assert "three" not in requests.get(f"{proxy_api}/proxies", timeout=TIMEOUT).json()
    assert "version" in requests.get(f"{proxy_api}/version", timeout=TIMEOUT).json()
    browser = requests.get(
        f"{proxy_api}/proxies", headers={"User-Agent": "Mozilla/5.0"}, timeout=TIMEOUT
    )
    assert browser.status_code == 403
