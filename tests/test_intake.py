"""Records sorted into jobs, rejections and dead letters; a readable job id gets an answer."""

from __future__ import annotations

import json

import pytest

from dsw.config import load_settings
from dsw.intake import (
    Accepted,
    DeadLetter,
    Parsed,
    Rejected,
    check,
    expired,
    parse,
    salvage,
    salvage_job_id,
)
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


def test_a_job_id_is_lower_case_whatever_its_spelling() -> None:
    # The scheduler reads ids as java.util.UUID (any case): one job, one id string here.
    upper = JOB_ID.upper()
    result = parsed(json.dumps({"jobId": upper, "script": "x"}).encode())
    assert isinstance(result, Accepted)
    assert result.job_id == JOB_ID
    assert result.request(load_sandbox_type(SETTINGS.sandbox_dir, "linux-amd64-shell")).job_id == (
        JOB_ID
    )
    unreadable = parsed(f'{{"jobId": "{upper}", "x": tru'.encode())
    keyed = parsed(b"garbage", key=upper.encode())
    blank = check({"jobId": upper, "script": " "}, SETTINGS)
    for result in (unreadable, keyed, blank):
        assert isinstance(result, Rejected)
        assert result.job_id == JOB_ID


def test_a_byte_order_mark_is_skipped_as_jackson_does() -> None:
    bom = b"\xef\xbb\xbf"
    result = parsed(bom + job(script="x"))
    assert isinstance(result, Accepted)
    assert result.job_id == JOB_ID
    broken = parsed(bom + f'{{"jobId": "{JOB_ID}", "x": tru'.encode())
    assert isinstance(broken, Rejected)
    assert broken.job_id == JOB_ID
    assert salvage_job_id(bom + f'{{"jobId": "{JOB_ID}"'.encode()) == JOB_ID
    assert isinstance(parsed(bom), DeadLetter)  # nothing but the mark: empty


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        # The last "jobId" wins, as in msgspec (a dict) and Jackson (a bean's setter, a tree's
        # put), in the readable and the unreadable path alike.
        (f'"jobId": "{OTHER_ID}", "jobId": "{JOB_ID}"', JOB_ID),
        (f'"jobId": "{JOB_ID}", "script": "x", "jobId": "{OTHER_ID}"', OTHER_ID),
        (f'"jobId": "nope", "jobId": "{JOB_ID}"', JOB_ID),
        (f'"jobId": "{JOB_ID}", "jobId": "nope"', None),
        (f'"jobId": "{JOB_ID}", "jobId": 42', None),
        (f'"jobId": "{JOB_ID}", "jobId": {{"a": 1}}', None),
    ],
)
def test_duplicate_job_ids_follow_one_rule_whether_readable_or_not(
    keys: str, expected: str | None
) -> None:
    readable = parsed(f'{{{keys}, "script": "x"}}'.encode(), key=OTHER_ID.encode())
    unreadable = parsed(f'{{{keys}, "script": "x", "n": 1e400}}'.encode(), key=OTHER_ID.encode())
    if expected is None:
        # A jobId that is there but unusable is not replaced by the key, nor by an earlier one.
        assert isinstance(readable, DeadLetter)
        assert isinstance(unreadable, DeadLetter)
        assert (readable.code, unreadable.code) == ("no_job_id", "no_job_id")
    else:
        assert isinstance(readable, Accepted)
        assert isinstance(unreadable, Rejected)
        assert readable.job_id == unreadable.job_id == expected


def test_an_unusable_job_id_in_an_unreadable_record_is_not_replaced_by_the_key() -> None:
    for value in (
        b'{"jobId": "x", "script": tru',
        b'{"jobId": 7, "script": tru',
        b'{"jobId": "unterminated',
        b'{"jobId": ',
    ):
        result = parsed(value, key=JOB_ID.encode())
        assert isinstance(result, DeadLetter), value
        assert result.code == "no_job_id"


@pytest.mark.parametrize(
    "data",
    [
        # A megabyte of content of each shape before the id; the scan neither fails nor recurses.
        b'{"script": "' + b'x\\"{[,:' * 150_000 + b'", "jobId": "%s"}',
        b"{" + b'"a": "b",' * 120_000 + b'"jobId": "%s"}',
        b'{"a": ' + b'""' * 500_000 + b', "jobId": "%s"}',
        b'{"a": ' + b"[{" * 250_000 + b"}]" * 250_000 + b', "jobId": "%s"}',
        b"{" + b'"jobId": 1, ' * 90_000 + b'"jobId": "%s", "x": tru',
        b'{"a": [' + b'{"jobId": 1},' * 80_000 + b'], "jobId": "%s", "x": tru',
        b'{"jobId": "%s", "a": [' + b'{"jobId": 1},' * 80_000 + b"], tru",
    ],
)
def test_salvage_reads_large_records_of_any_shape(data: bytes) -> None:
    assert salvage(data.replace(b"%s", JOB_ID.encode())) == (True, JOB_ID)


def test_salvage_reads_escaped_values_and_only_plain_keys() -> None:
    escaped_value = JOB_ID.replace("7", "\\u0037")
    assert salvage_job_id(f'{{"jobId": "{escaped_value}", x'.encode()) == JOB_ID
    assert salvage(f'{{"job\\u0049d": "{JOB_ID}", x'.encode()) == (False, None)
    assert salvage(f'{{"jobId": "{JOB_ID}\\\\", x'.encode()) == (True, None)


@pytest.mark.parametrize(
    ("timestamp_ms", "now_s", "reason"),
    [
        (1_000_000, 1_000 + 10, None),  # within the age
        (1_000_000, 1_000 + 61, "expired: 61 s in the queue"),
        (0, 1_000_000, None),  # no timestamp: never expired
        (-1, 1_000_000, None),
        (10_000_000, 1_000, None),  # ahead of this clock: no age at all
    ],
)
def test_expiry_needs_a_real_timestamp_past_the_max_age(
    timestamp_ms: int, now_s: float, reason: str | None
) -> None:
    assert expired(timestamp_ms, 60, now_s) == reason
    assert expired(timestamp_ms, 0, now_s) is None  # off
