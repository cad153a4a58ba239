"""The docker faults the safety control knows (see chaospika.controls._faults).

Their targets are resolved by `chaospika.docker.actions.plan` (imported only
when the control asks, with the Docker SDK): the containers the selection would
touch now. A selection that cannot be made (no engine, no match, none running,
wider than the activity's `max_targets`) is one target that resolves to
nothing, so the pre-flight refuses the run.
"""

from typing import Any

from chaospika.controls._faults import FaultKind, register_fault

__all__ = ["container_targets"]

_ACTIONS = "chaospika.docker.actions"


def _asked(arguments: dict[str, Any]) -> str:
    parts = [
        f"{key}={arguments[key]!r}"
        for key in ("name", "selector", "name_pattern")
        if arguments.get(key) is not None
    ]
    return " ".join(parts) or "(no container named)"


def container_targets(action: str):
    """A target finder for the docker fault `action` (a function of actions.py)."""

    def targets(arguments: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            from chaospika.docker.actions import plan

            url, found = plan(action, arguments)
        except Exception as error:  # noqa: BLE001 - unresolvable is a refusal
            return [
                {
                    "container": _asked(arguments),
                    "url": f"docker container {_asked(arguments)}",
                    "alive": False,
                    "reason": str(error),
                }
            ]
        return [
            {
                "container": summary["Names"][0].lstrip("/"),
                "id": summary["Id"][:12],
                "url": f"docker container {summary['Names'][0].lstrip('/')} ({url})",
                "status": summary.get("State"),
                "alive": True,
                "of": len(found.eligible),
            }
            for summary in found.selected
        ]

    return targets


for _action, _kind, _undo in (
    ("stop_containers", "docker.stop", "start the container again (ledger undo_stop)"),
    (
        "kill_containers",
        "docker.kill",
        "start the container again unless its restart policy did (ledger undo_kill)",
    ),
    ("pause_containers", "docker.pause", "unpause the container (ledger undo_pause)"),
    (
        "restart_containers",
        "docker.restart",
        "ends running; one cut short is started again (ledger undo_restart)",
    ),
):
    register_fault(
        f"{_ACTIONS}.{_action}",
        FaultKind(_kind, container_targets(_action), max_targets=1, undo=_undo),
    )
