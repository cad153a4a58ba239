"""Chaos Toolkit extension: faults, data-truth probes, load and a sandbox target."""

# chaoslib's discovery and importlib.metadata are imported when first needed: a
# load generator process (`chaospika load run`, the engine's workers) starts
# about 40 ms of CPU sooner without them.
from functools import cache
from typing import TYPE_CHECKING, Any

from chaospika._secrets import install_log_filter

if TYPE_CHECKING:
    from chaoslib.types import DiscoveredActivities, Discovery

__all__ = ["__version__", "discover", "load_exported_activities"]

# No password reaches the chaostoolkit log (console, --log-file): every record is
# redacted (URL passwords, password=... pairs, the run's secret values).
install_log_filter()

# One entry per domain folder; each names its modules that export activities.
ACTIVITY_MODULES = {
    "actions": [
        "chaospika.process.actions",
        "chaospika.redis.actions",
        "chaospika.load.actions",
        "chaospika.http.actions",
        "chaospika.network.actions",
        "chaospika.k8s.actions",
        "chaospika.docker.actions",
    ],
    "probes": [
        "chaospika.process.probes",
        "chaospika.sql.probes",
        "chaospika.redis.probes",
        "chaospika.consistency.probes",
        "chaospika.http.probes",
        "chaospika.load.probes",
        "chaospika.network.probes",
        "chaospika.k8s.probes",
        "chaospika.docker.probes",
        "chaospika.ws.probes",
    ],
}


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chaostoolkit-pika")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'chaospika' has no attribute {name!r}")


def discover(discover_system: bool = True) -> "Discovery":
    """Discover every activity this extension exports."""
    from chaoslib.discovery.discover import initialize_discovery_result

    discovery = initialize_discovery_result("chaostoolkit-pika", _version(), "pika")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> list["DiscoveredActivities"]:
    """Extract metadata from every exported action and probe."""
    from chaoslib.discovery.discover import discover_actions, discover_probes

    activities = []
    for module in ACTIVITY_MODULES["actions"]:
        activities.extend(discover_actions(module))
    for module in ACTIVITY_MODULES["probes"]:
        activities.extend(discover_probes(module))
    return activities
