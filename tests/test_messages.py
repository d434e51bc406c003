"""Wire compatibility with the scheduler: the messages' shapes, job ids, and trimming to fit."""

from __future__ import annotations

import json

import msgspec
import pytest

from dsw.errors import InvalidJobId, UnreadableMessage
from dsw.messages import (
    Finished,
    FinishedWith,
    Job,
    JobStatus,
    Running,
    ScriptResults,
    decode_finished,
    decode_json,
    decode_running,
    encode,
    fit,
    validate_job_id,
)
from tests.workers import EXAMPLE_JOB

JOB_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"


def test_the_original_readme_example_job_byte_for_byte() -> None:
    job = msgspec.convert(decode_json(EXAMPLE_JOB.encode()), Job)
    assert job.job_id == JOB_ID
    assert job.script == 'Console.WriteLine("Hello from script");'
    assert job.job_config is not None
    assert job.job_config.nuget_config_xml is not None
    assert job.job_config.nuget_config_xml.startswith('<?xml version="1.0" encoding="utf-8"?>')


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    value = decode_json(f'{{"jobId": "{JOB_ID}", "script": "x", "extra": 1}}'.encode())
    assert msgspec.convert(value, Job).job_config is None
    # The scheduler sends an explicit null when a job has no config.
    value = decode_json(f'{{"jobId": "{JOB_ID}", "script": "x", "jobConfig": null}}'.encode())
    assert msgspec.convert(value, Job).job_config is None


def test_outgoing_messages_have_the_original_shape() -> None:
    assert json.loads(encode(Running(job_id=JOB_ID))) == {"jobId": JOB_ID}
    rejected = json.loads(encode(Finished(job_id=JOB_ID, status=JobStatus.REJECTED)))
    assert rejected == {"jobId": JOB_ID, "status": "REJECTED"}  # no scriptResults at all
    results = ScriptResults(finished_with=FinishedWith.TIME_LIMIT_EXCEEDED, stdout="o", stderr="e")
    accepted = json.loads(
        encode(Finished(job_id=JOB_ID, status=JobStatus.ACCEPTED, script_results=results))
    )
    assert accepted["status"] == "ACCEPTED"
    assert accepted["scriptResults"]["finishedWith"] == "TIME_LIMIT_EXCEEDED"
    assert (accepted["scriptResults"]["stdout"], accepted["scriptResults"]["stderr"]) == ("o", "e")


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b"[" * 100_000 + b"]" * 100_000, b'{"a": 1e400}', b'"\xff"'],
)
def test_what_cannot_be_read_is_unreadable_message(data: bytes) -> None:
    with pytest.raises(UnreadableMessage):
        decode_json(data)


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b"[" * 100_000 + b"]" * 100_000, b'{"jobId": 1}', b'"\xff"', b"[]"],
)
def test_an_outcome_that_cannot_be_read_is_unreadable_message(data: bytes) -> None:
    with pytest.raises(UnreadableMessage):
        decode_running(data)
    with pytest.raises(UnreadableMessage):
        decode_finished(data)


def test_outcomes_are_read_as_the_worker_writes_them() -> None:
    assert decode_running(encode(Running(job_id=JOB_ID))) == Running(job_id=JOB_ID)
    results = ScriptResults(finished_with=FinishedWith.FAILED, stdout="o", stderr="e", exit_code=3)
    finished = Finished(job_id=JOB_ID, status=JobStatus.ACCEPTED, script_results=results)
    assert decode_finished(encode(finished)) == finished
    # Unknown fields (a newer worker's) are ignored.
    assert decode_running(f'{{"jobId": "{JOB_ID}", "new": [1]}}'.encode()).job_id == JOB_ID


@pytest.mark.parametrize(
    "job_id",
    [JOB_ID + "\n", " " + JOB_ID, JOB_ID.replace("-", ""), "../../containers/x", "", None, 42],
)
def test_a_job_id_is_exactly_a_uuid(job_id: object) -> None:
    with pytest.raises(InvalidJobId):
        validate_job_id(job_id)
    assert validate_job_id(JOB_ID.upper()) == JOB_ID.upper()


@pytest.mark.parametrize("character", ["a", "é", "\x01", '"', "😀"])
def test_finished_is_trimmed_to_fit_after_json_escaping(character: str) -> None:
    results = ScriptResults(
        finished_with=FinishedWith.SUCCEEDED, stdout=character * 300_000, stderr="e" * 10
    )
    message = Finished(job_id=JOB_ID, status=JobStatus.ACCEPTED, script_results=results)
    data = fit(message, 100_000)
    assert 99_000 < len(data) <= 100_000
    decoded = msgspec.json.decode(data)
    assert decoded["scriptResults"]["stdoutTruncated"] is True
    assert decoded["scriptResults"]["stderr"] == "e" * 10
    assert decoded["scriptResults"]["stderrTruncated"] is False
    assert set(decoded["scriptResults"]["stdout"]) == {character}


@pytest.mark.parametrize("body", ["e" * 300_000, "a line\n" * 50_000])
def test_a_stderr_tail_survives_trimming_on_a_line_of_its_own(body: str) -> None:
    note = "dsw: stdout passed the 256 KiB output limit; the script was stopped\n"
    results = ScriptResults(
        finished_with=FinishedWith.FAILED, stdout="o" * 300_000, stderr=body + note
    )
    message = Finished(job_id=JOB_ID, status=JobStatus.ACCEPTED, script_results=results)
    for max_bytes in range(100_000, 100_008):  # every cut within "a line\n"
        data = fit(message, max_bytes, stderr_tail=len(note))
        assert len(data) <= max_bytes
        decoded = msgspec.json.decode(data)["scriptResults"]
        assert decoded["stderrTruncated"] is True
        stderr = decoded["stderr"]
        # Whatever was cut, the note starts a line, and no blank line comes before it.
        assert stderr.endswith("\n" + note)
        kept = stderr[: -len(note) - 1]
        assert kept
        assert body.startswith(kept)
        assert not kept.endswith("\n")
    small = fit(message, 100_000)  # without a tail, stderr is cut from the end
    assert not msgspec.json.decode(small)["scriptResults"]["stderr"].endswith(note)


def test_an_uncut_stderr_is_left_as_it_is() -> None:
    note = "dsw: the script passed its 1 s time limit and was stopped\n"
    results = ScriptResults(
        finished_with=FinishedWith.FAILED, stdout="o" * 300_000, stderr="short\n" + note
    )
    message = Finished(job_id=JOB_ID, status=JobStatus.ACCEPTED, script_results=results)
    decoded = msgspec.json.decode(fit(message, 100_000, stderr_tail=len(note)))["scriptResults"]
    assert decoded["stderr"] == "short\n" + note
    assert decoded["stderrTruncated"] is False
    assert decoded["stdoutTruncated"] is True
