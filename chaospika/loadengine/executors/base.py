"""What every executor shares: its share of the work, VU counts, one timed iteration.

An executor gets its scenario's config, `make_vu()` (a new VU of that scenario),
`iteration_fn(vu)` (one iteration), the metrics `registry`, a `clock` and a
`stop` event (hard stop: in-flight iterations are interrupted at once). Its
`run()` returns an `Outcome` and always ends within `max_duration()` seconds.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from chaospika.loadengine.cancel import cancel_all
from chaospika.loadengine.summary import go_duration

__all__ = [
    "WHOLE",
    "Clock",
    "ExecutionState",
    "Executor",
    "IterationFn",
    "MakeVU",
    "Outcome",
    "ScenarioConfig",
    "Segment",
    "Steps",
]

logger = logging.getLogger("chaostoolkit")

IterationFn = Callable[[Any], Awaitable[None]]
MakeVU = Callable[[], Any]
Clock = Callable[[], float]
Steps = list[tuple[float, int]]  # (seconds since the scenario started, planned VUs)

_CLOSE_TIMEOUT = 2.0  # seconds given to VUs to free their connections


@dataclass(frozen=True)
class Segment:
    """This process's stripe of the work when `count` processes share one test.

    The n-th VU, iteration or arrival (0-based) of a scenario belongs to the
    process with index n % count, so the stripes add up to the whole exactly.
    """

    index: int = 0
    count: int = 1

    def share(self, total: int) -> int:
        """How many of the first `total` things belong to this stripe."""
        return max(0, (total - self.index + self.count - 1) // self.count)

    def among(self, vus: int) -> "Segment | None":
        """This stripe counted among those that got some of `vus` VUs (None: none).

        Work shared by VUs (iterations, arrivals) goes only to stripes with VUs.
        """
        busy = min(vus, self.count)
        return Segment(self.index, busy) if self.index < busy else None


WHOLE = Segment()  # the whole test, in one process


@dataclass
class ScenarioConfig:
    """A validated scenario: executor options plus the k6 common options."""

    name: str
    executor: str
    options: Any
    start_time: float = 0.0
    graceful_stop: float = 30.0
    tags: dict[str, str] = field(default_factory=dict)  # global + scenario tags
    exec: str | None = None


@dataclass
class ExecutionState:
    """Process-wide VU counts: `active_vus` feeds the vus gauge, `max_vus` vus_max.

    Each start and end is also timed, so that the gauge read at a whole second
    counts the VUs of that instant, as k6's does: a VU that a stage starts or
    ends at exactly that second is not counted as changed yet, however the
    event loop orders the two timers.
    """

    active_vus: int = 0
    max_vus: int = 0
    changes: list[tuple[float, int]] = field(default_factory=list)

    def vu_started(self) -> None:
        self.active_vus += 1
        self.changes.append((time.monotonic(), 1))

    def vu_ended(self) -> None:
        self.active_vus -= 1
        self.changes.append((time.monotonic(), -1))

    def vus_at(self, moment: float) -> int:
        """VUs active at `moment` (monotonic, not in the future); forgets older changes."""
        later = [change for change in self.changes if change[0] >= moment]
        self.changes = later
        return self.active_vus - sum(delta for _, delta in later)


@dataclass
class Outcome:
    """What one scenario did (in this process)."""

    scenario: str
    executor: str
    completed: int = 0  # full iterations, k6's `iterations`
    interrupted: int = 0  # iterations cut by a stop or the end of gracefulStop
    dropped: int = 0  # k6's dropped_iterations
    errors: int = 0  # full iterations that raised
    started: float = 0.0  # seconds since the test started
    ended: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return asdict(self)

    def merge(self, other: "Outcome") -> None:
        """Add the counts of the same scenario run in another process."""
        self.completed += other.completed
        self.interrupted += other.interrupted
        self.dropped += other.dropped
        self.errors += other.errors
        self.started = min(self.started, other.started)
        self.ended = max(self.ended, other.ended)


class Executor:
    """Base of the six executors; subclasses implement `_execute()`."""

    kind: ClassVar[str] = ""
    option_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        config: ScenarioConfig,
        *,
        make_vu: MakeVU,
        iteration_fn: IterationFn,
        registry: Any,
        stop: asyncio.Event,
        clock: Clock = time.monotonic,
        state: ExecutionState | None = None,
        segment: Segment = WHOLE,
        test_start: float | None = None,
    ) -> None:
        self.config = config
        self.options = config.options
        self.make_vu = make_vu
        self.iteration_fn = iteration_fn
        self.registry = registry
        self.stop = stop
        self.clock = clock
        self.state = state if state is not None else ExecutionState()
        self.segment = segment
        self.outcome = Outcome(config.name, config.executor)
        self.test_start = test_start
        self._tags = {"group": "", **config.tags, "scenario": config.name}  # k6's
        self._tasks: set[asyncio.Task] = set()
        self._vus: list[Any] = []
        self._t0 = 0.0
        self._regular_over = False  # no new iterations once True
        self._expired = False  # True once gracefulStop ran out

    # -- what subclasses describe ---------------------------------------------

    @classmethod
    def parse_options(cls, field: str, raw: dict[str, Any]) -> Any:
        """Validate this executor's own options (`field` is the scenario's path)."""
        raise NotImplementedError

    @classmethod
    def regular_duration(cls, options: Any) -> float:
        """Seconds during which new iterations may start."""
        raise NotImplementedError

    @classmethod
    def max_duration(cls, options: Any, graceful_stop: float) -> float:
        """Longest possible run, gracefulStop included."""
        return cls.regular_duration(options) + graceful_stop

    @classmethod
    def requirements(
        cls, options: Any, graceful_stop: float, segment: Segment
    ) -> Steps:
        """Planned VUs over time (k6's execution requirements), for vus_max."""
        raise NotImplementedError

    @classmethod
    def describe(cls, config: ScenarioConfig) -> str:
        """k6's one-line description of the scenario."""
        raise NotImplementedError

    @staticmethod
    def _base_info(config: ScenarioConfig, *facts: str) -> str:
        facts = list(facts)
        if config.exec:
            facts.append(f"exec: {config.exec}")
        if config.start_time > 0:
            facts.append(f"startTime: {go_duration(config.start_time)}")
        if config.graceful_stop > 0:
            facts.append(f"gracefulStop: {go_duration(config.graceful_stop)}")
        return f" ({', '.join(facts)})" if facts else ""

    async def _execute(self) -> None:
        raise NotImplementedError

    # -- running ---------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run the scenario to its end, or until `stop` is set; return its outcome."""
        loop = asyncio.get_running_loop()
        self._t0 = self.clock()
        if self.test_start is not None:
            self.outcome.started = self._t0 - self.test_start
        body = loop.create_task(self._execute())
        stopper = loop.create_task(self.stop.wait())
        try:
            await asyncio.wait((body, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all((body, stopper))
            await self._cancel(self._tasks)
            await self._close_vus()
            if self.test_start is not None:
                self.outcome.ended = self.clock() - self.test_start
        if not body.cancelled() and body.exception() is not None:
            raise body.exception()
        return self.outcome

    def _spawn(self, coro: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_vu(self) -> Any:
        vu = self.make_vu()
        self._vus.append(vu)
        return vu

    async def _sleep_until(self, offset: float) -> None:
        """Sleep until `offset` seconds after this scenario started."""
        deadline = self._t0 + offset
        while (delay := deadline - self.clock()) > 0:  # timers may fire early
            await asyncio.sleep(delay)

    async def _wait_for(
        self, tasks: Iterable[asyncio.Task], until: float
    ) -> set[asyncio.Task]:
        """Wait for `tasks` until `until` (scenario seconds); return those not done."""
        pending = {task for task in tasks if not task.done()}
        if pending:
            timeout = max(0.0, self._t0 + until - self.clock())
            _, pending = await asyncio.wait(pending, timeout=timeout)
        return pending

    async def _finish(self, tasks: Iterable[asyncio.Task], hard_end: float) -> None:
        """Let `tasks` end until `hard_end` (scenario seconds), then interrupt them."""
        pending = await self._wait_for(tasks, hard_end)
        if pending:
            self._expired = True
            await self._cancel(pending)

    @staticmethod
    async def _cancel(tasks: Iterable[asyncio.Task]) -> None:
        """Interrupt `tasks`; bounded even if one of them swallows the cancel."""
        await cancel_all(tasks)

    async def _close_vus(self) -> None:
        closers = [vu.close() for vu in self._vus if hasattr(vu, "close")]
        self._vus.clear()
        if not closers:
            return
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(closer) for closer in closers],
            timeout=_CLOSE_TIMEOUT,
        )
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.debug("closing a VU failed: %r", task.exception())

    # -- iterations --------------------------------------------------------------

    async def _iterate(self, vu: Any) -> None:
        """One iteration on `vu`; a full one records iterations, iteration_duration."""
        started = time.perf_counter()
        jar = getattr(vu, "cookies", None)
        if jar:
            jar.clear()  # k6 empties a VU's cookie jar at every iteration
        try:
            await self.iteration_fn(vu)
        except asyncio.CancelledError:
            self.outcome.interrupted += 1
            raise
        except Exception as error:  # noqa: BLE001 - it never ends the test
            self._failed(error)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        vu.iteration += 1
        self.registry.add("iteration_duration", elapsed_ms, self._tags)
        self.registry.add("iterations", 1.0, self._tags)
        self.outcome.completed += 1

    async def _loop(self, vu: Any, keep_going: Callable[[], bool]) -> None:
        """Closed model: iterate on `vu` back to back while `keep_going()`."""
        self.state.vu_started()
        try:
            while keep_going() and not self.stop.is_set():
                await self._iterate(vu)
                await asyncio.sleep(0)  # let others run if the iteration never waited
        finally:
            self.state.vu_ended()

    def _drop(self, count: int) -> None:
        if count > 0:
            self.outcome.dropped += count
            self.registry.add("dropped_iterations", float(count), self._tags)

    def _failed(self, error: Exception) -> None:
        self.outcome.errors += 1
        count = self.outcome.errors
        if count <= 5 or count % 1000 == 0:
            logger.warning(
                "scenario %s: an iteration failed (%d so far): %s: %s",
                self.config.name,
                count,
                type(error).__name__,
                error,
                exc_info=count == 1,
            )
