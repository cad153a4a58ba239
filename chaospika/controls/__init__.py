"""Chaos Toolkit controls of chaospika.

`chaospika.controls.safety`: a fresh run id per experiment, a pre-flight of every
fault against an allow-list, and the undo of this run's faults on SIGINT/SIGTERM
and at the end of the experiment, whatever its status.
"""

__all__: list[str] = []
