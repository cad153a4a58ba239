"""k6's metric samples (its CSV output, read from a pipe) fed into a pika Registry.

k6 writes every sample to `--out csv=<fifo>` about once a second; `SampleFeed`
reads what is there without blocking and records each sample in the registry
with its tags, so probes and progress see k6's numbers while it runs (about a
second late) and exactly at the end. k6 writes user tags as one `extra_tags`
column, `a=1&b=2`; they are split on the tag names the spec declares, so a tag
value may contain `&` or `=`. Metric values come with k6's six decimals.
"""

import csv
import logging
import os
import select
import time
from collections import Counter
from typing import Any

__all__ = ["SampleFeed", "split_extra_tags"]

logger = logging.getLogger("chaostoolkit")

READ_SIZE = 1 << 20
MAX_READS = 8  # reads per pump, so the caller keeps watching k6 under a flood
_TAG_COLUMNS = (
    "check",
    "error",
    "error_code",
    "expected_response",
    "group",
    "method",
    "name",
    "proto",
    "scenario",
    "service",
    "status",
    "subproto",
    "tls_version",
    "url",
)


def split_extra_tags(text: str, names: set[str]) -> dict[str, str]:
    """Split k6's `a=1&b=2` extra_tags column, a new tag only at a known name."""
    tags: dict[str, str] = {}
    current = None
    for piece in text.split("&"):
        key, found, value = piece.partition("=")
        if found and (current is None or key in names):
            current = key
            tags[key] = value
        elif current is not None:
            tags[current] += "&" + piece
    return tags


def _widen_pipe(fd: int) -> None:
    """Ask Linux for a 1 MiB pipe buffer, so k6 rarely waits for the reader."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_SIZE)
    except (ImportError, AttributeError, OSError):
        pass


class SampleFeed:
    """Reads k6's CSV samples from a FIFO opened without blocking; feeds a registry."""

    def __init__(self, path: str, registry: Any, tag_names: set[str]) -> None:
        self.registry = registry
        self.tag_names = tag_names
        self.iterations: Counter = Counter()  # per scenario
        self.dropped: Counter = Counter()
        self.samples = 0
        self.unknown: set[str] = set()
        self.closed = False
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        _widen_pipe(self._fd)
        self._rest = b""
        self._columns: list[str] | None = None

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` s for samples and record every complete line."""
        if self.closed:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self._fd], [], [], timeout)
        for _ in range(MAX_READS if ready else 0):
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:  # all read
                return
            if not chunk:  # k6 closed its output
                self._finish()
                return
            self._feed(chunk)

    def drain(self, timeout: float = 5.0) -> None:
        """After k6 exited: read what the pipe still holds (bounded by `timeout` s).

        With no writer left, a read returns the buffered data, then end of file.
        """
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:  # a writer is still open: wait for it
                time.sleep(0.01)
                continue
            if chunk:
                self._feed(chunk)
            else:
                self._finish()

    def _finish(self) -> None:
        """End of the stream: record a last line without its newline."""
        self.closed = True
        if self._rest:
            self._feed(b"\n")

    def close(self) -> None:
        """Close the pipe's read end."""
        os.close(self._fd)

    def _feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._rest = data
            return
        self._rest = data[end + 1 :]
        lines = data[:end].decode("utf-8", "replace").split("\n")
        rows = csv.reader(lines)
        if self._columns is None:
            self._columns = next(rows, None)
        self._record(rows)

    def _record(self, rows: Any) -> None:
        columns = self._columns or []
        positions = [(i, c) for i, c in enumerate(columns) if c in _TAG_COLUMNS]
        extra = columns.index("extra_tags") if "extra_tags" in columns else -1
        add, registry, names = self.registry.add, self.registry, self.tag_names
        for row in rows:
            if len(row) < max(len(columns), 3):
                continue
            name = row[0]
            if name not in registry:
                self.unknown.add(name)
                continue
            tags = {column: row[i] for i, column in positions if row[i]}
            if extra >= 0 and row[extra]:
                tags.update(split_extra_tags(row[extra], names))
            value = float(row[2])
            add(name, value, tags)
            self.samples += 1
            if name == "iterations":
                self.iterations[tags.get("scenario", "")] += 1
            elif name == "dropped_iterations":
                self.dropped[tags.get("scenario", "")] += int(value)
