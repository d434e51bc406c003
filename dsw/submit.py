"""`dsw submit`: publish scripts as jobs, as the scheduler does, and wait for their outcomes.

The outcome topics are read without a consumer group, from the moment before the first job is
published, so no other consumer (the scheduler's group among them) is disturbed. Progress goes to
stderr (a live table on a terminal, plain lines otherwise); then each script's output under its
heading, and a summary. `--timeout` bounds the whole run, publishing included (a producer retries
forever while the broker is away). With `--junit`, a JUnit XML report is written at the end,
however the run ended: all done, `--timeout`, a broker error, SIGINT/SIGTERM (then exit 130), or an
error of dsw's own; a script not published by then is an error in it too.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dsw import exit_codes, junit
from dsw.config import Settings
from dsw.errors import DswError, InvalidInput, KafkaUnavailable, UnreadableMessage
from dsw.job_files import jobs_from_files
from dsw.kafka import Kafka, Reader, create_topics, open_kafka, open_reader
from dsw.messages import Finished, FinishedWith, JobStatus, decode_finished, decode_running
from dsw.sandbox_types import load_sandbox_type
from dsw.terminal import neutralised, write_output


class State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


class Ending(enum.Enum):
    """How the run ended."""

    DONE = "done"
    TIMED_OUT = "timed out"
    INTERRUPTED = "interrupted"
    BROKER_ERROR = "broker error"
    FAILED = "failed"  # an error of dsw's own, raised on after the report is written


@dataclass
class Submission:
    """One job this command published, and what came back for it."""

    name: str
    job_id: str
    message: bytes
    published_at: float | None = None
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
        return (self.finished_at or now) - (self.published_at or now)

    def run_time_s(self, now: float) -> float:
        """The run's duration as the worker measured it; else since `running`, else 0."""
        results = self.finished.script_results if self.finished else None
        if results is not None and results.duration_seconds is not None:
            return results.duration_seconds
        if self.started_at is not None:
            return (self.finished_at or now) - self.started_at
        return 0.0


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
    junit: Path | None = None
    suite: str = "dsw"


@dataclass
class _Run:
    """The submissions, and how their wait went: what the reports are made of."""

    submissions: list[Submission]
    ending: Ending = Ending.INTERRUPTED  # until the wait says otherwise
    trouble: str = ""  # the broker error (BROKER_ERROR), or dsw's own (FAILED)
    timestamp: datetime = field(default_factory=datetime.now)
    started_at: float = field(default_factory=time.monotonic)

    def published(self) -> list[Submission]:
        return [s for s in self.submissions if s.published_at is not None]

    def waiting(self) -> int:
        return sum(s.finished is None for s in self.published())

    def unpublished(self) -> int:
        return len(self.submissions) - len(self.published())


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


def script_paths(paths: list[str], settings: Settings, sandbox: str) -> list[str]:
    """`paths` with each directory replaced by the scripts in it: every file, at any depth, whose
    name ends in the extension of the sandbox type's script (its sandbox.toml's `script_name`,
    e.g. `.csx`, `.sh`), sorted; names starting with `.` are skipped, symlinked directories not
    followed. InvalidInput for a directory that holds none."""
    found: list[str] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            found.append(path)
            continue
        suffix = Path(load_sandbox_type(settings.sandbox_dir, sandbox).script_name).suffix
        scripts = _scripts_in(path, suffix)
        if not scripts:
            raise InvalidInput(
                f"{path}: no *{suffix} script in this directory (the script extension of "
                f"{sandbox}; --sandbox TYPE for another type)"
            )
        found += scripts
    return found


def _scripts_in(directory: str, suffix: str) -> list[str]:
    def unreadable(exc: OSError) -> None:
        raise InvalidInput(f"cannot read {exc.filename}: {exc.strerror}")

    found = []
    for folder, folders, files in os.walk(directory, onerror=unreadable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            os.path.join(folder, name)
            for name in files
            if name.endswith(suffix) and not name.startswith(".")
        ]
    return sorted(found, key=lambda path: Path(os.path.relpath(path, directory)).parts)


def _check_report_path(path: Path) -> None:
    """Before anything is published: the report can be written there (InvalidInput if not)."""
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInput(f"--junit {path}: not a file in a writable folder")


async def submit(settings: Settings, options: SubmitOptions) -> int:
    """Check every job as the worker would (InvalidInput before anything is published), publish,
    then wait (unless --no-wait), all within options.timeout_s; returns the exit code. SIGINT and
    SIGTERM cut the publishing or the wait short: what is known is reported, and it returns 130.
    Any other error is raised, after the JUnit report is written."""
    async with trio.open_nursery() as nursery:
        interrupts = _Interrupts()
        await nursery.start(interrupts.serve)
        try:
            code = await _submit(settings, options, interrupts.scope)
        finally:
            nursery.cancel_scope.cancel(reason="dsw submit is done")
    return code


async def _submit(settings: Settings, options: SubmitOptions, work: trio.CancelScope) -> int:
    paths = script_paths(options.paths, settings, options.sandbox)
    jobs = jobs_from_files(paths, settings, nuget_config=options.nuget_config, stdin=options.stdin)
    if options.junit is not None:
        _check_report_path(options.junit)
    run = _Run(
        [Submission(job.path, job.accepted.job_id, msgspec.json.encode(job.value)) for job in jobs]
    )
    topic = settings.pending_topic_prefix + options.sandbox
    if not options.wait:
        return await _publish_only(settings, options, work, topic, run.submissions)
    report_written = options.junit is None
    try:
        try:
            with work, trio.move_on_after(options.timeout_s or math.inf) as bounded:
                await _publish_and_wait(settings, options, run, topic)
                run.ending = Ending.DONE
        except* DswError as group:
            run.ending, run.trouble = Ending.BROKER_ERROR, _described(group)
        if bounded.cancelled_caught:
            run.ending = Ending.TIMED_OUT
    except Exception as exc:
        run.ending, run.trouble = Ending.FAILED, _described(exc)
        raise
    finally:
        # However the run ended, CI gets its report: written first, as CI needs it most.
        if not report_written:
            report_written = _write_junit(options, run)
    return _finish(options, run, report_written)


def _described(exc: BaseException) -> str:
    """An error for a report: dsw's own say what happened; others also say what they are."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_described(inner) for inner in exc.exceptions)
    return str(exc) if isinstance(exc, DswError) else f"{type(exc).__name__}: {exc}"


async def _publish_and_wait(
    settings: Settings, options: SubmitOptions, run: _Run, topic: str
) -> None:
    async with open_kafka(settings, wait_s=settings.kafka_timeout_s) as kafka:
        outcome_topics = [settings.running_topic, settings.finished_topic]
        await _create_topics(settings, outcome_topics)
        async with open_reader(kafka, outcome_topics) as reader:
            run.timestamp, run.started_at = datetime.now(), time.monotonic()
            await _publish_all(kafka, topic, run.submissions)
            await _wait_all(settings, options, reader, run)


async def _create_topics(settings: Settings, topics: list[str]) -> None:
    """Create the missing outcome topics with the worker's layout (WORKER_TOPIC_PARTITIONS,
    WORKER_TOPIC_REPLICATION_FACTOR). A broker that refuses is a warning, as for the worker:
    the topics may exist, or come, all the same."""
    try:
        await create_topics(
            settings.kafka_broker_url,
            topics,
            settings.topic_partitions,
            settings.topic_replication_factor,
        )
    except KafkaUnavailable as exc:
        print(f"dsw submit: warning: {exc}; reading them if they exist", file=sys.stderr)


async def _publish_only(
    settings: Settings,
    options: SubmitOptions,
    work: trio.CancelScope,
    topic: str,
    submissions: list[Submission],
) -> int:
    """--no-wait: publish (within --timeout), print the job ids (of those published, if cut
    short)."""
    with work, trio.move_on_after(options.timeout_s or math.inf) as bounded:
        async with open_kafka(settings, wait_s=settings.kafka_timeout_s) as kafka:
            await _publish_all(kafka, topic, submissions)
    for s in submissions:
        if s.published_at is not None:
            line = {"jobId": s.job_id, "path": s.name}
            print(json.dumps(line) if options.json_lines else s.job_id)
    unpublished = sum(s.published_at is None for s in submissions)
    if work.cancelled_caught:
        print("dsw submit: interrupted while publishing", file=sys.stderr)
        return exit_codes.INTERRUPTED
    if bounded.cancelled_caught:
        print(
            f"dsw submit: timed out after {options.timeout_s:g} s; "
            f"{unpublished} job(s) not published",
            file=sys.stderr,
        )
        return exit_codes.USAGE
    return exit_codes.SUCCEEDED


def _finish(options: SubmitOptions, run: _Run, report_written: bool) -> int:
    """The terminal's report (the JUnit one is written); the exit code."""
    _report(options, run)
    waiting, unpublished = run.waiting(), run.unpublished()
    not_sent = f"; {unpublished} job(s) not published" if unpublished else ""
    if run.ending is Ending.INTERRUPTED:
        print(
            "dsw submit: interrupted"
            + (f"; {waiting} job(s) had no result yet (they still run)" if waiting else "")
            + not_sent,
            file=sys.stderr,
        )
        return exit_codes.INTERRUPTED
    if run.ending is Ending.BROKER_ERROR:
        print(f"dsw: {run.trouble}{not_sent}", file=sys.stderr)
        return exit_codes.USAGE
    if run.ending is Ending.TIMED_OUT:
        print(
            f"dsw submit: timed out after {options.timeout_s:g} s waiting for {waiting} job(s)"
            + not_sent,
            file=sys.stderr,
        )
        return exit_codes.USAGE
    return exit_code(run.submissions) if report_written else exit_codes.USAGE


def _write_junit(options: SubmitOptions, run: _Run) -> bool:
    """The report of every script, published or not; False (said on stderr) if it could not be
    written."""
    assert options.junit is not None
    now = time.monotonic()
    after = f"{now - run.started_at:.1f} s"
    # Why a job has no result: (published, not published).
    no_result, not_published = {
        Ending.TIMED_OUT: (
            f"no result within {options.timeout_s or 0:g} s",
            f"not published within {options.timeout_s or 0:g} s",
        ),
        Ending.INTERRUPTED: (
            f"interrupted after {after} with no result",
            f"interrupted after {after}, before it was published",
        ),
        Ending.BROKER_ERROR: (f"no result: {run.trouble}", f"not published: {run.trouble}"),
        Ending.FAILED: (
            f"no result: dsw submit failed: {run.trouble}",
            f"not published: dsw submit failed: {run.trouble}",
        ),
    }.get(run.ending, ("no result", "not published"))

    def missing(s: Submission) -> str:
        return no_result if s.published_at is not None else not_published

    cases = [
        junit.Case(
            s.name,
            options.sandbox,
            s.job_id,
            s.finished,
            s.run_time_s(now),
            missing(s),
            published=s.published_at is not None,
        )
        for s in run.submissions
    ]
    document = junit.report(
        options.suite, cases, timestamp=run.timestamp, time_s=now - run.started_at
    )
    try:
        junit.write_report(options.junit, document)
    except OSError as exc:
        print(f"dsw submit: cannot write the JUnit report {options.junit}: {exc}", file=sys.stderr)
        return False
    return True


class _Interrupts:
    """SIGINT and SIGTERM cancel `scope` (the publishing and the wait); later ones are ignored,
    so that the reports are still written."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                self.scope.cancel(reason=f"interrupted by {signal.Signals(signum).name}")


async def _publish_all(kafka: Kafka, topic: str, submissions: list[Submission]) -> None:
    for s in submissions:
        await kafka.publish(topic, s.job_id, s.message)
        s.published_at = time.monotonic()


async def _wait_all(settings: Settings, options: SubmitOptions, reader: Reader, run: _Run) -> None:
    """Follow `running` and `finished` until every job is done (the caller's deadline bounds it)."""
    by_id = {s.job_id: s for s in run.submissions}
    progress = _Progress(options, run.submissions)
    with progress:
        while any(s.finished is None for s in run.submissions):
            for record in await reader.take(0.25):
                submission = by_id.get((record.key or b"").decode(errors="replace"))
                if submission is None or submission.finished is not None:
                    continue
                _apply(settings, submission, record.topic, record.value or b"")
                progress.changed(submission)
            progress.refresh()


def _apply(settings: Settings, submission: Submission, topic: str, value: bytes) -> None:
    now = time.monotonic()
    try:
        if topic == settings.running_topic:
            decode_running(value)
            submission.state, submission.started_at = State.RUNNING, now
        else:
            submission.finished = decode_finished(value)
            submission.raw_finished = value
            submission.state, submission.finished_at = State.DONE, now
    except UnreadableMessage as exc:
        shown = neutralised(str(exc))
        print(f"dsw submit: unreadable message on {topic}: {shown}", file=sys.stderr)


def _console(file: TextIO | None = None) -> Console:
    """On stderr (or `file`); wide enough for job ids in logs, where rich would assume 80."""
    console = Console(file=file or sys.stderr)
    return console if console.is_terminal else Console(file=file or sys.stderr, width=160)


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
                print(f"queued   {neutralised(s.name)} job={s.job_id}", file=sys.stderr)
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
            name = neutralised(submission.name)
            print(
                f"{state:<8} {name} job={submission.job_id} elapsed={elapsed:.1f}s",
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


_SURROGATE = re.compile("[\ud800-\udfff]")


def _same_terminal(first: TextIO, second: TextIO) -> bool:
    try:
        return (
            first.isatty()
            and second.isatty()
            and os.path.samestat(os.fstat(first.fileno()), os.fstat(second.fileno()))
        )
    except (OSError, ValueError):
        return False


class _Output:
    """Where each script's output goes, in order. Script stdout to stdout, byte for byte; the
    headings, script stderr and the summary to stderr. When both are one terminal, everything
    goes through stdout's one stream, so nothing can overtake anything else; else each stream
    is flushed before the other is written."""

    def __init__(self, raw: bool) -> None:
        self.raw = raw
        self.out = sys.stdout
        self.err = sys.stdout if _same_terminal(sys.stdout, sys.stderr) else sys.stderr
        self.console = _console(self.err)
        self._err_at_line_start = True

    def write(self, stream: TextIO, text: str) -> None:
        if not text:
            return
        (self.err if stream is self.out else self.out).flush()
        # No UTF-8 exists for a lone surrogate (from another writer's JSON): U+FFFD instead.
        write_output(stream, _SURROGATE.sub("\ufffd", text), self.raw)
        if stream is self.err:
            self._err_at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        """Before a line of ours: flush stdout; end the script's last line if it had no end."""
        self.out.flush()
        if not self._err_at_line_start:
            self.err.write("\n")
            self._err_at_line_start = True

    def heading(self, title: str, characters: str = "─") -> None:
        self.end_line()
        self.console.rule(Text(neutralised(title)), characters=characters, align="left")

    def line(self, text: str) -> None:
        self.end_line()
        self.console.print(Text(neutralised(text)))


def _report(options: SubmitOptions, run: _Run) -> None:
    """Each script's heading, stdout, then stderr under a heading of its own; a summary (not with
    --json)."""
    if options.json_lines or not run.published():
        return
    output = _Output(options.raw)
    for s in run.published():
        results = s.finished.script_results if s.finished else None
        output.heading(f"{s.name} ({s.outcome()})")
        if s.finished and s.finished.rejection_reason:
            output.line(f"rejected: {s.finished.rejection_reason}")
        if results:
            output.write(output.out, results.stdout)
            if results.stderr:
                output.heading(f"{s.name}: stderr", characters="╌")
                output.write(output.err, results.stderr)
    output.end_line()
    summary = Table(title="summary")
    for column in ("script", "job id", "outcome", "exit code", "duration"):
        summary.add_column(column)
    for s in run.published():
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
    output.console.print(summary)
