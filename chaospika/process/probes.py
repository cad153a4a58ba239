"""Process probes: is the process of a pidfile (or pid) running, and what is it."""

from chaoslib.types import Configuration, Secrets

from chaospika._secrets import redact
from chaospika.process import _pidfile

__all__ = ["process_info", "process_running"]


def process_running(
    pidfile: str = None,
    pid: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """Tell whether the process of `pidfile` or `pid` is running.

    A missing pidfile, an exited (zombie) process or a pid reused by a process
    started after the pidfile was written count as not running. A paused
    (SIGSTOP) process counts as running; `process_info` tells it apart. A pidfile
    that does not hold a pid is an error.
    """
    return _pidfile.locate(pidfile, pid, missing_ok=True).alive


def process_info(
    pidfile: str = None,
    pid: int = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict:
    """Describe the process of `pidfile` or `pid`.

    Returns pid, pidfile, running, and for a running process: argv, state
    (running, sleeping, stopped...), paused, started_at (epoch seconds),
    uptime_seconds, threads and rss_bytes; otherwise the reason it is not running.
    """
    return redact(_pidfile.describe(_pidfile.locate(pidfile, pid, missing_ok=True)))
