"""One job end to end: read the record, check it, run it, publish `running` and `finished`.

`parse` sorts a record into a dead letter (no usable job id), a rejection (a job we must not run)
or an accepted job. `run_job` runs an accepted job, retrying transient Docker failures (bounded)
before it publishes REJECTED with the reason; it never blames the script for the daemon. Nothing
here raises except Cancelled; a job cancelled before its `finished` was acknowledged leaves its
offset uncommitted, so it is redelivered.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import msgspec
import trio

from dsw import metrics
from dsw.config import MiB, Settings
from dsw.container_spec import JobLimits
from dsw.docker.client import DockerClient
from dsw.docker_health import DockerHealth
from dsw.errors import DockerError, DockerUnavailable, DswError, InvalidJobId, MessageTooLarge
from dsw.kafka import Kafka, Record
from dsw.messages import Finished, Job, Running, ScriptResults, Status, decode_json, encode, fit
from dsw.offsets import OffsetTracker, Partition
from dsw.sandbox import ScriptOutcome, ScriptRequest, run_script, validate_job_id
from dsw.sandbox_types import SandboxType

log = logging.getLogger(__name__)

# A `finished` without output fits any broker; below this, shrinking is pointless.
_MIN_BUDGET_BYTES = 4096
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


@dataclass(frozen=True)
class Accepted:
    job_id: str
    request: ScriptRequest


def parse(
    record: Record, settings: Settings, sandbox: SandboxType
) -> DeadLetter | Rejected | Accepted:
    """Sort one record; pure: no I/O."""
    if not record.value:
        return DeadLetter("empty message", "empty")
    try:
        value = decode_json(record.value)
    except msgspec.DecodeError as exc:
        return DeadLetter(f"not JSON: {exc}", "not_json")
    if not isinstance(value, dict):
        return DeadLetter(f"not a JSON object but {type(value).__name__}", "not_object")
    try:
        job_id = validate_job_id(value.get("jobId"))
    except InvalidJobId as exc:
        return DeadLetter(f"no usable jobId: {exc}", "no_job_id")
    try:
        job = msgspec.convert(value, Job)
    except msgspec.ValidationError as exc:
        return Rejected(job_id, f"invalid job: {exc}", "invalid_job")
    return _check(job, settings, sandbox)


def _check(job: Job, settings: Settings, sandbox: SandboxType) -> Rejected | Accepted:
    config = job.job_config
    if not job.script.strip():
        return Rejected(job.job_id, "script is blank", "blank_script")
    if len(job.script.encode()) > settings.max_script_bytes:
        return Rejected(
            job.job_id, f"script is over {settings.max_script_bytes} bytes", "too_large"
        )
    nuget = config.nuget_config_xml if config else None
    if nuget is not None:
        try:
            ElementTree.fromstring(nuget)
        except ElementTree.ParseError as exc:
            return Rejected(
                job.job_id, f"nugetConfigXml is not well-formed XML: {exc}", "bad_nuget_config"
            )
    stdin = config.stdin if config else None
    if stdin is not None and len(stdin.encode()) > settings.max_script_bytes:
        return Rejected(job.job_id, f"stdin is over {settings.max_script_bytes} bytes", "too_large")
    limits = JobLimits.defaults(settings)
    if config and config.timeout_seconds is not None:
        if config.timeout_seconds > settings.max_job_timeout_s:
            return Rejected(
                job.job_id,
                f"timeoutSeconds over this worker's maximum of {settings.max_job_timeout_s:g}",
                "over_limit",
            )
        limits = msgspec.structs.replace(limits, timeout_s=config.timeout_seconds)
    if config and config.memory_bytes is not None:
        if not MIN_MEMORY_BYTES <= config.memory_bytes <= settings.max_memory_bytes:
            return Rejected(
                job.job_id,
                f"memoryBytes outside {MIN_MEMORY_BYTES}..{settings.max_memory_bytes}",
                "over_limit",
            )
        limits = msgspec.structs.replace(limits, memory_bytes=config.memory_bytes)
    request = ScriptRequest(
        job_id=job.job_id,
        sandbox=sandbox,
        script=job.script,
        limits=limits,
        nuget_config=nuget,
        stdin=stdin,
    )
    return Accepted(job.job_id, request)


@dataclass
class JobContext:
    """What the jobs of one sandbox type share."""

    settings: Settings
    docker: DockerClient
    kafka: Kafka
    docker_health: DockerHealth
    sandbox: SandboxType
    tracker: OffsetTracker
    # job id -> every (partition, offset) that carried it; finished together.
    in_flight: dict[str, list[tuple[Partition, int]]] = field(default_factory=dict)
    # Set when a job gives its slot back, so the poll loop takes the next one at once.
    slot_freed: trio.Event = field(default_factory=trio.Event)


def _where(record: Record) -> str:
    return f"topic={record.topic} partition={record.partition} offset={record.offset}"


async def dead_letter(ctx: JobContext, record: Record, letter: DeadLetter) -> None:
    """Send the raw record to <topic><suffix>, with headers saying why; then its offset commits."""
    topic = record.topic + ctx.settings.dead_letter_suffix
    log.warning("dead-lettered %s reason=%r to=%s", _where(record), letter.reason, topic)
    metrics.jobs_dead_lettered.labels(sandbox=ctx.sandbox.name, reason=letter.code).inc()
    headers = [
        ("kafka_dlt-original-topic", record.topic.encode()),
        ("kafka_dlt-original-partition", str(record.partition).encode()),
        ("kafka_dlt-original-offset", str(record.offset).encode()),
        ("kafka_dlt-original-timestamp", str(record.timestamp_ms).encode()),
        ("kafka_dlt-exception-message", letter.reason.encode()),
        ("dsw-worker-id", ctx.settings.worker_id.encode()),
    ]
    try:
        await ctx.kafka.publish(topic, record.key, record.value, headers)
    except MessageTooLarge:
        # The headers pushed a record at the broker's limit over it: keep the why, drop the body.
        headers.append(("dsw-value-dropped", b"too large with the dead-letter headers"))
        await ctx.kafka.publish(topic, record.key, None, headers)
    ctx.tracker.finish((record.topic, record.partition), record.offset)


async def reject(ctx: JobContext, record: Record, rejected: Rejected) -> None:
    log.warning("rejected job=%s %s reason=%r", rejected.job_id, _where(record), rejected.reason)
    metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason=rejected.code).inc()
    await _publish_finished(ctx, _rejection(ctx, rejected.job_id, rejected.reason), record)
    ctx.tracker.finish((record.topic, record.partition), record.offset)


def _rejection(ctx: JobContext, job_id: str, reason: str) -> Finished:
    return Finished(
        job_id=job_id,
        status=Status.REJECTED,
        rejection_reason=reason,
        worker_id=ctx.settings.worker_id,
    )


async def _publish_finished(ctx: JobContext, finished: Finished, record: Record) -> None:
    """Publish `finished`, trimmed to WORKER_MAX_MESSAGE_BYTES, and smaller again if the broker's
    own limit turns out lower."""
    budget = ctx.settings.max_message_bytes
    while True:
        data = fit(finished, budget)
        try:
            await ctx.kafka.publish(ctx.settings.finished_topic, finished.job_id, data)
            break
        except MessageTooLarge as exc:
            if budget <= _MIN_BUDGET_BYTES:
                raise
            budget //= 2
            log.error(
                "broker refused finished job=%s; retrying with %d bytes (lower "
                "WORKER_MAX_MESSAGE_BYTES) error=%s",
                finished.job_id,
                budget,
                exc,
            )
    results = finished.script_results
    metrics.jobs_finished.labels(
        sandbox=ctx.sandbox.name,
        status=finished.status.value,
        finished_with=results.finished_with.value if results else "",
    ).inc()
    metrics.job_end_to_end.observe(max(time.time() - record.timestamp_ms / 1000, 0))


async def run_job(ctx: JobContext, record: Record, accepted: Accepted) -> None:
    """Run an accepted job and publish its outcome; then every offset that carried it may commit."""
    job_id = accepted.job_id
    name = ctx.sandbox.name
    metrics.jobs_in_flight.labels(sandbox=name).inc()
    try:
        finished = await _execute(ctx, record, accepted.request)
        await _publish_finished(ctx, finished, record)
        for partition, offset in ctx.in_flight.get(job_id, []):
            ctx.tracker.finish(partition, offset)
        results = finished.script_results
        log.info(
            "finished job=%s %s status=%s finished_with=%s exit_code=%s duration_s=%s",
            job_id,
            _where(record),
            finished.status.value,
            results.finished_with.value if results else None,
            results.exit_code if results else None,
            results.duration_seconds if results else None,
        )
    finally:
        ctx.in_flight.pop(job_id, None)
        metrics.jobs_in_flight.labels(sandbox=name).dec()


async def _execute(ctx: JobContext, record: Record, request: ScriptRequest) -> Finished:
    """Run with bounded retries of transient Docker failures; REJECTED once they are used up."""
    attempts = ctx.settings.docker_retries + 1
    for attempt in range(1, attempts + 1):
        await ctx.docker_health.wait_healthy()
        try:
            outcome = await _run_once(ctx, record, request)
        except DockerError as exc:
            transient = isinstance(exc, DockerUnavailable) or (exc.status or 0) >= 500
            if isinstance(exc, DockerUnavailable):
                ctx.docker_health.failed(exc)
            log.warning(
                "docker failed job=%s attempt=%d/%d transient=%s error=%s",
                request.job_id,
                attempt,
                attempts,
                transient,
                exc,
            )
            if transient and attempt < attempts:
                await trio.sleep(min(0.5 * 2**attempt, 10))
                continue
            code = "docker_unavailable" if transient else "docker_error"
            metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason=code).inc()
            return _rejection(ctx, request.job_id, f"docker: {exc}")
        except DswError as exc:
            metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason=type(exc).__name__).inc()
            log.warning("cannot run job=%s error=%s", request.job_id, exc)
            return _rejection(ctx, request.job_id, str(exc))
        except Exception as exc:
            # A bug of ours must not take the worker down, nor come back forever as a redelivery.
            metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason="internal_error").inc()
            log.exception("internal error job=%s", request.job_id)
            return _rejection(ctx, request.job_id, f"internal error: {exc!r}")
        return Finished(
            job_id=request.job_id,
            status=Status.ACCEPTED,
            script_results=ScriptResults.of(outcome),
            worker_id=ctx.settings.worker_id,
        )
    raise AssertionError("unreachable")


async def _run_once(ctx: JobContext, record: Record, request: ScriptRequest) -> ScriptOutcome:
    """One attempt; `running` is published once the container starts and before this returns."""
    outcome: ScriptOutcome | None = None
    error: DswError | None = None
    running = encode(Running(job_id=request.job_id))

    async with trio.open_nursery() as nursery:

        def started() -> None:
            metrics.queue_wait.observe(max(time.time() - record.timestamp_ms / 1000, 0))
            log.info("running job=%s %s", request.job_id, _where(record))
            nursery.start_soon(
                ctx.kafka.publish, ctx.settings.running_topic, request.job_id, running
            )

        try:
            outcome = await run_script(ctx.docker, ctx.settings, request, on_started=started)
        except DswError as exc:
            error = exc
    if error is not None:
        raise error
    assert outcome is not None
    return outcome
