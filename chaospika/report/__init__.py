"""Journal reports: a text summary (`python -m chaospika.report journal.json`) and a
self-contained HTML report (`chaospika report JOURNAL -o report.html`)."""

from chaospika.report.text import main, summarize

__all__ = ["main", "summarize"]
