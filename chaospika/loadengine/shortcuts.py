"""k6's execution shortcuts: top-level vus/duration/iterations/stages, and the CLI's
--vus/--duration/--iterations/--stage overrides.

A spec without "scenarios" may give, like a k6 script's options, `vus`,
`duration`, `iterations` and/or `stages` at the top level with its `steps` (or
`exec`); `expand` turns them into k6's one scenario called "default":

- stages -> ramping-vus (startVUs: vus, default 1);
- iterations -> shared-iterations (vus, default 1; duration, if given, becomes
  maxDuration);
- duration -> constant-vus (vus, default 1);
- none of them -> shared-iterations of 1 iteration (k6's default run).

`override` applies CLI flags the way k6 does: each flag sets its top-level
option (the spec's other shortcuts stay), and the scenarios are replaced by the
shortcut they describe; the steps of a single scenario, or the top-level ones,
are kept (with several scenarios, which to run is ambiguous: a ScenarioError).
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from chaospika.loadengine.errors import ScenarioError
from chaospika.loadengine.units import parse_duration

__all__ = ["SHORTCUT_KEYS", "expand", "override", "parse_stage"]

SHORTCUT_KEYS = ("vus", "duration", "iterations", "stages")
BODY_KEYS = ("steps", "exec")

logger = logging.getLogger("chaostoolkit")


def expand(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with its top-level shortcuts turned into scenarios.default."""
    spec = dict(spec)
    given = [key for key in (*SHORTCUT_KEYS, *BODY_KEYS) if key in spec]
    if not given:
        return spec
    if "scenarios" in spec:
        raise ScenarioError(
            given[0],
            "give either 'scenarios' or the top-level shortcuts (vus, duration, "
            "iterations, stages with steps or exec), not both",
        )
    body = {key: spec.pop(key) for key in BODY_KEYS if key in spec}
    if not body:
        raise ScenarioError("steps", "the top-level shortcuts need 'steps' or 'exec'")
    short = {key: spec.pop(key) for key in SHORTCUT_KEYS if key in spec}
    if "stages" in short:
        scenario = {"executor": "ramping-vus", "stages": short["stages"]}
        scenario["startVUs"] = short.get("vus", 1)
        if "iterations" in short:
            raise ScenarioError("iterations", "cannot be combined with stages")
    elif "iterations" in short:
        scenario = {
            "executor": "shared-iterations",
            "vus": short.get("vus", 1),
            "iterations": short["iterations"],
        }
        if "duration" in short:
            scenario["maxDuration"] = short["duration"]
    elif "duration" in short:
        scenario = {
            "executor": "constant-vus",
            "vus": short.get("vus", 1),
            "duration": short["duration"],
        }
    else:
        scenario = {
            "executor": "shared-iterations",
            "vus": short.get("vus", 1),
            "iterations": 1,
        }
    spec["scenarios"] = {"default": {**scenario, **body}}
    return spec


def parse_stage(text: str) -> dict[str, Any]:
    """k6's --stage DURATION:TARGET ("30s:10") as a stage."""
    duration, sep, target = text.partition(":")
    try:
        number = int(target)
    except ValueError:
        number = -1
    if not sep or not duration or number < 0:
        raise ScenarioError(
            "--stage", f"expected DURATION:TARGET such as 30s:10, got {text!r}"
        )
    parse_duration("--stage", duration)  # a bad one is named by its flag
    return {"duration": duration, "target": number}


def override(
    spec: Mapping[str, Any],
    vus: int | None = None,
    duration: str | None = None,
    iterations: int | None = None,
    stages: Sequence[str] | None = None,
) -> dict[str, Any]:
    """`spec` with k6's CLI shortcut flags applied (None: not given)."""
    if duration is not None:
        parse_duration("--duration", duration)  # a bad one is named by its flag
    flags = {
        "vus": vus,
        "duration": duration,
        "iterations": iterations,
        "stages": [parse_stage(s) for s in stages] if stages else None,
    }
    flags = {key: value for key, value in flags.items() if value is not None}
    if not flags:
        return dict(spec)
    spec = dict(spec)
    scenarios = spec.pop("scenarios", None)
    if scenarios is not None:
        if not isinstance(scenarios, Mapping) or len(scenarios) != 1:
            raise ScenarioError(
                "scenarios",
                "--vus/--duration/--iterations/--stage replace the scenarios (as in "
                "k6): give a spec with one scenario, or top-level steps",
            )
        ((name, only),) = scenarios.items()
        if not isinstance(only, Mapping):
            raise ScenarioError("scenarios", f"expected an object, got {only!r}")
        if only.get("env"):
            logger.warning(
                "--vus/--duration/--iterations/--stage replaced scenario %r and its "
                "env (%s), as k6 does: give those with -e KEY=VALUE",
                name,
                ", ".join(map(str, only["env"])),
            )
        for key in BODY_KEYS:
            if key in only:
                spec[key] = only[key]
    return {**spec, **flags}  # field by field, as k6 consolidates its options
