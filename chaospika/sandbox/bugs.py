"""Names and validation of the bugs the sandbox can be seeded with."""

from collections.abc import Iterable

__all__ = [
    "ACK_BEFORE_COMMIT",
    "KNOWN_BUGS",
    "NON_IDEMPOTENT_WORKER",
    "NO_CLAIM",
    "NO_REDIS_TIMEOUT",
    "OVERSELL",
    "SLOW_SUBSCRIBER",
    "STOCK_RESEED",
    "parse_bugs",
]

ACK_BEFORE_COMMIT = "ack-before-commit"
NON_IDEMPOTENT_WORKER = "non-idempotent-worker"
OVERSELL = "oversell"
NO_CLAIM = "no-claim"
NO_REDIS_TIMEOUT = "no-redis-timeout"
SLOW_SUBSCRIBER = "slow-subscriber"
STOCK_RESEED = "stock-reseed"

KNOWN_BUGS = (
    ACK_BEFORE_COMMIT,
    NON_IDEMPOTENT_WORKER,
    OVERSELL,
    NO_CLAIM,
    NO_REDIS_TIMEOUT,
    STOCK_RESEED,
    SLOW_SUBSCRIBER,
)


def parse_bugs(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return the bugs named in `value` (comma-separated text or a list), checked.

    Raises ValueError naming every unknown bug and the known ones.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        names = value.split(",")
    else:
        try:
            names = list(value)
        except TypeError:
            raise ValueError(
                f"bugs must be a comma-separated string or a list, got {value!r}"
            )
    wanted = []
    for name in names:
        name = str(name).strip()
        if name and name not in wanted:
            wanted.append(name)
    unknown = [name for name in wanted if name not in KNOWN_BUGS]
    if unknown:
        raise ValueError(
            f"unknown bug(s) {', '.join(unknown)}; known bugs: {', '.join(KNOWN_BUGS)}"
        )
    return tuple(bug for bug in KNOWN_BUGS if bug in wanted)
