"""What comes in: a Kafka record sorted into a dead letter, a rejection or a job we may run.

Pure, no I/O. A record whose job id can be read is always answered: when the rest of it cannot be
read (not JSON, a number out of range, nesting too deep, invalid UTF-8), the id is salvaged from
the top level of the raw bytes, else taken from the record's key (the scheduler keys every job by
its id), and the job is rejected with the reason. Only a record with no usable id anywhere is a
dead letter alone. Both paths read a leading UTF-8 byte order mark as Jackson does (skipped), and
duplicate `jobId` keys as msgspec and Jackson do (the last wins). Every job id leaves here in
lower case. `dsw run` and `dsw submit` check their jobs with the same `check`.
"""

from __future__ import annotations

import re
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

# Jackson skips a UTF-8 byte order mark before JSON; msgspec does not.
_BOM = b"\xef\xbb\xbf"
_JSON_SPACE = b" \t\n\r"
# After a string that is a key: optional whitespace and the colon.
_KEY_END = re.compile(rb"[ \t\n\r]*:")
# Between a key and a string value: nothing but the colon.
_STRING_VALUE_NEXT = re.compile(rb"[ \t\n\r]*:[ \t\n\r]*")
# A UUID takes 36 characters, each at most six bytes escaped: anything longer is not one.
_MAX_ID_BYTES = 36 * 6


def job_id_of(value: object) -> str:
    """The job id in its canonical form, lower case (InvalidJobId if it is not a UUID).

    The scheduler parses ids as java.util.UUID, case-insensitively, and writes them in lower
    case; dsw compares ids (in flight, container names, dedup) as strings, so an id differing
    only in case must become the same string here, before anything compares it.
    """
    return validate_job_id(value).lower()


def parse(key: bytes | None, value: bytes | None, settings: Settings) -> Parsed:
    """Sort one record by its key and value."""
    if value:
        value = value.removeprefix(_BOM)
    if not value:
        return _unreadable(key, "empty message", "empty")
    try:
        decoded = decode_json(value)
    except UnreadableMessage as exc:
        present, salvaged = salvage(value)
        if present and salvaged is None:
            # As below: a jobId that is there but unusable is not replaced by the key.
            return DeadLetter(f"no usable jobId; {exc}", "no_job_id")
        return _unreadable(key, str(exc), "not_json", salvaged)
    if not isinstance(decoded, dict):
        return _unreadable(key, f"not a JSON object but {type(decoded).__name__}", "not_object")
    if "jobId" not in decoded:
        return _unreadable(key, "no jobId", "no_job_id")
    try:
        job_id_of(decoded["jobId"])
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
        return job_id_of((key or b"").decode("ascii"))
    except (UnicodeDecodeError, InvalidJobId):
        return None


def salvage_job_id(data: bytes) -> str | None:
    """The job id of `data`'s top-level `"jobId"` (see `salvage`); None without a usable one."""
    return salvage(data)[1]


def salvage(data: bytes) -> tuple[bool, str | None]:
    """Whether a JSON object that may be broken further on has a top-level `"jobId"` key, and its
    value as a job id (None when that is not a UUID string). Duplicate keys: the last one wins,
    as in msgspec and Jackson. Keys are read as spelled (`"jobId"`, no escapes).

    Scans by C-speed bytes operations, no recursion and no loop per byte or per string (it runs
    on the event loop's thread): it copes with any nesting, any content and any size. Escaped
    backslashes and quotes become two neutral bytes, so that every quote left opens or closes a
    string; split at the quotes, the even parts lie outside strings and the odd parts are the
    strings' contents. A key is a string followed by a colon; its depth is the brackets counted
    in the even parts before it.
    """
    data = data.removeprefix(_BOM)
    if b"jobId" not in data or not data.lstrip(_JSON_SPACE).startswith(b"{"):
        return False, None
    parts = data.replace(b"\\\\", b"__").replace(b'\\"', b"__").split(b'"')
    last_key = 0  # the part of the last top-level "jobId" key, 0 for none
    depth, counted, at = 0, 0, 0
    while True:
        try:
            at = parts.index(b"jobId", at + 1)
        except ValueError:
            break
        # An odd part is a string; it is complete when a part follows it (its closing quote).
        if at % 2 == 0 or at + 1 == len(parts):
            continue
        outside = parts[counted] if at - counted == 1 else b"".join(parts[counted:at:2])
        depth += outside.count(b"{") + outside.count(b"[")
        depth -= outside.count(b"}") + outside.count(b"]")
        counted = at + 1
        if depth == 1 and _KEY_END.match(parts[at + 1]):
            last_key = at
    if not last_key:
        return False, None
    return True, _string_job_id(parts, last_key + 1)


def _string_job_id(parts: list[bytes], after_key: int) -> str | None:
    """The key's value, if it is a string that is a job id."""
    value = after_key + 1
    # Only a colon between key and value; the value's string complete (a part after it).
    if not _STRING_VALUE_NEXT.fullmatch(parts[after_key]) or value + 1 >= len(parts):
        return None
    text = parts[value]
    if len(text) > _MAX_ID_BYTES:
        return None
    try:
        return job_id_of(msgspec.json.decode(b'"' + text + b'"'))
    except (msgspec.DecodeError, InvalidJobId):
        return None


def expired(timestamp_ms: int, max_age_s: float, now_s: float) -> str | None:
    """Why a job whose record was created at `timestamp_ms` is too old to start at `now_s`
    (WORKER_JOB_MAX_AGE_S, 0 for off), or None. A timestamp that says nothing (0 or less: none
    was set) never expires a job, and one ahead of this clock is no age at all."""
    if not max_age_s or timestamp_ms <= 0:
        return None
    age_s = now_s - timestamp_ms / 1000
    if age_s <= max_age_s:
        return None
    return f"expired: {age_s:.0f} s in the queue"


def check(value: dict[str, Any], settings: Settings) -> Rejected | Accepted:
    """A decoded job (its `jobId` already valid) checked against this worker's limits."""
    job_id = job_id_of(value.get("jobId"))
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
