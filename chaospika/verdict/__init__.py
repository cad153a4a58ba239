"""Journal -> verdict: one exit code a CI job can trust, and a JUnit report."""

from chaospika.verdict.judge import CODES, Verdict, judge
from chaospika.verdict.junit import junit_xml

__all__ = ["CODES", "Verdict", "judge", "junit_xml"]
