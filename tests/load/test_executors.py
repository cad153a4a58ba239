"""The six executors scheduling real asyncio iterations, k6's way.

Durations here are sub-second to keep the tests fast: the configs are built
directly (parse_spec enforces k6's 1 s minimum, tested in test_scenario.py).
`Recorder` is a stand-in registry that keeps every sample it is given.
"""

import asyncio
import time
from collections import Counter, defaultdict

import pytest

from chaospika.loadengine.executors import (
    EXECUTORS,
    ExecutionState,
    ScenarioConfig,
    Segment,
)
from chaospika.loadengine.executors.base import WHOLE
from chaospika.loadengine.executors.options import IterationsOptions, Stage
from chaospika.loadengine.executors.ramping_arrival_rate import arrival_offsets
from chaospika.loadengine.executors.ramping_vus import graceful_steps, raw_steps

pytestmark = pytest.mark.timeout(60)

# Upper time bounds allow this much scheduling slack on a loaded 2-core CI
# machine; each bound still separates "ended at its deadline" from the bug
# it guards against (waiting out a long gracefulStop, a 5 s iteration, a hang).
SLACK = 0.3


class Recorder:
    """Stand-in registry: counts and keeps every sample with its tags."""

    def __init__(self) -> None:
        self.totals = Counter()
        self.samples = defaultdict(list)

    def add(self, name, value, tags=None):
        self.totals[name] += value
        self.samples[name].append((value, dict(tags or {})))


class FakeVU:
    """Stand-in VU: an id, the iteration counter, and whether it was closed."""

    def __init__(self, number: int) -> None:
        self.id = number
        self.iteration = 0
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Harness:
    """Runs one executor with a fresh registry, state and VUs."""

    def __init__(self, kind, options, graceful_stop=0.0, segment=WHOLE, tags=None):
        self.config = ScenarioConfig(
            "s", kind, options, graceful_stop=graceful_stop, tags=tags or {}
        )
        self.kind = kind
        self.registry = Recorder()
        self.state = ExecutionState()
        self.vus = []
        self.segment = segment
        self.stop = None

    def make_vu(self):
        vu = FakeVU(len(self.vus) + 1)
        self.vus.append(vu)
        return vu

    async def run(self, iteration, stop_after=None):
        self.stop = asyncio.Event()
        executor = EXECUTORS[self.kind](
            self.config,
            make_vu=self.make_vu,
            iteration_fn=iteration,
            registry=self.registry,
            stop=self.stop,
            state=self.state,
            segment=self.segment,
        )
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, self.stop.set)
        started = time.monotonic()
        outcome = await executor.run()
        self.elapsed = time.monotonic() - started
        return outcome


def _build(kind, values):
    from chaospika.loadengine.executors import constant_arrival_rate as car
    from chaospika.loadengine.executors import constant_vus as cv
    from chaospika.loadengine.executors import ramping_arrival_rate as rar
    from chaospika.loadengine.executors import ramping_vus as rv

    classes = {
        "constant-vus": cv.ConstantVUsOptions,
        "ramping-vus": rv.RampingVUsOptions,
        "constant-arrival-rate": car.ConstantArrivalRateOptions,
        "ramping-arrival-rate": rar.RampingArrivalRateOptions,
        "per-vu-iterations": IterationsOptions,
        "shared-iterations": IterationsOptions,
    }
    return classes[kind](**values)


def sleeper(seconds):
    async def iteration(vu):
        await asyncio.sleep(seconds)

    return iteration


def concurrency_probe(seconds):
    """An iteration that sleeps and records how many iterations overlap."""
    seen = {"now": 0, "peak": 0}

    async def iteration(vu):
        seen["now"] += 1
        seen["peak"] = max(seen["peak"], seen["now"])
        try:
            await asyncio.sleep(seconds)
        finally:
            seen["now"] -= 1

    return iteration, seen


# -- constant-vus ---------------------------------------------------------------


def test_constant_vus_loops_for_the_duration_then_stops():
    plan = _build("constant-vus", {"vus": 3, "duration": 0.3})
    harness = Harness("constant-vus", plan, graceful_stop=0.1)
    outcome = asyncio.run(harness.run(sleeper(0.01)))
    # 3 VUs x ~30 iterations of 10 ms each; timer slack only lowers the count.
    assert 45 <= outcome.completed <= 93
    assert harness.registry.totals["iterations"] == outcome.completed
    assert len(harness.registry.samples["iteration_duration"]) == outcome.completed
    assert outcome.interrupted == 0 and outcome.dropped == 0
    assert 0.3 <= harness.elapsed < 0.4 + SLACK
    assert len(harness.vus) == 3 and all(vu.closed for vu in harness.vus)
    assert harness.state.active_vus == 0
    assert sum(vu.iteration for vu in harness.vus) == outcome.completed
    tags = harness.registry.samples["iterations"][0][1]
    assert tags["scenario"] == "s"


def test_graceful_stop_lets_an_iteration_finish():
    harness = Harness(
        "constant-vus", _build("constant-vus", {"vus": 2, "duration": 0.1}), 1.0
    )
    outcome = asyncio.run(harness.run(sleeper(0.3)))
    assert outcome.completed == 2 and outcome.interrupted == 0
    # it ends when the last iteration ends, not after the whole gracefulStop
    assert 0.3 <= harness.elapsed < 0.3 + SLACK


def test_iterations_past_graceful_stop_are_interrupted_and_not_counted():
    harness = Harness(
        "constant-vus", _build("constant-vus", {"vus": 2, "duration": 0.1}), 0.1
    )
    outcome = asyncio.run(harness.run(sleeper(5)))
    assert outcome.completed == 0 and outcome.interrupted == 2
    assert harness.registry.totals["iterations"] == 0
    assert 0.2 <= harness.elapsed < 0.2 + SLACK


def test_an_iteration_that_never_waits_does_not_starve_the_loop():
    async def busy(vu):
        return None

    harness = Harness(
        "constant-vus", _build("constant-vus", {"vus": 2, "duration": 0.2})
    )
    outcome = asyncio.run(harness.run(busy))
    assert outcome.completed > 100
    assert harness.elapsed < 0.2 + SLACK


def test_a_failing_iteration_counts_as_an_error_and_the_test_goes_on():
    async def failing(vu):
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")

    harness = Harness(
        "constant-vus", _build("constant-vus", {"vus": 1, "duration": 0.1})
    )
    outcome = asyncio.run(harness.run(failing))
    assert outcome.completed >= 5
    assert outcome.errors == outcome.completed


def test_the_stop_event_interrupts_everything_within_100_ms():
    harness = Harness(
        "constant-vus", _build("constant-vus", {"vus": 5, "duration": 30.0}), 30.0
    )
    outcome = asyncio.run(harness.run(sleeper(10), stop_after=0.1))
    assert harness.elapsed < 0.1 + SLACK
    assert outcome.interrupted == 5
    assert harness.state.active_vus == 0
    assert all(vu.closed for vu in harness.vus)


# -- ramping-vus ----------------------------------------------------------------

K6_EXAMPLE = [
    Stage(2, 6),
    Stage(5, 1),
    Stage(4, 5),
    Stage(4, 1),
    Stage(3, 4),
    Stage(2, 4),
    Stage(0, 1),
    Stage(3, 1),
]
K6_RAW = [
    (0, 4), (1, 5), (2, 6), (3, 5), (4, 4), (5, 3), (6, 2), (7, 1), (8, 2), (9, 3),
    (10, 4), (11, 5), (12, 4), (13, 3), (14, 2), (15, 1), (16, 2), (17, 3), (18, 4),
    (20, 1),
]  # fmt: skip


def test_raw_steps_match_k6s_execution_plan_example():
    # lib/executor/ramping_vus_test.go, TestRampingVUsConfigExecutionPlanExample
    assert raw_steps(4, K6_EXAMPLE, zero_end=False) == K6_RAW
    assert raw_steps(4, K6_EXAMPLE, zero_end=True) == [*K6_RAW, (23, 0)]


@pytest.mark.parametrize(
    ("graceful_stop", "expected"),
    [
        (30, [(0, 4), (1, 5), (2, 6), (33, 5), (42, 4), (50, 1), (53, 0)]),
        (80, [(0, 4), (1, 5), (2, 6), (33, 5), (42, 4), (50, 1), (103, 0)]),
        (3, [(0, 4), (1, 5), (2, 6), (26, 0)]),
        (0, [(0, 4), (1, 5), (2, 6), (23, 0)]),
    ],
)
def test_graceful_steps_match_k6s_execution_requirements(graceful_stop, expected):
    raw = raw_steps(4, K6_EXAMPLE, zero_end=False)
    assert graceful_steps(raw, 30, 23 + graceful_stop) == expected


def test_without_graceful_ramp_down_the_requirements_are_the_raw_steps():
    raw = raw_steps(4, K6_EXAMPLE, zero_end=False)
    assert graceful_steps(raw, 0, 23) == [*K6_RAW, (23, 0)]


def test_ramping_vus_stripes_add_up_to_the_whole_plan():
    executor = EXECUTORS["ramping-vus"]
    plan = _build("ramping-vus", {"start_vus": 4, "stages": K6_EXAMPLE,
                                  "graceful_ramp_down": 0})  # fmt: skip
    whole = executor.requirements(plan, 0, Segment())
    stripes = [executor.requirements(plan, 0, Segment(i, 3)) for i in range(3)]

    def at(steps, moment):
        return [vus for offset, vus in steps if offset <= moment][-1]

    for moment in [0, 0.5, 1, 2.5, 7, 10.2, 18, 20, 22.9, 23]:
        assert sum(at(stripe, moment) for stripe in stripes) == at(whole, moment)


def test_ramping_vus_follows_the_stages():
    iteration, seen = concurrency_probe(0.01)
    plan = _build("ramping-vus", {"start_vus": 0, "graceful_ramp_down": 0,
                                  "stages": [Stage(0.2, 4), Stage(0.2, 0)]})  # fmt: skip
    harness = Harness("ramping-vus", plan)
    samples = []

    async def scenario():
        run = asyncio.ensure_future(harness.run(iteration))
        started = time.monotonic()
        while not run.done():
            samples.append((time.monotonic() - started, harness.state.active_vus))
            await asyncio.sleep(0.005)
        return await run

    def expected(moment):  # one more VU every 50 ms up to 4, then one less
        return min(int(moment / 0.05), 8 - int(moment / 0.05), 4) if moment < 0.4 else 0

    outcome = asyncio.run(scenario())
    steady = [
        (moment, active)
        for moment, active in samples
        if abs(moment / 0.05 - round(moment / 0.05)) > 0.3  # 15 ms off any step
    ]
    assert len(steady) > 20
    assert [active for _, active in steady] == [expected(m) for m, _ in steady]
    assert seen["peak"] == 4 and len(harness.vus) == 4
    assert outcome.completed > 20
    assert 0.4 <= harness.elapsed < 0.4 + SLACK


@pytest.mark.parametrize(("grace", "cut_at"), [(0.0, 0.3), (5.0, 0.6)])
def test_graceful_ramp_down_delays_the_interruption(grace, cut_at):
    cut = {}

    async def long_iteration(vu):
        started = time.monotonic()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cut[vu.id] = time.monotonic() - started
            raise

    stages = [Stage(0.2, 2), Stage(0.1, 1), Stage(0.3, 1)]
    plan = _build("ramping-vus", {"start_vus": 2, "stages": stages,
                                  "graceful_ramp_down": grace})  # fmt: skip
    harness = Harness("ramping-vus", plan)
    outcome = asyncio.run(harness.run(long_iteration))
    assert outcome.interrupted == 2
    assert cut[1] == pytest.approx(0.6, abs=0.06)  # the end, gracefulStop 0
    assert cut[2] == pytest.approx(cut_at, abs=0.06)  # the VU ramped down


def test_a_ramped_down_vu_that_is_needed_again_keeps_its_iteration():
    finished = []

    async def iteration(vu):
        await asyncio.sleep(0.25)
        finished.append(vu.id)

    # 2 VUs, down to 1 at 0.1 s, back to 2 at 0.2 s: VU 2 is never interrupted.
    stages = [Stage(0.1, 1), Stage(0.1, 2), Stage(0.1, 2)]
    plan = _build("ramping-vus", {"start_vus": 2, "stages": stages,
                                  "graceful_ramp_down": 1.0})  # fmt: skip
    harness = Harness("ramping-vus", plan, graceful_stop=1.0)
    outcome = asyncio.run(harness.run(iteration))
    assert outcome.interrupted == 0
    assert sorted(finished) == [1, 2, 2] or sorted(finished) == [1, 1, 2, 2]
    assert len(harness.vus) == 2


# -- arrival rates --------------------------------------------------------------


def test_constant_arrival_rate_starts_iterations_on_the_absolute_schedule():
    starts = []

    async def iteration(vu):
        starts.append(time.monotonic())

    plan = _build("constant-arrival-rate", {"rate": 50, "time_unit": 1.0,
                  "duration": 0.5, "pre_allocated_vus": 2, "max_vus": 2})  # fmt: skip
    harness = Harness("constant-arrival-rate", plan)
    outcome = asyncio.run(harness.run(iteration))
    # like k6: 0, 20, ..., 500 ms: one more iteration at exactly t = duration
    assert outcome.completed == 26 and outcome.dropped == 0
    first = starts[0]
    lateness = [start - first - number * 0.02 for number, start in enumerate(starts)]
    assert max(abs(late) for late in lateness) < 0.01
    assert harness.registry.totals["iterations"] == 26


def test_time_unit_scales_the_rate():
    plan = _build("constant-arrival-rate", {"rate": 3, "time_unit": 0.1,
                  "duration": 0.5, "pre_allocated_vus": 2, "max_vus": 2})  # fmt: skip
    outcome = asyncio.run(Harness("constant-arrival-rate", plan).run(sleeper(0)))
    assert outcome.completed == 16  # 15 in 0.5 s, and the one due at 0.5 s (k6)


def test_without_a_free_vu_iterations_are_dropped():
    plan = _build("constant-arrival-rate", {"rate": 100, "time_unit": 1.0,
                  "duration": 0.5, "pre_allocated_vus": 1, "max_vus": 1})  # fmt: skip
    harness = Harness("constant-arrival-rate", plan, graceful_stop=1.0)
    outcome = asyncio.run(harness.run(sleeper(0.1)))
    assert outcome.completed + outcome.dropped == 51  # the 51st at 0.5 s (k6)
    assert 4 <= outcome.completed <= 6
    assert harness.registry.totals["dropped_iterations"] == outcome.dropped
    assert len(harness.vus) == 1


def test_vus_are_added_up_to_max_vus_when_needed():
    iteration, seen = concurrency_probe(0.05)
    plan = _build("constant-arrival-rate", {"rate": 100, "time_unit": 1.0,
                  "duration": 0.5, "pre_allocated_vus": 1, "max_vus": 8})  # fmt: skip
    harness = Harness("constant-arrival-rate", plan, graceful_stop=1.0)
    harness.state.max_vus = 1
    outcome = asyncio.run(harness.run(iteration))
    assert len(harness.vus) == 6  # 5 VUs serve 100/s of 50 ms; one more is dropped
    assert harness.state.max_vus == 6
    assert outcome.completed + outcome.dropped == 51
    assert 1 <= outcome.dropped <= 5
    assert seen["peak"] <= 6


def test_arrival_rate_interrupts_iterations_after_graceful_stop():
    plan = _build("constant-arrival-rate", {"rate": 10, "time_unit": 1.0,
                  "duration": 0.25, "pre_allocated_vus": 5, "max_vus": 5})  # fmt: skip
    harness = Harness("constant-arrival-rate", plan, graceful_stop=0.1)
    outcome = asyncio.run(harness.run(sleeper(5)))
    assert outcome.interrupted == 3 and outcome.completed == 0
    assert 0.3 <= harness.elapsed < 0.35 + SLACK


def test_stripes_of_an_arrival_schedule_add_up_to_the_whole():
    stages = [Stage(1, 10), Stage(2, 10), Stage(1, 0)]
    whole = list(arrival_offsets(0, 1.0, stages))
    stripes = [list(arrival_offsets(0, 1.0, stages, Segment(i, 3))) for i in range(3)]
    assert sorted(offset for stripe in stripes for offset in stripe) == whole
    assert len(whole) == 30  # the area: 5 + 20 + 5
    assert [len(stripe) for stripe in stripes] == [10, 10, 10]


def test_ramping_arrival_offsets_follow_the_area_under_the_rate():
    # 0 -> 10/s over 1 s: the area 5 t^2 reaches n at t = sqrt(n / 5)
    ramp = list(arrival_offsets(0, 1.0, [Stage(1, 10)]))
    assert ramp == pytest.approx([(n / 5) ** 0.5 for n in range(1, 6)])
    # a constant stage: iteration n at n / rate, the first one after 1 / rate
    flat = list(arrival_offsets(10, 1.0, [Stage(1, 10)]))
    assert flat == pytest.approx([n / 10 for n in range(1, 11)])
    # timeUnit 100 ms: 2 per 100 ms is 20/s
    fast = list(arrival_offsets(2, 0.1, [Stage(0.5, 2)]))
    assert len(fast) == 10


def test_ramping_arrival_rate_runs_the_ramp():
    starts = []

    async def iteration(vu):
        starts.append(time.monotonic())

    plan = _build("ramping-arrival-rate", {"start_rate": 0, "time_unit": 1.0,
                  "stages": [Stage(0.5, 200), Stage(0.25, 200)],
                  "pre_allocated_vus": 3, "max_vus": 3})  # fmt: skip
    harness = Harness("ramping-arrival-rate", plan)
    outcome = asyncio.run(harness.run(iteration))
    # area: 0.5 * 200 / 2 + 0.25 * 200 = 100; the one at exactly 0.75 s starts (k6)
    assert outcome.completed == 100 and outcome.dropped == 0
    first_half = sum(1 for start in starts if start - starts[0] < 0.3)
    assert first_half < 40  # slow at first, the rate ramps up


# -- iterations-based -----------------------------------------------------------


def test_per_vu_iterations_runs_each_vus_count():
    seen = defaultdict(list)

    async def iteration(vu):
        seen[vu.id].append(vu.iteration)
        await asyncio.sleep(0)

    plan = _build("per-vu-iterations", {"vus": 3, "iterations": 4, "max_duration": 5})
    harness = Harness("per-vu-iterations", plan)
    outcome = asyncio.run(harness.run(iteration))
    assert outcome.completed == 12 and outcome.dropped == 0
    assert dict(seen) == {1: [0, 1, 2, 3], 2: [0, 1, 2, 3], 3: [0, 1, 2, 3]}
    assert harness.elapsed < SLACK


def test_per_vu_iterations_drops_what_max_duration_leaves():
    plan = _build("per-vu-iterations", {"vus": 2, "iterations": 100,
                                        "max_duration": 0.2})  # fmt: skip
    harness = Harness("per-vu-iterations", plan, graceful_stop=0.0)
    outcome = asyncio.run(harness.run(sleeper(0.03)))
    assert outcome.completed + outcome.interrupted + outcome.dropped == 200
    assert 8 <= outcome.completed <= 14
    assert harness.registry.totals["dropped_iterations"] == outcome.dropped
    assert harness.elapsed < 0.2 + SLACK


def test_shared_iterations_are_shared_by_the_vus():
    counts = Counter()

    async def iteration(vu):
        counts[vu.id] += 1
        await asyncio.sleep(0.001 * vu.id)

    plan = _build("shared-iterations", {"vus": 3, "iterations": 30, "max_duration": 5})
    harness = Harness("shared-iterations", plan)
    outcome = asyncio.run(harness.run(iteration))
    assert outcome.completed == 30 and sum(counts.values()) == 30
    assert counts[1] > counts[3]  # the fastest VU took the most
    assert outcome.dropped == 0


def test_shared_iterations_drop_the_rest_at_max_duration():
    plan = _build("shared-iterations", {"vus": 2, "iterations": 1000,
                                        "max_duration": 0.1})  # fmt: skip
    harness = Harness("shared-iterations", plan, graceful_stop=0.5)
    outcome = asyncio.run(harness.run(sleeper(0.02)))
    assert outcome.completed + outcome.dropped == 1000
    assert outcome.interrupted == 0


@pytest.mark.parametrize(
    ("vus", "expected"), [(3, [(4, 2), (3, 1)]), (1, [(7, 1), (0, 0)])]
)
def test_stripes_of_shared_iterations_add_up(vus, expected):
    totals = []
    for index in range(2):
        plan = _build("shared-iterations", {"vus": vus, "iterations": 7,
                                            "max_duration": 5})  # fmt: skip
        harness = Harness("shared-iterations", plan, segment=Segment(index, 2))
        outcome = asyncio.run(harness.run(sleeper(0)))
        assert outcome.dropped == 0
        totals.append((outcome.completed, len(harness.vus)))
    assert totals == expected


def test_arrivals_go_only_to_stripes_with_vus():
    completed = []
    for index in range(3):
        plan = _build("constant-arrival-rate", {"rate": 30, "time_unit": 1.0,
                      "duration": 0.3, "pre_allocated_vus": 2, "max_vus": 2})  # fmt: skip
        harness = Harness("constant-arrival-rate", plan, segment=Segment(index, 3))
        outcome = asyncio.run(harness.run(sleeper(0)))
        assert outcome.dropped == 0
        completed.append(outcome.completed)
    assert completed == [5, 5, 0]  # 10 arrivals, striped over the 2 stripes with VUs


# -- small parts ----------------------------------------------------------------


@pytest.mark.parametrize(("total", "count"), [(0, 2), (1, 2), (7, 3), (10, 4), (5, 5)])
def test_segment_shares_add_up(total, count):
    shares = [Segment(index, count).share(total) for index in range(count)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_descriptions_read_like_k6s():
    describe = EXECUTORS["constant-arrival-rate"].describe
    plan = _build("constant-arrival-rate", {"rate": 30, "time_unit": 1.0,
                  "duration": 60, "pre_allocated_vus": 10, "max_vus": 50})  # fmt: skip
    config = ScenarioConfig("s", "constant-arrival-rate", plan, graceful_stop=30)
    assert describe(config) == (
        "30.00 iterations/s for 1m0s (maxVUs: 10-50, gracefulStop: 30s)"
    )
