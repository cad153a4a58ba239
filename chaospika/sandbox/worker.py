"""The sandbox's inventory worker: moves accepted orders from the Redis stream to SQL.

Run it with ``python -m chaospika.sandbox.worker --redis-url URL --db-url URL``.
"""

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import DBAPIError, IntegrityError

from chaospika._clients import sql_engine
from chaospika.sandbox import schema
from chaospika.sandbox.bugs import ACK_BEFORE_COMMIT, NO_CLAIM, parse_bugs

__all__ = ["Worker", "main"]

logger = logging.getLogger("chaospika.sandbox.worker")

Result = TypeVar("Result")
Entry = tuple[str, dict | None]

MAX_BACKOFF_SECONDS = 5.0
MISSING_BACKOFF_SECONDS = 1.0  # while the stream or group is gone: look often


class StopRequested(Exception):
    """Raised inside a retry loop when SIGTERM asked the worker to stop."""


def consumer_name(prefix: str = "worker", pid: int | None = None) -> str:
    """The consumer name of the worker process `pid`: one name per process."""
    return f"{prefix}-{os.getpid() if pid is None else pid}"


class Worker:
    """Consumer of the group `inventory` writing each order once into SQL.

    Each process reads under its own consumer name. Entries a crashed consumer
    left pending are claimed (XAUTOCLAIM) once idle for `claim_idle_ms`, at start
    and then every half of that while running; consumers idle that long with
    nothing pending are removed from the group.
    """

    def __init__(
        self,
        redis_url: str,
        db_url: str,
        consumer: str | None = None,
        batch: int = 20,
        work_ms: float = 5.0,
        claim_idle_ms: int = 3000,
        bugs: tuple[str, ...] = (),
    ) -> None:
        self.client = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=10,
        )
        self.engine = sql_engine(db_url)
        self.consumer = consumer or consumer_name()
        self.batch = batch
        self.work_seconds = work_ms / 1000.0
        self.claim_idle_ms = claim_idle_ms
        self.bugs = bugs
        self.tables = schema.tables_for_bugs(bugs)
        self.stopping = False
        self.next_claim = 0.0
        self.waiting_for_stream = False

    def request_stop(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """Finish the current entry, then exit (the SIGTERM handler)."""
        self.stopping = True

    def retry(self, what: str, action: Callable[..., Result], *args: Any) -> Result:
        """Run `action(*args)`, retrying Redis/SQL errors with a bounded backoff.

        A missing stream or group (NOGROUP, "no such key": a flush or a delete)
        is waited out, not recreated: see `regroup`.
        """
        backoff = 0.1
        cap = MAX_BACKOFF_SECONDS
        regrouped = 0
        while True:
            try:
                return action(*args)
            except ResponseError as error:
                text = str(error)
                if "UNBLOCKED" in text:  # the stream was deleted (a reset)
                    logger.info("%s: the stream was deleted; reading again", what)
                    continue
                if "NOGROUP" in text or "no such key" in text.lower():
                    if self.regroup(what) and regrouped < 3:
                        regrouped += 1  # again at once, a few times; then back off
                        continue
                    cap = MISSING_BACKOFF_SECONDS
                failure: Exception = error
            except (RedisError, OSError, DBAPIError) as error:
                failure = error
            if self.stopping:
                raise StopRequested() from failure
            logger.warning("%s failed (%s); retrying in %.1f s", what, failure, backoff)
            deadline = time.monotonic() + backoff
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
            backoff = min(backoff * 2, cap)

    def regroup(self, what: str) -> bool:
        """The stream or its consumer group is missing: True if reading may go on now.

        When the stream exists without the group (deleted, then recreated by a
        new order), the group is created at id 0 so every entry is processed.
        When the stream itself is missing nothing is created: a stream created
        now (with MKSTREAM) would stand in the way of the one a RESTORE brings
        back with its group and pending entries; the caller waits and tries
        again (the sandbox's `up`/`reset` create stream and group).
        """
        try:
            if not self.client.exists(schema.STREAM):
                if not self.waiting_for_stream:
                    logger.warning(
                        "%s: stream %s is gone; waiting for it to be restored or "
                        "recreated (not creating it)",
                        what,
                        schema.STREAM,
                    )
                self.waiting_for_stream = True
                return False
            created = schema.ensure_group(self.client, mkstream=False)
        except (RedisError, OSError) as error:
            logger.warning("%s: cannot check the stream (%s)", what, error)
            return False
        if created:
            logger.warning(
                "%s: group %s was missing on stream %s; created it at id 0",
                what,
                schema.GROUP,
                schema.STREAM,
            )
        elif self.waiting_for_stream:
            logger.info(
                "%s: stream %s and group %s are back", what, schema.STREAM, schema.GROUP
            )
        self.waiting_for_stream = False
        return True

    def prepare(self) -> None:
        """Create the SQL tables and the consumer group if they are missing."""
        schema.create_tables(self.engine, self.bugs)
        schema.ensure_group(self.client)

    def read(self, start: str, block: int | None = None) -> list[Entry]:
        """XREADGROUP from `start` ('0' = own pending, '>' = new entries)."""
        response = self.client.xreadgroup(
            schema.GROUP,
            self.consumer,
            {schema.STREAM: start},
            count=self.batch,
            block=block,
        )
        return response[0][1] if response else []

    def claim(self, start: str) -> tuple[str, list[Entry]]:
        """XAUTOCLAIM entries idle on other consumers; return (next start, entries)."""
        response = self.client.xautoclaim(
            schema.STREAM,
            schema.GROUP,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=start,
            count=self.batch,
        )
        return response[0], response[1]

    def ack(self, stream_ids: list[str]) -> None:
        """XACK `stream_ids` (no-op when empty)."""
        if stream_ids:
            self.retry(
                "XACK", self.client.xack, schema.STREAM, schema.GROUP, *stream_ids
            )

    def commit(self, stream_id: str, fields: dict) -> bool:
        """Write one order and its stock decrement in one transaction; True if inserted."""
        row = {
            "order_id": fields["order_id"],
            "product_id": fields["product_id"],
            "user_id": fields.get("user_id"),
            "idempotency_key": fields.get("idempotency_key"),
            "stream_id": stream_id,
            "created_at": float(fields.get("accepted_at") or time.time()),
        }
        try:
            with self.engine.begin() as conn:
                inserted = schema.insert_order(conn, self.tables, row)
                if inserted:
                    schema.decrement_stock(conn, self.tables, row["product_id"])
        except IntegrityError as error:
            logger.warning("order %s not written: %s", row["order_id"], error)
            return False
        return inserted

    def process(self, entries: list[Entry]) -> None:
        """Process one batch: work, commit each entry, then XACK (bug: XACK first)."""
        started = time.monotonic()
        ids = [stream_id for stream_id, _ in entries]
        if ACK_BEFORE_COMMIT in self.bugs:
            self.ack(ids)
        done: list[str] = []
        inserted = 0
        for stream_id, fields in entries:
            if self.stopping:
                break
            if not fields or "order_id" not in fields or "product_id" not in fields:
                logger.warning("entry %s is malformed or deleted; skipped", stream_id)
                done.append(stream_id)
                continue
            time.sleep(self.work_seconds)
            if self.retry("SQL commit", self.commit, stream_id, fields):
                inserted += 1
            logger.debug("processed order %s (%s)", fields["order_id"], stream_id)
            done.append(stream_id)
        if ACK_BEFORE_COMMIT not in self.bugs:
            self.ack(done)
        logger.info(
            "batch of %d: processed %d, inserted %d, in %.0f ms",
            len(entries),
            len(done),
            inserted,
            (time.monotonic() - started) * 1000,
        )

    def recover(self) -> None:
        """Re-read this consumer's pending entries, then take over dead consumers'."""
        start = "0"
        while not self.stopping:
            entries = self.retry("read pending", self.read, start)
            if not entries:
                break
            self.process(entries)
            start = entries[-1][0]
        self.claim_abandoned()

    def claim_abandoned(self) -> None:
        """Claim entries idle past `claim_idle_ms` (bug `no-claim`: never)."""
        self.next_claim = time.monotonic() + self.claim_idle_ms / 2000.0
        if NO_CLAIM in self.bugs:
            return
        start = "0-0"
        while not self.stopping:
            start, entries = self.retry("XAUTOCLAIM", self.claim, start)
            if entries:
                logger.info(
                    "claimed %d pending entries of other consumers", len(entries)
                )
                self.process(entries)
            if start == "0-0":
                break
        self.retry("remove dead consumers", self.remove_dead_consumers)

    def remove_dead_consumers(self) -> list[str]:
        """Delete consumers idle past `claim_idle_ms` that hold no pending entry."""
        removed = []
        for info in self.client.xinfo_consumers(schema.STREAM, schema.GROUP):
            dead = int(info["idle"]) > self.claim_idle_ms and not int(info["pending"])
            if dead and info["name"] != self.consumer:
                self.client.xgroup_delconsumer(
                    schema.STREAM, schema.GROUP, info["name"]
                )
                removed.append(info["name"])
        if removed:
            logger.info("removed dead consumers: %s", ", ".join(removed))
        return removed

    def run(self) -> int:
        """Recover, then consume new entries until SIGTERM; return the exit code."""
        logger.info(
            "worker %s starting (batch %d, work %.0f ms, bugs: %s)",
            self.consumer,
            self.batch,
            self.work_seconds * 1000,
            ", ".join(self.bugs) or "none",
        )
        try:
            self.retry("prepare schema and group", self.prepare)
            self.recover()
            while not self.stopping:
                entries = self.retry("read", self.read, ">", 1000)
                if entries:
                    self.process(entries)
                if time.monotonic() >= self.next_claim:
                    self.claim_abandoned()
        except StopRequested:
            pass
        logger.info("worker %s stopped", self.consumer)
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the worker's command line."""
    parser = argparse.ArgumentParser(prog="python -m chaospika.sandbox.worker")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6391/0")
    parser.add_argument("--db-url", required=True)
    parser.add_argument(
        "--consumer", default=None, help="consumer name (default worker-<pid>)"
    )
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--claim-idle-ms", type=int, default=3000)
    parser.add_argument("--bugs", default="", help="comma-separated seeded bugs")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        args.bugs = parse_bugs(args.bugs)
    except ValueError as error:
        parser.error(str(error))
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    if args.work_ms < 0 or args.claim_idle_ms < 0:
        parser.error("--work-ms and --claim-idle-ms must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the worker until SIGTERM."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    worker = Worker(
        args.redis_url,
        args.db_url,
        consumer=args.consumer,
        batch=args.batch,
        work_ms=args.work_ms,
        claim_idle_ms=args.claim_idle_ms,
        bugs=args.bugs,
    )
    signal.signal(signal.SIGTERM, worker.request_stop)
    signal.signal(signal.SIGINT, worker.request_stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
