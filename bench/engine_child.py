"""Run one load spec with chaospika's engine and print its numbers as one JSON line.

`python bench/engine_child.py '<spec JSON>'`; run.py starts it pinned to the
generator core so that its CPU is measured exactly like k6's and wrk's.
"""

import json
import resource
import sys

from chaospika.loadengine import run

TREND_STATS = ["avg", "med", "p(95)", "p(99)", "max"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(raw: str) -> None:
    spec = {**json.loads(raw), "summaryTrendStats": TREND_STATS}
    before = cpu_seconds()
    result = run(spec)
    run_cpu = cpu_seconds() - before
    registry = result.registry

    def count(name: str) -> float:
        return registry.stats(name)["count"]

    report = {
        "duration_s": result.duration_s,
        "run_cpu_s": run_cpu,
        "http_reqs": count("http_reqs"),
        "iterations": count("iterations"),
        "dropped_iterations": count("dropped_iterations"),
        "ws_msgs_sent": count("ws_msgs_sent"),
        "ws_msgs_received": count("ws_msgs_received"),
        "http_req_duration": registry.stats("http_req_duration", TREND_STATS),
        "http_req_failed": registry.stats("http_req_failed")["rate"],
        "checks": registry.stats("checks")["rate"],
        "vus_max": registry.stats("vus_max")["max"],
        "warnings": result.warnings,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
