"""Service B: a second order system, written apart from chaospika's sandbox.

It sells inventory through its own names everywhere, so that the worker-crash
experiment can be pointed at it by configuration alone:

* ``api``: aiohttp; ``GET /healthz``, ``PUT /v2/inventory/{sku}`` with
  ``{"quantity": N}``, ``POST /v2/purchases`` with ``{"sku", "buyer"}`` answering
  201 ``{"id": ref}`` or 410 when sold out. Redis keeps ``inv:{sku}:left`` and the
  stream ``shop:purchases`` (field ``purchase_ref``), changed by one Lua script.
* ``worker``: consumer group ``fulfilment``; writes ``b_purchases`` and
  ``b_stock`` in PostgreSQL, one transaction per batch, XACK after the commit;
  takes over entries of dead consumers with XAUTOCLAIM. ``--drop-every N`` is a
  broken variant that acknowledges every Nth purchase without storing it.
* ``store``: the PostgreSQL schema and statements both share.

Run them from the repository root: ``python -m tests.order_service_b.api ...``.
"""
