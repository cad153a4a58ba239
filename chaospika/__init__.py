"""Chaos Toolkit extension: faults, data-truth probes, load and a sandbox target."""

from importlib.metadata import PackageNotFoundError, version

from chaoslib.discovery.discover import (
    discover_actions,
    discover_probes,
    initialize_discovery_result,
)
from chaoslib.types import DiscoveredActivities, Discovery

from chaospika._secrets import install_log_filter

try:
    __version__ = version("chaostoolkit-pika")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

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


def discover(discover_system: bool = True) -> Discovery:
    """Discover every activity this extension exports."""
    discovery = initialize_discovery_result("chaostoolkit-pika", __version__, "pika")
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> list[DiscoveredActivities]:
    """Extract metadata from every exported action and probe."""
    activities = []
    for module in ACTIVITY_MODULES["actions"]:
        activities.extend(discover_actions(module))
    for module in ACTIVITY_MODULES["probes"]:
        activities.extend(discover_probes(module))
    return activities
