"""The ttl watchdog: a detached process that undoes a fault nobody is left to undo.

`arm(fault)` starts ``python -m chaospika.ledger.watchdog FAULT_ID`` in its own
session. It polls the record: once it is undone (by the experiment, the safety
control or `chaospika cleanup`) it exits; once the ttl has passed and the
process that applied the fault is gone (SIGKILLed `chaos`, say) it undoes the
fault itself. It gives up an hour past the ttl, and after five failed undos
(the record keeps the error for `chaospika cleanup`).
"""

import logging
import os
import subprocess
import sys
import time

from chaoslib.exceptions import ActivityFailed

from chaospika.ledger import store
from chaospika.ledger.records import Fault, applied, get, owner_alive
from chaospika.ledger.undo import undo

__all__ = ["arm", "watch"]

POLL_SECONDS = 0.2
GIVE_UP_AFTER_SECONDS = 3600.0
UNDO_ATTEMPTS = 5

logger = logging.getLogger("chaospika.ledger.watchdog")


def arm(fault: Fault) -> int:
    """Start the detached watchdog of `fault` (which has an expiry); return its pid."""
    log = os.path.join(store.ledger_dir(), f"{fault.id}.watchdog.log")
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "chaospika.ledger.watchdog", fault.id],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "CHAOSPIKA_LEDGER_DIR": store.ledger_dir()},
        )
    applied(fault, watchdog_pid=process.pid)
    return process.pid


def watch(fault_id: str, poll: float = POLL_SECONDS) -> str:
    """Watch `fault_id` until it is undone, by others or by this; return how it ended."""
    attempts = 0
    while True:
        fault = get(fault_id)
        if fault is None or not fault.open:
            return "undone by others"
        expires = fault.data.get("expires_at")
        if expires is None:
            return "no ttl"
        now = time.time()
        if now > expires + GIVE_UP_AFTER_SECONDS:
            return "gave up"
        if now >= expires and not owner_alive(fault):
            try:
                undo(fault_id, by="ttl")
                return "undone at ttl"
            except ActivityFailed as error:
                attempts += 1
                if attempts >= UNDO_ATTEMPTS:
                    logger.error("undo at ttl failed %d times: %s", attempts, error)
                    return "undo failed; run chaospika cleanup"
                logger.warning("undo at ttl failed, retrying: %s", error)
                time.sleep(1.0)
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    """`python -m chaospika.ledger.watchdog FAULT_ID`."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    outcome = watch(args[0])
    logger.info("fault %s: %s", args[0], outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
