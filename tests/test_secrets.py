"""No password in journals, logs or errors; credentials from Chaos Toolkit secrets."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from chaoslib.exceptions import ActivityFailed
from sandbox_fixtures import stop_process

from chaospika import _secrets
from chaospika._clients import redis_client, sql_engine
from chaospika._ports import free_port, wait_for_port
from chaospika._secrets import (
    MASK,
    RedactingFilter,
    install_log_filter,
    redact,
    redact_argv,
    redact_env,
    redact_text,
    redact_url,
    register_secrets,
    secret_lookup,
    secret_values,
)
from chaospika.redis import probes as redis_probes
from chaospika.sandbox.redis_server import redis_command

CHAOS = Path(sys.executable).with_name("chaos")
PASSWORD = "S3cr3t-xyz"


@pytest.fixture(autouse=True)
def _no_registered_secrets():
    """Each test starts and ends with no registered secret values."""
    _secrets.forget_secrets()
    yield
    _secrets.forget_secrets()


@pytest.fixture
def auth_redis(tmp_path):
    """A Redis server requiring PASSWORD on a free port; yields its URL without it."""
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    with open(folder / "redis.log", "ab") as log:
        process = subprocess.Popen(
            [*redis_command(port, str(folder)), "--requirepass", PASSWORD],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        assert wait_for_port("127.0.0.1", port, 10), "redis-server did not listen"
        client = redis.Redis(port=port, password=PASSWORD, decode_responses=True)
        client.xgroup_create("orders:stream", "inventory", id="0", mkstream=True)
        for number in range(3):
            client.xadd("orders:stream", {"order_id": f"o-{number}"})
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, timeout=5)


# --- redact functions -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw-1@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://user:p@ss@host:6379/0", "redis://user:***@host:6379/0"),
        (
            "postgresql+psycopg://postgres:Wr0ngPw@127.0.0.1:5432/db",
            "postgresql+psycopg://postgres:***@127.0.0.1:5432/db",
        ),
        (
            "https://h/x?user=a&password=hunter22&api_key=k#top",
            "https://h/x?user=a&password=***&api_key=***#top",
        ),
        ("redis//:pw-1@127.0.0.1:1/0", "redis//:***@127.0.0.1:1/0"),  # typo
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("https://host/path?email=a@b.example", "https://host/path?email=a@b.example"),
        ("sqlite:///tmp/orders.db", "sqlite:///tmp/orders.db"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_text_masks_urls_pairs_and_headers():
    text = (
        "got 'reddis://:pw-1@h:1/0'; password=hunter2 user=bob "
        '{"db_password": "x1", "n": 1} DB_TOKEN=\'a b\' '
        "Authorization: Bearer abcdefgh12345 "
        "curl -H 'Authorization: Basic dXNlcjpwYXNz' "
        "redis-server --requirepass pw-2 --port 1"
    )
    shown = redact_text(text)
    for secret in ("pw-1", "hunter2", "x1", "a b", "abcdefgh", "dXNlcj", "pw-2"):
        assert secret not in shown
    assert "reddis://:***@h:1/0" in shown
    assert "user=bob" in shown and '"n": 1' in shown and "--port 1" in shown
    # plain words are left alone
    plain = 'FATAL: password authentication failed for user "postgres"'
    assert redact_text(plain) == plain
    assert redact_text("invalid token provided") == "invalid token provided"
    listed = "['redis-server', '--requirepass', 'pw-3', '--port', '1']"
    assert (
        redact_text(listed) == "['redis-server', '--requirepass', '***', '--port', '1']"
    )
    source = "connected(redis_url, secrets=secrets) token=None"  # traceback lines
    assert redact_text(source) == source


def test_registered_secret_values_are_masked_everywhere():
    secrets = {"redis": {"redis_password": PASSWORD, "short": "on"}, "n": 12345}
    assert secret_values(secrets) == {PASSWORD, "12345"}  # too short: "on"
    assert redact_text(f"AUTH {PASSWORD}") == f"AUTH {PASSWORD}"
    register_secrets(secrets)
    assert redact_text(f"AUTH {PASSWORD} {PASSWORD}!") == "AUTH *** ***!"
    register_secrets({"x": "p@ss word"})
    assert redact_text("url p%40ss%20word and p%40ss+word") == "url *** and ***"
    assert redact_text("on and on") == "on and on"


def test_redact_argv_and_env():
    argv = [
        "redis-server",
        "--requirepass",
        "pw-1",
        "--masterauth=pw-2",
        "DB_PASSWORD=pw-3",
        "--redis-url",
        "redis://:pw-4@h:1/0",
        "--port",
        "6379",
    ]
    assert redact_argv(argv) == [
        "redis-server",
        "--requirepass",
        MASK,
        f"--masterauth={MASK}",
        f"DB_PASSWORD={MASK}",
        "--redis-url",
        "redis://:***@h:1/0",
        "--port",
        "6379",
    ]
    env = {
        "PGPASSWORD": "pw-1",
        "GITHUB_TOKEN": "pw-2",
        "AWS_SECRET_ACCESS_KEY": "pw-3",
        "MY_API_KEY": "pw-4",
        "GCP_CREDENTIALS": "pw-5",
        "DATABASE_URL": "postgresql://u:pw-6@h/db",
        "HOME": "/root",
        "EMPTY_PASSWORD": "",
    }
    assert redact_env(env) == {
        "PGPASSWORD": MASK,
        "GITHUB_TOKEN": MASK,
        "AWS_SECRET_ACCESS_KEY": MASK,
        "MY_API_KEY": MASK,
        "GCP_CREDENTIALS": MASK,
        "DATABASE_URL": "postgresql://u:***@h/db",
        "HOME": "/root",
        "EMPTY_PASSWORD": "",
    }
    assert redact_env(None) == {}


def test_redact_walks_activity_outputs():
    output = {
        "argv": ["app", "--password", "pw-1"],
        "env": {"token": "pw-2", "token_count": 5},
        "urls": ("redis://:pw-3@h/0",),
        "ok": True,
    }
    assert redact(output) == {
        "argv": ["app", "--password", MASK],
        "env": {"token": MASK, "token_count": 5},
        "urls": ("redis://:***@h/0",),
        "ok": True,
    }


def test_secret_lookup_in_any_scope():
    assert secret_lookup({"redis": {"redis_password": "a"}}, "redis_password") == "a"
    assert secret_lookup({"db_password": "b"}, "db_password") == "b"
    assert secret_lookup(None, "db_password") is None
    assert secret_lookup({"redis": {}}, "db_password") is None


# --- logging filter ----------------------------------------------------------


def test_log_filter_redacts_messages_args_and_tracebacks():
    logger = logging.getLogger("chaostoolkit.test_secrets")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    install_log_filter(logger.name)
    install_log_filter(logger.name)  # idempotent
    assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    register_secrets({"s": PASSWORD})
    try:
        logger.warning("url %s, %d tries", "redis://:pw-1@h:1/0", 3)
        logger.info("argv %s", ["--requirepass", "pw-2"])
        try:
            raise ValueError(f"bad {PASSWORD}")
        except ValueError:
            logger.exception("failed with %s", PASSWORD)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "redis://:***@h:1/0, 3 tries" in written
    assert "pw-1" not in written and "pw-2" not in written
    assert PASSWORD not in written
    assert "ValueError: bad ***" in written


def test_chaostoolkit_logger_is_filtered_after_import():
    import chaospika  # noqa: F401 - the import installs the filter

    logger = logging.getLogger("chaostoolkit")
    assert any(isinstance(f, RedactingFilter) for f in logger.filters)


# --- credentials from secrets, clean errors ----------------------------------


def test_redis_password_from_secrets(auth_redis):
    secrets = {"redis": {"redis_password": PASSWORD}}
    assert redis_probes.stream_length(auth_redis, "orders:stream", secrets=secrets) == 3
    flat = {"redis_password": PASSWORD}  # as chaoslib passes a provider's secrets
    backlog = redis_probes.queue_backlog(
        auth_redis, "orders:stream", "inventory", secrets=flat
    )
    assert backlog["backlog"] == 3
    with pytest.raises(ActivityFailed) as failed:
        redis_probes.stream_length(auth_redis, "orders:stream")
    assert "authenticated" in str(failed.value)
    # a password in the URL wins over the secret
    with_password = auth_redis.replace("redis://", f"redis://:{PASSWORD}@")
    client = redis_client(with_password, secrets={"redis_password": "wrong"})
    assert client.ping() is True
    client.close()


def test_mistyped_urls_fail_without_the_password():
    for url in (
        f"redis://:{PASSWORD}@127.0.0.1:1/0",  # nothing listens on port 1
        f"rediss//:{PASSWORD}@127.0.0.1:6379/0",
        f"redis://:{PASSWORD}@127.0.0.1:port/0",
    ):
        with pytest.raises(ActivityFailed) as failed:
            redis_probes.stream_length(url, "orders:stream")
        assert PASSWORD not in str(failed.value), failed.value
    for url in (f"postgresql//u:{PASSWORD}@h/db", f"nosuchdb://u:{PASSWORD}@h/db"):
        with pytest.raises(ActivityFailed) as failed:
            sql_engine(url)
        assert PASSWORD not in str(failed.value), failed.value


def test_db_password_from_secrets_fills_the_url():
    engine = sql_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/db",
        secrets={"db": {"db_password": "pw-1"}},
    )
    assert engine.url.password == "pw-1"
    assert "pw-1" not in redact_text(str(engine.url.render_as_string(False)))
    engine.dispose()


def test_sql_wrong_password_is_not_in_the_error(caplog):
    from chaospika.sql.probes import query_scalar

    url = "postgresql+psycopg://postgres:Wr0ngPw@127.0.0.1:5432/nope_db"
    caplog.set_level(logging.DEBUG, logger="chaostoolkit")
    with pytest.raises(ActivityFailed) as failed:
        query_scalar(url, "SELECT 1", timeout=5)
    assert "Wr0ngPw" not in str(failed.value)
    assert "Wr0ngPw" not in caplog.text


# --- a real chaos run ---------------------------------------------------------


def _probe(name: str, func: str, arguments: dict, secrets: bool = True) -> dict:
    provider = {
        "type": "python",
        "module": "chaospika.redis.probes",
        "func": func,
        "arguments": arguments,
    }
    if secrets:
        provider["secrets"] = ["redis"]
    return {"type": "probe", "name": name, "provider": provider}


def test_chaos_run_keeps_the_password_out_of_journal_and_log(auth_redis, tmp_path):
    port = auth_redis.rsplit(":", 1)[1].split("/")[0]
    length = _probe(
        "stream-length",
        "stream_length",
        {"redis_url": auth_redis, "stream": "orders:stream"},
    )
    length["tolerance"] = 3
    experiment = {
        "title": "secrets stay secret",
        "description": "Redis password from secrets; mistyped URLs fail cleanly.",
        "secrets": {
            "redis": {"redis_password": {"type": "env", "key": "TEST_REDIS_PASSWORD"}}
        },
        "steady-state-hypothesis": {"title": "stream is there", "probes": [length]},
        "method": [
            _probe(
                "backlog",
                "queue_backlog",
                {
                    "redis_url": auth_redis,
                    "stream": "orders:stream",
                    "group": "inventory",
                },
            ),
            _probe(
                "unreachable-url-with-password",
                "stream_length",
                {
                    "redis_url": "redis://:${redis_password}@127.0.0.1:1/0",
                    "stream": "orders:stream",
                },
            ),
            _probe(
                "mistyped-scheme-with-password",
                "stream_length",
                {
                    "redis_url": "rediss//:${redis_password}@127.0.0.1:" + port,
                    "stream": "orders:stream",
                },
                secrets=False,  # the password only reaches it by substitution
            ),
        ],
        "rollbacks": [],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment))
    journal, log = tmp_path / "journal.json", tmp_path / "chaos.log"
    done = subprocess.run(
        [
            str(CHAOS),
            "--no-version-check",
            "--verbose",
            "--settings",
            str(tmp_path / "settings.yaml"),
            "--log-file",
            str(log),
            "run",
            "--journal-path",
            str(journal),
            str(path),
        ],
        env=dict(os.environ, TEST_REDIS_PASSWORD=PASSWORD),
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    outputs = {}
    result = json.loads(journal.read_text())
    for run in result["run"]:
        outputs[run["activity"]["name"]] = run
    assert result["steady_states"]["before"]["steady_state_met"] is True, done.stderr
    assert outputs["backlog"]["status"] == "succeeded"
    assert outputs["backlog"]["output"]["backlog"] == 3
    unreachable = outputs["unreachable-url-with-password"]
    assert unreachable["status"] == "failed"
    assert "cannot reach Redis at 127.0.0.1:1" in "".join(unreachable["exception"])
    mistyped = outputs["mistyped-scheme-with-password"]
    assert mistyped["status"] == "failed"
    assert "rediss//:***@127.0.0.1" in "".join(mistyped["exception"])
    log_text = log.read_text()
    assert "DEBUG" in log_text  # --log-file holds the debug records
    for where, text in (
        ("journal", journal.read_text()),
        ("log file", log_text),
        ("stdout", done.stdout),
        ("stderr", done.stderr),
    ):
        assert PASSWORD not in text, f"password in the {where}"


def test_start_process_keeps_secrets_out_of_its_result_and_log(tmp_path, caplog):
    from chaospika.process.actions import kill_process, start_process

    pidfile = str(tmp_path / "svc.pid")
    secret_words = ["--requirepass", "Pr0cSecret", "redis://:Pr0cSecret@h/0"]
    command = ["sh", "-c", "exec sleep 30", "sh", *secret_words]
    with caplog.at_level("INFO", logger="chaostoolkit"):
        started = start_process(pidfile, command=command, timeout=0.1)
    try:
        assert "Pr0cSecret" not in repr(started)
        assert "Pr0cSecret" not in caplog.text
    finally:
        kill_process(pidfile)
