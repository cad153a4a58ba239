"""Every load running in this process, so that nothing outlives the experiment.

Each run registers a `StopFlag` while it runs (`active_run()`); `stop_all()`
sets them all. Setting a flag takes no lock and waits for nothing, so
`stop_all()` is safe in a signal handler and at interpreter exit; the engine
looks at its flag every 20 ms. At interpreter exit (before non-daemon threads,
such as a thread pool running a background activity, are joined) every load is
asked to stop.
"""

import atexit
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StopFlag", "active_run", "running_loads", "stop_all", "wait_all"]

_POLL = 0.02  # seconds between two looks at the runs still active

_active: dict[int, "StopFlag"] = {}  # plain dict: its operations are atomic


class StopFlag:
    """A stop request read with `is_set()`: lock-free, safe to set from a signal."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@contextmanager
def active_run() -> Iterator[StopFlag]:
    """Register a run for the `with` block; yields the flag `stop_all()` sets."""
    flag = StopFlag()
    _active[id(flag)] = flag
    try:
        yield flag
    finally:
        _active.pop(id(flag), None)


def running_loads() -> int:
    """How many runs are active in this process now."""
    return len(_active)


def stop_all() -> int:
    """Ask every active run to stop now; returns how many were asked (no wait)."""
    flags = list(_active.values())
    for flag in flags:
        flag.set()
    return len(flags)


def wait_all(timeout: float) -> bool:
    """Wait up to `timeout` s for every active run to end; True if none is left."""
    limit = time.monotonic() + timeout
    while _active:
        if time.monotonic() >= limit:
            return False
        time.sleep(_POLL)
    return True


def _at_exit() -> None:
    stop_all()


def _install_exit_hooks() -> None:
    try:  # runs before the interpreter joins non-daemon threads (3.9+)
        threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # pragma: no cover - other Pythons
        pass
    atexit.register(_at_exit)


_install_exit_hooks()
