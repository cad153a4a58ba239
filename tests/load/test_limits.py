"""Resource caps: VUs at parse time, open connections and memory while running."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaospika.loadengine import run
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.limits import DEFAULT_MAX_VUS, Limits
from chaospika.loadengine.scenario import parse_spec

STEPS = [{"request": {"url": "http://127.0.0.1:9/"}}]


def spec_of(**scenarios: dict) -> dict:
    return {
        "scenarios": {
            name: {**options, "steps": STEPS} for name, options in scenarios.items()
        }
    }


@pytest.mark.parametrize(
    "options, field",
    [
        ({"executor": "constant-vus", "vus": 10**7, "duration": "1s"}, "vus"),
        (
            {
                "executor": "constant-arrival-rate",
                "rate": 1,
                "duration": "1s",
                "preAllocatedVUs": 10**7,
            },
            "maxVUs",
        ),
        (
            {
                "executor": "ramping-arrival-rate",
                "stages": [{"duration": "1s", "target": 1}],
                "preAllocatedVUs": 1,
                "maxVUs": 10**6,
            },
            "maxVUs",
        ),
        (
            {
                "executor": "ramping-vus",
                "stages": [
                    {"duration": "1s", "target": 5},
                    {"duration": "1s", "target": 10**6},
                ],
            },
            "stages[1].target",
        ),
        (
            {"executor": "per-vu-iterations", "vus": 10**6, "iterations": 1},
            "vus",
        ),
    ],
)
def test_too_many_vus_are_refused_naming_the_option_and_the_override(options, field):
    with pytest.raises(ScenarioError) as raised:
        parse_spec(spec_of(big=options))
    assert raised.value.field == f"scenarios.big.{field}"
    assert '"limits": {"maxVUs"' in raised.value.message


def test_scenarios_together_count_against_max_vus():
    half = {
        "executor": "constant-vus",
        "vus": DEFAULT_MAX_VUS // 2 + 1,
        "duration": "1s",
    }
    with pytest.raises(ScenarioError) as raised:
        parse_spec(spec_of(a=half, b=half))
    assert raised.value.field == "limits.maxVUs"


def test_limits_raise_or_lower_the_caps():
    big = {"executor": "constant-vus", "vus": 50_000, "duration": "1s"}
    load = parse_spec({**spec_of(big=big), "limits": {"maxVUs": 50_000}})
    assert load.limits == Limits(max_vus=50_000)
    assert parse_spec(spec_of(big={**big, "vus": 10_000})).limits == Limits()
    with pytest.raises(ScenarioError, match="scenarios.big.vus"):
        parse_spec({**spec_of(big={**big, "vus": 3}), "limits": {"maxVUs": 2}})


@pytest.mark.parametrize(
    "limits, field",
    [
        ([1], "limits"),
        ({"maxVus": 1}, "limits.maxVus"),
        ({"maxConnections": 0}, "limits.maxConnections"),
        ({"maxMemoryMB": "2GB"}, "limits.maxMemoryMB"),
    ],
)
def test_bad_limits_name_the_field(limits, field):
    one = {"executor": "constant-vus", "vus": 1, "duration": "1s"}
    with pytest.raises(ScenarioError) as raised:
        parse_spec({**spec_of(a=one), "limits": limits})
    assert raised.value.field == field


class Tracking(BaseHTTPRequestHandler):
    """Counts the connections open at once (one handler per connection)."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    open = 0
    most = 0

    def setup(self):
        super().setup()
        with self.lock:
            type(self).open += 1
            type(self).most = max(type(self).most, type(self).open)

    def finish(self):
        with self.lock:
            type(self).open -= 1
        super().finish()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_connections_over_max_connections_fail_like_a_refused_dial():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Tracking)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        spec = {
            "limits": {"maxConnections": 2},
            "scenarios": {
                "a": {
                    "executor": "constant-vus",
                    "vus": 5,
                    "duration": "1s",
                    "steps": [{"request": {"url": url}}, {"think": "10ms"}],
                }
            },
        }
        result = run(spec, max_duration=10)
    finally:
        server.shutdown()
        server.server_close()
    registry = result.registry
    assert registry.stats("http_req_failed")["passes"] > 0  # refused: over the cap
    assert (
        registry.stats("http_reqs")["count"]
        > registry.stats("http_req_failed")["passes"]
    )
    assert Tracking.most <= 2


def test_a_run_over_max_memory_stops_by_itself():
    spec = {
        "limits": {"maxMemoryMB": 1},  # any Python process is above
        "scenarios": {
            "a": {
                "executor": "constant-vus",
                "vus": 1,
                "duration": "30s",
                "steps": [{"think": "50ms"}],
            }
        },
    }
    result = run(spec, max_duration=20)
    assert result.stopped_by == "max_memory"
    assert result.duration_s < 10
    assert any("limits.maxMemoryMB" in warning for warning in result.warnings)


def test_max_duration_stops_the_run_at_its_bound():
    one = {"executor": "constant-vus", "vus": 2, "duration": "30s"}
    spec = {"scenarios": {"a": {**one, "steps": [{"think": "20ms"}]}}}
    result = run(spec, max_duration=1)
    assert result.stopped_by == "max_duration"
    assert 0.9 < result.duration_s < 5
