"""Wire compatibility with the scheduler; records sorted into jobs, rejections, dead letters."""

from __future__ import annotations

import json

import msgspec
import pytest

from dsw.config import load_settings
from dsw.container_spec import unenforced
from dsw.jobs import Accepted, DeadLetter, Rejected, parse
from dsw.kafka import Record
from dsw.messages import Finished, Running, ScriptResults, Status, decode_job, encode, fit
from dsw.sandbox import FinishedWith
from dsw.sandbox_types import load_sandbox_type
from tests.workers import EXAMPLE_JOB

SETTINGS = load_settings({})
MONO = load_sandbox_type(SETTINGS.sandbox_dir, "linux-amd64-mono")
DOTNET = load_sandbox_type(SETTINGS.sandbox_dir, "linux-amd64-dotnet-7")


def record(value: bytes | None) -> Record:
    return Record("pending-x", 0, 7, b"key", value, 1_700_000_000_000)


def test_the_original_readme_example_job_byte_for_byte() -> None:
    job = decode_job(EXAMPLE_JOB.encode())
    assert job.job_id == "7f000001-863c-17b2-8186-3cdeb62e0000"
    assert job.script == 'Console.WriteLine("Hello from script");'
    assert job.job_config is not None
    assert job.job_config.nuget_config_xml is not None
    assert job.job_config.nuget_config_xml.startswith('<?xml version="1.0" encoding="utf-8"?>')
    parsed = parse(record(EXAMPLE_JOB.encode()), SETTINGS, DOTNET)
    assert isinstance(parsed, Accepted)
    assert parsed.request.nuget_config == job.job_config.nuget_config_xml
    assert parsed.request.limits.timeout_s == 120


def test_unknown_fields_are_ignored_and_optional_ones_default() -> None:
    job = decode_job(
        b'{"jobId": "7f000001-863c-17b2-8186-3cdeb62e0000", "script": "x", "extra": 1}'
    )
    assert job.job_config is None


def test_outgoing_messages_have_the_original_shape() -> None:
    job_id = "7f000001-863c-17b2-8186-3cdeb62e0000"
    assert json.loads(encode(Running(job_id=job_id))) == {"jobId": job_id}
    rejected = json.loads(encode(Finished(job_id=job_id, status=Status.REJECTED)))
    assert rejected == {"jobId": job_id, "status": "REJECTED"}  # no scriptResults at all
    results = ScriptResults(finished_with=FinishedWith.TIME_LIMIT_EXCEEDED, stdout="o", stderr="e")
    accepted = json.loads(
        encode(Finished(job_id=job_id, status=Status.ACCEPTED, script_results=results))
    )
    assert accepted["status"] == "ACCEPTED"
    assert accepted["scriptResults"]["finishedWith"] == "TIME_LIMIT_EXCEEDED"
    assert (accepted["scriptResults"]["stdout"], accepted["scriptResults"]["stderr"]) == ("o", "e")


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"{not json", "not_json"),
        (b"[1]", "not_object"),
        (b'"text"', "not_object"),
        (b'{"script": "x"}', "no_job_id"),
        (b'{"jobId": 42, "script": "x"}', "no_job_id"),
        (b'{"jobId": "../../etc", "script": "x"}', "no_job_id"),
    ],
)
def test_records_without_a_usable_job_id_are_dead_letters(value: bytes | None, code: str) -> None:
    parsed = parse(record(value), SETTINGS, MONO)
    assert isinstance(parsed, DeadLetter)
    assert parsed.code == code


JOB_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"script": "  \n\t"}, "blank_script"),
        ({"script": 42}, "invalid_job"),
        ({}, "invalid_job"),
        ({"script": "x", "jobConfig": "yes"}, "invalid_job"),
        ({"script": "x" * (SETTINGS.max_script_bytes + 1)}, "too_large"),
        (
            {"script": "x", "jobConfig": {"stdin": "y" * (SETTINGS.max_script_bytes + 1)}},
            "too_large",
        ),
        ({"script": "x", "jobConfig": {"nugetConfigXml": "<configuration>"}}, "bad_nuget_config"),
        ({"script": "x", "jobConfig": {"timeoutSeconds": 121}}, "over_limit"),
        ({"script": "x", "jobConfig": {"timeoutSeconds": -1}}, "invalid_job"),
        ({"script": "x", "jobConfig": {"memoryBytes": 2**31}}, "over_limit"),
        ({"script": "x", "jobConfig": {"memoryBytes": 1024}}, "over_limit"),
    ],
)
def test_invalid_jobs_are_rejected_with_a_reason(body: dict[str, object], code: str) -> None:
    parsed = parse(record(json.dumps({"jobId": JOB_ID, **body}).encode()), SETTINGS, MONO)
    assert isinstance(parsed, Rejected)
    assert (parsed.job_id, parsed.code) == (JOB_ID, code)
    assert parsed.reason


def test_overrides_within_the_maxima_are_honoured() -> None:
    body = {
        "jobId": JOB_ID,
        "script": "x",
        "jobConfig": {"timeoutSeconds": 5, "memoryBytes": 64 << 20, "stdin": "in"},
    }
    parsed = parse(record(json.dumps(body).encode()), SETTINGS, MONO)
    assert isinstance(parsed, Accepted)
    assert (parsed.request.limits.timeout_s, parsed.request.limits.memory_bytes) == (5, 64 << 20)
    assert parsed.request.stdin == "in"


@pytest.mark.parametrize("character", ["a", "é", "\x01", '"', "😀"])
def test_finished_is_trimmed_to_fit_after_json_escaping(character: str) -> None:
    results = ScriptResults(
        finished_with=FinishedWith.SUCCEEDED, stdout=character * 300_000, stderr="e" * 10
    )
    message = Finished(job_id=JOB_ID, status=Status.ACCEPTED, script_results=results)
    data = fit(message, 100_000)
    assert 99_000 < len(data) <= 100_000
    decoded = msgspec.json.decode(data)
    assert decoded["scriptResults"]["stdoutTruncated"] is True
    assert decoded["scriptResults"]["stderr"] == "e" * 10
    assert decoded["scriptResults"]["stderrTruncated"] is False
    assert set(decoded["scriptResults"]["stdout"]) == {character}


def test_only_blkio_warnings_are_tolerated() -> None:
    blkio = (
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded."
    )
    swap = "Your kernel does not support swap limit capabilities or the cgroup is not mounted."
    assert unenforced([blkio]) == []
    assert unenforced([blkio, swap]) == [swap]
