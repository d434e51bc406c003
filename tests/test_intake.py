"""Records sorted into jobs, rejections and dead letters; a readable job id gets an answer."""

from __future__ import annotations

import json

import pytest

from dsw.config import load_settings
from dsw.intake import Accepted, DeadLetter, Parsed, Rejected, check, parse, salvage_job_id
from dsw.sandbox_types import load_sandbox_type
from tests.workers import EXAMPLE_JOB

SETTINGS = load_settings({})
JOB_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"
OTHER_ID = "0b8f5f0e-3c5e-4d0e-9d0a-1b2c3d4e5f60"


def parsed(value: bytes | None, key: bytes | None = b"key") -> Parsed:
    return parse(key, value, SETTINGS)


def test_the_original_readme_example_job_is_accepted() -> None:
    result = parsed(EXAMPLE_JOB.encode())
    assert isinstance(result, Accepted)
    dotnet = load_sandbox_type(SETTINGS.sandbox_dir, "linux-amd64-dotnet-7")
    request = result.request(dotnet)
    assert request.job_id == JOB_ID
    assert request.nuget_config is not None
    assert request.nuget_config.startswith('<?xml version="1.0"')
    assert request.limits.timeout_s == 120


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
        (f'{{"jobId": "{JOB_ID}\\n", "script": "x"}}'.encode(), "no_job_id"),
    ],
)
def test_records_without_a_usable_job_id_are_dead_letters(value: bytes | None, code: str) -> None:
    result = parsed(value)
    assert isinstance(result, DeadLetter)
    assert result.code == code


def job(**body: object) -> bytes:
    return json.dumps({"jobId": JOB_ID, **body}).encode()


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
        ({"script": "x", "jobConfig": {"timeoutSeconds": 0}}, "invalid_job"),
        ({"script": "x", "jobConfig": {"memoryBytes": 2**31}}, "over_limit"),
        ({"script": "x", "jobConfig": {"memoryBytes": 1024}}, "over_limit"),
    ],
)
def test_invalid_jobs_are_rejected_with_a_reason(body: dict[str, object], code: str) -> None:
    result = parsed(job(**body))
    assert isinstance(result, Rejected)
    assert (result.job_id, result.code, result.dead_letter) == (JOB_ID, code, False)
    assert result.reason


def test_overrides_within_the_maxima_are_honoured() -> None:
    config = {"timeoutSeconds": 5, "memoryBytes": 64 << 20, "stdin": "in"}
    result = parsed(job(script="x", jobConfig=config))
    assert isinstance(result, Accepted)
    assert (result.limits.timeout_s, result.limits.memory_bytes) == (5, 64 << 20)
    assert result.job.job_config is not None
    assert result.job.job_config.stdin == "in"


def test_non_finite_limits_are_rejected_not_defaulted() -> None:
    for timeout in (float("nan"), float("inf")):
        value = {"jobId": JOB_ID, "script": "x", "jobConfig": {"timeoutSeconds": timeout}}
        assert isinstance(check(value, SETTINGS), Rejected)


DEEP = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.parametrize(
    "value",
    [
        # A number out of range, nesting deeper than the decoder allows, undecodable strings:
        # before or after the id, each record is answered by its id.
        f'{{"jobId": "{JOB_ID}", "script": "x", "jobConfig": {{"timeoutSeconds": 1e400}}}}',
        f'{{"jobConfig": {{"timeoutSeconds": 1e400}}, "script": "x", "jobId": "{JOB_ID}"}}',
        f'{{"jobId": "{JOB_ID}", "script": "x", "deep": '.encode() + DEEP + b"}",
        b'{"deep": ' + DEEP + f', "jobId": "{JOB_ID}"}}'.encode(),
        f'{{"jobId": "{JOB_ID}", "script": "\xff\xfe"}}'.encode("latin-1"),
        # Escapes, brackets and a decoy id inside a string before the real one.
        f'{{"script": "a \\" \\\\ {{ [ , \\"jobId\\": \\"{OTHER_ID}\\"", "jobId": "{JOB_ID}", x',
    ],
)
def test_an_unreadable_job_whose_id_can_be_read_is_rejected(value: str | bytes) -> None:
    data = value.encode() if isinstance(value, str) else value
    result = parsed(data)
    assert isinstance(result, Rejected)
    assert result.job_id == JOB_ID
    assert result.dead_letter  # the raw record is kept too
    assert result.reason.startswith("unreadable job: not JSON")


def test_the_key_answers_for_a_record_without_a_readable_id() -> None:
    for value in (b"\x00\x01garbage", b'{"script": "x"}', b"[]", b""):
        result = parsed(value, key=JOB_ID.encode())
        assert isinstance(result, Rejected), value
        assert (result.job_id, result.dead_letter) == (JOB_ID, True)
    # A jobId that is there but unusable is never replaced by the key.
    assert isinstance(parsed(b'{"jobId": "x", "script": "y"}', key=JOB_ID.encode()), DeadLetter)


@pytest.mark.parametrize(
    "data",
    [
        f'{{"nested": {{"jobId": "{JOB_ID}"}}, "x": tru'.encode(),  # not at the top level
        f'{{"note": "\\"jobId\\": \\"{JOB_ID}\\"", "x": tru'.encode(),  # inside a string
        f'["jobId", "{JOB_ID}"'.encode(),
        f'{{"jobId": "{JOB_ID}x", "x": tru'.encode(),
        f'{{"jobId" "{JOB_ID}"'.encode(),
        b'{"jobId": "unterminated',
    ],
)
def test_salvage_takes_only_a_top_level_job_id(data: bytes) -> None:
    assert salvage_job_id(data) is None


def test_salvage_never_fails_on_any_bytes() -> None:
    samples = [bytes(range(256)), b"{" * 10_000, b'{"' * 10_000, b'{"jobId":' * 1000, b"\\" * 99]
    for data in samples:
        assert salvage_job_id(data) is None
