"""Benchmarks of chaospika's load engine against k6 and wrk (not part of the tests).

    python bench/run.py [--only NAME[,NAME]] [--seconds N] [--rounds N] [--json PATH]

Servers run on core 0, generators on core 1; every child is bounded in time and
stopped by its pid. Prints Markdown: machine notes, one table per benchmark,
then every target with MET / NOT MET. See bench/README.md.
"""

import argparse
import compileall
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

from peers import k6_binary
from procs import GENERATOR_CORE
from report import Section, render, verdict
from suites import ROUNDED, ROUNDS, SUITES

DEFAULT_SECONDS = 10.0
MAX_SECONDS = 60.0
MAX_ROUNDS = 9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(SUITES),
        help=f"comma-separated benchmarks among {', '.join(SUITES)} (default: all)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"duration of every generator run (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"rounds of the CPU benchmarks {', '.join(ROUNDED)}: each generator "
        f"runs once per round, judged on the median ratio (default {ROUNDS})",
    )
    parser.add_argument("--json", help="also write every run's raw numbers here")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in SUITES]
    if unknown or not args.only:
        parser.error(f"--only: unknown {unknown}; expected some of {', '.join(SUITES)}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    if not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be between 1 and {MAX_SECONDS:g}")
    return args


def _command(argv: list[str]) -> str:
    """stdout + stderr of a short command ('' if it cannot run)."""
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def _first_line(argv: list[str]) -> str:
    return (_command(argv).strip().splitlines() or ["unavailable"])[0]


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _core_times() -> dict[str, tuple[float, float]]:
    """Per core: (busy seconds, steal seconds) since boot, from /proc/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    with open("/proc/stat") as handle:
        for line in handle:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, fields[:8]
            )
            busy = user + nice + system + irq + softirq
            times[name.removeprefix("cpu")] = (busy / tick, steal / tick)
    return times


def _process_cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds used so far and command line of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    usage = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            fields = stat.rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if not command.strip():  # a kernel thread
                command = f"[{stat.split('(', 1)[1].rsplit(')', 1)[0]}]"
        except OSError:
            continue
        usage[int(entry)] = ((int(fields[11]) + int(fields[12])) / tick, command)
    return usage


def _busiest(count: int = 6, window: float = 2.0) -> list[str]:
    """The processes that used the most CPU over the next `window` seconds."""
    before = _process_cpu()
    time.sleep(window)
    after = _process_cpu()
    used = [
        (cpu - before[pid][0], pid, command)
        for pid, (cpu, command) in after.items()
        if pid in before and pid != os.getpid()
    ]
    used.sort(reverse=True)
    return [
        f"{pid} {share / window * 100:.0f}% {command.strip()[:120]}"
        for share, pid, command in used[:count]
        if share >= 0.01 * window
    ] or ["none above 1% of a core"]


def machine_notes() -> list[str]:
    import uvloop

    python = f"{sys.version.split()[0]} ({sys.executable})"
    pinning = "servers on core 0 (taskset -c 0), generators on core 1 (taskset -c 1)"
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"host: {platform.platform()}, {os.cpu_count()} CPUs ({_cpu_model()})",
        f"python: {python}, uvloop {uvloop.__version__}",
        f"k6: {_first_line([k6_binary() or 'k6', 'version'])}",
        f"nginx: {_first_line(['nginx', '-v'])}",
        f"wrk: {_first_line(['wrk', '--version'])}",
        f"pinning: {pinning}",
        f"load average at start (1/5/15 min): {_load()}",
    ]


def compile_package() -> str:
    """Compile chaospika's modules to .pyc, as installing the package does.

    Without it, a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles every
    module from source at each engine start, a cost no installed package pays.
    """
    import chaospika

    folder = os.path.dirname(chaospika.__file__)
    compiled = compileall.compile_dir(folder, quiet=1)
    return (
        f"bytecode: {folder} compiled to .pyc first ({'ok' if compiled else 'failed'})"
    )


def run_suite(name: str, seconds: float, rounds: int = ROUNDS) -> Section:
    """Run one benchmark; note how busy each core was meanwhile."""
    load, cores, began = _load(), _core_times(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"chaospika-bench-{name}-") as workdir:
        extra = {"rounds": rounds} if name in ROUNDED else {}
        section = SUITES[name](seconds, workdir, **extra)
    wall = time.monotonic() - began
    section.add_run_notes()
    section.load = f"{load} / {_load()}"
    after = _core_times()
    generators = sum(run.cpu_s for run in section.runs)
    for core, (busy, steal) in sorted(after.items()):
        busy, steal = busy - cores[core][0], steal - cores[core][1]
        text = f"core {core} busy {busy / wall:.0%} of {wall:.0f} s"
        if core == GENERATOR_CORE:
            others = max(0.0, busy - generators)
            text += f" ({others:.1f} s not by the generators: other work)"
        if steal:
            text += f", steal {steal:.1f} s"
        section.notes.append(text)
    return section


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"## chaospika load engine benchmarks ({args.seconds:g} s per run; "
        f"{args.rounds} round(s) of {', '.join(ROUNDED)})\n"
    )
    print("\n".join(f"- {note}" for note in [*machine_notes(), compile_package()]))
    print("- busiest processes over 2 s at start (pid, share of one core, command):")
    print("\n".join(f"  - `{line}`" for line in _busiest()))
    print(flush=True)
    sections = []
    for name in args.only:
        section = run_suite(name, args.seconds, args.rounds)
        sections.append(section)
        print(render(section), flush=True)
    print("### Targets\n")
    print("| benchmark | target | result | detail |")
    print("|---|---|---|---|")
    for section in sections:
        for target in section.targets:
            cells = [section.name, target.goal, verdict(target.met), target.detail]
            print("| " + " | ".join(cells) + " |")
    print(f"\nload average at end: {_load()}")
    if args.json:
        raw = {
            section.name: [
                {**asdict(run), "measured": {**asdict(run.measured), "stdout": ""}}
                for run in section.runs
            ]
            for section in sections
        }
        with open(args.json, "w") as handle:
            json.dump(raw, handle, indent=2)
    return 0 if all(run.ok for s in sections for run in s.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
