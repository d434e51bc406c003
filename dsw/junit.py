"""JUnit XML reports of `dsw submit`: one testsuite, one testcase per script, for CI servers.

The dialect is the one most CI servers read, the Jenkins xUnit plugin's junit-10.xsd (pytest's
too): `<testsuites>` around one `<testsuite>` that carries the counts, timestamp and hostname; each
`<testcase>` is named by the script's path, classed by its sandbox type, timed by its run.
SUCCEEDED passes; FAILED and TIME_LIMIT_EXCEEDED are `<failure>`s; REJECTED, a job with no result
and a script never published are `<error>`s; the script's output goes to `<system-out>` /
`<system-err>`.

A script's output is untrusted and XML 1.0 cannot hold every character: those it cannot (NUL and the
other C0 controls but tab, newline and CR; lone surrogates; U+FFFE, U+FFFF), and DEL and the C1
controls, are written as visible escapes such as `\\x1b`, so the file always parses. The report is
written to a temporary file beside its path and renamed over it: a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dsw.messages import Finished, FinishedWith, JobStatus

# Characters XML 1.0 cannot hold, and DEL and C1, which it can but which no report reader wants.
_NOT_XML = re.compile("[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Of stderr, the end goes into a failure's text too: where CI servers show the reason first.
_TAIL_LINES = 20
_TAIL_CHARS = 4000


def xml_text(text: str) -> str:
    """`text` with the characters XML cannot hold (and DEL, C1) as visible escapes."""
    return _NOT_XML.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), text)


@dataclass(frozen=True)
class Case:
    """One script as a testcase: what came back for its job (None: nothing, for `missing`)."""

    name: str  # the script's path
    classname: str  # the sandbox type
    job_id: str
    finished: Finished | None
    time_s: float  # the run's duration, so far or in all; 0 if it never ran
    missing: str = ""  # why there is no result, e.g. "no result within 30 s"
    published: bool = True  # False: the run ended before the job was sent


def verdict(case: Case) -> tuple[str, str, str] | None:
    """None for a pass, else (element, type, message): `failure` for a script that ran and did
    not succeed, `error` for one that was not run or whose result never came."""
    finished = case.finished
    if finished is None and not case.published:
        return "error", "NOT_PUBLISHED", case.missing or "not published"
    if finished is None:
        return "error", "NO_RESULT", case.missing or "no result"
    results = finished.script_results
    if finished.status is JobStatus.REJECTED or results is None:
        return "error", "REJECTED", f"rejected: {finished.rejection_reason or 'no reason given'}"
    if results.finished_with is FinishedWith.SUCCEEDED:
        return None
    if results.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED:
        after = "" if results.duration_seconds is None else f" after {results.duration_seconds:g} s"
        return "failure", "TIME_LIMIT_EXCEEDED", f"time limit exceeded: stopped{after}"
    code = "no exit code" if results.exit_code is None else f"exit code {results.exit_code}"
    why = [
        reason
        for reason, flagged in (
            ("out of memory", results.oom_killed),
            ("output limit exceeded", results.output_limit_exceeded),
        )
        if flagged
    ]
    return "failure", "FAILED", f"FAILED with {code}" + (f" ({', '.join(why)})" if why else "")


def _tail(text: str) -> str:
    return "\n".join(text[-_TAIL_CHARS:].splitlines()[-_TAIL_LINES:])


def _testcase(case: Case) -> ET.Element:
    element = ET.Element(
        "testcase",
        name=xml_text(case.name),
        classname=xml_text(case.classname),
        time=f"{max(case.time_s, 0.0):.3f}",
    )
    results = case.finished.script_results if case.finished else None
    found = verdict(case)
    if found:
        tag, kind, message = found
        outcome = ET.SubElement(element, tag, type=kind, message=xml_text(message))
        outcome.text = f"job {case.job_id}"
        if tag == "failure" and results and results.stderr:
            outcome.text += "\n" + xml_text(_tail(results.stderr))
    if results and results.stdout:
        ET.SubElement(element, "system-out").text = xml_text(results.stdout)
    if results and results.stderr:
        ET.SubElement(element, "system-err").text = xml_text(results.stderr)
    return element


def report(
    suite: str,
    cases: Sequence[Case],
    *,
    timestamp: datetime,
    time_s: float,
    hostname: str | None = None,
) -> ET.Element:
    """The report: `timestamp` when the suite started (local time, as Ant's JUnit task writes it),
    `time_s` how long it took in all."""
    verdicts = [verdict(case) for case in cases]
    counts = {
        "name": xml_text(suite),
        "tests": str(len(cases)),
        "failures": str(sum(v is not None and v[0] == "failure" for v in verdicts)),
        "errors": str(sum(v is not None and v[0] == "error" for v in verdicts)),
        "time": f"{max(time_s, 0.0):.3f}",
    }
    root = ET.Element("testsuites", counts)
    local = timestamp.astimezone().replace(microsecond=0, tzinfo=None)
    testsuite = ET.SubElement(
        root,
        "testsuite",
        {
            **counts,
            "skipped": "0",
            "timestamp": local.isoformat(),
            "hostname": xml_text(hostname or socket.gethostname()),
        },
    )
    testsuite.extend(_testcase(case) for case in cases)
    ET.indent(root)
    return root


def serialized(document: ET.Element) -> bytes:
    """The report as UTF-8 XML. A carriage return is written as `&#13;`: a parser would read a
    raw one as a newline, and a script's progress lines would run together."""
    data: bytes = ET.tostring(document, encoding="utf-8", xml_declaration=True)
    return data.replace(b"\r", b"&#13;") + b"\n"


def write_report(path: Path, document: ET.Element) -> None:
    """Write `document` to `path` atomically: a temporary file in its folder, renamed over `path`.
    Raises OSError (the temporary file is gone then)."""
    data = serialized(document)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # 0o666 less the umask, as any file the user's tools write; never a partial file at `path`.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
