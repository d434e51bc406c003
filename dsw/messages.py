"""Kafka wire messages, compatible with the dotnet-scripts scheduler: job, running, finished.

Field names, enum spellings and optional fields are the original's (JSON, UTF-8, camelCase, key =
job id). Incoming jobs ignore unknown fields; new fields are optional and default-valued, so the
original's messages keep working both ways. Encoders and decoders are made once, and this is the one
place where msgspec's errors become UnreadableMessage. This module is a leaf: it knows nothing of
dsw but the wire.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from dsw.errors import InvalidJobId, UnreadableMessage

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Wire(msgspec.Struct, rename="camel", kw_only=True):
    """Base of the wire structs: camelCase names, unknown fields ignored."""


class JobConfig(Wire):
    nuget_config_xml: str | None = None
    # Beyond the original: all optional, absent in the scheduler's messages.
    stdin: str | None = None
    timeout_seconds: Annotated[float, Meta(gt=0)] | None = None
    memory_bytes: Annotated[int, Meta(gt=0)] | None = None


class Job(Wire):
    """On `pending-<type>`."""

    job_id: str
    script: str  # not blank: checked by dsw.intake, which says so in the rejection
    job_config: JobConfig | None = None


class Running(Wire):
    """On `running`, once the container has started."""

    job_id: str


class JobStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class FinishedWith(enum.Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIME_LIMIT_EXCEEDED = "TIME_LIMIT_EXCEEDED"


class ScriptResults(Wire):
    finished_with: FinishedWith
    stdout: str
    stderr: str
    # Beyond the original.
    exit_code: int | None = None
    duration_seconds: float | None = None
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    output_limit_exceeded: bool = False
    peak_memory_bytes: int | None = None


class Finished(Wire, omit_defaults=True):
    """On `finished`. `scriptResults` is absent for REJECTED, as in the original."""

    job_id: str
    status: JobStatus
    script_results: ScriptResults | None = None
    # Beyond the original.
    rejection_reason: str | None = None
    worker_id: str | None = None


_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()
_running_decoder = msgspec.json.Decoder(Running)
_finished_decoder = msgspec.json.Decoder(Finished)


def encode(message: Wire) -> bytes:
    return _encoder.encode(message)


def decode_running(data: bytes) -> Running:
    """A `running` message; UnreadableMessage when `data` is not one."""
    try:
        return _running_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise UnreadableMessage(f"not a running message: {exc}") from exc


def decode_finished(data: bytes) -> Finished:
    """A `finished` message; UnreadableMessage when `data` is not one. msgspec refuses a lone
    surrogate escape (`\\ud800`), which other writers of JSON produce: the standard library
    reads those (the strings then hold lone surrogates, which no UTF-8 can hold: their reader
    replaces them)."""
    try:
        return _finished_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        try:
            return msgspec.convert(json.loads(data), type=Finished)
        except (ValueError, RecursionError, msgspec.ValidationError):
            pass
        raise UnreadableMessage(f"not a finished message: {exc}") from exc


def decode_json(data: bytes) -> Any:
    """Raises UnreadableMessage when `data` is not JSON that Python can hold."""
    try:
        return _any_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        # msgspec raises RecursionError for nesting deeper than the interpreter's stack allows.
        raise UnreadableMessage(f"not JSON: {exc}") from exc


def validate_job_id(job_id: object) -> str:
    """The job id if it is exactly a UUID in text form; InvalidJobId otherwise. Job ids name
    containers and appear in logs, so nothing else gets past this."""
    if not isinstance(job_id, str) or not _UUID.fullmatch(job_id):
        raise InvalidJobId(job_id)
    return job_id


def _encoded_len(text: str) -> int:
    return len(_encoder.encode(text)) - 2


def _prefix_within(text: str, budget_bytes: int) -> str:
    """The longest prefix of `text` whose JSON string encoding takes at most `budget_bytes`."""
    if _encoded_len(text) <= budget_bytes:
        return text
    low, high = 0, min(len(text), budget_bytes)
    while low < high:
        middle = (low + high + 1) // 2
        if _encoded_len(text[:middle]) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def fit(message: Finished, max_bytes: int, stderr_tail: int = 0) -> bytes:
    """`message` encoded within `max_bytes` (see `fitted`)."""
    return encode(fitted(message, max_bytes, stderr_tail))


def fitted(message: Finished, max_bytes: int, stderr_tail: int = 0) -> Finished:
    """`message`, its stdout and stderr trimmed (and flagged) so that it encodes within
    `max_bytes`; the last `stderr_tail` characters of stderr are kept whole, and when what comes
    before them is cut, they start on a line of their own.

    JSON escaping can take six bytes for one character, so the budget is counted in encoded bytes.
    """
    results = message.script_results
    if results is None or len(encode(message)) <= max_bytes:
        return message
    tail = results.stderr[len(results.stderr) - stderr_tail :] if stderr_tail else ""
    body = results.stderr[: len(results.stderr) - len(tail)]
    # A character takes at least one byte: cut what cannot fit before encoding anything.
    stdout_cut, body_cut = results.stdout[:max_bytes], body[:max_bytes]
    empty = msgspec.structs.replace(results, stdout="", stderr=tail)
    budget = max_bytes - len(encode(msgspec.structs.replace(message, script_results=empty)))
    out_len, err_len = _encoded_len(stdout_cut), _encoded_len(body_cut)
    # Each stream gets half the budget; what one leaves unused goes to the other.
    half = max(budget, 0) // 2
    out_budget = min(out_len, max(half, budget - err_len))
    err_budget = max(budget - out_budget, 0)
    stdout = _prefix_within(stdout_cut, out_budget)
    stderr = _prefix_within(body_cut, err_budget)
    stderr_cut = len(stderr) < len(body)
    if tail and stderr_cut:
        # The tail starts a line of its own: what is kept of the body ends its line (a newline
        # takes two bytes in JSON).
        stderr = _prefix_within(body_cut, max(err_budget - 2, 0))
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
    trimmed = msgspec.structs.replace(
        results,
        stdout=stdout,
        stderr=stderr + tail,
        stdout_truncated=results.stdout_truncated or len(stdout) < len(results.stdout),
        stderr_truncated=results.stderr_truncated or stderr_cut,
    )
    return msgspec.structs.replace(message, script_results=trimmed)
