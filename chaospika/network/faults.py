"""The network faults the safety control knows (see chaospika.controls._faults).

Each is aimed at the proxy API named by `proxy_url`, whose host must be in the
control's ``allow_hosts`` (loopback by default).
"""

from chaospika.controls._faults import FaultKind, register_fault, url_targets

__all__: list[str] = []

_ACTIONS = "chaospika.network.actions"
_TOXIC_UNDO = (
    "remove the toxic (chaospika.network.client.remove_toxic); with ttl our proxy "
    "drops it by itself and a ledger watchdog removes it"
)
for _func in ("add_toxic", "inject_latency"):
    register_fault(
        f"{_ACTIONS}.{_func}",
        FaultKind("network.toxic", url_targets("proxy_url"), undo=_TOXIC_UNDO),
    )
register_fault(
    f"{_ACTIONS}.disable_proxy",
    FaultKind(
        "network.partition",
        url_targets("proxy_url"),
        undo=(
            "enable the proxy (chaospika.network.client.enable_proxy); with ttl our "
            "proxy enables itself and a ledger watchdog enables it"
        ),
    ),
)
