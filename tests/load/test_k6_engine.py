"""`"engine": "k6"`: the same spec translated to a k6 script and run on real k6.

Translation tests need nothing; run tests use the real k6 binary (skipped only
when it is absent) against a real sandbox or a closed loopback port, and
compare k6's results with the pika engine's on the same scenario.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from sandbox_fixtures import children, pid_alive, wait_until

from chaospika._ports import free_port
from chaospika.load import probes
from chaospika.load.session import LoadSession
from chaospika.loadengine import run
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6 import BINARY_ENV, K6Error, find_k6, run_k6, translate
from chaospika.loadengine.k6.samples import split_extra_tags
from chaospika.loadengine.scenario import parse_spec

pytestmark = pytest.mark.timeout(120)


def _k6_available() -> bool:
    try:
        find_k6()
    except ScenarioError:
        return False
    return True


needs_k6 = pytest.mark.skipif(not _k6_available(), reason="k6 binary not installed")


def _options(source: str) -> dict:
    """The `options` object of a generated script."""
    start = source.index("export const options = ") + len("export const options = ")
    end = source.index("};\n", start) + 1
    return json.loads(source[start:end])


def _get(url: str, **extra) -> dict:
    return {"request": {"url": url}, **extra}


# -- translation ----------------------------------------------------------------------


def test_options_are_k6_options_one_to_one():
    spec = {
        "engine": "k6",
        "tags": {"team": "shop"},
        "summaryTrendStats": ["avg", "p(99)"],
        "processes": 4,
        "scenarios": {
            "browse": {
                "executor": "ramping-arrival-rate",
                "startRate": 5,
                "timeUnit": 1000,
                "preAllocatedVUs": 2,
                "maxVUs": 10,
                "stages": [
                    {"duration": 1500, "target": 20},
                    {"duration": "1m", "target": 0},
                ],
                "startTime": "2s",
                "gracefulStop": 250,
                "tags": {"kind": "read"},
                "steps": [_get("http://127.0.0.1:1/")],
            },
            "buy-now": {
                "executor": "constant-vus",
                "vus": 3,
                "duration": "30s",
                "steps": [_get("http://127.0.0.1:1/")],
            },
        },
        "thresholds": {
            "http_req_duration{scenario:browse}": ["p(95)<500"],
            "checks": [
                {"threshold": "rate>0.9", "abortOnFail": True, "delayAbortEval": 10000}
            ],
        },
    }
    script = translate(spec)
    expected = {
        "scenarios": {
            "browse": {
                "executor": "ramping-arrival-rate",
                "startRate": 5,
                "timeUnit": "1000ms",
                "preAllocatedVUs": 2,
                "maxVUs": 10,
                "stages": [
                    {"duration": "1500ms", "target": 20},
                    {"duration": "1m", "target": 0},
                ],
                "startTime": "2s",
                "gracefulStop": "250ms",
                "tags": {"kind": "read"},
                "exec": "pika_0",
            },
            "buy-now": {
                "executor": "constant-vus",
                "vus": 3,
                "duration": "30s",
                "exec": "pika_1",
            },
        },
        "thresholds": {
            "http_req_duration{scenario:browse}": ["p(95)<500"],
            "checks": [
                {
                    "threshold": "rate>0.9",
                    "abortOnFail": True,
                    "delayAbortEval": "10000ms",
                }
            ],
        },
        "tags": {"team": "shop"},
        "summaryTrendStats": ["avg", "p(99)"],
    }
    assert script.options == expected
    assert _options(script.source) == expected
    assert script.functions == {"browse": "pika_0", "buy-now": "pika_1"}
    assert "export function pika_0()" in script.source
    assert "export function pika_1()" in script.source
    assert script.tag_names == {"team", "kind"}


def test_steps_become_k6_calls(monkeypatch):
    monkeypatch.setenv("PIKA_TEST_TOKEN", "secret")
    steps = [
        {
            "group": "buy",
            "steps": [
                {
                    "request": {
                        "method": "post",
                        "url": "http://127.0.0.1:1/orders?n={{iter}}",
                        "headers": {"Authorization": "Bearer {{env.PIKA_TEST_TOKEN}}"},
                        "json": {
                            "user": "u{{vu}}",
                            "qty": "{{randint:1-100}}",
                            "key": "{{uuid}}",
                            "n": "{{counter}}",
                            "at": "{{now_ms}}",
                            "color": "{{random:red|blue}}",
                        },
                        "tags": {"step": "order"},
                        "timeout": 2.5,
                    },
                    "checks": [
                        {"status": [202, 409]},
                        {"jsonpath": "$.order_id", "exists": True},
                        {"jsonpath": "$.items[0]['sku']", "equals": 5},
                        {"body_contains": "accepted", "name": "accepted"},
                    ],
                    "captures": [
                        {"name": "order_id", "jsonpath": "$.order_id"},
                        {"name": "trace", "header": "X-Trace"},
                    ],
                }
            ],
        },
        {"think": "500ms"},
        {"think": {"min": "100ms", "max": 1}},
        {
            "request": {
                "method": "PUT",
                "url": "http://127.0.0.1:1/orders/{{var.order_id}}",
                "body": "note {{scenario}}",
                "name": "update",
                "expectedStatuses": [200, {"min": 400, "max": 404}],
            }
        },
        {
            "ws": {
                "url": "ws://127.0.0.1:1/ws",
                "join": {"type": "join", "channel": "c{{vu}}"},
                "send": {"every": "200ms", "count": 3, "message": "hi {{now_ms}}"},
                "expect": {"count": 2, "timeout": "5s"},
                "latency_field": "sent_at",
                "hold": "1s",
                "reconnects": 2,
            }
        },
    ]
    spec = {
        "engine": "k6",
        "scenarios": {"shop": {"executor": "per-vu-iterations", "steps": steps}},
    }
    source = translate(spec).source
    for text in (
        "import http from 'k6/http';",
        "import ws from 'k6/ws';",
        'group("buy", () => {',
        'http.request("POST", "http://127.0.0.1:1/orders?n=" + pikaText(__ITER)',
        '"Authorization": "Bearer " + pikaText(__ENV["PIKA_TEST_TOKEN"])',
        '"Content-Type": "application/json"',
        '"user": "u" + pikaText(__VU)',
        '"qty": pikaRandint(1, 100)',
        '"key": crypto.randomUUID()',
        '"n": pikaCounter()',
        '"at": Date.now()',
        '"color": pikaChoice(["red", "blue"])',
        'tags: {"step": "order", "name": "http://127.0.0.1:1/orders?n={{iter}}"}',
        'timeout: "2500ms"',
        'pikaCheck("status in [202, 409]", [202, 409].includes(response.status));',
        'pikaCheck("$.order_id exists", ((pikaLookup(document, ["order_id"])',
        (
            "pikaCheck(\"$.items[0]['sku'] == 5\", "
            'pikaEquals(pikaLookup(document, ["items", 0, "sku"]), 5));'
        ),
        (
            "pikaCheck(\"accepted\", (typeof response.body === 'string' && "
            'response.body.includes("accepted")));'
        ),
        'pikaCapture("shop", "order_id", value)',
        'pikaHeader(response, "x-trace")',
        "sleep(0.5);",
        "sleep(pikaUniform(0.1, 1.0));",
        'pikaVar("shop", "order_id", "scenarios.shop.steps[3].request.url")',
        '"note " + pikaText("shop")',
        'tags: {"name": "update"}',
        'http.expectedStatuses(200, {"min": 400, "max": 404});',
        "pikaWs({",
        'join: () => JSON.stringify({"type": "join", "channel": "c" + pikaText(__VU)}),',
        "every: 200.0,",
        'message: () => "hi " + pikaText(Date.now()),',
        "expectCount: 2,",
        "expectTimeout: 5000.0,",
        'latencyField: "sent_at",',
        "hold: 1000.0,",
        "reconnects: 2,",
    ):
        assert text in source, text
    assert "202, 409);" not in source  # checks never make a status expected (k6)
    assert "secret" not in source  # env values stay in the environment


def test_python_exec_cannot_run_on_k6():
    spec = {
        "engine": "k6",
        "scenarios": {
            "custom": {
                "executor": "shared-iterations",
                "exec": "no_such_module_anywhere:fn",
            }
        },
    }
    with pytest.raises(ScenarioError) as caught:
        translate(spec)
    assert caught.value.field == "scenarios.custom.exec"
    assert "k6" in caught.value.message
    with pytest.raises(ScenarioError) as caught:
        run_k6(spec)
    assert caught.value.field == "scenarios.custom.exec"


def test_unsupported_and_bad_fields_are_named():
    ws_step = {"ws": {"url": "ws://127.0.0.1:1/ws", "timeout": "2s"}}
    spec = {
        "engine": "k6",
        "scenarios": {"chat": {"executor": "shared-iterations", "steps": [ws_step]}},
    }
    with pytest.raises(ScenarioError) as caught:
        translate(spec)
    assert caught.value.field == "scenarios.chat.steps[0].ws.timeout"
    spec["scenarios"]["chat"] = {"executor": "per-vu-iterations", "vus": -1}
    with pytest.raises(ScenarioError) as caught:
        translate(spec)
    assert caught.value.field == "scenarios.chat.vus"


def test_engine_field_is_checked():
    scenarios = {"a": {"executor": "shared-iterations", "steps": [_get("http://x/")]}}
    assert parse_spec({"engine": "k6", "scenarios": scenarios}).engine == "k6"
    assert parse_spec({"scenarios": scenarios}).engine == "pika"
    with pytest.raises(ScenarioError) as caught:
        parse_spec({"engine": "locust", "scenarios": scenarios})
    assert caught.value.field == "engine"


def test_missing_k6_binary_names_engine(monkeypatch, tmp_path):
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "no-k6-here"))
    spec = {
        "engine": "k6",
        "scenarios": {
            "a": {"executor": "shared-iterations", "steps": [_get("http://x/")]}
        },
    }
    with pytest.raises(ScenarioError) as caught:
        run_k6(spec)
    assert caught.value.field == "engine"
    assert BINARY_ENV in caught.value.message


@pytest.mark.skipif(shutil.which("false") is None, reason="needs false(1)")
def test_a_failing_k6_is_an_error_with_its_exit_code(monkeypatch):
    monkeypatch.setenv(BINARY_ENV, shutil.which("false"))
    spec = {
        "engine": "k6",
        "scenarios": {
            "a": {"executor": "shared-iterations", "steps": [_get("http://x/")]}
        },
    }
    with pytest.raises(K6Error, match="exit code 1"):
        run_k6(spec)


def test_extra_tags_split_on_known_names():
    names = {"team", "step"}
    assert split_extra_tags("team=a&b=c&step=x=1", names) == {
        "team": "a&b=c",
        "step": "x=1",
    }
    assert split_extra_tags("", names) == {}


# -- real k6 ------------------------------------------------------------------------------


def _order_spec(engine: str, thresholds: dict) -> dict:
    """30 orders by 3 VUs; keys unique per run only if {{counter}} is unique."""
    return {
        "engine": engine,
        "scenarios": {
            "orders": {
                "executor": "shared-iterations",
                "vus": 3,
                "iterations": 30,
                "steps": [
                    {
                        "request": {
                            "method": "POST",
                            "url": "{{env.PIKA_TEST_API}}/orders",
                            "headers": {
                                "Idempotency-Key": "{{env.PIKA_TEST_RUN}}-{{counter}}"
                            },
                            "json": {"product_id": "p1", "user_id": "u{{vu}}"},
                            "name": "order",
                            "expectedStatuses": [202, 409],
                        },
                        "checks": [
                            {"status": [202, 409]},
                            {"jsonpath": "$.order_id", "exists": True},
                        ],
                        "captures": [{"name": "order_id", "jsonpath": "$.order_id"}],
                    }
                ],
            }
        },
        "thresholds": thresholds,
    }


def _init_stock(api: str, stock: int) -> None:
    """Set the stock once the worker has drained earlier orders."""
    url = f"{api}/products/p1/init"
    wait_until(
        lambda: requests.post(url, json={"stock": stock}, timeout=5).status_code == 200,
        timeout=20,
        step=0.1,
    )


def _run_both(api: str, thresholds: dict, monkeypatch) -> dict:
    """The order scenario on each engine, 20 in stock each time."""
    monkeypatch.setenv("PIKA_TEST_API", api)
    monkeypatch.setenv("K6_ITERATIONS", "3")  # would override the scenarios
    results = {}
    for engine, runner in (("pika", run), ("k6", run_k6)):
        monkeypatch.setenv("PIKA_TEST_RUN", uuid.uuid4().hex)
        _init_stock(api, 20)
        results[engine] = runner(_order_spec(engine, thresholds))
    return results


@needs_k6
def test_orders_same_counts_on_both_engines(make_sandbox, tmp_path, monkeypatch):
    api = make_sandbox(tmp_path)["api_url"]
    thresholds = {"http_req_failed{name:order}": ["rate==0"]}
    results = _run_both(api, thresholds, monkeypatch)
    for engine, result in results.items():
        registry = result.registry
        assert registry.stats("http_reqs")["count"] == 30, engine
        assert registry.stats("iterations")["count"] == 30, engine
        assert registry.stats("http_req_failed")["passes"] == 0, engine  # 409 expected
        assert registry.checks == {
            ("", "status in [202, 409]"): [30, 0],
            ("", "$.order_id exists"): [20, 10],
        }, engine
        order_ids = result.captures["orders"]["order_id"]
        assert len(order_ids) == len(set(order_ids)) == 20, engine
        assert result.thresholds == {"http_req_failed{name:order}": {"rate==0": True}}
        assert result.thresholds_passed and not result.aborted, engine
        assert result.scenarios["orders"]["completed"] == 30, engine
    k6 = results["k6"]
    metrics = k6.summary_export["metrics"]
    assert (
        metrics["http_reqs"]["count"] == 30
    )  # k6's own export agrees with its samples
    assert metrics["checks"]["passes"] == 50 and metrics["checks"]["fails"] == 10
    assert "█ THRESHOLDS" in k6.summary_text and "http_reqs" in k6.summary_text
    assert k6.scenarios["orders"]["interrupted"] is None  # k6 does not report it
    assert 0 < k6.duration_s < 30
    assert k6.stopped_by is None


@needs_k6
def test_failing_threshold_is_a_result_on_both_engines(
    make_sandbox, tmp_path, monkeypatch
):
    api = make_sandbox(tmp_path)["api_url"]
    thresholds = {"checks": ["rate>0.99"], "http_reqs": ["count==30"]}
    results = _run_both(api, thresholds, monkeypatch)
    for engine, result in results.items():
        assert result.thresholds == {
            "checks": {"rate>0.99": False},
            "http_reqs": {"count==30": True},
        }, engine
        assert result.thresholds_passed is False, engine
        assert not result.aborted, engine
    assert any("crossed" in warning for warning in results["k6"].warnings)  # exit 99


@needs_k6
def test_websocket_step_same_on_both_engines(make_sandbox, tmp_path):
    ws_url = make_sandbox(tmp_path)["api_url"].replace("http://", "ws://") + "/ws"
    step = {
        "ws": {
            "url": ws_url,
            "name": "feed",
            "join": {"type": "join", "channel": "c{{vu}}"},
            "send": {
                "every": "50ms",
                "count": 3,
                "message": {
                    "type": "message",
                    "channel": "c{{vu}}",
                    "sent_at": "{{now_ms}}",
                },
            },
            "expect": {"count": 4, "timeout": "5s"},
            "latency_field": "sent_at",
        }
    }
    for engine, runner in (("pika", run), ("k6", run_k6)):
        spec = {
            "engine": engine,
            "scenarios": {
                "chat": {"executor": "per-vu-iterations", "vus": 2, "steps": [step]}
            },
        }
        registry = runner(spec).registry
        assert registry.stats("ws_sessions")["count"] == 2, engine
        assert registry.stats("ws_msgs_sent")["count"] == 8, engine  # join + 3 each
        assert registry.stats("ws_msgs_received")["count"] == 8, engine  # joined + 3
        assert registry.stats("ws_msg_latency", ["count"])["count"] == 6, engine
        assert registry.checks == {
            ("", "feed: connected"): [2, 0],
            ("", "feed: received 4 messages"): [2, 0],
        }, engine


@needs_k6
def test_missing_var_ends_the_iteration_on_both_engines():
    url = f"http://127.0.0.1:{free_port()}/orders/{{{{var.order_id}}}}"
    for engine, runner in (("pika", run), ("k6", run_k6)):
        spec = {
            "engine": engine,
            "scenarios": {
                "read": {
                    "executor": "per-vu-iterations",
                    "vus": 1,
                    "iterations": 2,
                    "steps": [{"request": {"url": url}}],
                }
            },
        }
        result = runner(spec)
        assert result.registry.stats("http_reqs")["count"] == 0, engine
        assert result.registry.stats("iterations")["count"] == 2, engine


def _refused_spec(engine: str, thresholds: dict | None = None) -> dict:
    """Requests to a closed loopback port: every check fails, quickly."""
    url = f"http://127.0.0.1:{free_port()}/"
    return {
        "engine": engine,
        "scenarios": {
            "probe": {
                "executor": "constant-vus",
                "vus": 2,
                "duration": "20s",
                "gracefulStop": "0s",
                "steps": [
                    {"request": {"url": url}, "checks": [{"status": 200}]},
                    {"think": "50ms"},
                ],
            }
        },
        "thresholds": thresholds or {},
    }


@needs_k6
@pytest.mark.parametrize("engine", ["pika", "k6"])
def test_abort_on_fail_threshold_aborts(engine):
    threshold = {"threshold": "rate>0.9", "abortOnFail": True, "delayAbortEval": "1s"}
    runner = run_k6 if engine == "k6" else run
    result = runner(_refused_spec(engine, {"checks": [threshold]}))
    assert result.aborted is True
    assert result.stopped_by == "threshold"
    assert result.thresholds == {"checks": {"rate>0.9": False}}
    assert result.thresholds_passed is False
    assert result.duration_s < 10


@needs_k6
def test_stop_event_interrupts_k6_with_live_progress():
    stop = threading.Event()
    seen: list[dict] = []

    def on_progress(progress: dict) -> None:
        seen.append(progress)
        if len(seen) == 2:
            stop.set()

    result = run_k6(_refused_spec("k6"), stop_event=stop, on_progress=on_progress)
    assert result.stopped_by == "stop_event"
    assert result.duration_s < 10
    assert seen and {"elapsed", "vus", "iterations", "rps", "errors"} <= set(seen[-1])
    assert seen[-1]["iterations"] > 0  # k6's samples arrive while it runs
    assert (
        result.registry.stats("http_reqs")["count"]
        == (result.summary_export["metrics"]["http_reqs"]["count"])
    )


@needs_k6
def test_max_duration_bounds_a_k6_run():
    result = run_k6(_refused_spec("k6"), max_duration=1.5)
    assert result.stopped_by == "max_duration"
    assert result.duration_s < 5
    assert any("max_duration" in warning for warning in result.warnings)


@needs_k6
def test_session_runs_engine_k6_and_probes_read_k6():
    spec = _refused_spec("k6")
    spec["scenarios"]["probe"] = {
        "executor": "per-vu-iterations",
        "vus": 2,
        "iterations": 3,
        "steps": spec["scenarios"]["probe"]["steps"],
    }
    session = LoadSession("k6-session", spec, max_duration=30)
    result = session.run()
    assert result.scenarios["probe"]["interrupted"] is None  # ran on k6
    assert probes.metric("k6-session", "http_reqs", "count") == 6
    failures = probes.load_failures("k6-session")
    assert failures["requests"] == 6 and failures["failed"] == 6
    assert probes.thresholds_passed("k6-session") is True
    series = probes.time_series("k6-session", "http_reqs")
    assert series and sum(point["count"] for point in series) == 6
    assert os.environ.get("K6_NO_USAGE_REPORT") is None  # set for k6 only


def test_run_load_turns_a_k6_exec_spec_into_activity_failed():
    from chaoslib.exceptions import ActivityFailed

    from chaospika.load.actions import run_load

    spec = {
        "engine": "k6",
        "scenarios": {"s": {"executor": "shared-iterations", "exec": "os.path:join"}},
    }
    with pytest.raises(ActivityFailed, match=r"scenarios\.s\.exec"):
        run_load(spec=spec, name="k6-exec")


@needs_k6
@pytest.mark.parametrize("segments", [1, 2])
def test_k6_stops_when_chaospika_is_killed(segments):
    """SIGKILL of the Python process that runs k6 ends every k6 it started, at
    once (the kernel sends them SIGTERM), not at the end of their 30 s."""
    spec = {"engine": "k6", "vus": 2, "duration": "30s", "steps": [{"think": 0.2}]}
    if segments > 1:
        spec["segments"] = segments
    code = f"from chaospika.loadengine import run; run({spec!r})"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_until(lambda: len(children(parent.pid)) == segments, 20)
        k6s = children(parent.pid)
        time.sleep(1)  # k6 is running its test
        assert all(pid_alive(pid) for pid in k6s)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until(lambda: not any(pid_alive(pid) for pid in k6s), 10), k6s
