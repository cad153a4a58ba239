"""Fixtures that start real servers the tests own: Redis on a free port, fresh SQL databases."""

import os
import uuid

import pytest
import redis
from sandbox_fixtures import stop_process

from chaospika import _records
from chaospika._ports import free_port
from chaospika.sandbox.redis_server import start_redis

pytest_plugins = ["sandbox_fixtures"]

PG_ADMIN_URL = os.environ.get(
    "PIKA_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get(
    "PIKA_TEST_MYSQL_ADMIN", "mysql+pymysql://root@127.0.0.1:3306/"
)


@pytest.fixture(autouse=True)
def own_ledger(tmp_path, monkeypatch):
    """Each test writes its faults to its own ledger folder (children inherit it)."""
    monkeypatch.setenv("CHAOSPIKA_LEDGER_DIR", str(tmp_path / "ledger"))
    monkeypatch.delenv("CHAOSPIKA_RUN_ID", raising=False)


@pytest.fixture
def redis_url(tmp_path):
    """A fresh Redis server on a free loopback port, stopped after the test."""
    port = free_port()
    process = start_redis(port, str(tmp_path / "redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process, timeout=5)


@pytest.fixture
def redis_conn(redis_url):
    """A client of the test's own Redis server."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def sqlite_url(tmp_path):
    """A fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'test.db'}"


def _fresh_database(admin_url: str, make_url) -> str:
    from sqlalchemy import create_engine, text

    name = f"pika_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise  # CI machines run these servers: a missing one is a failure
        pytest.skip(f"database server not reachable: {error}")
    return name, admin, make_url(name)


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database on the machine's server, dropped after the test."""
    from sqlalchemy import text

    name, admin, url = _fresh_database(
        PG_ADMIN_URL, lambda n: PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{n}"
    )
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def mysql_url():
    """A fresh MariaDB database on the machine's server, dropped after the test."""
    from sqlalchemy import text

    name, admin, url = _fresh_database(MYSQL_ADMIN_URL, lambda n: MYSQL_ADMIN_URL + n)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(autouse=True)
def _fresh_records():
    """Each test starts with no records of earlier loads."""
    _records.clear()
    yield
    _records.clear()
