"""The report of a real worker-crash run, opened in Debian's headless Chromium.

Skipped only when Chromium is absent and CHAOSPIKA_REQUIRE_CHROMIUM is unset
(CI installs the `chromium` package and sets it). CHAOSPIKA_REPORT_SCREENSHOT,
when set, is where the screenshot of the report is also saved.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from chromium_cdp import Chromium, chromium_path

from chaospika.report.html import render_html
from chaospika.report.svg import COLORS, FAULT_FILL

DATA = Path(__file__).parent / "data"
SERIES = tuple(int(COLORS[0][i : i + 2], 16) for i in (1, 3, 5))
# the fault shading as painted: FAULT_FILL at 13 % over white
SHADE = tuple(
    round(255 + (int(FAULT_FILL[i : i + 2], 16) - 255) * 0.13) for i in (1, 3, 5)
)

CHART_BOXES = """[...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  return {chart: svg.dataset.chart, x: box.x + scrollX, y: box.y + scrollY,
          width: box.width, height: box.height,
          visible: getComputedStyle(svg).visibility === 'visible' && box.width > 0,
          drawn: [...svg.querySelectorAll('path.series')].reduce(
            (sum, path) => sum + path.getTotalLength(), 0)};
})"""


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        if os.environ.get("CHAOSPIKA_REQUIRE_CHROMIUM"):
            pytest.fail(
                "CHAOSPIKA_REQUIRE_CHROMIUM is set but Chromium is not installed"
            )
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    with Chromium() as opened:
        yield opened


def write_report(folder: Path, name: str, html: str) -> str:
    path = folder / name
    path.write_text(html)
    return path.as_uri()


def test_the_worker_crash_report_draws_its_charts_and_fetches_nothing(
    browser, tmp_path
):
    journal = json.loads((DATA / "worker-crash-passed.json").read_text())
    url = write_report(tmp_path, "report.html", render_html(journal))
    page = browser.open(url)
    (tmp_path / "report.png").write_bytes(page.png)
    if os.environ.get("CHAOSPIKA_REPORT_SCREENSHOT"):
        shutil.copy(tmp_path / "report.png", os.environ["CHAOSPIKA_REPORT_SCREENSHOT"])

    assert page.requests == [url]  # the file itself, nothing else
    assert page.failed == {}
    assert page.png.startswith(b"\x89PNG") and page.height > 2000
    assert page.evaluate("document.getElementById('verdict').textContent") == (
        "PASSED · exit 0"
    )
    boxes = page.evaluate(CHART_BOXES)
    assert [box["chart"] for box in boxes] == ["rps", "p95_ms", "error_pct", "timeline"]
    for box in boxes:
        assert (
            box["visible"] and box["x"] >= 0 and box["x"] + box["width"] <= page.width
        )
    counts = browser.count_colors(page.png, boxes, {"series": SERIES, "shade": SHADE})
    print(counts)
    for box, count in zip(boxes, counts, strict=True):
        if box["chart"] == "timeline":
            continue
        # a 2 px line across the load's seconds, and the worker's down time shaded
        assert box["drawn"] > 200, box
        assert count["series"] > 300, (box["chart"], count)
        assert count["shade"] > 5000, (box["chart"], count)
    assert page.evaluate("document.querySelectorAll('rect.activity').length") == 17


def test_the_checks_see_requests_and_empty_pages(browser, tmp_path):
    journal = json.loads((DATA / "worker-crash-passed.json").read_text())
    html = render_html(journal)
    outside = '<img src="http://chart-library.invalid/chart.png">'
    injected = html.replace("<main>", "<main>" + outside, 1)
    page = browser.open(
        write_report(tmp_path, "with-csp.html", injected), screenshot=False
    )
    assert "http://chart-library.invalid/chart.png" in page.requests
    assert page.failed == {"http://chart-library.invalid/chart.png": "csp"}

    del journal["pika_series"]
    page = browser.open(
        write_report(tmp_path, "empty.html", render_html(journal)), screenshot=False
    )
    boxes = [b for b in page.evaluate(CHART_BOXES) if b["chart"] != "timeline"]
    assert boxes == []
    assert page.evaluate("document.getElementById('no-series') !== null")
