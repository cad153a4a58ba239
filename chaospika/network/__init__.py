"""A TCP fault proxy with Toxiproxy's HTTP API, shipped in the package.

`chaospika.network.server` runs the API (``python -m chaospika.network.server``
or `ProxyServer` / `ProxyServerThread` in-process); each proxy forwards one
loopback listen address to one upstream, through the toxics of
`chaospika.network.toxics` (latency, bandwidth, timeout, reset_peer, slow_close,
slicer, limit_data). `chaospika.network.client` is the small synchronous client
the activities and the fault ledger's undos call.
"""

__all__: list[str] = []
