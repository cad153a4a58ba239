"""Which pods a pod fault hits: checked arguments, then a selection that refuses
rather than guesses.

`request` checks the arguments without asking the API server: a namespace is
required, and so is a label selector with at least one requirement that names
what to hit (``=``, ``==`` or ``in``): an empty selector would select every pod
of the namespace, and ``!=``, ``notin`` or a bare key select by exclusion. A
name pattern is matched against the whole pod name (``re.fullmatch``).

`resolve` lists the pods by selector and refuses (ActivityFailed, nothing
touched) when the selection is empty, when the server returned pods the
selector does not match (a server that ignores selectors), when the pods
belong to more than one owner or to none, or when more pods are asked for than
there are. `choose` picks at random: with a `seed` the pick is reproducible
(the same seed and the same pods give the same pick); without, a seed is drawn
and reported.
"""

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaospika._validate import require_choice, require_int, require_number
from chaospika.k8s import _labels, _workloads
from chaospika.k8s._client import Api
from chaospika.k8s._workloads import Owner

__all__ = ["MODES", "Request", "Selection", "choose", "request", "resolve"]

MODES = ("one", "fixed", "percent", "all")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SHOWN = 10


@dataclass(frozen=True)
class Request:
    """The checked arguments of a pod fault."""

    selector: str
    namespace: str
    requirements: tuple[_labels.Requirement, ...]
    mode: str = "one"
    qty: float = 1
    seed: int | None = None
    name_pattern: str | None = None


@dataclass
class Selection:
    """What `resolve` found: the candidates, their one owner, how many to hit."""

    request: Request
    matched: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    owner: Owner
    count: int
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def candidate_names(self) -> list[str]:
        return [pod["metadata"]["name"] for pod in self.candidates]


def _names(pods: list[dict[str, Any]]) -> str:
    names = [(pod.get("metadata") or {}).get("name", "?") for pod in pods]
    more = f" (+{len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def request(
    selector: Any,
    namespace: Any,
    mode: Any = "one",
    qty: Any = 1,
    seed: Any = None,
    name_pattern: Any = None,
) -> Request:
    """Check the arguments of a pod fault (no API call); refuse over-wide ones."""
    if not isinstance(namespace, str) or not namespace.strip():
        raise ActivityFailed(
            "argument 'namespace' is required: the namespace of the pods "
            f"(a pod fault never spans namespaces), got {namespace!r}"
        )
    namespace = namespace.strip()
    if len(namespace) > 63 or not _NAMESPACE.match(namespace):
        raise ActivityFailed(
            f"argument 'namespace' must be a namespace name (RFC 1123 label), got {namespace!r}"
        )
    if not isinstance(selector, str) or not selector.strip():
        raise ActivityFailed(
            "argument 'selector' is required: a label selector such as 'app=web' "
            "(an empty selector would select every pod of the namespace), "
            f"got {selector!r}"
        )
    try:
        requirements = _labels.parse(selector)
    except _labels.SelectorError as error:
        raise ActivityFailed(f"argument 'selector': {error}") from None
    if not any(requirement.positive for requirement in requirements):
        raise ActivityFailed(
            f"argument 'selector' {selector!r} names no label value to hit: it needs "
            "a requirement key=value or key in (...); '!=', 'notin' and bare keys "
            "('app', '!app') alone match too much"
        )
    mode = require_choice("mode", mode, MODES)
    if mode == "fixed":
        qty = require_int("qty", qty, minimum=1)
    elif mode == "percent":
        qty = require_number("qty", qty, minimum=0, allow_equal=False, maximum=100)
    if seed is not None:
        seed = require_int("seed", seed, minimum=0)
    if name_pattern is not None:
        if not isinstance(name_pattern, str) or not name_pattern:
            raise ActivityFailed(
                f"argument 'name_pattern' must be a regular expression, got {name_pattern!r}"
            )
        try:
            re.compile(name_pattern)
        except re.error as error:
            raise ActivityFailed(
                f"argument 'name_pattern' is not a regular expression: {error}"
            ) from None
    return Request(
        selector=selector.strip(),
        namespace=namespace,
        requirements=tuple(requirements),
        mode=mode,
        qty=qty,
        seed=seed,
        name_pattern=name_pattern,
    )


def list_pods(
    api: Api, namespace: str, selector: str
) -> tuple[list[dict[str, Any]], str]:
    """The pods of `namespace` the server selects by `selector`, and the list's
    resourceVersion."""
    listed = api.plain(
        api.call(
            f"list pods {selector!r} in namespace {namespace}",
            api.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
    )
    version = (listed.get("metadata") or {}).get("resourceVersion") or ""
    return list(listed.get("items") or []), version


def _count(request: Request, available: int) -> int:
    if request.mode == "one":
        return 1
    if request.mode == "all":
        return available
    if request.mode == "fixed":
        return int(request.qty)
    count = math.floor(available * request.qty / 100)
    if count < 1:
        raise ActivityFailed(
            f"qty={request.qty:g} percent of {available} pod(s) is no pod: "
            "nothing is killed (mode 'one' kills one)"
        )
    return count


def resolve(api: Api, request: Request) -> Selection:
    """List and check the pods `request` selects; refuse an empty or over-wide one."""
    where = f"namespace {request.namespace}, selector {request.selector!r}"
    pods, _ = list_pods(api, request.namespace, request.selector)
    if not pods:
        raise ActivityFailed(f"no pod matches ({where}): nothing is killed")
    stray = [
        pod
        for pod in pods
        if (pod.get("metadata") or {}).get("namespace") != request.namespace
        or not _labels.matches(
            list(request.requirements), (pod.get("metadata") or {}).get("labels")
        )
    ]
    if stray:
        raise ActivityFailed(
            f"the API server returned {len(stray)} pod(s) that the selector does not "
            f"match ({where}): {_names(stray)}; it may ignore label selectors. "
            "Nothing is killed"
        )
    left_out = {"terminating": 0, "not_running": 0, "name_pattern": 0}
    candidates = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            left_out["terminating"] += 1
        elif (pod.get("status") or {}).get("phase") != "Running":
            left_out["not_running"] += 1
        elif request.name_pattern and not re.fullmatch(
            request.name_pattern, meta.get("name", "")
        ):
            left_out["name_pattern"] += 1
        else:
            candidates.append(pod)
    if not candidates:
        raise ActivityFailed(
            f"{len(pods)} pod(s) match ({where}) but none is running, not being "
            f"deleted{' and named like ' + repr(request.name_pattern) if request.name_pattern else ''}"
            f": {left_out}. Nothing is killed"
        )
    candidates.sort(key=lambda pod: pod["metadata"]["name"])
    cache: dict = {}
    owners: dict[str, Owner] = {}
    for pod in candidates:
        owner = _workloads.owner_of(api, request.namespace, pod, cache)
        owners.setdefault(owner.uid, owner)
    if len(owners) > 1:
        named = ", ".join(sorted(owner.ref for owner in owners.values()))
        raise ActivityFailed(
            f"the selection is too wide: its {len(candidates)} pods belong to "
            f"{len(owners)} workloads ({named}) ({where}); narrow the selector to "
            "one workload. Nothing is killed"
        )
    count = _count(request, len(candidates))
    if count > len(candidates):
        raise ActivityFailed(
            f"qty={count} but only {len(candidates)} pod(s) can be killed ({where}): "
            f"{_names(candidates)}. Nothing is killed"
        )
    owner = next(iter(owners.values()))
    return Selection(request, pods, candidates, owner, count, left_out)


def choose(selection: Selection, seed: int | None) -> tuple[list[dict[str, Any]], int]:
    """`selection.count` candidates at random; the seed used (drawn if None)."""
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    picked = random.Random(seed).sample(selection.candidates, selection.count)
    return picked, seed
