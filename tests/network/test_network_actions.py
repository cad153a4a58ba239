"""The network activities: ledger first, then the fault; idempotent removal; ttl; probes."""

import time

import pytest
import redis
import requests
from chaoslib.exceptions import ActivityFailed
from proxy_helpers import ping_p50_ms, redis_client, redis_port

from chaospika import ledger
from chaospika._ports import free_port
from chaospika.controls import _faults
from chaospika.network import actions, client, probes
from chaospika.network.server import ProxyServerThread


@pytest.fixture
def redis_proxy(proxy_api, redis_url, make_proxy):
    """A proxy "redis" in front of the test's Redis; yields its port."""
    return make_proxy("redis", f"127.0.0.1:{redis_port(redis_url)}")


def _records(kind: str) -> list[dict]:
    from chaospika.ledger import store

    return [data for data in store.load_all() if data["kind"] == kind]


def test_latency_is_recorded_then_applied_removed_once_and_closed(
    proxy_api, redis_proxy
):
    connection = redis_client(redis_proxy)
    before = ping_p50_ms(connection, 10)
    added = actions.inject_latency(proxy_api, "redis", "100ms", ttl=60)
    assert added["latency_ms"] == 100 and added["self_expires"] is True
    (record,) = _records("network.toxic")
    assert record["id"] == added["fault"] and record["state"] == "applied"
    assert record["undo"] == {
        "module": "chaospika.network.client",
        "func": "remove_toxic",
        "args": {"proxy_url": proxy_api, "proxy": "redis", "toxic": added["toxic"]},
    }
    assert record["watchdog_pid"] > 0 and record["ttl_seconds"] == 60
    assert 90.0 <= ping_p50_ms(connection, 5) - before <= 130.0
    shown = probes.toxics_in_force(proxy_api, "redis")
    assert shown["toxics_count"] == 1 and 0 < shown["toxics"][0]["ttl_seconds"] <= 60

    removed = actions.remove_toxic(proxy_api, "redis", "latency_downstream")
    assert removed["already"] is False and removed["faults_closed"] == [added["fault"]]
    again = actions.remove_toxic(proxy_api, "redis", "latency_downstream")
    assert again["already"] is True and again["faults_closed"] == []
    assert ping_p50_ms(connection, 5) - before < 30.0
    assert ledger.outstanding() == []
    assert probes.toxics_in_force(proxy_api, "redis")["toxics_count"] == 0
    connection.close()


def test_durations_are_seconds_or_strings_never_bare_milliseconds(
    proxy_api, redis_proxy
):
    shown = actions.inject_latency(proxy_api, "redis", 0.05, jitter="5ms")
    assert (shown["latency_ms"], shown["jitter_ms"]) == (50, 5)
    assert shown["attributes"] == {"latency": 50, "jitter": 5}
    with pytest.raises(ActivityFailed, match="'latency' is 100 s.*'100ms'"):
        actions.inject_latency(proxy_api, "redis", 100, toxic="other")
    for bad in (
        {"stream": "sideways"},
        {"toxicity": 2},
        {"ttl": "soon"},
        {"duration": 0},
    ):
        with pytest.raises(ActivityFailed, match="argument"):
            actions.inject_latency(proxy_api, "redis", "10ms", toxic="other", **bad)
    with pytest.raises(ActivityFailed, match="argument 'proxy_url'"):
        actions.inject_latency("127.0.0.1:8474", "redis", "10ms")
    with pytest.raises(ActivityFailed, match="already has a toxic"):
        actions.inject_latency(proxy_api, "redis", "10ms")  # same default name
    with pytest.raises(ActivityFailed, match="no proxy named 'nope'"):
        actions.add_toxic(proxy_api, "nope", "latency")
    assert len(_records("network.toxic")) == 1  # refused ones were never recorded


def test_a_refused_toxic_is_recorded_and_closed_not_left_open(proxy_api, redis_proxy):
    with pytest.raises(ActivityFailed, match="400.*invalid toxic type"):
        actions.add_toxic(proxy_api, "redis", "no_such_toxic")
    (record,) = _records("network.toxic")
    assert record["state"] == "undone" and record["undone_by"] == "not applied"


def test_duration_removes_the_toxic_before_returning(proxy_api, redis_proxy):
    started = time.monotonic()
    shown = actions.add_toxic(
        proxy_api, "redis", "timeout", {"timeout": 0}, duration="300ms"
    )
    assert time.monotonic() - started >= 0.3
    assert shown["removed"] is True
    assert probes.toxics_in_force(proxy_api, "redis")["toxics_count"] == 0
    (record,) = _records("network.toxic")
    assert record["state"] == "undone"
    assert record["undone_by"] == "duration"


def test_partition_refuses_connections_until_enabled(proxy_api, redis_proxy):
    connection = redis_client(redis_proxy, timeout=2)
    assert connection.ping()
    shown = actions.disable_proxy(proxy_api, "redis")
    assert shown["disabled"] is True and shown["self_expires"] is False
    assert probes.proxy_enabled(proxy_api, "redis") is False
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        connection.ping()  # the live connection was closed, a new one refused
    assert time.monotonic() - started < 1.0
    with pytest.raises(ActivityFailed, match="already disabled"):
        actions.disable_proxy(proxy_api, "redis")
    (record,) = _records("network.partition")
    assert record["state"] == "applied"
    assert record["undo"]["func"] == "enable_proxy"

    healed = actions.enable_proxy(proxy_api, "redis")
    assert healed["enabled"] is True and healed["faults_closed"] == [shown["fault"]]
    assert actions.enable_proxy(proxy_api, "redis")["enabled"] is True
    assert connection.ping()
    assert probes.proxy_exists(proxy_api, "redis") is True
    assert probes.proxy_exists(proxy_api, "nope") is False
    connection.close()


def test_timed_disable_enables_itself_and_a_later_change_cancels_it(
    proxy_api, redis_proxy
):
    url = f"{proxy_api}/proxies/redis"
    refused = requests.post(url, json={"enabled": True, "ttl": 1}, timeout=5)
    assert refused.status_code == 400
    shown = actions.disable_proxy(proxy_api, "redis", duration="600ms")
    assert shown["enabled_again"] is True and shown["self_expires"] is True
    assert probes.proxy_enabled(proxy_api, "redis")

    client.disable_proxy(proxy_api, "redis", ttl=0.4)
    answer = requests.get(url, timeout=5).json()
    assert answer["enabled"] is False and 0 < answer["ttl"] <= 0.4
    client.enable_proxy(proxy_api, "redis")
    client.disable_proxy(proxy_api, "redis")  # no ttl: stays down past 0.4 s
    time.sleep(0.6)
    assert probes.proxy_enabled(proxy_api, "redis") is False
    assert "enable_at" not in requests.get(url, timeout=5).json()
    client.disable_proxy(proxy_api, "redis", ttl=0.3)
    time.sleep(0.6)
    assert probes.proxy_enabled(proxy_api, "redis") is True
    assert redis_client(redis_proxy).ping()


def test_a_removal_that_fails_raises_and_stays_outstanding(redis_url):
    server = ProxyServerThread("127.0.0.1:0")
    api = server.start()
    upstream = f"127.0.0.1:{redis_port(redis_url)}"
    client.create_proxy(api, "redis", upstream)
    added = actions.inject_latency(api, "redis", "20ms")
    disabled = actions.disable_proxy(api, "redis")
    server.stop()  # the API is gone: nothing can be removed
    with pytest.raises(ActivityFailed, match="unreachable"):
        actions.remove_toxic(api, "redis", "latency_downstream")
    with pytest.raises(ActivityFailed, match="unreachable"):
        actions.enable_proxy(api, "redis")
    for fault in (added["fault"], disabled["fault"]):
        with pytest.raises(ActivityFailed, match="failed"):
            ledger.undo(fault)
        assert ledger.get(fault).state == "failed"
    assert {f.id for f in ledger.outstanding()} == {added["fault"], disabled["fault"]}


def test_remove_all_toxics_and_the_probes_of_a_missing_proxy(proxy_api, redis_proxy):
    actions.inject_latency(proxy_api, "redis", "10ms")
    actions.add_toxic(
        proxy_api, "redis", "bandwidth", {"rate": 1000}, stream="upstream"
    )
    client.add_toxic(proxy_api, "redis", {"type": "slicer", "name": "not-ours"})
    cleared = actions.remove_all_toxics(proxy_api, "redis")
    assert sorted(cleared["removed"]) == [
        "bandwidth_upstream",
        "latency_downstream",
        "not-ours",
    ]
    assert len(cleared["faults_closed"]) == 2 and ledger.outstanding() == []
    assert actions.remove_all_toxics(proxy_api, "redis")["removed_count"] == 0
    gone = actions.remove_all_toxics(proxy_api, "nope")
    assert gone["proxy_found"] is False
    assert probes.toxics_in_force(proxy_api, "nope") == {
        "proxy_found": False,
        "enabled": False,
        "toxics_count": 0,
        "toxics": [],
    }
    with pytest.raises(ActivityFailed, match="unreachable"):
        probes.proxy_exists(f"http://127.0.0.1:{free_port()}", "redis")


def test_the_safety_control_checks_the_proxy_api_host():
    policy = _faults.Policy()
    for func in ("inject_latency", "add_toxic", "disable_proxy"):
        fault = _faults.FAULTS[f"chaospika.network.actions.{func}"]
        arguments = {"proxy_url": "http://10.1.2.3:8474", "proxy": "redis"}
        entry, refusals = _faults.check_fault(func, fault, arguments, policy, True)
        assert entry["fault"].startswith("network.")
        assert refusals and "not in allow_hosts" in refusals[0]
        arguments["proxy_url"] = "http://127.0.0.1:8474"
        assert _faults.check_fault(func, fault, arguments, policy, True)[1] == []


def _load(name: str, url: str) -> dict:
    from chaospika.load.actions import run_load

    scenario = {
        "executor": "constant-arrival-rate",
        "rate": 40,
        "timeUnit": "1s",
        "duration": "1s",
        "preAllocatedVUs": 10,
        "steps": [{"request": {"method": "GET", "url": url}}],
    }
    return run_load(spec={"scenarios": {"get": scenario}}, name=name)


def test_latency_table_of_loads_run_under_each_latency(
    proxy_api, http_backend, make_proxy
):
    port = make_proxy("http", http_backend)
    through, direct = (
        f"http://127.0.0.1:{port}/bytes/10",
        f"http://{http_backend}/bytes/10",
    )
    tag = str(time.monotonic_ns())
    steps = [
        {"latency": "0ms", "load": f"zero-{tag}"},
        {"latency": 0.05, "load": f"fifty-{tag}"},
    ]
    assert probes.latency_table(steps)["ran"] is False  # nothing to judge yet
    _load(f"zero-{tag}", through)
    actions.inject_latency(proxy_api, "http", "50ms")
    _load(f"fifty-{tag}", through)
    actions.remove_toxic(proxy_api, "http", "latency_downstream")

    table = probes.latency_table(steps, p99_slack="100ms")
    assert table["within_bounds"] is True, table["violations"]
    zero, fifty = table["table"]
    assert zero["latency_ms"] == 0 and fifty["latency_ms"] == 50
    assert fifty["requests_count"] >= 35 and fifty["errors_count"] == 0
    assert 45.0 <= fifty["p50_increase_ms"] <= 60.0
    assert "| 50ms |" in table["markdown"]

    _load(f"direct-{tag}", direct)  # labelled 50 ms, but nothing delayed it
    missed = [steps[0], {"latency": "50ms", "load": f"direct-{tag}"}]
    judged = probes.latency_table(missed, p99_slack="100ms")
    assert judged["within_bounds"] is False
    assert "did not reach the system" in judged["violations"][0]
    strict = probes.latency_table(steps, p99_slack="0ms", p50_tolerance=1)
    assert strict["within_bounds"] is (fifty["p99_increase_ms"] <= 50.0)
    doubled = [steps[0], {"latency": "25ms", "load": f"fifty-{tag}"}]
    judged = probes.latency_table(doubled, p99_slack="100ms")
    assert "pays the added latency more than once" in judged["violations"][0]
    half = probes.latency_table([*steps, {"latency": "100ms", "load": "never"}])
    assert half["violations"][0] == "load 'never' has not run"
