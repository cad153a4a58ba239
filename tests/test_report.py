"""The journal report prints the verdict, each probe and the method's key numbers."""

from chaospika.report import summarize

JOURNAL = {
    "experiment": {"title": "t"},
    "status": "completed",
    "deviated": True,
    "duration": 3.2,
    "steady_states": {
        "before": {"steady_state_met": True, "probes": []},
        "after": {
            "steady_state_met": False,
            "probes": [
                {
                    "activity": {"name": "consistent"},
                    "tolerance_met": False,
                    "output": {"consistent": False, "lost": ["o7"], "lost_count": 1},
                }
            ],
        },
    },
    "run": [
        {
            "activity": {"name": "load"},
            "status": "succeeded",
            "output": {
                "thresholds_passed": False,
                "metrics": {
                    "http_reqs": {"count": 9},
                    "http_req_failed": {"passes": 2},
                },
                "captures": {"order_id": ["o1", "o7"]},
            },
        },
        {"activity": {"name": "kill"}, "status": "failed", "exception": ["boom\n"]},
    ],
    "rollbacks": [],
}


def test_summary_names_the_offending_ids_and_the_load_verdict():
    text = "\n".join(summarize(JOURNAL))
    assert "status: completed   deviated: True" in text
    assert (
        'BAD consistent: {"consistent": false, "lost_count": 1, "lost": ["o7"]}' in text
    )
    assert '"thresholds_passed": false, "requests": 9, "failed": 2' in text
    assert '"captured": {"order_id": 2}' in text
    assert "[failed] kill" in text
