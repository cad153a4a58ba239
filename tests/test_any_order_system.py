"""`experiments/worker-crash.json` judges a foreign order system by configuration alone.

Service B (tests/order_service_b) shares no code and no name with the sandbox: its
own routes, JSON fields, Redis keys, stream, group, tables and columns. The
experiment file is run unchanged; only `chaos run --var-file` or PIKA_* variables
point it at service B.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sandbox_fixtures import stop_process

from chaospika._ports import free_port, wait_for_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "worker-crash.json"
CHAOS = Path(sys.executable).with_name("chaos")
CHAOSPIKA = Path(sys.executable).with_name("chaospika")
WORKER_MODULE = "tests.order_service_b.worker"
INITIAL_STOCK = 600


# -- processes ---------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True if `pid` exists and has not exited (zombies count as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def runs_module(pid: int, module: str) -> bool:
    """True if `pid` is a `python -m module` process (so it is ours to stop)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return module in argv


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM `pid`, SIGKILL it after `timeout` seconds."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sent)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, redis.RedisError):
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not ready within {timeout} s")


def healthy(url: str) -> bool:
    """True when GET `url` answers 200."""
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture
def redis_b(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test on a free loopback port, no persistence."""
    port = free_port()
    folder = tmp_path / "redis-b"
    folder.mkdir()
    with open(folder / "redis.log", "ab") as log:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert wait_for_port("127.0.0.1", port, 10), "redis-server did not start"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, timeout=5.0)


@pytest.fixture
def service_b(
    redis_b: str, postgres_url: str, tmp_path: Path
) -> Iterator[Callable[..., dict]]:
    """Factory ``start(drop_every=0) -> system``: service B's API and worker.

    Every process is stopped by pid at the end, including a worker the
    experiment restarted (found through the pidfile).
    """
    folder = tmp_path / "service-b"
    folder.mkdir()
    pidfile = folder / "fulfiller.pid"
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    started: list[subprocess.Popen] = []

    def spawn(module: str, *args: str) -> subprocess.Popen:
        with open(folder / f"{module.rsplit('.', 1)[-1]}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        return process

    def start(drop_every: int = 0) -> dict:
        port = free_port()
        spawn(
            "tests.order_service_b.api",
            *("--port", str(port), "--redis-url", redis_b, "--dsn", dsn),
        )
        api_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(api_url + "/healthz"), 20, "service B API")
        spawn(
            WORKER_MODULE,
            *("--redis-url", redis_b, "--dsn", dsn, "--pidfile", str(pidfile)),
            *("--batch", "10", "--work-ms", "5", "--claim-idle-ms", "2000"),
            *("--drop-every", str(drop_every)),
        )
        client = redis.Redis.from_url(redis_b, decode_responses=True)
        try:
            wait_for(
                lambda: pidfile.exists() and client.xinfo_groups("shop:purchases"),
                20,
                "service B worker",
            )
        finally:
            client.close()
        return {
            "api_url": api_url,
            "redis_url": redis_b,
            "db_url": postgres_url,
            "dsn": dsn,
            "pidfile": str(pidfile),
            "worker_log": str(folder / "worker.log"),
        }

    yield start
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and alive(pid) and runs_module(pid, WORKER_MODULE):
        stop_pid(pid)  # the worker the experiment restarted
    for process in reversed(started):
        stop_process(process, timeout=5.0)


# -- the experiment --------------------------------------------------------------


def configuration(system: dict) -> dict[str, Any]:
    """Every configuration value of the experiment, pointed at service B."""
    return {
        "api_url": system["api_url"],
        "health_path": "/healthz",
        "orders_path": "/v2/purchases",
        "order_body": {"sku": "${product_id}", "buyer": "buyer-{{vu}}-{{iter}}"},
        "order_headers": {"X-Request-Id": "{{uuid}}"},
        "order_id_path": "$.id",
        "order_statuses": [201, 410],
        "skip_open_sale": False,
        "open_sale_method": "PUT",
        "open_sale_path": "/v2/inventory/${product_id}",
        "open_sale_body": {"quantity": "${initial_stock}"},
        "redis_url": system["redis_url"],
        "stream": "shop:purchases",
        "group": "fulfilment",
        "stream_id_field": "purchase_ref",
        "stock_key": "inv:{product_id}:left",
        "db_url": system["db_url"],
        "products_table": "b_stock",
        "product_id_column": "sku",
        "stock_column": "units_left",
        "initial_stock_column": "units_start",
        "orders_table": "b_purchases",
        "order_id_column": "ref",
        "order_product_column": "sku",
        "order_sequence_column": "seq",
        "worker_pidfile": system["pidfile"],
        "product_id": f"sku-{uuid.uuid4().hex[:10]}",
        "initial_stock": INITIAL_STOCK,
        # 20 buyers every 70 ms (~280 purchases/s) sell the 600 units in about
        # 2 s, then 2 s of 410s; the worker, 10 per batch at 5 ms each plus the
        # commit, stores under 200/s, so within a few batches it holds one while
        # more than 10 wait.
        "customers": 20,
        "think_time": "70ms",
        "load_duration": "4s",
        "worker_busy_for": "20ms",
        "worker_min_lag": 10,
        "worker_down_seconds": 2.0,
        "recovery_timeout": "30s",
        "drain_timeout": "15s",
    }


def as_env(settings: dict[str, Any]) -> dict[str, str]:
    """The same settings as the PIKA_* variables the experiment declares."""
    declared = json.loads(EXPERIMENT.read_text())["configuration"]
    env = {}
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, dict | list):
            text = json.dumps(value)
        else:
            text = str(value)
        env[declared[key]["key"]] = text
    return env


def run_chaos(
    tmp_path: Path, settings: dict[str, Any], use_var_file: bool
) -> tuple[dict, float]:
    """`chaos run` the unchanged experiment; return (journal, seconds taken).

    With `use_var_file` the settings go in ``vars.json`` (``--var-file``) and no
    PIKA_* variable is set; otherwise they are PIKA_* environment variables.
    """
    journal = tmp_path / "journal.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIKA_")}
    extra: list[str] = []
    if use_var_file:
        var_file = tmp_path / "vars.json"
        var_file.write_text(json.dumps({"configuration": settings}, indent=2))
        extra = ["--var-file", str(var_file)]
    else:
        env.update(as_env(settings))
    started = time.monotonic()
    finished = subprocess.run(
        [str(CHAOS), "--log-file", str(tmp_path / "chaos.log"), "run"]
        + ["--journal-path", str(journal), *extra, str(EXPERIMENT)],
        env=env,
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        check=False,
    )
    seconds = time.monotonic() - started
    assert journal.exists(), finished.stderr.decode(errors="replace")[-3000:]
    return json.loads(journal.read_text()), seconds


def verdict_code(tmp_path: Path) -> int:
    """Exit code of `chaospika verdict journal.json`."""
    done = subprocess.run(
        [str(CHAOSPIKA), "verdict", str(tmp_path / "journal.json")],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def probe_output(journal: dict, phase: str, name: str) -> Any:
    """Output of the steady-state probe `name` in `phase` (before/after)."""
    for probe in journal["steady_states"][phase]["probes"]:
        if probe["activity"]["name"] == name:
            return probe["output"]
    raise AssertionError(f"no probe {name} in the {phase} hypothesis")


def method_output(journal: dict, name: str) -> Any:
    """Output of the method activity `name`."""
    for run in journal["run"]:
        if run["activity"]["name"] == name:
            return run["output"]
    raise AssertionError(f"no activity {name} in the method")


def stored_refs(dsn: str, sku: str) -> list[str]:
    """Every purchase ref service B stored for `sku`, duplicates included."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT ref FROM b_purchases WHERE sku = %s", (sku,))
        return [ref for (ref,) in rows]


AFTER = "no-order-lost-stuck-duplicated-or-oversold"


def test_configuration_covers_every_setting_of_the_experiment(tmp_path: Path) -> None:
    system = {"api_url": "", "redis_url": "", "db_url": "", "pidfile": ""}
    declared = json.loads(EXPERIMENT.read_text())["configuration"]
    assert set(configuration(system)) == set(declared)


def test_healthy_service_b_passes_through_a_var_file(
    service_b: Callable[..., dict], tmp_path: Path
) -> None:
    system = service_b()
    settings = configuration(system)
    journal, seconds = run_chaos(tmp_path, settings, use_var_file=True)
    print(f"chaos run took {seconds:.1f} s")

    assert journal["status"] == "completed", journal["status"]
    assert journal["deviated"] is False, probe_output(journal, "after", AFTER)
    assert verdict_code(tmp_path) == 0
    kill = method_output(journal, "kill-inventory-worker")
    assert kill["killed"] is True
    assert method_output(journal, "worker-is-down") is False
    assert method_output(journal, "backlog-while-worker-is-down")["backlog"] > 0
    restart = method_output(journal, "restart-inventory-worker")
    assert restart["started"] is True and restart["pid"] != kill["pid"]
    assert method_output(journal, "recovery-time")["drained"] is True
    after = probe_output(journal, "after", AFTER)
    assert after["consistent"] is True, after["violations"]
    assert 0 < after["acknowledged_count"] == after["distinct_orders"]
    assert after["order_rows"] == after["distinct_orders"] <= INITIAL_STOCK
    acknowledged = set(
        method_output(journal, "customers-place-orders")["captures"]["order_id"]
    )
    assert set(stored_refs(system["dsn"], settings["product_id"])) == acknowledged
    if method_output(journal, "backlog-while-worker-is-down")["pending"]:
        # the dead consumer's batch was taken over by the restarted worker
        assert "claimed" in Path(system["worker_log"]).read_text()


def test_service_b_dropping_purchases_is_caught_and_named(
    service_b: Callable[..., dict], tmp_path: Path
) -> None:
    system = service_b(drop_every=7)
    settings = configuration(system)
    journal, seconds = run_chaos(tmp_path, settings, use_var_file=False)
    print(f"chaos run took {seconds:.1f} s")

    assert journal["deviated"] is True
    assert verdict_code(tmp_path) == 1
    assert method_output(journal, "kill-inventory-worker")["killed"] is True
    after = probe_output(journal, "after", AFTER)
    assert after["consistent"] is False
    lost = set(after["lost"])
    assert lost, after["violations"]
    acknowledged = set(
        method_output(journal, "customers-place-orders")["captures"]["order_id"]
    )
    assert lost <= acknowledged
    assert not lost & set(stored_refs(system["dsn"], settings["product_id"]))
    dropped = {
        line.rsplit("dropping purchase ", 1)[1].split()[0]
        for line in Path(system["worker_log"]).read_text().splitlines()
        if "dropping purchase " in line
    }
    assert lost <= dropped  # exactly the purchases the broken worker threw away
