"""The one place where what happened to a job becomes the `finished` message that says so.

The scheduler keeps only `finishedWith`, `stdout` and `stderr`, so what a script cannot say for
itself (the worker stopped it at the output or time limit, the kernel killed it for memory) is
one plain `dsw: ...` line at the end of stderr. The line is kept within the output cap and within
the message size: the script's own stderr gives way to it.
"""

from __future__ import annotations

from dsw.config import Settings
from dsw.messages import Finished, JobStatus, ScriptResults, fitted
from dsw.sandbox import ScriptOutcome


def accepted(job_id: str, outcome: ScriptOutcome, settings: Settings) -> Finished:
    """The script ran: ACCEPTED with its results, within WORKER_MAX_MESSAGE_BYTES."""
    stderr, cut, note_len = _with_note(outcome.stderr, outcome.note, settings.output_limit_bytes)
    results = ScriptResults(
        finished_with=outcome.finished_with,
        stdout=outcome.stdout,
        stderr=stderr,
        exit_code=outcome.exit_code,
        duration_seconds=outcome.duration_s,
        oom_killed=outcome.oom_killed,
        stdout_truncated=outcome.stdout_truncated,
        stderr_truncated=outcome.stderr_truncated or cut,
        output_limit_exceeded=outcome.output_limit_exceeded,
        peak_memory_bytes=outcome.peak_memory_bytes,
    )
    finished = Finished(
        job_id=job_id,
        status=JobStatus.ACCEPTED,
        script_results=results,
        worker_id=settings.worker_id,
    )
    return fitted(finished, settings.max_message_bytes, stderr_tail=note_len)


def _with_note(stderr: str, note: str, cap_bytes: int) -> tuple[str, bool, int]:
    """`stderr` with `note` at its end on a line of its own, within `cap_bytes` (UTF-8); whether
    the script's stderr had to be cut for it; the note's length. The newline that ends the
    script's last line belongs to stderr, before the note: `fitted` keeps it there when it cuts."""
    if not note:
        return stderr, False, 0
    room = cap_bytes - len(note.encode())
    body = stderr if not stderr or stderr.endswith("\n") else stderr + "\n"
    if len(body.encode()) <= room:
        return body + note, False, len(note)
    # Cut, wherever it falls (mid-line, mid-character), what is kept still ends its line.
    kept = stderr.encode()[: max(room - 1, 0)].decode("utf-8", "ignore")
    if kept and not kept.endswith("\n"):
        kept += "\n"
    return kept + note, True, len(note)


def rejected(job_id: str, reason: str, worker_id: str) -> Finished:
    """The job was not run (or not to its end, through no fault of its script): REJECTED."""
    return Finished(
        job_id=job_id, status=JobStatus.REJECTED, rejection_reason=reason, worker_id=worker_id
    )
