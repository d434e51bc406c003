"""What comes in: a Kafka record sorted into a dead letter, a rejection or a job we may run.

Pure, no I/O. A record whose job id can be read is always answered: when the rest of it cannot be
read (not JSON, a number out of range, nesting too deep, invalid UTF-8), the id is salvaged from
the top level of the raw bytes, else taken from the record's key (the scheduler keys every job by
its id), and the job is rejected with the reason. Only a record with no usable id anywhere is a
dead letter alone. `dsw run` and `dsw submit` check their jobs with the same `check`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any

import msgspec

from dsw.config import MiB, Settings
from dsw.container_spec import JobLimits
from dsw.errors import InvalidJobId, UnreadableMessage
from dsw.messages import Job, decode_json, validate_job_id
from dsw.sandbox import ScriptRequest
from dsw.sandbox_types import SandboxType

# Docker refuses memory limits below 6 MiB.
MIN_MEMORY_BYTES = 6 * MiB


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    code: str


@dataclass(frozen=True)
class Rejected:
    job_id: str
    reason: str
    code: str
    # Also keep the raw record on the dead-letter topic (it could not be read).
    dead_letter: bool = False


@dataclass(frozen=True)
class Accepted:
    job_id: str
    job: Job
    limits: JobLimits

    def request(self, sandbox: SandboxType) -> ScriptRequest:
        """What to run in `sandbox`."""
        config = self.job.job_config
        return ScriptRequest(
            job_id=self.job_id,
            sandbox=sandbox,
            script=self.job.script,
            limits=self.limits,
            nuget_config=config.nuget_config_xml if config else None,
            stdin=config.stdin if config else None,
        )


Parsed = DeadLetter | Rejected | Accepted


def parse(key: bytes | None, value: bytes | None, settings: Settings) -> Parsed:
    """Sort one record by its key and value."""
    if not value:
        return _unreadable(key, "empty message", "empty")
    try:
        decoded = decode_json(value)
    except UnreadableMessage as exc:
        return _unreadable(key, str(exc), "not_json", salvage_job_id(value))
    if not isinstance(decoded, dict):
        return _unreadable(key, f"not a JSON object but {type(decoded).__name__}", "not_object")
    if "jobId" not in decoded:
        return _unreadable(key, "no jobId", "no_job_id")
    try:
        validate_job_id(decoded["jobId"])
    except InvalidJobId as exc:
        # A jobId that is there but unusable is not replaced by the key: it may be anyone's.
        return DeadLetter(f"no usable jobId: {exc}", "no_job_id")
    return check(decoded, settings)


def _unreadable(key: bytes | None, reason: str, code: str, salvaged: str | None = None) -> Parsed:
    job_id = salvaged or _job_id_of_key(key)
    if job_id is None:
        return DeadLetter(reason, code)
    return Rejected(job_id, f"unreadable job: {reason}", code, dead_letter=True)


def _job_id_of_key(key: bytes | None) -> str | None:
    try:
        return validate_job_id((key or b"").decode("ascii"))
    except (UnicodeDecodeError, InvalidJobId):
        return None


def salvage_job_id(data: bytes) -> str | None:
    """The string value of the top-level `"jobId"` of a JSON object that may be broken further
    on; None when there is none that is a UUID. A scan of the bytes, no recursion: it copes with
    any nesting and any content."""
    if not data.lstrip().startswith(b"{"):
        return None
    depth, at, n = 0, 0, len(data)
    expect_key = False  # at depth 1, the next string is a key
    while at < n:
        byte = data[at]
        if byte == 0x22:  # a string: find its end, escapes included
            end = at + 1
            while end < n and data[end] != 0x22:
                end += 2 if data[end] == 0x5C else 1
            if end >= n:
                return None
            text = data[at + 1 : end]
            at = end + 1
            if depth == 1 and expect_key:
                expect_key = False
                if text == b"jobId":
                    return _string_value_at(data, at)
            continue
        if byte in b"{[":
            depth += 1
            expect_key = depth == 1
        elif byte in b"}]":
            depth -= 1
        elif byte == 0x2C and depth == 1:  # ,
            expect_key = True
        at += 1
    return None


def _string_value_at(data: bytes, at: int) -> str | None:
    """After a key: `: "<uuid>"`; the UUID, or None."""
    rest = data[at:].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    # A UUID needs no escapes: the value is the 36 characters between two quotes.
    if len(rest) < 38 or rest[0] != 0x22 or rest[37] != 0x22:
        return None
    try:
        return validate_job_id(rest[1:37].decode("ascii"))
    except (UnicodeDecodeError, InvalidJobId):
        return None


def check(value: dict[str, Any], settings: Settings) -> Rejected | Accepted:
    """A decoded job (its `jobId` already valid) checked against this worker's limits."""
    job_id = validate_job_id(value.get("jobId"))
    try:
        job = msgspec.convert(value, Job)
    except msgspec.ValidationError as exc:
        return Rejected(job_id, f"invalid job: {exc}", "invalid_job")
    config = job.job_config
    if not job.script.strip():
        return Rejected(job_id, "script is blank", "blank_script")
    if len(job.script.encode()) > settings.max_script_bytes:
        return Rejected(job_id, f"script is over {settings.max_script_bytes} bytes", "too_large")
    nuget = config.nuget_config_xml if config else None
    if nuget is not None:
        try:
            ElementTree.fromstring(nuget)
        except ElementTree.ParseError as exc:
            reason = f"nugetConfigXml is not well-formed XML: {exc}"
            return Rejected(job_id, reason, "bad_nuget_config")
    stdin = config.stdin if config else None
    if stdin is not None and len(stdin.encode()) > settings.max_script_bytes:
        return Rejected(job_id, f"stdin is over {settings.max_script_bytes} bytes", "too_large")
    limits = JobLimits.defaults(settings)
    if config and config.timeout_seconds is not None:
        if config.timeout_seconds > settings.max_job_timeout_s:
            reason = f"timeoutSeconds over this worker's maximum of {settings.max_job_timeout_s:g}"
            return Rejected(job_id, reason, "over_limit")
        limits = msgspec.structs.replace(limits, timeout_s=config.timeout_seconds)
    if config and config.memory_bytes is not None:
        if not MIN_MEMORY_BYTES <= config.memory_bytes <= settings.max_memory_bytes:
            reason = f"memoryBytes outside {MIN_MEMORY_BYTES}..{settings.max_memory_bytes}"
            return Rejected(job_id, reason, "over_limit")
        limits = msgspec.structs.replace(limits, memory_bytes=config.memory_bytes)
    return Accepted(job_id, job, limits)
