"""Custom metrics declared in the spec: thresholds on them, exec functions feeding them."""

import sys
import textwrap

import pytest

from chaospika.loadengine import run
from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.k6 import translate
from chaospika.loadengine.scenario import parse_spec

EXEC_MODULE = """
async def like(vu):
    vu.registry.add("likes_sent", 1, {"scenario": vu.scenario})
    vu.registry.add("like_ok", vu.iteration % 2 == 0, {"scenario": vu.scenario})
"""


def spec(thresholds: dict) -> dict:
    return {
        "metrics": {
            "likes_sent": "counter",
            "like_ok": {"type": "rate"},
            "think_ms": {"type": "trend", "isTime": True},
        },
        "scenarios": {
            "likes": {
                "executor": "per-vu-iterations",
                "vus": 2,
                "iterations": 5,
                "exec": "pika_likes:like",
            }
        },
        "thresholds": thresholds,
    }


@pytest.fixture
def exec_module(tmp_path, monkeypatch):
    (tmp_path / "pika_likes.py").write_text(textwrap.dedent(EXEC_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("pika_likes", None)


def test_thresholds_judge_custom_metrics_fed_by_exec(exec_module):
    result = run(spec({"likes_sent": ["count==10"], "like_ok": ["rate==0.6"]}))
    assert result.thresholds == {
        "likes_sent": {"count==10": True},
        "like_ok": {"rate==0.6": True},
    }
    failing = run(spec({"likes_sent": ["count>10"]}))
    assert failing.thresholds_passed is False


@pytest.mark.parametrize(
    "declared, field",
    [
        ([], "metrics"),
        ({"x1": "histogram"}, "metrics.x1"),
        ({"bad name": "counter"}, "metrics"),
        ({"t1": {"type": "trend", "isTime": "yes"}}, "metrics.t1.isTime"),
        ({"t1": {"type": "trend", "unit": "ms"}}, "metrics.t1.unit"),
        ({"http_reqs": "trend"}, "metrics.http_reqs"),
    ],
)
def test_bad_declarations_name_the_field(declared, field):
    with pytest.raises(ScenarioError) as caught:
        parse_spec({"metrics": declared, "scenarios": {}})
    assert caught.value.field == field


def test_k6_scripts_declare_the_custom_metrics():
    raw = {
        "engine": "k6",
        "metrics": {
            "likes_sent": "counter",
            "think_ms": {"type": "trend", "isTime": True},
        },
        "scenarios": {
            "s": {
                "executor": "shared-iterations",
                "iterations": 1,
                "steps": [{"think": "1ms"}],
            }
        },
        "thresholds": {"likes_sent": ["count==0"]},
    }
    source = translate(raw).source
    assert 'new metrics.Counter("likes_sent")' in source
    assert 'new metrics.Trend("think_ms", true)' in source
