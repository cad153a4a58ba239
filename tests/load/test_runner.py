"""The runner end to end: real VUs, real HTTP on 127.0.0.1, real worker processes.

`exec` targets below are referenced as "test_runner:<name>" (pytest puts this
folder on sys.path, and spawned workers inherit it).
"""

import asyncio
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaospika._ports import free_port
from chaospika.loadengine import LoadResult, LoadRun, run, run_async
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.runner import planned_vus
from chaospika.loadengine.scenario import parse_spec

pytestmark = pytest.mark.timeout(90)

STARTS: list = []  # start times recorded by `record_start` (in this process)


async def record_start(vu):
    STARTS.append(time.monotonic())


async def capture_vu(vu):
    vu.capture("vu", vu.id)
    await asyncio.sleep(0.005)


async def sleep_long(vu):
    await asyncio.sleep(10)


async def block_loop(vu):
    time.sleep(0.04)  # noqa: ASYNC251 - blocks the loop on purpose: saturation
    await asyncio.sleep(0)


BLOCKED_ONCE: list = []  # set by `block_once` (in this process)


async def block_once(vu):
    if not BLOCKED_ONCE:  # like starting 10,000 VUs: one long stall, then idle
        BLOCKED_ONCE.append(True)
        time.sleep(0.15)  # noqa: ASYNC251 - blocks the loop on purpose
    await asyncio.sleep(0.01)


async def fail(vu):
    await asyncio.sleep(0.01)
    raise ValueError("broken iteration")


class OrderHandler(BaseHTTPRequestHandler):
    """POST /orders -> 202 {"order_id": n}; GET /health -> 200."""

    protocol_version = "HTTP/1.1"
    counter = iter(range(1, 10**9))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        payload = json.dumps({"order_id": next(self.counter), "item": body.get("item")})
        self._reply(202, payload.encode())

    def do_GET(self):
        self._reply(200, b'{"ok": true}')

    def _reply(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_url():
    """A real HTTP/1.1 keep-alive server on a free loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), OrderHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def order_steps(api_url):
    return [
        {
            "request": {
                "method": "POST",
                "url": f"{api_url}/orders",
                "json": {"item": "{{vu}}"},
                "name": "place order",
            },
            "checks": [{"status": [202], "name": "accepted"}],
            "captures": [{"name": "order_id", "jsonpath": "$.order_id"}],
        }
    ]


def one_scenario(**options):
    return {"scenarios": {"main": options}}


# -- one process ---------------------------------------------------------------------


def test_http_load_records_k6s_metrics_checks_captures_and_summary(api_url):
    spec = {
        "scenarios": {
            "orders": {
                "executor": "constant-vus",
                "vus": 2,
                "duration": "1s",
                "steps": order_steps(api_url),
            }
        },
        "thresholds": {
            "http_req_failed": ["rate<0.01"],
            "http_req_duration{name:place order}": ["p(95)<500"],
            "checks": ["rate==1"],
        },
    }
    result = run(spec)
    registry = result.registry
    requests = registry.stats("http_reqs")["count"]
    assert requests > 20
    assert registry.stats("iterations")["count"] == requests
    assert registry.stats("checks")["rate"] == 1.0
    assert registry.stats("http_req_failed")["passes"] == 0
    assert registry.stats("vus_max")["value"] == 2
    assert registry.stats("vus")["max"] == 2
    assert len(result.captures["orders"]["order_id"]) == requests
    assert result.thresholds_passed and not result.aborted
    assert result.thresholds["checks"] == {"rate==1": True}
    assert 1.0 <= result.duration_s < 1.5
    assert result.stopped_by is None
    assert not any("dropped" in warning for warning in result["warnings"])
    assert "http_reqs" in result.summary_text and "✓" in result.summary_text
    assert "constant-vus" not in result.summary_text  # k6 prints descriptions
    assert "2 looping VUs for 1s" in result.summary_text
    assert result.summary_export["metrics"]["http_reqs"]["count"] == requests
    outcome = result.scenarios["orders"]
    assert outcome["completed"] == requests and outcome["interrupted"] == 0
    json.dumps(result.to_dict())


@pytest.mark.parametrize("rate", [1000, 5000])
def test_arrival_rate_holds_its_schedule(rate):
    """Iterations start on the absolute schedule: exact count, each second within 1%."""
    STARTS.clear()
    spec = one_scenario(
        executor="constant-arrival-rate",
        rate=rate,
        duration="2s",
        preAllocatedVUs=50,
        exec="test_runner:record_start",
    )
    result = run(spec)
    # like k6: the iteration due at exactly t = 2 s starts too
    assert result.registry.stats("iterations")["count"] == 2 * rate + 1
    assert result.registry.stats("dropped_iterations")["count"] == 0
    # Where the schedule starts: the median of each start minus its planned
    # offset (i / rate), so a late first iteration does not shift every bucket.
    starts = sorted(STARTS)
    origin = statistics.median(s - i / rate for i, s in enumerate(starts))
    per_second = [sum(1 for s in starts if k <= s - origin < k + 1) for k in (0, 1)]
    assert all(abs(count - rate) <= rate * 0.01 for count in per_second), per_second


def test_an_abort_on_fail_threshold_stops_the_test():
    spec = one_scenario(
        executor="constant-arrival-rate",
        rate=20,
        duration="10s",
        preAllocatedVUs=2,
        exec="test_runner:record_start",
    )
    spec["thresholds"] = {
        "iterations": [{"threshold": "count<10", "abortOnFail": True}]
    }
    started = time.monotonic()
    result = run(spec)
    # k6 judges abortOnFail thresholds every 2 s: the first look is at 2 s
    assert 1.9 <= time.monotonic() - started < 3.0
    assert 1.9 <= result.duration_s < 2.5
    assert result.aborted and result.stopped_by == "threshold"
    assert not result.thresholds_passed
    assert result.thresholds == {"iterations": {"count<10": False}}


def test_a_stop_event_ends_the_run_within_100_ms():
    stop = threading.Event()
    spec = one_scenario(
        executor="constant-vus", vus=3, duration="30s", exec="test_runner:sleep_long"
    )
    stopped_at = []

    def stop_now():
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Timer(0.5, stop_now).start()
    result = run(spec, stop_event=stop)
    assert time.monotonic() - stopped_at[0] < 0.15
    assert result.stopped_by == "stop_event" and not result.aborted
    assert result.scenarios["main"]["interrupted"] == 3
    assert result.registry.stats("vus")["value"] == 0


def test_max_duration_is_a_hard_cap():
    spec = one_scenario(
        executor="constant-vus", vus=1, duration="30s", exec="test_runner:sleep_long"
    )
    result = run(spec, max_duration=0.4)
    assert 0.4 <= result.duration_s < 0.6
    assert result.stopped_by == "max_duration"
    assert any("max_duration" in warning for warning in result.warnings)


@pytest.mark.parametrize("bad", [0, -1, "10s", True])
def test_a_bad_max_duration_is_refused(bad):
    spec = one_scenario(
        executor="shared-iterations", iterations=1, exec="test_runner:capture_vu"
    )
    with pytest.raises(ScenarioError) as caught:
        run(spec, max_duration=bad)
    assert caught.value.field == "max_duration"


def test_progress_is_reported_once_a_second():
    reports = []
    spec = one_scenario(
        executor="constant-vus", vus=2, duration="2s", exec="test_runner:fail"
    )
    result = run(spec, on_progress=reports.append)
    assert len(reports) == 2
    assert [round(report["elapsed"]) for report in reports] == [1, 2]
    first, second = reports
    assert set(first) >= {"elapsed", "vus", "iterations", "rps", "errors"}
    assert first["vus"] == 2 and first["rps"] == 0
    assert 0 < first["iterations"] < second["iterations"]
    assert first["errors"] == first["iterations"]  # every iteration raised
    assert result.scenarios["main"]["errors"] == result.scenarios["main"]["completed"]


def test_a_saturated_event_loop_is_reported():
    reports = []
    spec = one_scenario(
        executor="constant-vus", vus=1, duration="2s", exec="test_runner:block_loop"
    )
    result = run(spec, on_progress=reports.append)
    assert any(report["warning"] for report in reports)
    assert reports[-1]["loop_lag_p95_ms"] > 20
    assert len(result.warnings) == 1 and "saturated" in result.warnings[0]


def test_a_single_stall_at_the_start_is_not_reported_as_saturation():
    BLOCKED_ONCE.clear()
    reports = []
    spec = one_scenario(
        executor="constant-vus", vus=2, duration="3s", exec="test_runner:block_once"
    )
    result = run(spec, on_progress=reports.append)
    assert BLOCKED_ONCE
    assert reports[0]["loop_lag_p95_ms"] > 100  # the stall was seen
    assert not any(report["warning"] for report in reports)
    assert result.warnings == []


def test_start_time_delays_a_scenario():
    spec = {
        "scenarios": {
            "first": {
                "executor": "per-vu-iterations",
                "vus": 2,
                "iterations": 3,
                "exec": "test_runner:capture_vu",
            },
            "later": {
                "executor": "shared-iterations",
                "vus": 1,
                "iterations": 2,
                "startTime": "500ms",
                "exec": "test_runner:capture_vu",
            },
        }
    }
    result = run(spec)
    later = result.scenarios["later"]
    assert later["started"] == pytest.approx(0.5, abs=0.05)
    assert later["completed"] == 2 and result.scenarios["first"]["completed"] == 6
    assert sorted(result.captures["first"]["vu"]) == [1, 1, 1, 2, 2, 2]
    assert result.captures["later"]["vu"] == [3, 3]
    assert 0.5 <= result.duration_s < 0.7


def test_run_async_runs_on_the_callers_loop():
    spec = one_scenario(
        executor="shared-iterations",
        vus=2,
        iterations=4,
        exec="test_runner:capture_vu",
    )
    result = asyncio.run(run_async(spec))
    assert isinstance(result, LoadResult)
    assert result.registry.stats("iterations")["count"] == 4


def test_a_load_spec_can_run_twice_with_fresh_metrics():
    load = parse_spec(
        one_scenario(
            executor="shared-iterations",
            vus=1,
            iterations=3,
            exec="test_runner:capture_vu",
        )
    )
    first, second = run(load), run(load)
    assert first.registry is not second.registry
    assert second.registry.stats("iterations")["count"] == 3


def test_planned_vus_add_up_only_where_scenarios_overlap():
    def spec(second_start):
        return {
            "scenarios": {
                "a": {"executor": "constant-vus", "vus": 3, "duration": "1s",
                      "gracefulStop": "0s", "exec": "test_runner:capture_vu"},
                "b": {"executor": "constant-arrival-rate", "rate": 1,
                      "duration": "1s", "preAllocatedVUs": 4, "maxVUs": 9,
                      "startTime": second_start, "exec": "test_runner:capture_vu"},
            }
        }  # fmt: skip

    assert planned_vus(parse_spec(spec("0s"))) == 7
    assert planned_vus(parse_spec(spec("1s"))) == 4


# -- several processes ---------------------------------------------------------------


def test_two_processes_add_up_to_the_same_totals(api_url):
    spec = {
        "processes": 2,
        "scenarios": {
            "rate": {
                "executor": "constant-arrival-rate",
                "rate": 50,
                "duration": "2s",
                "preAllocatedVUs": 4,
                "exec": "test_runner:capture_vu",
            },
            "orders": {
                "executor": "shared-iterations",
                "vus": 3,
                "iterations": 21,
                "steps": order_steps(api_url),
            },
        },
        "thresholds": {"checks{check:accepted}": ["rate==1"]},
    }
    reports = []
    result = run(spec, on_progress=reports.append)
    registry = result.registry
    assert registry.stats("iterations")["count"] == 101 + 21  # 101: k6 starts at 2 s
    assert result.scenarios["rate"]["completed"] == 101
    assert result.scenarios["orders"]["completed"] == 21
    assert registry.stats("http_reqs")["count"] == 21
    assert registry.stats("http_req_duration", trend_stats=["count"])["count"] == 21
    assert registry.stats("checks")["passes"] == 21
    assert len(result.captures["orders"]["order_id"]) == 21
    vus = set(result.captures["rate"]["vu"])
    assert {vu % 2 for vu in vus} == {0, 1}  # both workers ran VUs
    assert registry.stats("vus_max")["value"] == 7
    assert result.thresholds_passed
    # workers report their VUs in the progress: the report of second 1 comes while
    # the 2 s scenario runs (active VUs at that instant may be 0: 5 ms iterations)
    assert any(report["vus_max"] == 7 for report in reports), reports


def test_a_stop_event_stops_every_worker():
    stop = threading.Event()
    spec = {
        "processes": 2,
        "scenarios": {
            "main": {
                "executor": "constant-vus",
                "vus": 4,
                "duration": "30s",
                "exec": "test_runner:sleep_long",
            }
        },
    }
    stopped_at = []

    def stop_once_all_vus_run(progress: dict) -> None:
        # both workers run their VUs (on a busy machine that takes more than a second)
        if progress["vus"] == 4 and not stopped_at:
            stopped_at.append(time.monotonic())
            stop.set()

    fallback = threading.Timer(20, stop.set)  # never reached on a working engine
    fallback.start()
    try:
        result = run(spec, stop_event=stop, on_progress=stop_once_all_vus_run)
    finally:
        fallback.cancel()
    assert stopped_at, "the 4 VUs were never all running"
    # ~80 ms on an idle machine; the scenario would go on for 30 s without the stop
    assert time.monotonic() - stopped_at[0] < 5
    assert result.stopped_by == "stop_event"
    assert result.scenarios["main"]["interrupted"] == 4


def test_dropped_iterations_are_counted_and_reported():
    spec = one_scenario(
        executor="constant-arrival-rate",
        rate=20,
        duration="1s",
        preAllocatedVUs=1,
        gracefulStop="0s",
        exec="test_runner:sleep_long",
    )
    result = run(spec)
    assert result.registry.stats("dropped_iterations")["count"] == 20  # 1 s too
    assert result.scenarios["main"]["interrupted"] == 1
    dropped = "scenario main: 20 iterations dropped (no free VU"
    assert any(warning.startswith(dropped) for warning in result.warnings)


def test_a_load_run_handle_answers_while_running_and_stops():
    spec = one_scenario(
        executor="constant-vus", vus=2, duration="30s", exec="test_runner:capture_vu"
    )
    handle = LoadRun(spec, name="handle")
    handle.start()
    live = handle.ask(lambda run: run.registry.stats("iterations")["count"])
    assert live > 0 and not handle.done.is_set()
    assert handle.thresholds() == {}
    result = handle.stop(timeout=20)
    assert handle.done.is_set() and result is handle.result
    assert result.stopped_by == "stop_event" and result.registry is handle.registry
    assert result.duration_s < 20
