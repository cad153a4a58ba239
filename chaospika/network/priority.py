"""A higher CPU priority for the thread that relays the proxies' traffic (when permitted).

A delayed chunk leaves when the proxy's timer fires, but only if the relay
thread gets the CPU then. On a busy core it often does not: the proxy forwards
a request, the upstream server (on the same core) wakes and preempts it, and
when the server blocks the scheduler may run another CPU-bound task instead of
the still-runnable proxy, until its next tick (4 ms at HZ=250). Traced on a
2-core VM (perf sched, monotonic clock): the timerfd fired on time and the
proxy, runnable all along, ran only at the next tick, 2-4 ms late. A shorter
scheduler slice (sched_attr.sched_runtime, Linux 6.12+) did not help: it only
speeds up wake-ups from sleep, and makes the thread easier to preempt.

A lower nice value does: the thread's virtual runtime grows more slowly, so it
is picked first whenever it is runnable, and it still shares the CPU fairly
(nice -10 weighs 9.3x a nice-0 task; it cannot starve the others as a
real-time policy could). Lowering nice needs CAP_SYS_NICE (or RLIMIT_NICE);
without it the thread keeps its priority. Linux only (nice is per thread there;
threads the relay thread starts afterwards, such as uvloop's resolver pool,
inherit it).
"""

import os
import sys
import threading

__all__ = ["RELAY_NICE", "ThreadPriority"]

RELAY_NICE = -10  # the relay thread's nice value when the process may set it


class ThreadPriority:
    """Lowers the calling thread's nice value (`raise_for_thread`) and puts it back."""

    def __init__(self, nice: int | None = RELAY_NICE) -> None:
        self.nice = nice
        self.saved: tuple[int, int] | None = None  # (thread id, its nice before)

    def raise_for_thread(self) -> bool:
        """Give the calling thread `nice` if that is higher and permitted; True if done."""
        if self.nice is None or self.saved is not None:
            return False
        if not sys.platform.startswith("linux"):
            return False  # elsewhere setpriority applies to the whole process
        tid = threading.get_native_id()
        try:
            before = os.getpriority(os.PRIO_PROCESS, tid)
            if before <= self.nice:
                return False  # already as high (or higher)
            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
        except OSError:  # EACCES/EPERM: not permitted; keep the priority it has
            return False
        self.saved = (tid, before)
        return True

    def restore(self) -> None:
        """Give the thread back the nice value it had (always permitted)."""
        saved, self.saved = self.saved, None
        if saved is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, *saved)
            except OSError:  # the thread has ended
                pass
