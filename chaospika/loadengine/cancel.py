"""Cancel tasks so that a stop always ends, even when a task ignores a cancel."""

import asyncio
import logging
from collections.abc import Iterable

__all__ = ["cancel_all"]

logger = logging.getLogger("chaostoolkit")

CANCEL_ROUNDS = 20  # cancels of a task that ignores them before giving up on it
CANCEL_WAIT = 0.25  # seconds to wait for cancelled tasks in each round


async def cancel_all(tasks: Iterable[asyncio.Task], patience: float = 0.0) -> None:
    """Cancel `tasks` and wait for them, cancelling again those that ignore it.

    The first wait lasts at least `patience` seconds (time for a cancelled
    task's own cleanup); a task that swallows its cancellation (user code, or
    asyncio.wait_for on 3.11) is then cancelled again every CANCEL_WAIT s, up
    to CANCEL_ROUNDS times, and left behind with an error log: a stop always ends.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    wait = max(patience, CANCEL_WAIT)
    for _ in range(CANCEL_ROUNDS):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait)
        wait = CANCEL_WAIT
    if pending:
        logger.error("load: %d tasks ignored cancellation; left behind", len(pending))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
