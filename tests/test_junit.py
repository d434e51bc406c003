"""dsw.junit: the JUnit XML report of `dsw submit`, read back as CI servers read it.

Every report is read by junitparser (its `xunit2` flavour, the Jenkins xUnit plugin's junit-10
dialect that GitLab, GitHub report actions and Jenkins read) and checked against the content model
of that schema: which elements go where, in which order, with which attributes.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from junitparser import Error, Failure, TestSuite

from dsw import junit
from dsw.errors import UnreadableMessage
from dsw.messages import Finished, FinishedWith, JobStatus, ScriptResults, decode_finished
from tests.junit_reports import read_report


def results(finished_with: FinishedWith, **fields: Any) -> ScriptResults:
    empty = ScriptResults(finished_with=finished_with, stdout="", stderr="", exit_code=0)
    return msgspec.structs.replace(empty, **fields)


def accepted(job_id: str, script_results: ScriptResults) -> Finished:
    return Finished(job_id=job_id, status=JobStatus.ACCEPTED, script_results=script_results)


def write(tmp_path: Path, cases: list[junit.Case], suite: str = "dsw") -> TestSuite:
    path = tmp_path / "report.xml"
    tree = junit.report(suite, cases, timestamp=datetime.now(), time_s=12.5)
    junit.write_report(path, tree)
    return read_report(path)


SHELL = "linux-amd64-shell"


def test_every_outcome(tmp_path: Path) -> None:
    failed = results(FinishedWith.FAILED, exit_code=3, stderr="boom\n", duration_seconds=0.25)
    cases = [
        junit.Case(
            "ok.sh",
            SHELL,
            "id-ok",
            accepted("id-ok", results(FinishedWith.SUCCEEDED, stdout="hi\n", duration_seconds=1)),
            1.0,
        ),
        junit.Case("failing.sh", SHELL, "id-failing", accepted("id-failing", failed), 0.25),
        junit.Case(
            "oom.sh",
            SHELL,
            "id-oom",
            accepted("id-oom", results(FinishedWith.FAILED, exit_code=137, oom_killed=True)),
            0.5,
        ),
        junit.Case(
            "slow.sh",
            SHELL,
            "id-slow",
            accepted(
                "id-slow",
                results(
                    FinishedWith.TIME_LIMIT_EXCEEDED,
                    exit_code=143,
                    duration_seconds=3.0,
                    stderr="dsw: the script passed its 3 s time limit and was stopped\n",
                ),
            ),
            3.0,
        ),
        junit.Case(
            "large.sh",
            SHELL,
            "id-large",
            Finished(
                job_id="id-large",
                status=JobStatus.REJECTED,
                rejection_reason="script is 300 bytes, over WORKER_MAX_SCRIPT_BYTES=200",
            ),
            0.0,
        ),
        junit.Case("lost.sh", SHELL, "id-lost", None, 0.0, "no result within 30 s"),
        junit.Case(
            "unsent.sh",
            SHELL,
            "id-unsent",
            None,
            0.0,
            "not published within 30 s",
            published=False,
        ),
    ]
    suite = write(tmp_path, cases, suite="scripts")
    assert (suite.name, suite.tests, suite.failures, suite.errors) == ("scripts", 7, 3, 3)
    assert suite.time == 12.5
    ok, failing, oom, slow, large, lost, unsent = list(suite)
    assert [case.name for case in suite] == [c.name for c in cases]
    assert {case.classname for case in suite} == {SHELL}
    assert ok.is_passed
    assert ok.time == 1.0
    assert ok.system_out == "hi\n"
    assert ok.system_err is None

    [failure] = failing.result
    assert isinstance(failure, Failure)
    assert (failure.type, failure.message) == ("FAILED", "FAILED with exit code 3")
    assert failure.text == "job id-failing\nboom"
    assert failing.system_err == "boom\n"
    assert failing.time == 0.25
    assert oom.result[0].message == "FAILED with exit code 137 (out of memory)"

    [limit] = slow.result
    assert isinstance(limit, Failure)
    assert limit.type == "TIME_LIMIT_EXCEEDED"
    assert limit.message == "time limit exceeded: stopped after 3 s"
    assert "passed its 3 s time limit" in (limit.text or "")

    [rejected] = large.result
    assert isinstance(rejected, Error)
    assert rejected.type == "REJECTED"
    assert rejected.message == "rejected: script is 300 bytes, over WORKER_MAX_SCRIPT_BYTES=200"
    [missing] = lost.result
    assert isinstance(missing, Error)
    assert (missing.type, missing.message) == ("NO_RESULT", "no result within 30 s")
    assert missing.text == "job id-lost"
    [never_sent] = unsent.result
    assert isinstance(never_sent, Error)
    assert (never_sent.type, never_sent.message) == ("NOT_PUBLISHED", "not published within 30 s")
    assert unsent.time == 0


def test_an_empty_report_is_valid(tmp_path: Path) -> None:
    suite = write(tmp_path, [])
    assert (suite.tests, suite.failures, suite.errors) == (0, 0, 0)


# As the worker makes them from the script's bytes (invalid UTF-8 becomes U+FFFD), and as another
# writer of JSON may send them: a lone surrogate, through dsw submit's own decoder.
HOSTILE_BYTES = (
    b"nul\x00 bad\xff\xfe utf8 ]]> cdata \x1b]0;title\x07 \x1b[31mred\x1b[0m \x7f\xc2\x85 end"
)
HOSTILE_JSON = (
    '{"jobId": "j", "status": "ACCEPTED", "scriptResults": {"finishedWith": "FAILED", '
    '"stdout": "lone \\ud800 high, \\udfff low, \\ufffe \\uffff, \\u0000", '
    '"stderr": "pair \\ud83d\\ude00 kept\\r\\n", "exitCode": 1}}'
)


def test_hostile_output_stays_valid_xml(tmp_path: Path) -> None:
    worker_made = results(
        FinishedWith.FAILED,
        exit_code=1,
        stdout=HOSTILE_BYTES.decode(errors="replace"),
        stderr="<system-err>&amp;</testcase>\n",
    )
    foreign = decode_finished(HOSTILE_JSON.encode())
    assert foreign.script_results is not None
    assert "\ud800" in foreign.script_results.stdout  # as sent: nothing lost before the report
    cases = [
        junit.Case("hostile\x1b[2J.sh", SHELL, "a", accepted("a", worker_made), 1.0),
        junit.Case("foreign.sh", "type\x00", "b", foreign, 1.0),
    ]
    suite = write(tmp_path, cases)
    first, second = list(suite)
    assert first.name == "hostile\\x1b[2J.sh"
    assert first.system_out == (
        "nul\\x00 bad\ufffd\ufffd utf8 ]]> cdata \\x1b]0;title\\x07 \\x1b[31mred\\x1b[0m "
        "\\x7f\\x85 end"
    )
    assert first.system_err == "<system-err>&amp;</testcase>\n"
    assert second.classname == "type\\x00"
    assert second.system_out == "lone \\ud800 high, \\udfff low, \\ufffe \\uffff, \\x00"
    assert second.system_err == "pair \U0001f600 kept\r\n"  # a CR survives the parser too


def test_every_code_point_is_kept_or_escaped(tmp_path: Path) -> None:
    every = "".join(map(chr, range(0x110000)))
    shown = junit.xml_text(every)
    shown.encode("utf-8")  # no surrogate is left
    everything = accepted("c", results(FinishedWith.SUCCEEDED, stdout=every))
    [case] = list(write(tmp_path, [junit.Case("all.sh", SHELL, "c", everything, 0)]))
    assert case.system_out == shown
    assert shown.count("\\") - every.count("\\") == 32 - 3 + 1 + 32 + 2048 + 2
    for allowed in "\t\n\r \x7e\xa0\ud7ff\ue000\ufffd\U00010000\U0010ffff":
        assert allowed in shown


def test_the_report_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.xml"
    path.write_text("old")
    tree = junit.report("dsw", [], timestamp=datetime.now(), time_s=0)

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="No space"):
            junit.write_report(path, tree)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.xml"]  # no temporary left
    os.umask(previous := os.umask(0o022))
    try:
        junit.write_report(path, tree)
    finally:
        os.umask(previous)
    read_report(path)
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileNotFoundError):
        junit.write_report(tmp_path / "missing" / "report.xml", tree)


def test_decode_finished_reads_what_msgspec_refuses() -> None:
    plain = decode_finished(b'{"jobId": "j", "status": "REJECTED", "rejectionReason": "x"}')
    assert plain.rejection_reason == "x"
    with pytest.raises(UnreadableMessage):  # readable, but not a `finished`
        decode_finished(b'{"jobId": "j", "status": "ACCEPTED", "scriptResults": "\\ud800"}')
    with pytest.raises(UnreadableMessage):
        decode_finished(b"not json")
