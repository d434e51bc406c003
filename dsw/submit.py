"""`dsw submit`: publish scripts as jobs, as the scheduler does, and wait for their outcomes.

The outcome topics are read without a consumer group, from the moment before the first job is
published, so no other consumer (the scheduler's group among them) is disturbed. Progress goes to
stderr (a live table on a terminal, plain lines otherwise); results go to stdout.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dsw import exit_codes
from dsw.config import Settings
from dsw.job_files import jobs_from_files
from dsw.kafka import Kafka, Reader, create_topics, open_kafka, open_reader
from dsw.messages import Finished, FinishedWith, JobStatus, Running
from dsw.terminal import neutralised, write_output


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass
class Submission:
    """One job this command published, and what came back for it."""

    name: str
    job_id: str
    message: bytes
    published_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    finished: Finished | None = None
    raw_finished: bytes = b""
    state: State = State.QUEUED

    def outcome(self) -> str:
        if self.finished is None:
            return self.state.value
        if self.finished.status is JobStatus.REJECTED or self.finished.script_results is None:
            return "REJECTED"
        return self.finished.script_results.finished_with.value

    def elapsed_s(self, now: float) -> float:
        return (self.finished_at or now) - self.published_at


@dataclass
class SubmitOptions:
    paths: list[str]
    sandbox: str
    nuget_config: Path | None = None
    stdin: Path | None = None
    timeout_s: float | None = None
    wait: bool = True
    json_lines: bool = False
    raw: bool = False


def exit_code(submissions: list[Submission]) -> int:
    """3 if any was REJECTED, else 124 if any hit the time limit, else 1 if any FAILED, else 0."""
    outcomes = {s.outcome() for s in submissions}
    if "REJECTED" in outcomes:
        return exit_codes.REJECTED
    if FinishedWith.TIME_LIMIT_EXCEEDED.value in outcomes:
        return exit_codes.TIME_LIMIT
    if outcomes - {FinishedWith.SUCCEEDED.value}:
        return exit_codes.FAILED
    return exit_codes.SUCCEEDED


async def submit(settings: Settings, options: SubmitOptions) -> int:
    """Check every job as the worker would (InvalidInput before anything is published), publish,
    then wait (unless --no-wait) within options.timeout_s; returns the exit code."""
    jobs = jobs_from_files(
        options.paths, settings, nuget_config=options.nuget_config, stdin=options.stdin
    )
    submissions = [
        Submission(
            name=job.path, job_id=job.accepted.job_id, message=msgspec.json.encode(job.value)
        )
        for job in jobs
    ]
    topic = settings.pending_topic_prefix + options.sandbox
    async with open_kafka(settings, wait_s=settings.kafka_timeout_s) as kafka:
        if not options.wait:
            await _publish_all(kafka, topic, submissions)
            for s in submissions:
                print(
                    s.job_id
                    if not options.json_lines
                    else json.dumps({"jobId": s.job_id, "path": s.name})
                )
            return exit_codes.SUCCEEDED
        await create_topics(
            settings.kafka_broker_url, [settings.running_topic, settings.finished_topic]
        )
        outcome_topics = [settings.running_topic, settings.finished_topic]
        async with open_reader(kafka, outcome_topics) as reader:
            await _publish_all(kafka, topic, submissions)
            finished_in_time = await _wait_all(settings, options, reader, submissions)
    _report(options, submissions)
    if not finished_in_time:
        waiting = sum(s.finished is None for s in submissions)
        print(
            f"dsw submit: timed out after {options.timeout_s:g} s waiting for {waiting} job(s)",
            file=sys.stderr,
        )
        return exit_codes.USAGE
    return exit_code(submissions)


async def _publish_all(kafka: Kafka, topic: str, submissions: list[Submission]) -> None:
    for s in submissions:
        s.published_at = time.monotonic()
        await kafka.publish(topic, s.job_id, s.message)


async def _wait_all(
    settings: Settings, options: SubmitOptions, reader: Reader, submissions: list[Submission]
) -> bool:
    """Follow `running` and `finished` until every job is done; False if the timeout came first."""
    by_id = {s.job_id: s for s in submissions}
    progress = _Progress(options, submissions)
    with progress, trio.move_on_after(options.timeout_s or float("inf")):
        while any(s.finished is None for s in submissions):
            for record in await reader.take(0.25):
                submission = by_id.get((record.key or b"").decode(errors="replace"))
                if submission is None or submission.finished is not None:
                    continue
                _apply(settings, submission, record.topic, record.value or b"")
                progress.changed(submission)
            progress.refresh()
        return True
    return False


def _apply(settings: Settings, submission: Submission, topic: str, value: bytes) -> None:
    now = time.monotonic()
    try:
        if topic == settings.running_topic:
            msgspec.json.decode(value, type=Running)
            submission.state, submission.started_at = State.RUNNING, now
        else:
            submission.finished = msgspec.json.decode(value, type=Finished)
            submission.raw_finished = value
            submission.state, submission.finished_at = State.DONE, now
    except msgspec.DecodeError as exc:
        print(f"dsw submit: unreadable message on {topic}: {exc}", file=sys.stderr)


def _console() -> Console:
    """stderr; wide enough for job ids in logs, where rich would assume 80 columns."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=160)


class _Progress:
    """A live table on a terminal; one plain line per change otherwise; nothing with --json."""

    def __init__(self, options: SubmitOptions, submissions: list[Submission]) -> None:
        self.submissions = submissions
        self.console = _console()
        self.quiet = options.json_lines
        self.json_lines = options.json_lines
        self.live: Live | None = None
        if not self.quiet and self.console.is_terminal:
            self.live = Live(
                self._table(), console=self.console, refresh_per_second=4, transient=True
            )

    def __enter__(self) -> _Progress:
        if self.live:
            self.live.__enter__()
        elif not self.quiet:
            for s in self.submissions:
                print(f"queued   {s.name} job={s.job_id}", file=sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def changed(self, submission: Submission) -> None:
        if self.json_lines and submission.finished is not None:
            print(submission.raw_finished.decode(), flush=True)
        elif not self.quiet and not self.live:
            elapsed = submission.elapsed_s(time.monotonic())
            state = submission.outcome() if submission.finished else submission.state.value
            print(
                f"{state:<8} {submission.name} job={submission.job_id} elapsed={elapsed:.1f}s",
                file=sys.stderr,
            )

    def refresh(self) -> None:
        if self.live:
            self.live.update(self._table())

    def _table(self) -> Table:
        now = time.monotonic()
        table = Table(title="dsw submit")
        for column in ("script", "job", "state", "elapsed"):
            table.add_column(column)
        for s in self.submissions:
            table.add_row(_name(s), s.job_id[:8], s.outcome(), f"{s.elapsed_s(now):.1f}s")
        return table


def _name(submission: Submission) -> Text:
    """A script's path in a table: text, never rich markup, and no control characters."""
    return Text(neutralised(submission.name))


def _report(options: SubmitOptions, submissions: list[Submission]) -> None:
    """Each script's output, then a summary table (not with --json)."""
    if options.json_lines:
        return
    console = _console()
    for s in submissions:
        results = s.finished.script_results if s.finished else None
        console.rule(Text(f"{neutralised(s.name)} ({s.outcome()})"))
        if s.finished and s.finished.rejection_reason:
            console.print(Text(f"rejected: {neutralised(s.finished.rejection_reason)}"))
        if results:
            # In order: each stream flushed before the next heading is written.
            write_output(sys.stdout, results.stdout, options.raw)
            write_output(sys.stderr, results.stderr, options.raw)
    summary = Table(title="summary")
    for column in ("script", "job id", "outcome", "exit code", "duration"):
        summary.add_column(column)
    for s in submissions:
        results = s.finished.script_results if s.finished else None
        summary.add_row(
            _name(s),
            s.job_id,
            s.outcome(),
            "" if results is None or results.exit_code is None else str(results.exit_code),
            ""
            if results is None or results.duration_seconds is None
            else f"{results.duration_seconds:.2f}s",
        )
    console.print(summary)
