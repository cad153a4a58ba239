"""The declarative `ws` step: connect, join, send N messages every T, expect M.

A compiled step (steps.py) is a `WsPlan`; `run_ws_plan` drives it for one VU:
hold the session open, reconnect when the server drops it, and turn every
failure into a check. Messages are sent from loop timers and received through
`WsSession.listen`, so a message costs no task switch and no future. The senders
of a loop share one loop timer per millisecond in which sends are due (`_Ticker`)
rather than one timer per message, and while a session sends, its connection is
read at those ticks (ws_tick_reads.py) unless the step measures message latency.
"""

import asyncio
import contextvars
import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

from chaospika.loadengine.ws import WsClosed, WsError, WsSession
from chaospika.loadengine.ws_tick_reads import TickReads

__all__ = ["WsPlan", "run_ws_plan"]

logger = logging.getLogger("chaostoolkit")


class WsPlan:
    """A validated `ws` step (see steps.py): templates are compiled already."""

    def __init__(
        self,
        name: str,
        url: Any,
        headers: dict[str, Any],
        join: Any = None,
        every: float = 1.0,
        count: int = 0,
        message: Any = None,
        expect_count: int = 0,
        expect_timeout: float = 0.0,
        latency_field: str | None = None,
        hold: float = 0.0,
        reconnects: int = 0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.url = url
        self.headers = headers
        self.join = join
        self.every = every
        self.count = count
        self.message = message
        self.expect_count = expect_count
        self.expect_timeout = expect_timeout
        self.latency_field = latency_field
        self.hold = hold
        self.reconnects = reconnects
        self.connect_timeout = connect_timeout


class _Progress:
    """What one run of a plan has done so far, across reconnects."""

    def __init__(self, expect_count: int) -> None:
        self.sent = 0
        self.received = 0
        self.expect_count = expect_count
        self.expected = asyncio.get_running_loop().create_future()
        if expect_count <= 0:
            self.expected.set_result(None)

    def count(self, message: Any) -> None:
        """Count one received message (a `WsSession.listen` callback)."""
        self.received += 1
        if self.received == self.expect_count:
            self.expected.set_result(None)


class _Ticker:
    """The loop timers of a loop's senders: one per millisecond with sends due.

    uvloop's timers count whole milliseconds, so the callbacks due in one
    millisecond fire together anyway; sharing that timer spares a timer handle
    (allocated, armed in libuv's heap, closed) per message. A callback is due at
    the first whole millisecond not before its time, and callbacks of one
    millisecond run in the order they were added. Each tick first reads the
    connections of `reads` (the senders' own), then runs its callbacks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reads = TickReads(loop)
        # per due millisecond: [loop timer, callbacks]
        self.due: dict[int, list[Any]] = {}
        self.context = contextvars.Context()  # no run's context leaks to another

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        """Run `callback` at loop time `when`; returns the key for `cancel`."""
        key = math.ceil(when * 1000 - 1e-6)  # loop.time() + n * every is not exact
        entry = self.due.get(key)
        if entry is None:
            timer = self.loop.call_at(key / 1000, self._fire, key, context=self.context)
            self.due[key] = [timer, [callback]]
        else:
            entry[1].append(callback)
        return key

    def cancel(self, key: int, callback: Callable[[], None]) -> None:
        """Drop `callback` from millisecond `key` (its loop timer too when unused)."""
        entry = self.due.get(key)
        if entry is None:
            return
        callbacks = entry[1]
        try:
            callbacks.remove(callback)
        except ValueError:
            return
        if not callbacks:
            del self.due[key]
            entry[0].cancel()
            self.reads.after_tick(tick_soon=False)  # that tick will not read

    def _fire(self, key: int) -> None:
        for step in (self.reads.read, *self.due.pop(key)[1]):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - as the loop does for a timer
                self.loop.call_exception_handler(
                    {"message": "ws send timer failed", "exception": error}
                )
        self.reads.after_tick(tick_soon=key + 1 in self.due)


_tickers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker]" = (
    weakref.WeakKeyDictionary()
)


def _ticker(loop: asyncio.AbstractEventLoop) -> _Ticker:
    """The `_Ticker` of `loop` (made at its first use)."""
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _Ticker(loop)
    return ticker


class _Sender:
    """Sends the plan's messages on its interval from loop timers; `done` at the end."""

    def __init__(
        self, vu: Any, plan: WsPlan, session: WsSession, progress: _Progress
    ) -> None:
        self.vu, self.plan, self.session, self.progress = vu, plan, session, progress
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.began = self.loop.time()
        self.sent_here = 0
        self.ticker = _ticker(self.loop)
        self.key: int | None = None  # the ticker millisecond of the next send
        self._send_later = self._send  # one bound method for every timer
        self.read_fd: int | None = None  # read at the ticks (see ws_tick_reads.py)
        self._send()  # the first message goes at once
        if plan.latency_field is None and not self.done.done():
            self.read_fd = self.ticker.reads.add(session.protocol)

    def _send(self) -> None:
        self.key = None
        try:
            self.session.send_nowait(self.plan.message.render(self.vu))
        except WsClosed:
            self._finish()
            return
        except Exception as error:  # noqa: BLE001 - handed to the awaiting step
            self._finish(error)
            return
        self.progress.sent += 1
        self.sent_here += 1
        if self.progress.sent >= self.plan.count:
            self._finish()
            return
        due = self.began + self.sent_here * self.plan.every
        self.key = self.ticker.call_at(due, self._send_later)

    def _finish(self, error: Exception | None = None) -> None:
        """Sending is over: the loop reads the connection again; `done` is set."""
        self._give_back_reads()
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def _give_back_reads(self) -> None:
        if self.read_fd is not None:
            self.ticker.reads.remove(self.read_fd, self.session.protocol)
            self.read_fd = None

    def cancel(self) -> None:
        """Stop sending (no timer is left behind, the loop reads the connection)."""
        if self.key is not None:
            self.ticker.cancel(self.key, self._send_later)
            self.key = None
        self._give_back_reads()
        if not self.done.done():
            self.done.cancel()


async def run_ws_plan(vu: Any, plan: WsPlan, group: str | None = None) -> None:
    """Run one `ws` step for `vu`; failures become checks, never exceptions."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    progress = _Progress(plan.expect_count)
    for attempt in range(plan.reconnects + 1):
        if attempt:
            await asyncio.sleep(min(1.0, 0.1 * attempt))
        session = vu.ws(
            plan.url.render(vu),
            {k: t.render(vu) for k, t in plan.headers.items()} or None,
            plan.latency_field,
            plan.name,
        )
        try:
            await session.open(plan.connect_timeout)
        except (OSError, TimeoutError, WsError) as error:
            logger.debug("ws %s: connect failed: %s", plan.name, error)
            vu.check(f"{plan.name}: connected", False, group)
            continue
        vu.check(f"{plan.name}: connected", True, group)
        try:
            lost = await _run_session(vu, plan, session, progress, start)
        except BaseException:
            session.abort()  # a stop (or a template error) skips the handshake
            raise
        await session.close()
        if not lost:
            break
    if plan.expect_count:
        vu.check(
            f"{plan.name}: received {plan.expect_count} messages",
            progress.received >= plan.expect_count,
            group,
        )


async def _run_session(
    vu: Any, plan: WsPlan, session: WsSession, progress: _Progress, start: float
) -> bool:
    """Drive one connection; True when the server dropped it before the end."""
    loop = asyncio.get_running_loop()
    try:
        if plan.join is not None:
            session.send_nowait(plan.join.render(vu))
    except WsClosed:
        return True
    session.listen(progress.count)
    ended = session.ended
    sender = None
    try:
        if progress.sent < plan.count:
            sender = _Sender(vu, plan, session, progress)
            await asyncio.wait(
                {sender.done, ended}, return_when=asyncio.FIRST_COMPLETED
            )
            if sender.done.done() and sender.done.exception() is not None:
                raise sender.done.exception()  # e.g. a TemplateError in the message
            if ended.done():
                return True
        remaining = start + plan.hold - loop.time()
        if remaining > 0:
            await asyncio.wait({ended}, timeout=remaining)
            if ended.done():
                return True
        remaining = start + plan.expect_timeout - loop.time()
        if not progress.expected.done() and remaining > 0:
            await asyncio.wait(
                {ended, progress.expected},
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if ended.done() and not progress.expected.done():
                return True
        return False
    finally:
        if sender is not None:
            sender.cancel()
