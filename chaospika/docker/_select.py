"""Which containers an activity touches: match, keep those in the right state, choose.

A container is matched by exact `name` (one or a list), label `selector`
("k=v,k2": every term must hold; "k" alone means the label exists) and/or
anchored `name_pattern` (a regex that must match the whole name); every
criterion given must hold. Of the matched containers in the state the action
needs, `mode` chooses: ``one`` (one at random), ``all``, ``fixed`` (`qty` at
random) or ``percent`` (`qty` percent, rounded down, at random); `seed` makes
the random choice repeatable. An empty selection, and one wider than
`max_targets`, is an error raised before anything is touched.
"""

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._validate import require_choice, require_int, require_number

__all__ = [
    "MODES",
    "STATES",
    "Criteria",
    "Selection",
    "choose",
    "criteria",
    "matched",
    "parse_selector",
    "select",
    "selection_args",
]

MODES = ("one", "all", "fixed", "percent")
# What each action needs its containers to be (the engine's State.Status values).
STATES = {
    "running": ("running",),
    "paused": ("paused",),
    "stopped": ("created", "exited"),
}
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
MAX_NAMES = 1000


@dataclass(frozen=True)
class Criteria:
    """How containers are matched (see the module docstring)."""

    names: tuple[str, ...] = ()
    labels: tuple[tuple[str, str | None], ...] = ()
    pattern: re.Pattern | None = None

    def describe(self) -> str:
        parts = []
        if self.names:
            parts.append(f"name {', '.join(map(repr, self.names))}")
        if self.labels:
            terms = [k if v is None else f"{k}={v}" for k, v in self.labels]
            parts.append(f"selector {','.join(terms)!r}")
        if self.pattern is not None:
            parts.append(f"name_pattern {self.pattern.pattern!r}")
        return " and ".join(parts)


@dataclass
class Selection:
    """The containers matched, those in the wanted state, and those chosen."""

    criteria: Criteria
    state: str
    matched: list[dict] = field(default_factory=list)
    eligible: list[dict] = field(default_factory=list)
    selected: list[dict] = field(default_factory=list)


def parse_selector(selector: Any) -> tuple[tuple[str, str | None], ...]:
    """ "k=v,k2" as ((k, v), (k2, None)); the error names the argument 'selector'."""
    if not isinstance(selector, str) or not selector.strip():
        raise ActivityFailed(
            f"argument 'selector' must be a label selector such as 'app=redis,tier', "
            f"got {selector!r}"
        )
    terms = []
    for raw in selector.split(","):
        term = raw.strip()
        key, equals, value = term.partition("=")
        key = key.strip()
        if not LABEL_KEY.fullmatch(key) or key.endswith("!"):
            raise ActivityFailed(
                f"argument 'selector': {term!r} is not 'key=value' or 'key' "
                f"(keys: letters, digits, . _ / -), in {selector!r}"
            )
        terms.append((key, value.strip() if equals else None))
    return tuple(terms)


def criteria(
    name: Any = None, selector: Any = None, name_pattern: Any = None
) -> Criteria:
    """Check the matching arguments; at least one is needed."""
    if name is None and selector is None and name_pattern is None:
        raise ActivityFailed(
            "give at least one of the arguments 'name', 'selector', 'name_pattern'"
        )
    names: tuple[str, ...] = ()
    if name is not None:
        given = name if isinstance(name, list) else [name]
        if (
            not given
            or len(given) > MAX_NAMES
            or not all(
                isinstance(n, str) and n.strip() and "/" not in n.strip() for n in given
            )
        ):
            raise ActivityFailed(
                f"argument 'name' must be a container name or a list of names, got "
                f"{name!r}"
            )
        names = tuple(n.strip() for n in given)
    labels = parse_selector(selector) if selector is not None else ()
    pattern = None
    if name_pattern is not None:
        if not isinstance(name_pattern, str) or not name_pattern:
            raise ActivityFailed(
                f"argument 'name_pattern' must be a regular expression, got "
                f"{name_pattern!r}"
            )
        try:
            pattern = re.compile(name_pattern)
        except re.error as error:
            raise ActivityFailed(
                f"argument 'name_pattern' is not a valid regular expression "
                f"({error}): {name_pattern!r}"
            ) from None
    return Criteria(names, labels, pattern)


def summary_name(summary: dict) -> str:
    """A container's name from the engine's list entry (without its '/')."""
    names = summary.get("Names") or [""]
    return str(names[0]).lstrip("/")


def _labels_hold(labels: dict, wanted: tuple[tuple[str, str | None], ...]) -> bool:
    return all(
        key in labels and (value is None or labels[key] == value)
        for key, value in wanted
    )


def matched(summaries: list[dict], crit: Criteria) -> list[dict]:
    """The list entries `crit` matches, sorted by name."""
    found = []
    for summary in summaries:
        name = summary_name(summary)
        if crit.names and name not in crit.names:
            continue
        if crit.labels and not _labels_hold(summary.get("Labels") or {}, crit.labels):
            continue
        if crit.pattern is not None and not crit.pattern.fullmatch(name):
            continue
        found.append(summary)
    return sorted(found, key=summary_name)


def selection_args(mode: Any, qty: Any, seed: Any, max_targets: Any) -> tuple:
    """Check mode/qty/seed/max_targets; return them normalised."""
    mode = require_choice("mode", mode, MODES)
    if mode in ("one", "all"):
        if qty is not None:
            raise ActivityFailed(
                f"argument 'qty' is only for mode 'fixed' or 'percent', not {mode!r}"
            )
    elif qty is None:
        raise ActivityFailed(f"argument 'qty' is needed with mode {mode!r}")
    elif mode == "fixed":
        qty = require_int("qty", qty, minimum=1)
    else:
        qty = require_number("qty", qty, minimum=0, allow_equal=False, maximum=100)
    if seed is not None:
        seed = require_int("seed", seed, minimum=0)
    if max_targets is not None:
        max_targets = require_int("max_targets", max_targets, minimum=1)
    return mode, qty, seed, max_targets


def choose(eligible: list[dict], mode: str, qty: Any, seed: int | None) -> list[dict]:
    """The containers `mode` picks from `eligible` (sorted by name); may be empty."""
    if mode == "all":
        return list(eligible)
    if mode == "one":
        count = 1
    elif mode == "fixed":
        count = int(qty)
    else:
        count = math.floor(len(eligible) * float(qty) / 100.0 + 1e-9)
    if count > len(eligible) or count <= 0:
        return []
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    picked = rng.sample(range(len(eligible)), count)
    return [eligible[i] for i in sorted(picked)]


def _shown(summaries: list[dict]) -> str:
    return ", ".join(f"{summary_name(s)} ({s.get('State')})" for s in summaries[:20])


def select(
    summaries: list[dict],
    crit: Criteria,
    state: str,
    mode: str,
    qty: Any,
    seed: int | None,
    max_targets: int | None,
    allow_empty: bool = False,
) -> Selection:
    """Match, keep the containers in `state`, choose; raise when the choice is
    empty (unless `allow_empty` and something matched) or wider than `max_targets`."""
    found = Selection(crit, state)
    found.matched = matched(summaries, crit)
    if not found.matched:
        raise ActivityFailed(f"no container matches {crit.describe()}: nothing touched")
    found.eligible = [s for s in found.matched if s.get("State") in STATES[state]]
    if not found.eligible:
        if allow_empty:
            return found
        raise ActivityFailed(
            f"{len(found.matched)} container(s) match {crit.describe()} but none is "
            f"{state}: {_shown(found.matched)}; nothing touched"
        )
    if mode == "fixed" and qty > len(found.eligible):
        raise ActivityFailed(
            f"mode 'fixed' asks for {qty} containers but only {len(found.eligible)} "
            f"matching {crit.describe()} are {state}: nothing touched"
        )
    found.selected = choose(found.eligible, mode, qty, seed)
    if not found.selected:
        raise ActivityFailed(
            f"mode {mode!r} with qty {qty!r} selects no container of the "
            f"{len(found.eligible)} {state} ones matching {crit.describe()}: "
            "nothing touched"
        )
    if max_targets is not None and len(found.selected) > max_targets:
        raise ActivityFailed(
            f"the selection is {len(found.selected)} containers "
            f"({_shown(found.selected)}), more than max_targets={max_targets}: "
            "nothing touched (raise max_targets to allow it)"
        )
    return found


@dataclass(frozen=True)
class Targets:
    """Checked selection arguments, resolved against an engine when asked."""

    criteria: Criteria
    mode: str
    qty: Any
    seed: int | None
    max_targets: int | None

    def resolve(self, client: Any, state: str, allow_empty: bool = False) -> Selection:
        """Match the engine's containers now and choose among those in `state`."""
        return select(
            client.containers(all=True),
            self.criteria,
            state,
            self.mode,
            self.qty,
            self.seed,
            self.max_targets,
            allow_empty,
        )


def targets(
    name: Any,
    selector: Any,
    name_pattern: Any,
    mode: Any,
    qty: Any,
    seed: Any,
    max_targets: Any,
) -> Targets:
    """Check every selection argument before the engine is asked anything."""
    crit = criteria(name, selector, name_pattern)
    return Targets(crit, *selection_args(mode, qty, seed, max_targets))
