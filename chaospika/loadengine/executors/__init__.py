"""k6's executors by name: how a scenario schedules its iterations."""

from chaospika.loadengine.executors.base import (
    ExecutionState,
    Executor,
    Outcome,
    ScenarioConfig,
    Segment,
)
from chaospika.loadengine.executors.constant_arrival_rate import ConstantArrivalRate
from chaospika.loadengine.executors.constant_vus import ConstantVUs
from chaospika.loadengine.executors.per_vu_iterations import PerVUIterations
from chaospika.loadengine.executors.ramping_arrival_rate import RampingArrivalRate
from chaospika.loadengine.executors.ramping_vus import RampingVUs
from chaospika.loadengine.executors.shared_iterations import SharedIterations

__all__ = [
    "EXECUTORS",
    "ExecutionState",
    "Executor",
    "Outcome",
    "ScenarioConfig",
    "Segment",
]

EXECUTORS: dict[str, type[Executor]] = {
    executor.kind: executor
    for executor in (
        ConstantVUs,
        RampingVUs,
        ConstantArrivalRate,
        RampingArrivalRate,
        PerVUIterations,
        SharedIterations,
    )
}
