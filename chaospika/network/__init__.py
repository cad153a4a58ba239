"""Network faults: a TCP fault proxy with Toxiproxy's HTTP API, and activities driving it.

`chaospika.network.server` runs the API (``chaospika proxy``, ``python -m
chaospika.network.server`` or `ProxyServer` / `ProxyServerThread` in-process);
each proxy forwards one loopback listen address to one upstream, through the
toxics of `chaospika.network.toxics` (latency, bandwidth, timeout, reset_peer,
slow_close, slicer, limit_data). `chaospika.network.actions` and `probes` are the
Chaos Toolkit activities (latency, any toxic, partitions; through the fault
ledger), against this proxy or a real Toxiproxy server; `chaospika.network.client`
is the small synchronous client they and the ledger's undos call.
"""

__all__: list[str] = []
