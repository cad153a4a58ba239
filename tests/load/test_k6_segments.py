"""`"segments": N` with engine k6: N real k6 processes merged into one result.

The runs use the real k6 binary (skipped only when it is absent) against an
HTTP server of the test on 127.0.0.1; each compares a 3-segment run with a
single k6 run of the same spec where k6's semantics make the counts exact.
"""

import http.server
import json
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6 import BINARY_ENV, K6Error, find_k6, run_k6, translate
from chaospika.loadengine.k6.segments import COUNTER_LINE, segment_flags, segment_source
from chaospika.loadengine.scenario import parse_spec

pytestmark = pytest.mark.timeout(120)


def _k6_available() -> bool:
    try:
        find_k6()
    except ScenarioError:
        return False
    return True


needs_k6 = pytest.mark.skipif(not _k6_available(), reason="k6 binary not installed")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests += 1
        query = parse_qs(urlparse(self.path).query)
        self.server.counters.extend(query.get("n", []))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that records each request's `n` query value."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.counters = []
    httpd.requests = 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _requests(server) -> int:
    return server.requests


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_port}/"


# -- no k6 needed ---------------------------------------------------------------------


def test_segment_flags_cut_the_test_in_equal_parts():
    assert segment_flags(0, 3) == [
        "--execution-segment",
        "0:1/3",
        "--execution-segment-sequence",
        "0,1/3,2/3,1",
    ]
    assert segment_flags(2, 3)[1] == "2/3:1"
    assert segment_flags(0, 1) == [
        "--execution-segment",
        "0:1",
        "--execution-segment-sequence",
        "0,1",
    ]


def test_each_segment_numbers_its_counter_apart():
    spec = {
        "engine": "k6",
        "segments": 3,
        "scenarios": {
            "s": {
                "executor": "shared-iterations",
                "vus": 2,
                "iterations": 4,
                "steps": [{"request": {"url": "http://127.0.0.1:1/?n={{counter}}"}}],
            }
        },
    }
    source = translate(spec).source
    assert source.count(COUNTER_LINE) == 1  # the prelude's line segments rewrite
    second = segment_source(source, 1, 3)
    assert COUNTER_LINE not in second
    assert "((pikaCount - 1) * 3 + 1) * PIKA_COUNTER_STRIDE + __VU" in second


@pytest.mark.parametrize("value", [0, 65, -1, 2.5, "3", True, None])
def test_segments_is_checked(value):
    spec = {
        "engine": "k6",
        "segments": value,
        "scenarios": {
            "s": {
                "executor": "shared-iterations",
                "steps": [{"request": {"url": "http://127.0.0.1:1/"}}],
            }
        },
    }
    with pytest.raises(ScenarioError) as error:
        parse_spec(spec)
    assert error.value.field == "segments"


def test_segments_needs_engine_k6():
    spec = {
        "segments": 2,
        "scenarios": {
            "s": {
                "executor": "shared-iterations",
                "steps": [{"request": {"url": "http://127.0.0.1:1/"}}],
            }
        },
    }
    with pytest.raises(ScenarioError, match="engine 'k6'") as error:
        parse_spec(spec)
    assert error.value.field == "segments"
    assert parse_spec({**spec, "engine": "k6"}).segments == 2


# -- on real k6 -----------------------------------------------------------------------


def _counted_spec(url: str, segments: int) -> dict:
    """30 iterations shared by 3 VUs; half of the checks fail; ~1.5 s."""
    return {
        "engine": "k6",
        "segments": segments,
        "scenarios": {
            "shared": {
                "executor": "shared-iterations",
                "vus": 3,
                "iterations": 30,
                "steps": [
                    {
                        "request": {"url": url + "?n={{counter}}"},
                        "checks": [{"status": 200}, {"status": 201}],
                    },
                    {"think": 0.15},
                ],
            }
        },
        "thresholds": {
            "http_reqs": ["count==30", "count>30"],
            "iterations": ["count>=30"],
            "checks": ["rate>0.4", "rate>0.6"],
            "http_req_failed": ["rate==0"],
            "http_req_duration": ["p(95)<10000", "max<0"],
        },
    }


@needs_k6
def test_three_segments_count_what_one_k6_run_counts(server):
    results = {}
    for segments in (1, 3):
        server.counters.clear()
        results[segments] = run_k6(_counted_spec(_url(server), segments))
        # {{counter}} is unique in the run, across the three processes too
        assert len(server.counters) == 30
        assert len(set(server.counters)) == 30
    one, three = results[1], results[3]
    for result in (one, three):
        metrics = result.summary_export["metrics"]
        assert metrics["http_reqs"]["count"] == 30
        assert metrics["iterations"]["count"] == 30
        assert (metrics["checks"]["passes"], metrics["checks"]["fails"]) == (30, 30)
        assert metrics["http_req_failed"]["value"] == 0
        assert metrics["vus_max"]["value"] == 3
        assert result.registry.metric("http_req_duration").count == 30
        assert result.scenarios["shared"]["completed"] == 30
    assert three.thresholds == one.thresholds
    assert three.thresholds == {
        "http_reqs": {"count==30": True, "count>30": False},
        "iterations": {"count>=30": True},
        "checks": {"rate>0.4": True, "rate>0.6": False},
        "http_req_failed": {"rate==0": True},
        "http_req_duration": {"p(95)<10000": True, "max<0": False},
    }
    assert one.thresholds_passed is three.thresholds_passed is False
    assert three.stopped_by is None and not three.aborted
    # the merged export is judged by our evaluator and has a single run's shape
    merged = three.summary_export["metrics"]
    assert merged["http_reqs"]["thresholds"] == {"count==30": False, "count>30": True}
    assert set(merged) == set(one.summary_export["metrics"])
    assert set(three.summary_export) == set(one.summary_export)
    # trends: every process's samples, percentiles exact over their union
    samples = sorted(three.registry.metric("http_req_duration").raw)
    assert len(samples) == 30
    position = 0.95 * 29  # k6: linear between the ranks around p * (n - 1)
    low = samples[int(position)]
    expected_p95 = low + (samples[int(position) + 1] - low) * (position % 1)
    trend = merged["http_req_duration"]
    assert trend["p(95)"] == pytest.approx(expected_p95, rel=1e-12)
    assert (trend["min"], trend["max"]) == (samples[0], samples[-1])
    assert trend["avg"] == pytest.approx(sum(samples) / 30, rel=1e-12)
    assert "http_reqs" in three.summary_text


@needs_k6
def test_arrival_rate_segments_start_what_one_k6_run_starts(server):
    # 4/s for 2.125 s: 9 starts (t = 0, 0.25 ... 2.0), half a period from the
    # end (an iteration due at exactly t = duration races k6's end: 20 or 21
    # for 10/s x 2 s on a loaded machine); segments stripe the same schedule
    counts = {}
    for segments in (1, 3):
        spec = {
            "engine": "k6",
            "segments": segments,
            "scenarios": {
                "steady": {
                    "executor": "constant-arrival-rate",
                    "rate": 4,
                    "duration": "2125ms",
                    "preAllocatedVUs": 3,
                    "steps": [{"request": {"url": _url(server)}}],
                }
            },
            "thresholds": {"http_reqs": ["count>=9", "count>9"]},
        }
        result = run_k6(spec)
        metrics = result.summary_export["metrics"]
        counts[segments] = (
            metrics["http_reqs"]["count"],
            metrics["iterations"]["count"],
            result.scenarios["steady"]["dropped"],
            result.thresholds,
        )
    assert counts[3] == counts[1]
    assert counts[1] == (9, 9, 0, {"http_reqs": {"count>=9": True, "count>9": False}})


@needs_k6
def test_abort_on_fail_is_judged_on_the_merged_samples(server):
    # 30/s over 3 processes: the merged count passes 20 after ~0.7 s, each
    # process's own after ~2 s; the check every 2 s stops all at the first one
    spec = {
        "engine": "k6",
        "segments": 3,
        "scenarios": {
            "steady": {
                "executor": "constant-arrival-rate",
                "rate": 30,
                "duration": "20s",
                "preAllocatedVUs": 3,
                "steps": [{"request": {"url": _url(server)}}],
            }
        },
        "thresholds": {"http_reqs": [{"threshold": "count<20", "abortOnFail": True}]},
    }
    started = time.monotonic()
    result = run_k6(spec)
    assert time.monotonic() - started < 10
    assert result.aborted and result.stopped_by == "threshold"
    assert result.thresholds == {"http_reqs": {"count<20": False}}
    assert 20 <= result.summary_export["metrics"]["http_reqs"]["count"] < 200


@needs_k6
def test_one_failing_segment_fails_the_run_and_stops_the_others(
    server, tmp_path, monkeypatch
):
    # the second segment's k6 exits 107 at once; the two others run real k6
    wrapper = tmp_path / "k6"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"--execution-segment 1/3:2/3 "*)\n'
        '  echo \'{"level":"error","msg":"segment broke"}\' >&2; exit 107;;\n'
        "esac\n"
        f'exec {find_k6()} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(BINARY_ENV, str(wrapper))
    spec = {
        "engine": "k6",
        "segments": 3,
        "scenarios": {
            "long": {
                "executor": "constant-vus",
                "vus": 3,
                "duration": "30s",
                "steps": [{"request": {"url": _url(server)}}, {"think": 0.1}],
            }
        },
    }
    started = time.monotonic()
    with pytest.raises(K6Error, match=r"segment 2/3 \(1/3:2/3\) failed") as error:
        run_k6(spec)
    assert "exit code 107" in str(error.value)
    assert "segment broke" in str(error.value)
    assert time.monotonic() - started < 15  # the two others got SIGINT


@needs_k6
def test_stop_event_stops_every_segment_with_live_summed_progress(server):
    stop = threading.Event()
    seen = []

    def on_progress(progress: dict) -> None:
        seen.append(progress)
        if progress["vus"] == 3:  # one VU in each of the three processes
            stop.set()

    spec = {
        "engine": "k6",
        "segments": 3,
        "scenarios": {
            "long": {
                "executor": "constant-vus",
                "vus": 3,
                "duration": "60s",
                "steps": [{"request": {"url": _url(server)}}, {"think": 0.2}],
            }
        },
    }
    started = time.monotonic()
    result = run_k6(spec, stop_event=stop, on_progress=on_progress)
    assert time.monotonic() - started < 20
    assert stop.is_set() and seen
    assert result.stopped_by == "stop_event" and not result.aborted
    metrics = result.summary_export["metrics"]
    assert metrics["vus_max"]["value"] == 3
    assert metrics["vus"]["max"] == 3
    completed = result.scenarios["long"]["completed"]
    assert metrics["iterations"]["count"] == completed > 0
    # each VU stopped in its think time may have sent one request more
    assert completed <= metrics["http_reqs"]["count"] <= completed + 3


@needs_k6
def test_ctrl_c_on_the_cli_stops_every_segment_exit_105_with_the_summary(
    server, tmp_path
):
    spec = {
        "engine": "k6",
        "segments": 3,
        "scenarios": {
            "long": {
                "executor": "constant-vus",
                "vus": 3,
                "duration": "60s",
                "steps": [{"request": {"url": _url(server)}}, {"think": 0.1}],
            }
        },
        "thresholds": {"http_reqs": ["count>0"]},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    export = tmp_path / "summary.json"
    chaospika = Path(sys.executable).parent / "chaospika"
    process = subprocess.Popen(
        [str(chaospika), "load", "run", str(path), "--quiet"]
        + ["--summary-export", str(export)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _requests(server) < 30:  # the three processes are running
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # every process past its first second: vus reported
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 105, err
    assert "http_reqs" in out
    metrics = json.loads(export.read_text())["metrics"]
    assert metrics["http_reqs"]["count"] >= 30
    assert metrics["vus_max"]["value"] == 3
    before = _requests(server)
    time.sleep(1.0)
    assert _requests(server) == before, "a k6 process still sends requests"
