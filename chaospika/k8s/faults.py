"""The k8s faults the safety control knows (see chaospika.controls._faults).

`pod_targets` resolves the pods a `kill_pods` activity would kill from its
arguments, with the same checks as the action: an empty, exclusion-only or
malformed selector, a missing namespace, an empty selection or one spanning
several workloads resolve to a target that is not alive, which the pre-flight
refuses before anything is applied. With a `seed` the targets are the very pods
the kill will pick; without, one entry per pod to be killed, each naming the
candidates. The Kubernetes client and the API calls are imported lazily; the
control does not pass secrets to target finders, so the pre-flight reaches the
API server through the kubeconfig or the environment (chaostoolkit-kubernetes).
"""

from typing import Any

from chaospika.controls._faults import FaultKind, register_fault

__all__ = ["pod_targets"]

SELECTION_KEYS = ("selector", "namespace", "mode", "qty", "seed", "name_pattern")


def _refused(arguments: dict[str, Any], why: str) -> list[dict[str, Any]]:
    return [
        {
            "namespace": arguments.get("namespace"),
            "selector": arguments.get("selector"),
            "pod": None,
            "label": f"pods {arguments.get('selector')!r} in {arguments.get('namespace')!r}",
            "alive": False,
            "reason": why,
        }
    ]


def pod_targets(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods `kill_pods(**arguments)` would kill (never raises)."""
    from chaoslib.exceptions import ActivityFailed

    given = {key: arguments[key] for key in SELECTION_KEYS if key in arguments}
    try:
        from chaospika.k8s import _client, _select

        wanted = _select.request(**given)
        selection = _select.resolve(_client.api(None), wanted)
    except ActivityFailed as error:
        return _refused(arguments, str(error))
    except Exception as error:  # noqa: BLE001 - the pre-flight must answer
        return _refused(arguments, f"{type(error).__name__}: {error}")
    base = {
        "namespace": wanted.namespace,
        "selector": wanted.selector,
        "owner": selection.owner.ref,
        "candidates": selection.candidate_names,
        "alive": True,
    }
    if wanted.seed is not None:
        picked, _ = _select.choose(selection, wanted.seed)
        names = [pod["metadata"]["name"] for pod in picked]
        return [
            {
                **base,
                "pod": name,
                "label": f"pod {wanted.namespace}/{name} ({selection.owner.ref})",
            }
            for name in names
        ]
    label = (
        f"one of {len(selection.candidates)} pods of {wanted.namespace}/"
        f"{selection.owner.ref} picked at random"
    )
    return [{**base, "pod": None, "label": label} for _ in range(selection.count)]


register_fault(
    "chaospika.k8s.actions.kill_pods",
    FaultKind(
        "k8s.kill_pods",
        pod_targets,
        undo=(
            "none can restore a killed pod: its owner recreates it; the ledger undo "
            "waits for the owner's desired ready pods (undo_kill_pods)"
        ),
    ),
)
