"""Service B's fulfilment worker: moves purchases from the Redis stream to PostgreSQL.

Run it from the repository root with
``python -m tests.order_service_b.worker --redis-url URL --dsn DSN --pidfile PATH``.
Add ``--drop-every N`` for the broken variant that acknowledges every Nth purchase
without storing it.
"""

import argparse
import logging
import os
import signal
import sys
import time
from typing import Any

import psycopg
import redis
from redis.exceptions import RedisError, ResponseError

from . import store

__all__ = ["GROUP", "Fulfiller", "main"]

log = logging.getLogger("order_service_b.worker")

GROUP = "fulfilment"
Entry = tuple[str, dict[str, str]]


class Fulfiller:
    """One consumer of the group `fulfilment`, named after its process id.

    Reads `batch` purchases at a time, spends `work_ms` on each, stores the batch
    in one transaction and acknowledges it after the commit. At start and every
    `claim_idle_ms` / 2 it takes over entries other consumers left pending for
    longer than `claim_idle_ms` (they died), and forgets dead consumers that hold
    nothing.
    """

    def __init__(
        self,
        redis_url: str,
        dsn: str,
        batch: int = 10,
        work_ms: float = 5.0,
        claim_idle_ms: int = 2000,
        drop_every: int = 0,
    ) -> None:
        self.redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5
        )
        self.dsn = dsn
        self.db: psycopg.Connection | None = None
        self.name = f"fulfiller-{os.getpid()}"
        self.batch = batch
        self.work = work_ms / 1000.0
        self.claim_idle_ms = claim_idle_ms
        self.drop_every = drop_every
        self.handled = 0
        self.stopping = False
        self.next_sweep = 0.0

    def stop(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """Finish the batch in hand, then exit."""
        self.stopping = True

    def connection(self) -> psycopg.Connection:
        """The PostgreSQL connection, reopened after it broke."""
        if self.db is None or self.db.closed:
            self.db = psycopg.connect(self.dsn)
        return self.db

    def join_group(self) -> None:
        """Create the stream and the group (from the first entry) unless they exist."""
        try:
            self.redis.xgroup_create(store.STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def fulfil(self, entries: list[Entry]) -> None:
        """Store `entries` in one transaction, then XACK them."""
        rows = []
        for _, fields in entries:
            time.sleep(self.work)
            self.handled += 1
            if "purchase_ref" not in fields or "sku" not in fields:
                continue  # deleted or malformed: nothing to store
            if self.drop_every and self.handled % self.drop_every == 0:
                log.info(
                    "dropping purchase %s (broken variant)", fields["purchase_ref"]
                )
                continue
            rows.append((fields["purchase_ref"], fields["sku"], fields.get("buyer")))
        conn = self.connection()
        with conn.transaction():
            inserted = store.record_purchases(conn, rows)
        self.redis.xack(store.STREAM, GROUP, *(entry_id for entry_id, _ in entries))
        log.debug("batch of %d: %d new rows", len(entries), inserted)

    def sweep(self) -> None:
        """Take over entries dead consumers left pending; forget idle empty consumers."""
        self.next_sweep = time.monotonic() + self.claim_idle_ms / 2000.0
        cursor = "0-0"
        while not self.stopping:
            cursor, entries, *_ = self.redis.xautoclaim(
                store.STREAM,
                GROUP,
                self.name,
                min_idle_time=self.claim_idle_ms,
                start_id=cursor,
                count=self.batch,
            )
            live = [(entry_id, fields) for entry_id, fields in entries if fields]
            if entries:
                log.info("claimed %d abandoned purchases", len(entries))
                self.fulfil(live)
                gone = [entry_id for entry_id, fields in entries if not fields]
                if gone:
                    self.redis.xack(store.STREAM, GROUP, *gone)
            if cursor == "0-0":
                break
        for consumer in self.redis.xinfo_consumers(store.STREAM, GROUP):
            idle_and_empty = (
                int(consumer["idle"]) > self.claim_idle_ms
                and int(consumer["pending"]) == 0
            )
            if idle_and_empty and consumer["name"] != self.name:
                self.redis.xgroup_delconsumer(store.STREAM, GROUP, consumer["name"])
                log.info("forgot dead consumer %s", consumer["name"])

    def step(self) -> None:
        """One round: sweep when due, then read and fulfil one batch."""
        if time.monotonic() >= self.next_sweep:
            self.sweep()
        reply = self.redis.xreadgroup(
            GROUP, self.name, {store.STREAM: ">"}, count=self.batch, block=250
        )
        if reply:
            self.fulfil(reply[0][1])

    def run(self) -> int:
        """Serve until SIGTERM, riding out Redis and PostgreSQL errors."""
        log.info(
            "%s up: batch %d, %.0f ms each, drop every %s",
            self.name,
            self.batch,
            self.work * 1000,
            self.drop_every or "never",
        )
        ready = False
        while not self.stopping:
            try:
                if not ready:
                    store.ensure_schema(self.dsn)
                    self.join_group()
                    ready = True
                self.step()
            except (RedisError, OSError, psycopg.Error) as error:
                log.warning("%s; retrying in 0.5 s", error)
                if self.db is not None and not self.db.closed:
                    self.db.close()
                time.sleep(0.5)
        log.info("%s stopped after %d purchases", self.name, self.handled)
        return 0


def write_pidfile(path: str) -> None:
    """Write this process's pid to `path` atomically."""
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the pidfile and run the worker."""
    parser = argparse.ArgumentParser(prog="python -m tests.order_service_b.worker")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--dsn", required=True, help="PostgreSQL conninfo or URL")
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--claim-idle-ms", type=int, default=2000)
    parser.add_argument(
        "--drop-every",
        type=int,
        default=0,
        help="broken variant: acknowledge every Nth purchase without storing it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker-b %(levelname)s %(message)s"
    )
    write_pidfile(args.pidfile)
    worker = Fulfiller(
        args.redis_url,
        args.dsn,
        batch=args.batch,
        work_ms=args.work_ms,
        claim_idle_ms=args.claim_idle_ms,
        drop_every=args.drop_every,
    )
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
