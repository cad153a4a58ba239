"""Refuse to signal processes that a fault must never touch.

Refused: init, this process, its ancestors, any non-leader thread id (a signal to
a tid reaches its whole thread group), kernel threads, and a pid whose command
line no longer matches the start command recorded beside its pidfile (reuse).
"""

import os
import shlex

from chaoslib.exceptions import ActivityFailed

from chaospika import _proc

__all__ = ["PROC", "command_mismatch", "refusal", "refuse_unsafe"]

PROC = "/proc"
PF_KTHREAD = 0x00200000  # /proc/<pid>/stat field 9: the task is a kernel thread
KTHREADD = 2
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"}
SHOWN_CHARACTERS = 160


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:  # gone, or not readable: nothing to judge by
        return None


def _stat(pid: int, proc: str) -> tuple[str, list[str]] | None:
    """Return the command name and the /proc/<pid>/stat fields after it."""
    content = _read(os.path.join(proc, str(pid), "stat"))
    if not content:
        return None
    text = content.decode(errors="replace")
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def _name(pid: int, proc: str) -> str:
    stat = _stat(pid, proc)
    return stat[0] if stat else "?"


def _parent(pid: int, proc: str) -> int | None:
    stat = _stat(pid, proc)
    return int(stat[1][1]) if stat and len(stat[1]) > 1 else None


def _ancestors(proc: str) -> list[int]:
    """Return the pids from this process's parent up to (excluding) pid 1."""
    chain: list[int] = []
    pid = _parent(os.getpid(), proc)
    while pid is not None and pid > 1 and pid not in chain:
        chain.append(pid)
        pid = _parent(pid, proc)
    return chain


def _thread_group(pid: int, proc: str) -> int | None:
    """Return the Tgid of `pid` from /proc/<pid>/status."""
    content = _read(os.path.join(proc, str(pid), "status")) or b""
    for line in content.decode(errors="replace").splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None


def _own_threads(proc: str) -> set[int]:
    try:
        return {int(name) for name in os.listdir(os.path.join(proc, "self", "task"))}
    except OSError:
        return set()


def _is_kernel_thread(pid: int, proc: str) -> bool:
    stat = _stat(pid, proc)
    if not stat or len(stat[1]) < 7:
        return False
    return int(stat[1][6]) & PF_KTHREAD != 0


def _argv(pid: int, proc: str) -> list[str] | None:
    content = _read(os.path.join(proc, str(pid), "cmdline"))
    if content is None:
        return None
    argv = [part.decode(errors="surrogateescape") for part in content.split(b"\0")]
    return _trimmed(argv)


def _trimmed(argv: list[str]) -> list[str]:
    """`argv` without trailing empty words (/proc cannot tell them from padding)."""
    argv = list(argv)
    while argv and argv[-1] == "":
        argv.pop()
    return argv


def _show(argv: list[str]) -> str:
    text = shlex.join(argv)
    if len(text) > SHOWN_CHARACTERS:
        return text[: SHOWN_CHARACTERS - 3] + "..."
    return text


def _contains(words: list[str], part: list[str]) -> bool:
    size = len(part)
    return any(words[at : at + size] == part for at in range(len(words) - size + 1))


def _matches(live: list[str], recorded: list[str]) -> bool:
    """Tell whether `live` can be the process started by `recorded`.

    Besides equality: an exec-ing wrapper (`env A=1 prog`, `sh -c 'exec prog'`),
    a script run through its #! interpreter, and a process title set by the
    program itself (redis-server "redis-server *:6379").
    """
    if live == recorded:
        return True
    program = os.path.basename(recorded[0])
    words = list(recorded)
    if program in SHELLS and "-c" in recorded[1:-1]:
        try:
            words += shlex.split(recorded[recorded.index("-c", 1) + 1])
        except ValueError:
            pass
    if _contains(words[1:], live):
        return True
    rest = recorded[1:]
    if len(live) > len(rest) + 1 and live[len(live) - len(rest) :] == rest:
        script = live[len(live) - len(rest) - 1]
        if os.path.basename(script) == program:
            return True
    if len(live) == 1 and (" " in live[0] or ":" in live[0]):
        title = live[0].split()[0].rstrip(":")
        return os.path.basename(title) == program
    return False


def command_mismatch(pid: int, pidfile: str, proc: str = PROC) -> str | None:
    """Return why `pid` is not the process recorded beside `pidfile`, if it is not."""
    try:
        recorded = _proc.load_command(pidfile)["argv"]
    except (OSError, ValueError):
        return None  # no usable record: only the pidfile's age can tell reuse
    live = _argv(pid, proc)
    if live is None or not live or _matches(live, _trimmed(recorded)):
        return None
    return (
        f"pid {pid} now runs `{_show(live)}`, recorded `{_show(recorded)}` in "
        f"{_proc.command_file(pidfile)!r}: the pid was reused (delete that record "
        "if the process was restarted with a new command)"
    )


def refusal(pid: int, pidfile: str | None = None, proc: str = PROC) -> str | None:
    """Return why signalling `pid` is refused, or None if it may be signalled."""
    me = os.getpid()
    if pid < 1:
        return f"pid {pid} would signal a whole process group"
    if pid == 1:
        return f"pid 1 is init ({_name(1, proc)})"
    if pid == me:
        return f"pid {pid} is this process ({_name(pid, proc)})"
    group = _thread_group(pid, proc)
    if pid in _own_threads(proc) or group == me:
        return (
            f"pid {pid} is a thread of this process ({_name(me, proc)}, pid {me}): "
            "a signal to it reaches the whole process"
        )
    if group is not None and group != pid:
        return (
            f"pid {pid} is a thread of process {group} ({_name(group, proc)}), "
            "not a process: a signal to it reaches that whole process"
        )
    if pid in _ancestors(proc):
        return f"pid {pid} is an ancestor of this process ({_name(pid, proc)})"
    if pid == KTHREADD and _is_kernel_thread(pid, proc):
        return f"pid {pid} is the kernel thread daemon ({_name(pid, proc)})"
    if _is_kernel_thread(pid, proc) or (
        _parent(pid, proc) == KTHREADD and _is_kernel_thread(KTHREADD, proc)
    ):
        return f"pid {pid} is a kernel thread ({_name(pid, proc)})"
    # An empty command line alone proves nothing: a process shows one while it
    # execs or exits. PF_KTHREAD above is the kernel's own mark.
    return command_mismatch(pid, pidfile, proc) if pidfile else None


def refuse_unsafe(pid: int, pidfile: str | None) -> None:
    """Raise ActivityFailed, naming the reason, if `pid` must not be signalled."""
    reason = refusal(pid, pidfile)
    if reason:
        argument = f"argument 'pidfile' ({pidfile})" if pidfile else "argument 'pid'"
        raise ActivityFailed(f"{argument}: refusing to send a signal: {reason}")
