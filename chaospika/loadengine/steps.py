"""Scenario steps: validated and compiled once, then run by every iteration.

`compile_steps` turns a list of steps (request, think, ws, group, batch) into one
`async def iteration(vu)`. Each kind has its module, as k6's http module splits
its parts: request_step.py (request building, redirects), checks.py (checks and
captures), ws_step.py (WebSocket sessions); think, group and batch are here, and
step_common.py holds what they share. Every bad field raises ScenarioError
naming its dotted path, e.g. `scenarios.orders.steps[2].request.timeout`.
`compile_exec` resolves the `exec: "module:function"` escape hatch.
"""

import asyncio
import importlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.http1 import USER_AGENT
from chaospika.loadengine.request_step import _RequestStep
from chaospika.loadengine.step_common import Runner, _Context, _list, _static_text
from chaospika.loadengine.template import TemplateError
from chaospika.loadengine.units import parse_duration
from chaospika.loadengine.validate import reject_unknown, require_mapping
from chaospika.loadengine.vu import VU
from chaospika.loadengine.ws_step import _compile_ws

__all__ = ["IterationFn", "compile_exec", "compile_steps"]

logger = logging.getLogger("chaostoolkit")
IterationFn = Callable[[VU], Awaitable[None]]
_STEP_KINDS = ("request", "think", "ws", "group", "batch")
BATCH_LIMIT, BATCH_PER_HOST = 20, 6  # k6's batch and batchPerHost defaults
_warned: set = set()


# -- think, group, batch ----------------------------------------------------------------


def _compile_think(field: str, value: Any) -> Runner:
    where = f"{field}.think"
    if isinstance(value, dict):
        reject_unknown(where, value, ("min", "max"))
        if "min" not in value or "max" not in value:
            raise ScenarioError(where, 'expected {"min": duration, "max": duration}')
        low = parse_duration(f"{where}.min", value["min"])
        high = parse_duration(f"{where}.max", value["max"])
        if low > high:
            raise ScenarioError(f"{where}.max", "must be >= min")

        async def think_between(vu: VU) -> None:
            await asyncio.sleep(random.uniform(low, high))

        return think_between
    seconds = parse_duration(where, value)

    async def think(vu: VU) -> None:
        await asyncio.sleep(seconds)

    return think


def _compile_group(field: str, step: dict[str, Any], ctx: _Context) -> Runner:
    name = _static_text(f"{field}.group", step["group"], ctx.scenario)
    if "::" in name:
        raise ScenarioError(f"{field}.group", "a group name cannot contain '::'")
    if "steps" not in step:
        raise ScenarioError(f"{field}.steps", "a group needs its steps")
    path = f"{ctx.group}::{name}"
    runners = _compile_list(f"{field}.steps", step["steps"], ctx.within(path))
    key = ("group_duration", path)

    async def group(vu: VU) -> None:
        """Run the group's steps; record k6's group_duration (also on an error)."""
        start = perf_counter_ns()
        try:
            for run in runners:
                await run(vu)
        except asyncio.CancelledError:
            raise  # an interrupted group records nothing, as in k6
        except Exception:
            _record_group(vu, key, start)
            raise
        _record_group(vu, key, start)

    return group


def _record_group(vu: VU, key: tuple[str, str], start: int) -> None:
    tags = vu.tag_cache.get(key)
    if tags is None:
        tags = {**vu.tags, "group": key[1]}
        vu.cache_tags(key, tags)
    vu.registry.add("group_duration", (perf_counter_ns() - start) / 1e6, tags)


def _compile_step(field: str, step: Any, ctx: _Context) -> Runner:
    step = require_mapping(field, step)
    kinds = [kind for kind in _STEP_KINDS if kind in step]
    if not kinds:
        unknown = [k for k in step if k not in ("checks", "captures", "steps")]
        raise ScenarioError(
            f"{field}.{unknown[0]}" if unknown else field,
            f"unknown step kind (a step needs one of {', '.join(_STEP_KINDS)})",
        )
    if len(kinds) > 1:
        raise ScenarioError(
            field, f"a step needs exactly one of {', '.join(_STEP_KINDS)}, got {kinds}"
        )
    kind = kinds[0]
    if kind == "request":
        reject_unknown(field, step, ("request", "checks", "captures"))
        return _RequestStep(field, step, ctx)
    if kind == "group":
        reject_unknown(field, step, ("group", "steps"))
        return _compile_group(field, step, ctx)
    reject_unknown(field, step, (kind,))
    if kind == "batch":
        return _compile_batch(field, step["batch"], ctx)
    if kind == "think":
        return _compile_think(field, step["think"])
    return _compile_ws(field, step["ws"], ctx)


def _compile_batch(field: str, value: Any, ctx: _Context) -> Runner:
    """k6's http.batch: request steps sent in parallel (at most BATCH_LIMIT at once,
    BATCH_PER_HOST per host), each with its own checks and captures."""
    items = _list(f"{field}.batch", value)
    if not items:
        raise ScenarioError(f"{field}.batch", "expected at least one request step")
    requests = []
    for index, item in enumerate(items):
        where = f"{field}.batch[{index}]"
        item = require_mapping(where, item)
        if "request" not in item:
            raise ScenarioError(where, "a batch holds request steps ({'request': ...})")
        reject_unknown(where, item, ("request", "checks", "captures"))
        requests.append(_RequestStep(where, item, ctx))

    async def batch(vu: VU) -> None:
        total = asyncio.Semaphore(BATCH_LIMIT)
        per_host: dict[Any, asyncio.Semaphore] = {}

        async def one(step: _RequestStep) -> None:
            host = per_host.setdefault(step.origin, asyncio.Semaphore(BATCH_PER_HOST))
            async with total, host:
                await step(vu)

        results = await asyncio.gather(
            *(one(step) for step in requests), return_exceptions=True
        )
        for result in results:  # every request has ended: the first error goes on
            if isinstance(result, BaseException):
                raise result

    return batch


def _compile_list(field: str, steps: Any, ctx: _Context) -> list[Runner]:
    items = _list(field, steps)
    if not items:
        raise ScenarioError(field, "expected at least one step")
    return [_compile_step(f"{field}[{i}]", step, ctx) for i, step in enumerate(items)]


def compile_steps(
    field: str,
    steps: list[Any],
    *,
    scenario: str,
    user_agent: str = USER_AGENT,
    discard_bodies: bool = False,
) -> IterationFn:
    """Validate and compile `steps`; returns `async def iteration(vu)`.

    A request error (refused, reset, timeout) is recorded, never raised. A
    template that cannot render (a var not captured yet) ends the iteration
    with a warning logged once per message. VUs record through `vu.registry`.
    `discard_bodies` is k6's discardResponseBodies (a request's responseType
    overrides it).
    """
    ctx = _Context(scenario, "", user_agent, discard_bodies)
    runners = _compile_list(field, steps, ctx)
    if len(runners) == 1 and getattr(runners[0], "static", False):
        return runners[0].__call__  # nothing to render: no TemplateError possible

    async def iteration(vu: VU) -> None:
        try:
            for run in runners:
                await run(vu)
        except TemplateError as error:
            _warn_once(str(error))

    return iteration


def _warn_once(message: str) -> None:
    if message not in _warned and len(_warned) < 1000:
        _warned.add(message)
        logger.warning("load iteration stopped: %s", message)


def compile_exec(field: str, reference: Any) -> IterationFn:
    """Resolve "module:function" to an `async def function(vu)`."""
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise ScenarioError(field, f"expected 'module:function', got {reference!r}")
    module_name, function_name = (part.strip() for part in reference.split(":"))
    if not module_name or not function_name:
        raise ScenarioError(field, f"expected 'module:function', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ScenarioError(
            field, f"cannot import module {module_name!r}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ScenarioError(field, f"module {module_name!r} has no {function_name!r}")
    if not inspect.iscoroutinefunction(function):
        raise ScenarioError(
            field, f"{reference} must be an 'async def {function_name}(vu)' function"
        )
    return function
