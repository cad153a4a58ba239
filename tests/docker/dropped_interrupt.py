"""An activity for the interrupt tests: a signal whose handler runs in a finalizer.

CPython runs a signal handler between two bytecodes of the main thread, and
that may be inside a ``__del__`` or a weakref callback (the Docker SDK's
responses and sockets are finalized so, at any time the garbage collector
runs); an exception the handler raises there is printed ("Exception ignored
in ...") and dropped. In a real run that happens once in many; here the
process signals itself from inside ``__del__``, so it happens every time.
"""

import os
import signal
import time


class _SignalsWhenFinalized:
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        for _ in range(3):  # the handler runs at the next bytecode boundary: here
            pass


def signal_inside_a_finalizer(
    signal_name: str = "SIGINT", then_sleep: float = 0
) -> str:
    """Send `signal_name` to this process from inside a finalizer, then sleep
    `then_sleep` seconds (as chaos does in a pause: only a signal ends that)."""
    _SignalsWhenFinalized(signal.Signals[signal_name])  # finalized at once
    time.sleep(then_sleep)
    return f"{signal_name} was handled inside a finalizer"
