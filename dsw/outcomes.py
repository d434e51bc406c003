"""The one place where what happened to a job becomes the `finished` message that says so."""

from __future__ import annotations

from dsw.messages import Finished, JobStatus, ScriptResults
from dsw.sandbox import ScriptOutcome


def accepted(job_id: str, outcome: ScriptOutcome, worker_id: str) -> Finished:
    """The script ran: ACCEPTED with its results."""
    results = ScriptResults(
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
    return Finished(
        job_id=job_id, status=JobStatus.ACCEPTED, script_results=results, worker_id=worker_id
    )


def rejected(job_id: str, reason: str, worker_id: str) -> Finished:
    """The job was not run (or not to its end, through no fault of its script): REJECTED."""
    return Finished(
        job_id=job_id, status=JobStatus.REJECTED, rejection_reason=reason, worker_id=worker_id
    )
