"""The safety control: nothing a run applies outlives it.

Declare it in an experiment (or pass it with ``chaos run --control-file``)::

    "controls": [{"name": "safety", "provider": {
        "type": "python", "module": "chaospika.controls.safety",
        "arguments": {"allow_pidfiles": ["${worker_pidfile}"]}}}]

- experiment start: a fresh run id (`ledger.set_run_id`, logged); SIGINT and
  SIGTERM handlers that stop the loads and interrupt the run at once (an
  interrupt that Python drops is delivered again, see `_Redelivery`);
- before the method, a pre-flight of every known fault (`_faults.FAULTS`): its
  targets are resolved from the substituted arguments and the run is refused
  (`InterruptExecution`, nothing applied) when one is outside ``allow_pidfiles``
  / ``allow_hosts``, resolves to nothing, or exceeds ``max_targets``; with
  ``chaos run --dry actions`` the plan is logged and nothing is applied;
- after an interrupted method, and at the end of the experiment whatever its
  status: the loads are stopped and this run's outstanding faults undone.

The journal gets ``pika_run_id``, ``pika_faults`` (this run's ledger records in
their final state) and ``pika_safety`` (plan, refusal, signal, undos, and
``errors``: every undo or load stop that failed, also logged as errors).
"""

import logging
import os
import signal
import sys
import threading
import uuid
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from chaoslib import substitute
from chaoslib.exceptions import ActivityFailed, InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaospika import ledger
from chaospika.controls import _faults
from chaospika.ledger import store
from chaospika.load.actions import stop_all_loads

__all__ = [
    "SafetyInterrupt",
    "after_activity_control",
    "after_experiment_control",
    "after_method_control",
    "before_activity_control",
    "before_experiment_control",
    "before_method_control",
    "cleanup_control",
]

logger = logging.getLogger("chaostoolkit")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Activities during which a signal waits for the activity's end: a kill or a
# start cut in half could leave a process nobody knows about.
CRITICAL_MODULES = (
    "chaospika.process.actions",
    "chaospika.k8s.actions",
    "chaospika.docker.actions",
)
# chaoslib's Dry values that skip actions (faults are actions).
DRY_SKIPPING_ACTIONS = ("actions", "activities")
# How many times one run delivers a dropped interrupt again, at most.
MAX_REDELIVERIES = 100


class SafetyInterrupt(KeyboardInterrupt):
    """The run is interrupted by a signal (`signum`).

    A KeyboardInterrupt, not chaoslib's InterruptExecution: chaoslib 1.44 turns
    an InterruptExecution raised inside a Python activity into a failure of that
    activity and goes on with the method; a KeyboardInterrupt reaches the runner,
    which ends the run with status "interrupted".
    """

    def __init__(self, message: str, signum: int = 0) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class _Run:
    """What the control knows of the current run (one per `chaos run`)."""

    run_id: str | None = None
    experiment: int | None = None
    dry: str | None = None
    plan: list[dict[str, Any]] = field(default_factory=list)
    refused: str | None = None
    signal: str | None = None
    pending: int | None = None
    critical: bool = False
    cleaning: bool = False
    finished: bool = False
    previous: dict[int, Any] = field(default_factory=dict)
    undone: list[dict[str, Any]] = field(default_factory=list)
    loads_at_signal: int | None = None
    loads_at_end: int | None = None
    errors: list[str] = field(default_factory=list)
    earlier: list[str] = field(default_factory=list)
    owed: int | None = None
    in_hook: bool = False
    in_flight: int = 0
    redelivered: int = 0


_run = _Run()
# While the handlers are installed: the unraisable hook replaced, the thread
# that delivers dropped interrupts again.
_installed: dict[str, Any] = {"hook": None, "redelivery": None}


def _policy(
    allow_pidfiles: list | None, allow_hosts: list | None, max_targets: int | None
) -> _faults.Policy:
    """The control arguments as a Policy; bad ones interrupt the run."""
    if allow_pidfiles is not None and not isinstance(allow_pidfiles, list):
        raise InterruptExecution(
            f"safety control: 'allow_pidfiles' must be a list, got {allow_pidfiles!r}"
        )
    if allow_hosts is not None and not isinstance(allow_hosts, list):
        raise InterruptExecution(
            f"safety control: 'allow_hosts' must be a list, got {allow_hosts!r}"
        )
    if max_targets is not None and (
        isinstance(max_targets, bool) or not isinstance(max_targets, int)
    ):
        raise InterruptExecution(
            f"safety control: 'max_targets' must be an integer, got {max_targets!r}"
        )
    return _faults.Policy(
        allow_pidfiles=tuple(str(p) for p in allow_pidfiles or ()),
        allow_hosts=tuple(str(h) for h in (allow_hosts or _faults.DEFAULT_ALLOW_HOSTS)),
        max_targets=max_targets,
    )


def _is_main_thread() -> bool:
    """Signals can be handled (and arrive) only in the main thread."""
    return threading.current_thread() is threading.main_thread()


def _dry_value(experiment: Experiment) -> str | None:
    """The `chaos run --dry` mode as a string ("actions"...), or None."""
    dry = experiment.get("dry") if isinstance(experiment, dict) else None
    if dry is None:
        return None
    return str(getattr(dry, "value", dry))


###############################################################################
# Signals
###############################################################################
def _on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM: stop the loads now (lock-free), then interrupt the run.

    While a process action or the control's own undo runs, the interrupt waits
    for it to end (`after_activity_control`, or the undo's end). An interrupt
    still owed (raised, then dropped by Python) is raised again.
    """
    redelivered = _run.in_flight > 0
    _run.in_flight -= 1 if redelivered else 0
    if _run.in_hook:  # in `_on_unraisable`: an exception raised here is lost too
        _redeliver(signum)
        return
    if redelivered and _run.owed is None:
        return  # the interrupt was taken meanwhile: this delivery is moot
    stopped = stop_all_loads()
    if _run.signal is None:
        _run.signal = signal.Signals(signum).name
        _run.loads_at_signal = stopped
    if _run.cleaning or _run.critical:
        _run.pending = signum
        return
    if redelivered:
        _take_owed()  # raised again here (and owed again if dropped again)
    _interrupt(signum, frame)


def _on_unraisable(unraisable: Any) -> None:
    """`sys.unraisablehook`: an interrupt raised by `_on_signal` where Python
    drops exceptions (a ``__del__``, a weakref callback, the garbage collector)
    would leave the run going on as if no signal came: deliver it again."""
    dropped = unraisable.exc_value
    if isinstance(dropped, SafetyInterrupt) and dropped.signum:
        _run.in_hook = True
        try:
            _run.owed = dropped.signum
            _redeliver(dropped.signum)
        finally:
            _run.in_hook = False
        return
    (_installed["hook"] or sys.__unraisablehook__)(unraisable)


def _redeliver(signum: int) -> None:
    """Have `_Redelivery` send `signum` to the main thread again (bounded)."""
    redelivery = _installed["redelivery"]
    if redelivery is None or _run.redelivered >= MAX_REDELIVERIES:
        return
    _run.redelivered += 1
    _run.in_flight += 1
    redelivery.request(signum)


def _take_owed() -> None:
    """A control hook (a safe place to raise) raises an interrupt still owed."""
    signum, _run.owed = _run.owed, None
    if signum is not None:
        name = signal.Signals(signum).name
        logger.warning(
            "safety: the interrupt of %s was dropped by Python (raised inside a "
            "finalizer); raising it again",
            name,
        )
        raise SafetyInterrupt(f"{name} received", signum)


class _Redelivery:
    """A thread that sends a signal to the main thread again when asked.

    Python runs signal handlers between two bytecodes of the main thread, which
    may be inside a finalizer; an exception raised there is printed ("Exception
    ignored in ...") and dropped, so the run would go on (into a 60 s pause,
    say). `request` writes the signal number on a pipe (no lock: safe in a
    finalizer or a signal handler); this thread, which blocks SIGINT and
    SIGTERM itself, sends it to the main thread, whose handler raises again,
    outside the finalizer. A signal sent to the process could be delivered to
    another thread and leave the main thread's sleep uninterrupted.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(
            target=self._serve, name="pika-safety-redelivery", daemon=True
        )
        self._thread.start()

    def request(self, signum: int) -> None:
        try:
            os.write(self._write, bytes([signum]))
        except OSError:  # pipe full: deliveries are pending already
            pass

    def close(self) -> None:
        self.request(0)
        self._thread.join(timeout=2)
        os.close(self._write)

    def _serve(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            while True:
                data = os.read(self._read, 1)
                if not data or data[0] == 0:
                    return
                signal.pthread_kill(self._main, data[0])
        finally:
            os.close(self._read)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Hand the signal to the handler we replaced (chaoslib's, Python's), then raise."""
    name = signal.Signals(signum).name
    logger.warning(
        "safety: %s received: loads stopped, interrupting run %s; its faults are "
        "undone before the journal is written",
        name,
        _run.run_id,
    )
    previous = _run.previous.get(signum)
    try:
        if callable(previous):
            previous(signum, frame)
    except (InterruptExecution, KeyboardInterrupt) as error:
        if isinstance(error, SafetyInterrupt):
            raise
        detail = f": {error}" if str(error) else ""
        raise SafetyInterrupt(f"{name} received{detail}", signum) from None
    raise SafetyInterrupt(f"{name} received", signum)


def _install_handlers() -> None:
    """Put `_on_signal` in front of the SIGINT/SIGTERM handlers (not ignored ones)."""
    if not _is_main_thread():
        logger.warning("safety: not in the main thread, signals are not handled")
        return
    for signum in HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN or current is _on_signal:
            continue  # ignored on purpose by whoever started chaos, or already ours
        _run.previous[signum] = current
        signal.signal(signum, _on_signal)
    if _run.previous and sys.unraisablehook is not _on_unraisable:
        _installed["hook"] = sys.unraisablehook
        sys.unraisablehook = _on_unraisable
    if _run.previous and _installed["redelivery"] is None:
        _installed["redelivery"] = _Redelivery()


def _restore_handlers() -> None:
    """Put back the handlers (and unraisable hook) `_install_handlers` replaced."""
    if not _is_main_thread():
        return
    for signum, previous in _run.previous.items():
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    _run.previous.clear()
    if sys.unraisablehook is _on_unraisable:
        sys.unraisablehook = _installed["hook"] or sys.__unraisablehook__
        _installed["hook"] = None
    if _installed["redelivery"] is not None:
        _installed["redelivery"].close()
        _installed["redelivery"] = None


###############################################################################
# Undo
###############################################################################
def _stop_loads(timeout: float) -> None:
    """Stop every load and wait up to `timeout`; a load left running is an error."""
    try:
        _run.loads_at_end = stop_all_loads(timeout=timeout)
    except ActivityFailed as error:
        message = f"safety: loads of run {_run.run_id} did not stop: {error}"
        logger.error(message)
        _run.errors.append(message)


def _undo_outstanding(why: str) -> None:
    """Undo this run's outstanding faults; a failed undo is logged and kept."""
    if _run.run_id is None:
        return
    _run.cleaning = True
    try:
        reports = ledger.undo_outstanding(_run.run_id, by="safety")
    except (OSError, ValueError) as error:  # the ledger folder itself failed
        reports = [{"fault": None, "undone": False, "error": f"ledger: {error}"}]
    for report in reports:
        report["why"] = why
        _run.undone.append(report)
        if report.get("error"):
            message = f"safety: undo of {report.get('fault')} failed: {report['error']}"
            logger.error(message)
            _run.errors.append(message)
        else:
            logger.warning(
                "safety: undid %s (%s of %s) %s",
                report.get("fault"),
                report.get("kind"),
                (report.get("target") or {}).get("pidfile") or report.get("target"),
                why,
            )


def _faults_of_run() -> list[dict[str, Any]]:
    """This run's ledger records, oldest first, in their current state."""
    keys = (
        "id",
        "run_id",
        "kind",
        "target",
        "state",
        "created_at",
        "applied_at",
        "undone_at",
        "undone_by",
        "ttl_seconds",
        "error",
    )
    return [
        {key: data.get(key) for key in keys}
        for data in store.load_all()
        if data.get("run_id") == _run.run_id
    ]


###############################################################################
# The control
###############################################################################
def before_experiment_control(
    context: Experiment,
    allow_pidfiles: list = None,
    allow_hosts: list = None,
    max_targets: int = None,
    stop_timeout: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Start a run: a fresh run id, SIGINT/SIGTERM handlers, a word on old faults."""
    global _run
    if _run.experiment == id(context) and not _run.finished:
        return  # declared twice (experiment and --control-file): once is enough
    _policy(allow_pidfiles, allow_hosts, max_targets)  # bad arguments stop here
    _run = _Run(experiment=id(context), dry=_dry_value(context))
    _run.run_id = ledger.set_run_id(f"run-{uuid.uuid4().hex[:12]}")
    _install_handlers()
    _run.earlier = [fault.id for fault in ledger.outstanding()]
    if _run.earlier:
        logger.warning(
            "safety: %d fault(s) of earlier runs are still in force (%s): "
            "`chaospika cleanup` undoes them",
            len(_run.earlier),
            ", ".join(_run.earlier),
        )
    logger.info(
        "safety: run id %s (`chaospika cleanup --run %s` undoes what it leaves)",
        _run.run_id,
        _run.run_id,
    )


def _plan(
    experiment: Experiment,
    policy: _faults.Policy,
    configuration: Configuration,
    secrets: Secrets,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The plan entry of every fault of the method, and every refusal."""
    declared = [
        *((experiment.get("steady-state-hypothesis") or {}).get("probes") or []),
        *(experiment.get("method") or []),
        *(experiment.get("rollbacks") or []),
    ]
    named = {
        activity.get("name"): activity
        for activity in declared
        if isinstance(activity, dict) and "ref" not in activity
    }
    plan: list[dict[str, Any]] = []
    refusals: list[str] = []
    for activity in experiment.get("method") or []:
        if not isinstance(activity, dict):
            continue
        activity = named.get(activity["ref"], {}) if "ref" in activity else activity
        fault = _faults.fault_of(activity)
        if fault is None:
            continue
        arguments = substitute(
            dict((activity.get("provider") or {}).get("arguments") or {}),
            configuration or {},
            secrets or {},
        )
        entry, refused = _faults.check_fault(
            str(activity.get("name")), fault, arguments, policy, live=True
        )
        plan.append(entry)
        refusals.extend(refused)
    return plan, refusals


def _log_plan(plan: list[dict[str, Any]]) -> None:
    """Log each fault of the plan with its targets and undo; mark it applied or not."""
    dry = _run.dry
    if dry in DRY_SKIPPING_ACTIONS:
        tail = "not applied (dry run)"
    elif dry:
        tail = f"APPLIED: --dry {dry} still runs actions"
    else:
        tail = "to be applied"
    if not plan:
        logger.info("safety plan: the method applies no known fault")
    for entry in plan:
        targets = ", ".join(
            f"pid {t.get('pid')} ({t.get('pidfile')})"
            if t.get("pidfile") or t.get("pid") is not None
            else str(t.get("label") or t.get("url") or t.get("name"))
            for t in entry["targets"]
        )
        logger.log(
            logging.WARNING
            if dry and dry not in DRY_SKIPPING_ACTIONS
            else logging.INFO,
            "safety plan: %s: %s of %s; undo: %s; %s",
            entry["activity"],
            entry["fault"],
            targets or "nothing",
            entry["undo"],
            tail,
        )
        entry["applied"] = dry not in DRY_SKIPPING_ACTIONS


def before_method_control(
    context: Experiment,
    allow_pidfiles: list = None,
    allow_hosts: list = None,
    max_targets: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Pre-flight: resolve every fault's targets; refuse the run before any is applied."""
    policy = _policy(allow_pidfiles, allow_hosts, max_targets)
    plan, refusals = _plan(context, policy, configuration, secrets)
    _run.plan = plan
    _log_plan(plan)
    if refusals:
        _run.refused = "safety: refusing to run the method: " + "; ".join(refusals)
        logger.error(_run.refused)
        raise InterruptExecution(_run.refused)


def before_activity_control(
    context: dict,
    allow_pidfiles: list = None,
    allow_hosts: list = None,
    max_targets: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Check a fault again as it is about to run; hold signals during process actions."""
    if not isinstance(context, dict):
        return
    fault = _faults.fault_of(context)
    if fault is not None:
        policy = _policy(allow_pidfiles, allow_hosts, max_targets)
        arguments = substitute(
            dict((context.get("provider") or {}).get("arguments") or {}),
            configuration or {},
            secrets or {},
        )
        _, refusals = _faults.check_fault(
            str(context.get("name")), fault, arguments, policy, live=False
        )
        if refusals:
            _run.refused = "safety: refusing a fault: " + "; ".join(refusals)
            logger.error(_run.refused)
            raise InterruptExecution(_run.refused)
    if _is_main_thread():
        _take_owed()
    provider = context.get("provider") or {}
    if _is_main_thread() and provider.get("module") in CRITICAL_MODULES:
        _run.critical = True


def after_activity_control(
    context: dict,
    state: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """End of a process action: a signal that came during it interrupts the run
    now; so does an interrupt Python dropped during the activity."""
    if not _is_main_thread():
        return
    if _run.owed is not None:
        _run.critical = False
        _take_owed()
    if not _run.critical:
        return
    _run.critical = False
    if _run.pending is not None and not _run.cleaning:
        signum, _run.pending = _run.pending, None
        _interrupt(signum, None)


def after_method_control(
    context: Experiment,
    state: Any = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """After an interrupted method: undo this run's faults at once."""
    _run.critical = False
    _run.owed = None  # the run unwinds: nothing is owed any more
    if _run.signal is not None:
        _undo_outstanding(f"after {_run.signal}")
        _run.cleaning = False  # the run is unwinding already: pending is moot
        _run.pending = None


def _finish(stop_timeout: float) -> None:
    """Stop the loads, undo what is left; once per run."""
    if _run.finished or _run.run_id is None:
        return
    _run.cleaning = True
    _stop_loads(stop_timeout)
    _undo_outstanding("at the end of the experiment")
    _run.finished = True


def after_experiment_control(
    context: Experiment,
    state: Journal = None,
    stop_timeout: float = 10.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Whatever the status: stop the loads, undo what is left, write it to the journal."""
    _finish(float(stop_timeout))
    if not isinstance(state, dict):
        return
    faults = _faults_of_run()
    state["pika_run_id"] = _run.run_id
    state["pika_faults"] = faults
    state["pika_safety"] = {
        "run_id": _run.run_id,
        "dry": _run.dry,
        "plan": _run.plan,
        "refused": _run.refused,
        "signal": _run.signal,
        "undone": _run.undone,
        "loads_stopped_at_signal": _run.loads_at_signal,
        "loads_stopped_at_end": _run.loads_at_end,
        "outstanding": [f["id"] for f in faults if f["state"] != "undone"],
        "earlier_outstanding": _run.earlier,
        "errors": _run.errors,
    }


def cleanup_control() -> None:
    """Last word of the run: undo anything left (if the end was skipped), put back
    the signal handlers."""
    try:
        _finish(10.0)
    finally:
        _restore_handlers()
        _run.cleaning = False
