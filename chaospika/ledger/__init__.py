"""The fault ledger: the one path every fault takes.

A fault writes a durable record (what, where, how to undo it, which run, when it
expires) *before* it is applied, and the record is marked undone after its undo.
An undo is idempotent (a record already undone is not undone again) and raises
`ActivityFailed` when it really failed; the record then stays outstanding, so
`chaospika cleanup` can try again. See `store` for where records live.
"""

from chaospika.ledger import records
from chaospika.ledger.records import (
    Fault,
    applied,
    current_run_id,
    get,
    outstanding,
    prune,
    record,
    resolve,
    set_run_id,
)
from chaospika.ledger.undo import undo, undo_outstanding

__all__ = [
    "Fault",
    "applied",
    "current_run_id",
    "get",
    "outstanding",
    "prune",
    "record",
    "records",
    "resolve",
    "set_run_id",
    "undo",
    "undo_outstanding",
]
