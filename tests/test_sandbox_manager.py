"""`chaospika sandbox up|down|status|reset` through the real CLI and the Python API."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
import sandbox_fixtures
from sandbox_fixtures import pid_alive, wait_until
from sqlalchemy import create_engine, func, inspect, select, text

from chaospika import _proc
from chaospika._ports import free_port
from chaospika.process.actions import kill_process, start_process
from chaospika.sandbox import manager
from chaospika.sandbox.bugs import KNOWN_BUGS, parse_bugs

make_sandbox = sandbox_fixtures.make_sandbox  # fixture

SCRIPT = os.path.join(os.path.dirname(sys.executable), "chaospika")
CLI = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "chaospika.cli"]


def cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `chaospika <args>` and return the finished process (text output)."""
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def http(method: str, url: str, body: dict | None = None, key: str | None = None):
    """One HTTP request without proxies; return (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=10) as response:
        return response.status, json.loads(response.read())


def pids(folder) -> dict:
    return {
        name: int((folder / f"{name}.pid").read_text())
        for name in ("redis", "api", "worker")
    }


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def cli_sandbox(tmp_path):
    """(folder, `up` options on free ports); the sandbox is always stopped after."""
    folder = tmp_path / "sb"
    api_port, redis_port = free_port(), free_port()
    options = ["--dir", folder, "--api-port", api_port, "--redis-port", redis_port]
    yield folder, options
    started = [
        manager.service_running(str(folder), name)[0] for name in manager.SERVICES
    ]
    manager.down(str(folder))
    assert not [pid for pid in started if pid and pid_alive(pid)]


def test_up_status_down_through_the_cli(cli_sandbox):
    folder, options = cli_sandbox
    api_port, redis_port = options[3], options[5]
    started = time.monotonic()
    up = cli("sandbox", "up", *options)
    elapsed = time.monotonic() - started

    assert up.returncode == 0, up.stderr
    assert elapsed < 10  # ~1.5 s on an idle machine; generous for loaded CI
    for text_shown in (
        f"http://127.0.0.1:{api_port}",
        f"ws://127.0.0.1:{api_port}/ws",
        f"redis://127.0.0.1:{redis_port}/0",
        f"sqlite:///{folder}/orders.db",
        "bugs    none",
        str(folder / "worker.pid"),
        str(folder / "api.log"),
    ):
        assert text_shown in up.stdout
    running = pids(folder)
    assert all(pid_alive(pid) for pid in running.values())
    state = json.loads((folder / "state.json").read_text())
    assert state["api_url"] == f"http://127.0.0.1:{api_port}"
    assert state["ws_url"] == f"ws://127.0.0.1:{api_port}/ws"
    assert state["redis_url"] == f"redis://127.0.0.1:{redis_port}/0"
    assert state["db_url"] == f"sqlite:///{folder}/orders.db"
    assert state["dir"] == str(folder) and state["bugs"] == []
    assert set(state["pidfiles"]) == set(state["logs"]) == {"redis", "api", "worker"}
    for name in ("api", "worker"):
        cmd = json.loads((folder / f"{name}.pid.cmd.json").read_text())
        assert set(cmd) == {"argv", "cwd", "env", "log", "inherit_env"}
        assert os.path.realpath(cmd["argv"][0]) == os.path.realpath(sys.executable)
        assert cmd["argv"][1:3] == ["-m", f"chaospika.sandbox.{name}"]
        assert cmd["log"] == str(folder / f"{name}.log")
        assert cmd["env"]["PYTHONUNBUFFERED"] == "1"
    redis_cmd = json.loads((folder / "redis.pid.cmd.json").read_text())
    assert str(redis_port) in redis_cmd["argv"] and redis_cmd["env"] == {}
    assert http("GET", f"http://127.0.0.1:{api_port}/health") == (200, {"status": "ok"})

    status = cli("sandbox", "status", "--dir", folder)
    assert status.returncode == 0 and "running" in status.stdout
    status_json = json.loads(cli("sandbox", "status", "--dir", folder, "--json").stdout)
    assert status_json["running"] is True
    assert {name: s["pid"] for name, s in status_json["services"].items()} == running

    again = cli("sandbox", "up", *options)
    assert again.returncode == 0
    assert f"sandbox already running at http://127.0.0.1:{api_port}" in again.stdout
    assert pids(folder) == running

    down = cli("sandbox", "down", "--dir", folder)
    assert down.returncode == 0 and "sandbox stopped" in down.stdout
    assert not any(pid_alive(pid) for pid in running.values())
    assert not list(folder.glob("*.pid"))
    assert port_free(int(api_port)) and port_free(int(redis_port))
    down_again = cli("sandbox", "down", "--dir", folder)
    assert down_again.returncode == 0
    assert "sandbox is not running" in down_again.stdout
    assert cli("sandbox", "status", "--dir", folder).returncode == 3


def test_up_restarts_only_the_stopped_service(cli_sandbox):
    folder, options = cli_sandbox
    assert cli("sandbox", "up", *options).returncode == 0
    before = pids(folder)
    os.kill(before["worker"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(before["worker"]))

    status = cli("sandbox", "status", "--dir", folder)
    assert status.returncode == 3
    assert "worker  stopped" in status.stdout

    up = cli("sandbox", "up", *options)
    assert up.returncode == 0, up.stderr
    assert "restarted worker" in up.stdout
    after = pids(folder)
    assert after["api"] == before["api"] and after["redis"] == before["redis"]
    assert after["worker"] != before["worker"] and pid_alive(after["worker"])
    assert cli("sandbox", "status", "--dir", folder).returncode == 0


def test_start_process_restarts_a_killed_worker_from_the_sandbox_record(
    make_sandbox, tmp_path
):
    state = make_sandbox(tmp_path)
    folder, pidfile = state["dir"], state["pidfiles"]["worker"]
    record_path = pidfile + ".cmd.json"
    assert state["cmdfiles"]["worker"] == record_path
    with open(record_path) as handle:
        record_text = handle.read()
    recorded = json.loads(record_text)
    assert recorded["argv"][:3] == [sys.executable, "-m", "chaospika.sandbox.worker"]
    old_pid = manager.service_running(folder, "worker")[0]

    killed = kill_process(pidfile)
    assert killed["pid"] == old_pid and killed["exited"] is True
    assert killed["recorded"] == record_path
    with open(record_path) as handle:
        assert handle.read() == record_text  # kept, not replaced by a snapshot
    assert cli("sandbox", "status", "--dir", folder).returncode == 3

    started = start_process(pidfile)

    new_pid = started["pid"]
    assert started["started"] is True and new_pid != old_pid
    assert started["argv"] == recorded["argv"] and started["log"] == recorded["log"]
    with open(f"/proc/{new_pid}/cmdline", "rb") as handle:
        argv = [part.decode() for part in handle.read().split(b"\0")[:-1]]
    assert argv == recorded["argv"]
    assert os.readlink(f"/proc/{new_pid}/cwd") == recorded["cwd"] == folder
    status = cli("sandbox", "status", "--dir", folder, "--json")
    assert status.returncode == 0, status.stdout
    worker = json.loads(status.stdout)["services"]["worker"]
    assert worker == {"pid": new_pid, "running": True, "pidfile": pidfile}


def test_start_recorded_starts_exactly_the_record(tmp_path):
    pidfile = str(tmp_path / "svc.pid")
    with pytest.raises(manager.SandboxError, match=r"svc\.pid\.cmd\.json"):
        manager.start_recorded(pidfile)
    assert not os.path.exists(pidfile)

    code = "import time; print('up', flush=True); time.sleep(30)"
    log = str(tmp_path / "svc.log")
    record = {"argv": [sys.executable, "-c", code], "cwd": str(tmp_path), "log": log}
    _proc.store_command(pidfile, {**record, "env": {"A": "1"}, "inherit_env": False})
    pid = manager.start_recorded(pidfile)
    try:
        assert int((tmp_path / "svc.pid").read_text()) == pid
        wait_until(lambda: "up" in (tmp_path / "svc.log").read_text())
        with open(f"/proc/{pid}/environ", "rb") as handle:
            assert handle.read() == b"A=1\0"
    finally:
        os.kill(pid, signal.SIGKILL)
        _proc.spawned(pid).wait(5)


def test_up_fails_cleanly_when_the_database_is_unreachable(cli_sandbox):
    folder, options = cli_sandbox
    bad_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    up = cli("sandbox", "up", *options, "--db-url", bad_db)

    assert up.returncode == 1
    assert "database" in up.stderr and bad_db in up.stderr
    assert not list(folder.glob("*.pid"))
    assert not (folder / "state.json").exists()
    assert port_free(int(options[5]))


def test_up_refuses_a_port_already_in_use(cli_sandbox):
    folder, options = cli_sandbox
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(options[3])))
        busy.listen()
        up = cli("sandbox", "up", *options)
    assert up.returncode == 1
    assert "already in use" in up.stderr
    assert not list(folder.glob("*.pid"))


def test_up_rejects_unknown_bugs():
    up = cli("sandbox", "up", "--bugs", "oversell,nope")
    assert up.returncode == 2
    assert "unknown bug(s) nope" in up.stderr
    assert all(bug in up.stderr for bug in KNOWN_BUGS)


def test_down_leaves_a_process_that_reused_the_pid_alone(tmp_path):
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        argv = [sys.executable, "-m", "chaospika.sandbox.api", "--port", "1"]
        cmd = {"argv": argv, "cwd": str(tmp_path), "env": {}, "log": "x"}
        (tmp_path / "api.pid.cmd.json").write_text(json.dumps(cmd))
        (tmp_path / "api.pid").write_text(f"{stranger.pid}\n")

        down = cli("sandbox", "down", "--dir", tmp_path)
        assert down.returncode == 0 and "sandbox is not running" in down.stdout
        assert stranger.poll() is None
        assert not (tmp_path / "api.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_dir_defaults_to_the_environment_variable(tmp_path):
    folder = tmp_path / "from-env"
    status = cli("sandbox", "status", env={"CHAOSPIKA_SANDBOX_DIR": str(folder)})
    assert status.returncode == 3
    assert str(folder) in status.stdout
    assert manager.sandbox_dir(None) == os.path.abspath(
        os.path.expanduser(
            os.environ.get("CHAOSPIKA_SANDBOX_DIR", "~/.chaospika/sandbox")
        )
    )


def test_orders_flow_to_sql_and_reset_empties_only_sandbox_data(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, work_ms=1)
    api = state["api_url"]
    client = redis.Redis.from_url(state["redis_url"], decode_responses=True)
    engine = create_engine(state["db_url"])
    client.set("not-the-sandbox:key", "kept")

    def order_rows() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()

    assert http("POST", f"{api}/products/p1/init", {"stock": 5})[0] == 200
    for _ in range(3):
        body = {"product_id": "p1", "user_id": "u"}
        assert http("POST", f"{api}/orders", body, key=uuid.uuid4().hex)[0] == 202
    wait_until(lambda: order_rows() == 3)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT stock FROM products")).scalar_one() == 2

    result = manager.reset(state["dir"])
    assert result["deleted_keys"] == 5  # stock:p1, 3 idem keys, the stream
    assert client.keys("stock:*") == [] and client.keys("idem:*") == []
    assert client.xlen("orders:stream") == 0
    assert client.xinfo_groups("orders:stream")[0]["name"] == "inventory"
    assert client.get("not-the-sandbox:key") == "kept"
    with engine.connect() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(text("products"))
            ).scalar_one()
            == 0
        )
    assert order_rows() == 0

    assert manager.status(state["dir"])["running"] is True
    assert http("POST", f"{api}/products/p1/init", {"stock": 1})[0] == 200
    body = {"product_id": "p1", "user_id": "u"}
    assert http("POST", f"{api}/orders", body, key="after-reset")[0] == 202
    wait_until(lambda: order_rows() == 1)
    assert cli("sandbox", "reset", "--dir", state["dir"]).returncode == 0
    client.close()
    engine.dispose()


def test_bugs_reach_the_services_and_the_schema(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path, bugs="oversell,non-idempotent-worker")
    assert state["bugs"] == ["non-idempotent-worker", "oversell"]
    folder = state["dir"]
    for name in ("api", "worker"):
        with open(f"{folder}/{name}.pid.cmd.json") as handle:
            argv = json.load(handle)["argv"]
        assert argv[argv.index("--bugs") + 1] == "non-idempotent-worker,oversell"
    buggy = inspect(create_engine(state["db_url"])).get_unique_constraints("orders")
    assert buggy == []

    correct = make_sandbox(tmp_path)
    unique = inspect(create_engine(correct["db_url"])).get_unique_constraints("orders")
    assert [c["column_names"] for c in unique] == [["order_id"]]


def test_reset_needs_a_sandbox(tmp_path):
    with pytest.raises(manager.SandboxError, match="not running"):
        manager.reset(str(tmp_path))
    assert cli("sandbox", "reset", "--dir", tmp_path).returncode == 1


def test_parse_bugs_validates_and_orders_names():
    assert parse_bugs(None) == () and parse_bugs("") == ()
    assert parse_bugs(" oversell , ack-before-commit,oversell") == (
        "ack-before-commit",
        "oversell",
    )
    assert parse_bugs(["non-idempotent-worker"]) == ("non-idempotent-worker",)
    with pytest.raises(ValueError, match="unknown bug.*nope.*known bugs: ack-before"):
        parse_bugs("nope")
    with pytest.raises(manager.SandboxError, match="unknown bug"):
        manager.up("/nonexistent/never-created", bugs=["nope"])


def test_external_redis_is_used_but_never_stopped_or_flushed(
    make_sandbox, tmp_path, redis_url, redis_conn
):
    redis_conn.set("someone-else:key", "kept")
    state = make_sandbox(tmp_path, redis_url=redis_url)

    assert state["redis_url"] == redis_url and state["redis_embedded"] is False
    assert set(state["pidfiles"]) == {"api", "worker"}
    assert not os.path.exists(os.path.join(state["dir"], "redis.pid"))
    assert redis_conn.xinfo_groups("orders:stream")[0]["name"] == "inventory"
    assert http("POST", f"{state['api_url']}/products/p1/init", {"stock": 2})[0] == 200

    manager.reset(state["dir"])
    manager.down(state["dir"])
    assert redis_conn.ping() is True
    assert redis_conn.get("someone-else:key") == "kept"
    assert redis_conn.get("stock:p1") is None


def test_up_restarts_a_killed_embedded_redis(make_sandbox, tmp_path):
    state = make_sandbox(tmp_path)
    folder = state["dir"]
    redis_pid = manager.service_running(folder, "redis")[0]
    os.kill(redis_pid, signal.SIGKILL)
    wait_until(lambda: http_status(f"{state['api_url']}/health") == 503)

    again = manager.up(folder)
    assert again["restarted"] == ["redis"] and again["already_running"] is False
    assert manager.service_running(folder, "redis")[0] != redis_pid
    assert http_status(f"{state['api_url']}/health") == 200
    assert http("POST", f"{state['api_url']}/products/p1/init", {"stock": 1})[0] == 200


def http_status(url: str) -> int:
    try:
        return http("GET", url)[0]
    except urllib.error.HTTPError as error:
        return error.code


def test_up_that_times_out_stops_everything_and_shows_the_logs(tmp_path):
    folder = str(tmp_path / "slow")
    api_port, redis_port = free_port(), free_port()
    with pytest.raises(manager.SandboxError, match="not ready after") as failure:
        manager.up(folder, api_port=api_port, redis_port=redis_port, timeout=0.001)

    assert f"--- last lines of {folder}/" in str(failure.value)
    assert not list((tmp_path / "slow").glob("*.pid"))
    assert not os.path.exists(os.path.join(folder, "state.json"))
    assert port_free(api_port) and port_free(redis_port)
    assert manager.status(folder)["running"] is False


def _sell_one(state: dict) -> None:
    api = state["api_url"]
    assert http("POST", f"{api}/products/p1/init", {"stock": 3})[0] == 200
    body = {"product_id": "p1", "user_id": "u"}
    assert http("POST", f"{api}/orders", body, key=uuid.uuid4().hex)[0] == 202
    engine = create_engine(state["db_url"])
    try:
        count = "SELECT COUNT(*) FROM orders"
        wait_until(lambda: engine.connect().execute(text(count)).scalar_one() == 1)
    finally:
        engine.dispose()


def test_up_after_down_wipes_what_the_old_sandbox_left_in_its_own_folder(
    make_sandbox, tmp_path
):
    """The embedded Redis starts empty, so old SQL rows could never agree with it."""
    state = make_sandbox(tmp_path, work_ms=1)
    _sell_one(state)
    manager.down(state["dir"])
    again = manager.up(
        state["dir"],
        bugs=("non-idempotent-worker",),
        api_port=state["api_port"],
        redis_port=state["redis_port"],
    )
    try:
        assert again["wiped"] is True
        engine = create_engine(again["db_url"])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM products")).scalar_one() == 0
        unique = inspect(engine).get_unique_constraints("orders")
        engine.dispose()
        assert unique == []  # the tables match the new bugs
    finally:
        manager.down(state["dir"])


def test_up_refuses_an_external_store_with_old_orders_until_reset(
    make_sandbox, tmp_path, redis_url, redis_conn
):
    state = make_sandbox(tmp_path, redis_url=redis_url, work_ms=1)
    _sell_one(state)
    manager.down(state["dir"])
    redis_conn.set("someone-else:key", "kept")

    done = cli("sandbox", "up", "--dir", state["dir"], "--redis-url", redis_url,
               "--api-port", str(state["api_port"]), "--db-url", state["db_url"])  # fmt: skip
    assert done.returncode == 1
    assert "chaospika sandbox up --reset" in done.stderr
    assert "1 orders rows" in done.stderr

    again = manager.up(
        state["dir"],
        redis_url=redis_url,
        api_port=state["api_port"],
        db_url=state["db_url"],
        reset=True,
    )
    try:
        assert again["wiped"] is True
        assert redis_conn.get("stock:p1") is None
        assert redis_conn.get("someone-else:key") == "kept"
    finally:
        manager.down(state["dir"])


def proxy_enabled(state: dict, enabled: bool) -> dict:
    """Enable or disable the sandbox's proxy `redis` through its Toxiproxy API."""
    url = f"{state['proxy_url']}/proxies/{state['proxy_name']}"
    return http("POST", url, {"enabled": enabled})[1]


def timed_status(method: str, url: str, body: dict | None = None, key=None):
    """(status, seconds) of one request, HTTP errors included."""
    started = time.monotonic()
    try:
        status = http(method, url, body, key)[0]
    except urllib.error.HTTPError as error:
        status = error.code
        assert error.headers["Retry-After"] == "1"
    return status, time.monotonic() - started


def test_up_with_the_proxy_puts_it_between_the_api_and_redis(cli_sandbox):
    folder, options = cli_sandbox
    proxy_port, proxy_redis_port, proxy_api_port = free_port(), free_port(), free_port()
    up = cli("sandbox", "up", *options, "--proxy", "--proxy-port", proxy_port,
             "--proxy-redis-port", proxy_redis_port,
             "--proxy-api-port", proxy_api_port)  # fmt: skip
    assert up.returncode == 0, up.stderr
    state = json.loads((folder / "state.json").read_text())
    redis_port = options[5]
    assert state["proxy_url"] == f"http://127.0.0.1:{proxy_port}"
    assert state["proxy_name"] == "redis"
    assert state["api_redis_url"] == f"redis://127.0.0.1:{proxy_redis_port}/0"
    assert state["redis_url"] == f"redis://127.0.0.1:{redis_port}/0"
    assert list(state["pidfiles"]) == ["redis", "proxy", "api", "worker"]
    assert json.loads((folder / "proxies.json").read_text()) == [
        {
            "name": "redis",
            "listen": f"127.0.0.1:{proxy_redis_port}",
            "upstream": f"127.0.0.1:{redis_port}",
            "enabled": True,
        },
        {
            "name": "api",
            "listen": f"127.0.0.1:{proxy_api_port}",
            "upstream": f"127.0.0.1:{options[3]}",
            "enabled": True,
        },
    ]
    assert state["proxied_ws_url"] == f"ws://127.0.0.1:{proxy_api_port}/ws"
    argv = {
        name: json.loads((folder / f"{name}.pid.cmd.json").read_text())["argv"]
        for name in ("proxy", "api", "worker")
    }
    assert argv["proxy"][1:] == ["-m", "chaospika.network.server", "--listen",
        f"127.0.0.1:{proxy_port}", "--config", str(folder / "proxies.json")]  # fmt: skip
    assert argv["api"][argv["api"].index("--redis-url") + 1] == state["api_redis_url"]
    assert argv["worker"][argv["worker"].index("--redis-url") + 1] == state["redis_url"]
    status = manager.status(str(folder))
    assert status["running"] is True and status["services"]["proxy"]["running"]
    assert status["proxy_url"] == state["proxy_url"]
    assert status["api_redis_url"] == state["api_redis_url"]
    shown = cli("sandbox", "status", "--dir", folder).stdout
    assert "proxy   running" in shown and state["api_redis_url"] in shown

    api = state["api_url"]
    assert http("POST", f"{api}/products/p1/init", {"stock": 10})[0] == 200
    # The proxy 'api' relays clients to the API.
    assert http_status(f"{state['proxied_api_url']}/health") == 200
    order = {"product_id": "p1", "user_id": "u"}
    # Connections reset and the port refused: fast 503s, then back on its own.
    assert proxy_enabled(state, False)["enabled"] is False
    for path, body in (("/health", None), ("/orders", order), ("/health", None)):
        method = "POST" if body else "GET"
        status_code, seconds = timed_status(method, api + path, body, key="k1")
        assert status_code == 503 and seconds < 2.5
    proxy_enabled(state, True)
    wait_until(lambda: http_status(f"{api}/health") == 200, timeout=10)
    assert http("POST", f"{api}/orders", order, key="k1")[0] == 202

    # Paused through the proxy: the refused orders never run afterwards either.
    client = redis.Redis.from_url(state["redis_url"], decode_responses=True)
    client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
    results = [
        timed_status("POST", f"{api}/orders", order, key=f"p{n}") for n in range(3)
    ]
    assert all(code == 503 and seconds < 2.5 for code, seconds in results), results
    wait_until(lambda: http_status(f"{api}/health") == 200, timeout=15)
    time.sleep(0.2)
    assert client.get("stock:p1") == "9"
    assert [client.exists(f"idem:p{n}") for n in range(3)] == [0, 0, 0]
    client.close()

    again = cli("sandbox", "up", *options)
    assert again.returncode == 1 and "already runs with the proxy" in again.stderr
    assert manager.down(str(folder))["stopped"] == ["api", "worker", "proxy", "redis"]
    assert port_free(proxy_port) and port_free(proxy_redis_port)
    assert port_free(proxy_api_port)
