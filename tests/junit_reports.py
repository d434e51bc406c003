"""Test helper: a JUnit XML report of `dsw submit` read back as CI servers read it, by junitparser
after a check against junit-10's content model."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from junitparser import TestSuite, xunit2

# junit-10.xsd's content model (Jenkins xUnit plugin; pytest validates its own reports against
# it): the children each element may have, in this order, and the attributes it must have.
_CHILDREN = {
    "testsuites": ["testsuite"],
    "testsuite": ["properties", "testcase", "system-out", "system-err"],
    "testcase": ["skipped", "error", "failure", "system-out", "system-err"],
    "properties": ["property"],
}
_ALLOWED = {
    "testsuites": {"name", "time", "tests", "failures", "disabled", "errors"},
    "testsuite": {
        "name",
        "tests",
        "failures",
        "errors",
        "time",
        "disabled",
        "skipped",
        "timestamp",
        "hostname",
        "id",
        "package",
    },
    "testcase": {"name", "classname", "time", "assertions", "status"},
    "failure": {"message", "type"},
    "error": {"message", "type"},
    "system-out": set(),
    "system-err": set(),
}
_REQUIRED = {"testsuite": {"name", "tests"}, "testcase": {"name"}}


def _check_content_model(element: ET.Element) -> None:
    assert set(element.attrib) <= _ALLOWED[element.tag], element.attrib
    assert _REQUIRED.get(element.tag, set()) <= set(element.attrib), element.attrib
    allowed = _CHILDREN.get(element.tag, [])
    order = [allowed.index(child.tag) for child in element]  # ValueError: not allowed here
    assert order == sorted(order), [child.tag for child in element]
    for child in element:
        _check_content_model(child)


def read_report(path: Path) -> TestSuite:
    """The report's one testsuite, read by junitparser, after checking that the file is XML
    (expat refuses any character XML 1.0 cannot hold), follows junit-10's content model, and
    that its counts are those of its testcases."""
    root = ET.fromstring(path.read_bytes())
    assert root.tag == "testsuites"
    _check_content_model(root)
    [suite] = list(xunit2.JUnitXml.fromfile(str(path)))
    cases = list(suite)
    assert suite.tests == len(cases)
    assert suite.failures == sum(case.is_failure for case in cases)
    assert suite.errors == sum(case.is_error for case in cases)
    assert root.get("tests") == str(suite.tests)
    assert root.get("failures") == str(suite.failures)
    assert root.get("errors") == str(suite.errors)
    assert suite.time is not None
    assert suite.time >= 0
    assert suite.hostname
    datetime.fromisoformat(suite.timestamp)
    return suite
