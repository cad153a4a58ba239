"""Catch rate of the sandbox experiments at their shipped settings.

For each case of an experiment (a healthy sandbox and each seeded bug it must
catch) it runs the experiment N times, each against a fresh sandbox on free
ports, judges the journal with `chaospika verdict`, and, where the case says so,
checks that a failing run names the offending order ids. Prints a Markdown
table. With --burn K, K CPU-burning processes run alongside (each bounded by the
whole run's length and stopped at the end, by pid).

    python bench/detection.py --runs 10
    python bench/detection.py --experiment redis-outage --runs 10 --burn 2
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaospika._ports import free_port
from chaospika.sandbox import manager
from chaospika.verdict.cli import read_verdict

ROOT = Path(__file__).resolve().parent.parent
CHAOS = Path(sys.executable).with_name("chaos")
CONSISTENCY = "no-order-lost-stuck-duplicated-or-oversold"


@dataclass(frozen=True)
class Experiment:
    """An experiment file, the sandbox it needs, and what each case must produce.

    `cases` maps a case ("healthy" or a seeded bug) to (verdict, ids key): a key
    names the list in the after-hypothesis consistency probe that must name the
    harm, with acknowledged order ids only.
    """

    file: str
    cases: dict[str, tuple[str, str | None]]
    sandbox: dict = field(default_factory=dict)
    consistency: str = CONSISTENCY


EXPERIMENTS = {
    "worker-crash": Experiment(
        "worker-crash.json",
        {
            "healthy": ("passed", None),
            "ack-before-commit": ("deviated", "lost"),
            "non-idempotent-worker": ("deviated", "duplicates"),
            "oversell": ("deviated", "oversold"),
            "no-claim": ("deviated", "stuck"),
        },
    ),
    "redis-outage": Experiment(
        "redis-outage.json",
        {"healthy": ("passed", None), "no-redis-timeout": ("deviated", None)},
        consistency="no-acknowledged-order-lost-and-none-unexpected",
    ),
    "redis-flush": Experiment(
        "redis-flush.json",
        {"healthy": ("passed", None), "stock-reseed": ("deviated", "oversold")},
    ),
    "api-redis-partition": Experiment(
        "api-redis-partition.json",
        {"healthy": ("passed", None)},
        sandbox={"proxy": True},
        consistency="no-acknowledged-order-lost-duplicated-or-oversold",
    ),
    "redis-latency": Experiment(
        "redis-latency.json", {"healthy": ("passed", None)}, sandbox={"proxy": True}
    ),
    "ws-chaos": Experiment(
        "ws-chaos.json",
        {"healthy": ("passed", None), "slow-subscriber": ("deviated", None)},
        sandbox={"proxy": True},
    ),
}
BURN_SECONDS_LIMIT = 4 * 3600


def after_probe(journal: dict, name: str) -> dict:
    """The output of the probe `name` in the hypothesis after the method."""
    after = (journal.get("steady_states") or {}).get("after") or {}
    for run in after.get("probes", []):
        if run["activity"]["name"] == name:
            return run.get("output") or {}
    return {}


def acknowledged(journal: dict) -> set[str]:
    for run in journal.get("run", []):
        if run["activity"]["name"] == "customers-place-orders":
            return set(
                ((run.get("output") or {}).get("captures") or {}).get("order_id", [])
            )
    return set()


def sandbox_env(state: dict) -> dict[str, str]:
    """The PIKA_* variables that point an experiment at the sandbox of `state`."""
    env = dict(
        os.environ,
        PIKA_API_URL=state["api_url"],
        PIKA_REDIS_URL=state["redis_url"],
        PIKA_DB_URL=state["db_url"],
        PIKA_WORKER_PIDFILE=state["pidfiles"]["worker"],
    )
    if state["pidfiles"].get("redis"):
        env["PIKA_REDIS_PIDFILE"] = state["pidfiles"]["redis"]
    if state.get("proxy_url"):
        env["PIKA_PROXY_URL"] = state["proxy_url"]
        env["PIKA_PROXY_NAME"] = state.get("proxy_name", "redis")
        env["PIKA_WS_PROXIED_URL"] = state["proxied_ws_url"]
    env["PIKA_WS_URL"] = state["ws_url"]
    return env


def run_once(experiment: Experiment, case: str, folder: Path) -> dict:
    """Run the experiment once on a fresh sandbox; return what was seen."""
    bugs = () if case == "healthy" else (case,)
    ports = {"api_port": free_port(), "redis_port": free_port()}
    if experiment.sandbox.get("proxy"):
        ports.update(
            proxy_port=free_port(),
            proxy_redis_port=free_port(),
            proxy_api_port=free_port(),
        )
    state = manager.up(
        str(folder / "sandbox"), bugs=bugs, **ports, **experiment.sandbox
    )
    journal_path = folder / "journal.json"
    env = sandbox_env(state)
    started = time.monotonic()
    try:
        subprocess.run(
            [str(CHAOS), "--log-file", str(folder / "chaos.log"),
             "--no-version-check", "run", "--journal-path", str(journal_path),
             str(ROOT / "experiments" / experiment.file)],
            env=env, cwd=folder, timeout=600, capture_output=True, check=False,
        )  # fmt: skip
    finally:
        manager.down(state["dir"])
    seconds = time.monotonic() - started
    verdict = read_verdict(str(journal_path))
    journal = json.loads(journal_path.read_text()) if journal_path.exists() else {}
    probe = after_probe(journal, experiment.consistency)
    expected_outcome, key = experiment.cases[case]
    named = list(probe.get(key) or []) if key else []
    named_ok = key is None or (bool(named) and set(named) <= acknowledged(journal))
    return {
        "outcome": verdict.outcome,
        "caught": verdict.outcome == expected_outcome and named_ok,
        "named": len(named),
        "seconds": seconds,
    }


def start_burners(count: int) -> list[subprocess.Popen]:
    """CPU-burning children, each ending by itself after BURN_SECONDS_LIMIT."""
    code = f"import time\nend=time.time()+{BURN_SECONDS_LIMIT}\nwhile time.time()<end: pass"
    return [
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        for _ in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", choices=sorted(EXPERIMENTS), default="worker-crash"
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per case")
    parser.add_argument("--burn", type=int, default=0, help="CPU burners alongside")
    parser.add_argument("--cases", help="comma-separated (default: all of them)")
    args = parser.parse_args(argv)
    experiment = EXPERIMENTS[args.experiment]
    known = list(experiment.cases)
    cases = [c.strip() for c in (args.cases or ",".join(known)).split(",") if c.strip()]
    unknown = [case for case in cases if case not in known]
    if unknown or args.runs < 1 or args.burn < 0:
        parser.error(f"unknown cases {unknown}; known: {', '.join(known)}")
    # SIGTERM ends the run like Ctrl-C: sandboxes and burners are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    burners = start_burners(args.burn)
    rows = []
    try:
        for case in cases:
            results = []
            for number in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="pika-detect-") as tmp:
                    result = run_once(experiment, case, Path(tmp))
                results.append(result)
                print(
                    f"{case} run {number + 1}/{args.runs}: {result['outcome']}, "
                    f"{result['named']} ids named, {result['seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append((case, results))
    finally:
        for burner in burners:
            burner.send_signal(signal.SIGKILL)
            burner.wait()
    expect = {"healthy": "passes"}
    print(
        f"\n{experiment.file} at its shipped settings, "
        f"{args.burn} CPU burners alongside"
    )
    print("| case | expected | caught / runs | ids named (min-max) | seconds per run |")
    print("|---|---|---|---|---|")
    for case, results in rows:
        caught = sum(result["caught"] for result in results)
        named = [result["named"] for result in results]
        seconds = [result["seconds"] for result in results]
        outcome, key = experiment.cases[case]
        wanted = expect.get(case, outcome + (f", names {key}" if key else ""))
        print(
            f"| {case} | {wanted} | {caught}/{len(results)} | "
            f"{min(named)}-{max(named)} | {min(seconds):.0f}-{max(seconds):.0f} |"
        )
    return 0 if all(all(r["caught"] for r in results) for _, results in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
