"""A verdict as JUnit XML: one test case per probe, method activity, threshold, rollback."""

from xml.etree import ElementTree

from chaospika.verdict.judge import Verdict

__all__ = ["junit_xml"]


def junit_xml(verdict: Verdict) -> str:
    """Return the JUnit XML text of `verdict` (one suite: the experiment)."""
    failures = [check for check in verdict.checks if not check.ok]
    suite = ElementTree.Element(
        "testsuite",
        name=verdict.title or "chaos experiment",
        tests=str(len(verdict.checks) + 1),
        failures=str(len(failures) + (verdict.code != 0)),
        errors="0",
        time=f"{sum(check.seconds for check in verdict.checks):.3f}",
    )
    overall = ElementTree.SubElement(
        suite, "testcase", classname="verdict", name=verdict.outcome
    )
    if verdict.code:
        failure = ElementTree.SubElement(
            overall, "failure", message=verdict.reasons[0] if verdict.reasons else ""
        )
        failure.text = "\n".join(verdict.reasons)
    for check in verdict.checks:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=check.kind,
            name=check.name,
            time=f"{check.seconds:.3f}",
        )
        if not check.ok:
            failure = ElementTree.SubElement(case, "failure", message=check.message)
            failure.text = check.message
    ElementTree.indent(suite)
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
