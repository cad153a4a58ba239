"""Helpers the end-to-end tests share: point `chaos run` at a sandbox, run it, judge it."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from chaospika.ledger import store

EXPERIMENT = (
    Path(__file__).resolve().parent.parent / "experiments" / "worker-crash.json"
)
CHAOS = Path(sys.executable).with_name("chaos")
CHAOSPIKA = Path(sys.executable).with_name("chaospika")


def sandbox_env(state: dict, **overrides: str) -> dict[str, str]:
    """The environment that points the experiment at `state`'s sandbox."""
    env = dict(
        os.environ,
        PIKA_API_URL=state["api_url"],
        PIKA_REDIS_URL=state["redis_url"],
        PIKA_DB_URL=state["db_url"],
        PIKA_WORKER_PIDFILE=state["pidfiles"]["worker"],
        PIKA_PRODUCT_ID=f"sale-{uuid.uuid4().hex[:8]}",
    )
    if state.get("proxy_url"):
        env["PIKA_PROXY_URL"] = state["proxy_url"]
        env["PIKA_PROXY_NAME"] = state.get("proxy_name", "redis")
        env["PIKA_WS_PROXIED_URL"] = state["proxied_ws_url"]
    env["PIKA_WS_URL"] = state["ws_url"]
    env.update(overrides)
    return env


def chaos_argv(folder: Path, experiment: Path, *options: str) -> list[str]:
    """`chaos run` with its log and journal in `folder`."""
    return [
        str(CHAOS),
        "--log-file",
        str(folder / "chaos.log"),
        "--no-version-check",
        "run",
        "--journal-path",
        str(folder / "journal.json"),
        *options,
        str(experiment),
    ]


def run_chaos(
    env: dict[str, str],
    folder: Path,
    experiment: Path = EXPERIMENT,
    *options: str,
    timeout: float = 240,
) -> dict:
    """Run `chaos run [options] experiment` to its end; return the journal."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        chaos_argv(folder, experiment, *options),
        env=env,
        cwd=folder,
        timeout=timeout,
        capture_output=True,
        check=False,
    )
    return json.loads((folder / "journal.json").read_text())


def verdict(journal_path: Path) -> int:
    """Exit code of `chaospika verdict` on a journal."""
    done = subprocess.run(
        [str(CHAOSPIKA), "verdict", str(journal_path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def ledger_files() -> list[str]:
    """The fault records in this test's ledger folder."""
    return sorted(n for n in os.listdir(store.ledger_dir()) if n.endswith(".json"))
