"""The HTML report: self-contained, and showing what the journal says."""

import copy
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chaospika.cli import main
from chaospika.report.facts import facts
from chaospika.report.html import CSP, render_html

DATA = Path(__file__).parent / "data"


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of <style> blocks."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict]:
        return [
            found
            for name, found in self.tags
            if name == tag and all(found.get(k) == v for k, v in attrs.items())
        ]


@pytest.fixture(scope="module")
def passed() -> dict:
    return json.loads((DATA / "worker-crash-passed.json").read_text())


@pytest.fixture(scope="module")
def passed_page(passed) -> Elements:
    return Elements(render_html(passed))


def test_the_page_fetches_nothing(passed, passed_page):
    text = render_html(passed)
    meta = passed_page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert [m["content"] for m in meta] == [CSP]
    assert "default-src 'none'" in CSP
    for tag, attrs in passed_page.tags:
        assert not {"src", "href", "srcset", "data", "action"} & set(attrs), (
            tag,
            attrs,
        )
        assert tag not in ("script", "link", "iframe", "object", "embed", "img"), tag
    css = "".join(passed_page.styles)
    assert "url(" not in css and "@import" not in css
    assert "<script" not in text.lower()


def test_verdict_tables_and_timeline(passed, passed_page):
    badge = passed_page.find("span", id="verdict")
    assert badge and badge[0]["data-code"] == "0"
    text = render_html(passed)
    assert "PASSED · exit 0" in text
    assert passed_page.find("table", id="steady-state")
    bars = passed_page.find("rect", **{"class": "activity"})
    assert len(bars) == len(facts(passed)["activities"]) == 17
    for name in ("kill-inventory-worker", "recovery-time", "make-sure-the-worker-runs"):
        assert name in text
    assert passed_page.find("table", id="faults") and "process.kill" in text
    assert passed_page.find("table", id="ids")


def test_charts_are_drawn_with_the_fault_window_where_it_was(passed, passed_page):
    charts = {svg["data-chart"]: svg for svg in passed_page.find("svg")}
    assert {"rps", "p95_ms", "error_pct", "timeline"} <= set(charts)
    html = render_html(passed)
    for key in ("rps", "p95_ms", "error_pct"):
        chart = html.split(f'data-chart="{key}"', 1)[1].split("</svg>", 1)[0]
        chart_page = Elements("<svg " + chart)
        (path,) = chart_page.find("path", **{"class": "series"})
        assert path["d"].count("L") >= 5  # one point per second of a 6 s load
        (window,) = chart_page.find("rect", **{"class": "fault-window"})
        svg = charts[key]
        x0, x1 = float(svg["data-x0"]), float(svg["data-x1"])
        left, width = float(svg["data-left"]), float(svg["data-plot-width"])
        fault = passed["pika_faults"][0]
        expected = left + (fault["applied_at"] - x0) / (x1 - x0) * width
        assert float(window["x"]) == pytest.approx(expected, abs=0.02)
        in_force = fault["undone_at"] - fault["applied_at"]
        assert float(window["width"]) == pytest.approx(
            in_force / (x1 - x0) * width, abs=0.05
        )
    assert passed_page.find("p", **{"class": "nodata", "data-chart": "ws_p95_ms"})


def test_websocket_latency_is_charted_when_the_load_measured_it(passed):
    changed = copy.deepcopy(passed)
    metrics = changed["pika_series"]["orders"]["metrics"]
    metrics["ws_msg_latency"] = [
        {"t": p["t"], "count": 10, "avg": 3.0, "p(95)": 4.0 + i, "max": 9.0}
        for i, p in enumerate(metrics["http_reqs"])
    ]
    page = Elements(render_html(changed))
    (chart,) = [svg for svg in page.find("svg") if svg.get("data-chart") == "ws_p95_ms"]
    assert not page.find("p", **{"data-chart": "ws_p95_ms"})
    assert chart["aria-label"] == "WebSocket message latency p95"


def test_websocket_probe_runs_are_charted_as_their_p95_over_their_span(passed):
    changed = copy.deepcopy(passed)
    kill = next(
        r for r in changed["run"] if r["activity"]["name"] == "kill-inventory-worker"
    )
    output = {  # the shape of chaospika.ws.probes.message_latency's output
        "subscribers_count": 10,
        "latency_p95_ms": 42.5,
        "success_rate": 1.0,
        "thresholds": {"message_latency_ms": {"p(95)<5000": True}},
        "thresholds_passed": True,
    }
    changed["run"].append(
        {
            "activity": {"type": "probe", "name": "ws-latency"},
            "status": "succeeded",
            "start": kill["start"],
            "end": kill["end"],
            "output": output,
        }
    )
    found = facts(changed)
    assert [load["name"] for load in found["loads"]] == ["orders"]  # not a load
    (run,) = found["websocket"]
    assert (run["name"], run["p95_ms"]) == ("ws-latency", 42.5)
    page = Elements(render_html(changed))
    assert (
        len([svg for svg in page.find("svg") if svg.get("data-chart") == "ws_p95_ms"])
        == 1
    )
    html = render_html(changed).split('data-chart="ws_p95_ms"', 1)[1].split("</svg>")[0]
    (segment,) = Elements("<svg " + html).find(
        "path", **{"class": "series", "data-series": "WebSocket probes"}
    )
    assert segment["d"].count("L") == 1  # one flat segment: start to end of the run


def test_a_deviated_run_shows_its_lost_ids_and_what_failed():
    journal = json.loads((DATA / "worker-crash-lost.json").read_text())
    lost = facts(journal)["ids"]["lost"]
    text = render_html(journal)
    assert "DEVIATED · exit 1" in text
    assert Elements(text).find("table", id="failed-checks")
    ids_table = text.split("id='ids'", 1)[1].split("</table>", 1)[0]
    assert all(order_id in ids_table for order_id in lost)


def test_without_series_the_report_says_how_to_get_them(passed):
    changed = copy.deepcopy(passed)
    del changed["pika_series"]
    page = Elements(render_html(changed))
    assert page.find("p", id="no-series")
    assert [svg["data-chart"] for svg in page.find("svg")] == ["timeline"]


def test_journal_text_is_escaped(passed):
    changed = copy.deepcopy(passed)
    changed["run"][0]["activity"]["name"] = "<script>alert(1)</script>"
    changed["experiment"]["title"] = "<img src=x onerror=alert(1)>"
    text = render_html(changed)
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_command(tmp_path, capsys):
    out = tmp_path / "passed.html"
    assert main(["report", str(DATA / "worker-crash-passed.json"), "-o", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    broken = tmp_path / "journal.json"
    broken.write_text("{not json")
    assert main(["report", str(broken)]) == 1
    assert "cannot read the journal" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
    broken.write_text(json.dumps({"status": "completed"}))
    assert main(["report", str(broken)]) == 0  # a bare journal still gives a page
    assert (tmp_path / "report.html").exists()


def test_python_m_chaospika_report_still_prints_the_summary():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaospika.report",
            str(DATA / "worker-crash-lost.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "deviated: True" in done.stdout
    assert "BAD no-order-lost-stuck-duplicated-or-oversold" in done.stdout
