"""The kernel's parent-death signal (prctl PR_SET_PDEATHSIG), for the processes
the engine starts: a worker or a k6 ends when chaospika does, SIGKILL included.

The signal comes when the *thread* that forked the process ends, so a process
must be started from the thread that waits for it.
"""

import signal
import sys
from collections.abc import Callable

__all__ = ["death_signal_setter"]

PR_SET_PDEATHSIG = 1  # prctl(2)


def death_signal_setter(sig: signal.Signals) -> Callable[[], None] | None:
    """A function that makes the calling process get `sig` when its parent ends
    (usable as a Popen `preexec_fn`: libc's prctl is looked up here, before any
    fork); None where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only when a process is started

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return set_death_signal
