"""Kafka wire messages, compatible with the dotnet-scripts scheduler: job, running, finished.

Field names, enum spellings and optional fields are the original's (JSON, UTF-8, camelCase, key =
job id). Incoming jobs ignore unknown fields; new fields are optional and default-valued, so the
original's messages keep working both ways. Encoders and decoders are made once.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from dsw.sandbox import FinishedWith, ScriptOutcome


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
    script: str  # not blank: checked by dsw.jobs, which says so in the rejection
    job_config: JobConfig | None = None


class Running(Wire):
    """On `running`, once the container has started."""

    job_id: str


class Status(enum.Enum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


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

    @classmethod
    def of(cls, outcome: ScriptOutcome) -> ScriptResults:
        return cls(
            finished_with=outcome.finished_with,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            exit_code=outcome.exit_code,
            duration_seconds=outcome.duration_s,
            oom_killed=outcome.oom_killed,
            stdout_truncated=outcome.stdout_truncated,
            stderr_truncated=outcome.stderr_truncated,
            output_limit_exceeded=outcome.output_limit_exceeded,
            peak_memory_bytes=outcome.peak_memory_bytes,
        )


class Finished(Wire, omit_defaults=True):
    """On `finished`. `scriptResults` is absent for REJECTED, as in the original."""

    job_id: str
    status: Status
    script_results: ScriptResults | None = None
    # Beyond the original.
    rejection_reason: str | None = None
    worker_id: str | None = None


_encoder = msgspec.json.Encoder()
_any_decoder = msgspec.json.Decoder()
_job_decoder = msgspec.json.Decoder(Job)


def encode(message: Wire) -> bytes:
    return _encoder.encode(message)


def decode_json(data: bytes) -> Any:
    """Raises msgspec.DecodeError when `data` is not JSON."""
    return _any_decoder.decode(data)


def decode_job(data: bytes) -> Job:
    return _job_decoder.decode(data)


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


def fit(message: Finished, max_bytes: int) -> bytes:
    """`message` encoded within `max_bytes`, trimming stdout and stderr (flagged) to fit.

    JSON escaping can take six bytes for one character, so the budget is counted in encoded bytes.
    """
    results = message.script_results
    if results is not None and max(len(results.stdout), len(results.stderr)) > max_bytes:
        # A character takes at least one byte: cut what cannot fit before encoding anything.
        results = msgspec.structs.replace(
            results,
            stdout=results.stdout[:max_bytes],
            stderr=results.stderr[:max_bytes],
            stdout_truncated=results.stdout_truncated or len(results.stdout) > max_bytes,
            stderr_truncated=results.stderr_truncated or len(results.stderr) > max_bytes,
        )
        message = msgspec.structs.replace(message, script_results=results)
    data = encode(message)
    if len(data) <= max_bytes or results is None:
        return data
    empty = msgspec.structs.replace(results, stdout="", stderr="")
    budget = max_bytes - len(encode(msgspec.structs.replace(message, script_results=empty)))
    out_len, err_len = _encoded_len(results.stdout), _encoded_len(results.stderr)
    # Each stream gets half the budget; what one leaves unused goes to the other.
    half = max(budget, 0) // 2
    out_budget = min(out_len, max(half, budget - err_len))
    err_budget = max(budget - out_budget, 0)
    stdout = _prefix_within(results.stdout, out_budget)
    stderr = _prefix_within(results.stderr, err_budget)
    trimmed = msgspec.structs.replace(
        results,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=results.stdout_truncated or len(stdout) < len(results.stdout),
        stderr_truncated=results.stderr_truncated or len(stderr) < len(results.stderr),
    )
    return encode(msgspec.structs.replace(message, script_results=trimmed))
