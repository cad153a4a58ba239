"""Wake-ups at exact `time.monotonic()` deadlines for the toxics' pauses.

Event-loop timers count whole milliseconds under uvloop (libuv) and the loop's
poll waits whole milliseconds, so a chunk delayed with `loop.call_at` leaves up
to about 1 ms early or late. On Linux `DeadlineTimer` keeps the deadlines of a
loop in a heap and arms one timerfd (CLOCK_MONOTONIC, absolute, nanoseconds) at
the earliest; the loop watches the fd like a socket, so a wake-up comes within
the kernel's timer slack (50 µs). The fd is closed once no deadline has been
pending for `IDLE_CLOSE` seconds. Elsewhere, or if no timerfd can be made, it
falls back to `loop.call_later`.
"""

import asyncio
import ctypes
import heapq
import itertools
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable

__all__ = ["TimerHandle", "call_at"]

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
logger = logging.getLogger("chaospika.network")
IDLE_CLOSE = 1.0  # seconds without a pending deadline before the fd is closed


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_timerfd() -> tuple[Callable[[], int], Callable[[int, float], None]] | None:
    """(create, arm) for Linux timerfds: os's (3.13+), else libc's by ctypes."""
    if not sys.platform.startswith("linux"):
        return None
    if hasattr(os, "timerfd_create"):  # Python 3.13+

        def create_os() -> int:
            return os.timerfd_create(CLOCK_MONOTONIC, flags=TFD_NONBLOCK | TFD_CLOEXEC)

        def arm_os(fd: int, deadline: float) -> None:
            ns = max(1, int(deadline * 1e9))
            os.timerfd_settime_ns(fd, flags=TFD_TIMER_ABSTIME, initial=ns)

        return create_os, arm_os
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timerfd_create, timerfd_settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
    timerfd_settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_Itimerspec),
        ctypes.c_void_p,
    ]
    spec = _Itimerspec()

    def create() -> int:
        fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        return fd

    def arm(fd: int, deadline: float) -> None:
        ns = max(1, int(deadline * 1e9))
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    return create, arm


_TIMERFD = _load_timerfd()


class TimerHandle:
    """A pending wake-up; `cancel()` drops it."""

    __slots__ = ("callback", "cancelled", "deadline", "fallback", "owner")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self.owner: DeadlineTimer | None = None
        self.fallback: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self.fallback is not None:
            self.fallback.cancel()
        if self.owner is not None:
            self.owner.forget()


class DeadlineTimer:
    """The deadlines of one event loop, on one timerfd armed at the earliest."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.heap: list[tuple[float, int, TimerHandle]] = []
        self.live = 0
        self.order = itertools.count()
        self.fd: int | None = None
        self.armed_at = 0.0
        self.closing: asyncio.TimerHandle | None = None

    def __del__(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def call_at(self, handle: TimerHandle) -> None:
        assert _TIMERFD is not None
        if self.fd is None:
            self.fd = _TIMERFD[0]()
            self.loop.add_reader(self.fd, self._fire)
            self.armed_at = 0.0
        handle.owner = self
        self.live += 1
        heapq.heappush(self.heap, (handle.deadline, next(self.order), handle))
        if self.armed_at == 0.0 or handle.deadline < self.armed_at:
            self._arm(handle.deadline)

    def forget(self) -> None:
        """One handle was cancelled."""
        self.live -= 1
        if self.live <= 0:
            self._idle()

    def _idle(self) -> None:
        """Nothing is pending: drop the heap, close the fd if it stays so."""
        self.heap.clear()
        self.live = 0
        if self.fd is not None and self.closing is None and not self.loop.is_closed():
            self.closing = self.loop.call_later(IDLE_CLOSE, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self.closing = None
        if self.live <= 0:
            self._close()

    def _arm(self, deadline: float) -> None:
        self.armed_at = deadline
        _TIMERFD[1](self.fd, deadline)  # type: ignore[index]

    def _fire(self) -> None:
        try:
            os.read(self.fd, 8)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            pass
        self.armed_at = 0.0
        heap, now = self.heap, time.monotonic()
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            if not handle.cancelled:
                handle.cancelled = True  # spent: a later cancel() is a no-op
                self.live -= 1
                try:
                    handle.callback()
                except Exception:  # one bad callback must not stop the others
                    logger.exception("toxic timer callback failed")
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if self.live <= 0:
            self._idle()
        elif heap:
            self._arm(heap[0][0])

    def _close(self) -> None:
        if self.closing is not None:
            self.closing.cancel()
            self.closing = None
        if self.fd is not None:
            if not self.loop.is_closed():
                self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
        self.heap.clear()
        self.live = 0
        self.armed_at = 0.0


_timers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineTimer]" = (
    weakref.WeakKeyDictionary()
)


def call_at(
    loop: asyncio.AbstractEventLoop, deadline: float, callback: Callable[[], None]
) -> TimerHandle:
    """Call `callback` on `loop` at `time.monotonic()` time `deadline`."""
    handle = TimerHandle(deadline, callback)
    if _TIMERFD is not None and not loop.is_closed():
        timer = _timers.get(loop)
        if timer is None:
            timer = _timers[loop] = DeadlineTimer(loop)
        try:
            timer.call_at(handle)
            return handle
        except OSError:
            timer._close()
    handle.fallback = loop.call_later(deadline - time.monotonic(), callback)
    return handle
