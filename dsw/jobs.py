"""One job's messages and run: dead-letter it, reject it, or run it and publish the outcome.

`run_job` runs an accepted job, retrying transient Docker failures (bounded) before it publishes
REJECTED with the reason; it never blames the script for the daemon. Every function here returns
once its `finished` (or dead letter) is acknowledged by the broker and raises nothing but
Cancelled; the caller (`dsw.server`) then lets the record's offset commit. `run_job` and `reject`
also call the caller's `answered` as soon as `finished` is acknowledged, before what follows it (the
container's removal, the dead-letter copy), so that a cancellation after the answer does not take
it back. None of them knows of offsets.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from dsw import metrics, outcomes
from dsw.config import Settings
from dsw.docker.client import DockerClient
from dsw.docker_health import DockerHealth
from dsw.egress.network import Egress
from dsw.errors import (
    DockerError,
    DockerUnavailable,
    DswError,
    MessageTooLarge,
    WarmContainerLost,
)
from dsw.intake import Accepted, Rejected
from dsw.kafka import Kafka, Record
from dsw.messages import Finished, Running, encode, fit
from dsw.nursery import open_nursery
from dsw.pool import WarmPool
from dsw.sandbox import ScriptOutcome, ScriptRequest, open_script
from dsw.sandbox_types import SandboxType

log = logging.getLogger(__name__)

Answered = Callable[[], None]

# A `finished` without output fits any broker; below this, shrinking is pointless.
_MIN_BUDGET_BYTES = 4096


@dataclass(frozen=True)
class JobContext:
    """What the jobs of one sandbox type share; read-only."""

    settings: Settings
    docker: DockerClient
    kafka: Kafka
    docker_health: DockerHealth
    sandbox: SandboxType
    group: str
    pool: WarmPool | None = None
    egress: Egress | None = None


def where(record: Record) -> str:
    return f"topic={record.topic} partition={record.partition} offset={record.offset}"


async def dead_letter(ctx: JobContext, record: Record, reason: str, code: str) -> None:
    """Send the raw record to <topic><suffix> with its own headers and, as Spring's
    DeadLetterPublishingRecoverer adds them, the `kafka_dlt-*` ones saying where it came from
    and why."""
    topic = record.topic + ctx.settings.dead_letter_suffix
    log.warning("dead-lettered %s reason=%r to=%s", where(record), reason, topic)
    metrics.jobs_dead_lettered.labels(sandbox=ctx.sandbox.name, reason=code).inc()
    headers = [
        *record.headers,
        ("kafka_dlt-original-topic", record.topic.encode()),
        ("kafka_dlt-original-partition", struct.pack(">i", record.partition)),
        ("kafka_dlt-original-offset", struct.pack(">q", record.offset)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", record.timestamp_ms)),
        ("kafka_dlt-original-timestamp-type", b"CreateTime"),
        ("kafka_dlt-original-consumer-group", ctx.group.encode()),
        ("kafka_dlt-exception-fqcn", f"dsw.{code}".encode()),
        ("kafka_dlt-exception-message", reason.encode()),
        ("dsw-worker-id", ctx.settings.worker_id.encode()),
    ]
    try:
        await ctx.kafka.publish(topic, record.key, record.value, headers)
    except MessageTooLarge:
        # The headers pushed a record at the broker's limit over it: keep the why, drop the body.
        headers.append(("dsw-value-dropped", b"too large with the dead-letter headers"))
        await ctx.kafka.publish(topic, record.key, None, headers)


async def reject(ctx: JobContext, record: Record, rejected: Rejected, answered: Answered) -> None:
    """Publish REJECTED with the reason, call `answered`, then keep an unreadable record on the
    dead-letter topic. The answer goes first: a dead-letter topic that cannot be written (publish
    retries until cancelled) must not keep a readable job from its answer."""
    log.warning("rejected job=%s %s reason=%r", rejected.job_id, where(record), rejected.reason)
    metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason=rejected.code).inc()
    finished = outcomes.rejected(rejected.job_id, rejected.reason, ctx.settings.worker_id)
    await publish_finished(ctx, finished, record)
    answered()
    if rejected.dead_letter:
        await dead_letter(ctx, record, rejected.reason, rejected.code)


async def publish_finished(ctx: JobContext, finished: Finished, record: Record) -> None:
    """Publish `finished`, trimmed to WORKER_MAX_MESSAGE_BYTES, and smaller again if the broker's
    own limit turns out lower. A broker that refuses even a `finished` without output gets the
    record on the dead-letter topic instead, with the reason: an answer where one can be given."""
    budget = ctx.settings.max_message_bytes
    while True:
        data = fit(finished, budget)
        try:
            await ctx.kafka.publish(ctx.settings.finished_topic, finished.job_id, data)
            break
        except MessageTooLarge as exc:
            if budget <= _MIN_BUDGET_BYTES:
                log.error("broker refused finished job=%s at %d bytes", finished.job_id, budget)
                reason = f"the broker refused `finished` even at {budget} bytes: {exc}"
                await dead_letter(ctx, record, reason, "finished_too_large")
                return
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


async def run_job(ctx: JobContext, record: Record, accepted: Accepted, answered: Answered) -> None:
    """Run an accepted job and publish its outcome, calling `answered` once `finished` is
    acknowledged; its container is gone when this returns. Cancelled before the acknowledgement,
    `answered` is never called; after it, only the container's removal is cut short (it is
    shielded, with its own deadline)."""
    name = ctx.sandbox.name
    metrics.jobs_in_flight.labels(sandbox=name).inc()
    try:
        finished = await _execute(ctx, record, accepted.request(ctx.sandbox), answered)
    finally:
        metrics.jobs_in_flight.labels(sandbox=name).dec()
        if ctx.pool is not None:
            ctx.pool.job_done()
    results = finished.script_results
    log.info(
        "finished job=%s %s status=%s finished_with=%s exit_code=%s duration_s=%s",
        accepted.job_id,
        where(record),
        finished.status.value,
        results.finished_with.value if results else None,
        results.exit_code if results else None,
        results.duration_seconds if results else None,
    )


async def _execute(
    ctx: JobContext, record: Record, request: ScriptRequest, answered: Answered
) -> Finished:
    """Run with bounded retries of transient Docker failures, and publish the outcome as soon as
    it is known, while the container is removed (neither waits for the other; both are done
    before this returns and the job's slot is used again); REJECTED once the retries are used
    up."""
    attempts = ctx.settings.docker_retries + 1
    worker_id = ctx.settings.worker_id
    for attempt in range(1, attempts + 1):
        await ctx.docker_health.wait_healthy()
        try:
            async with (
                open_nursery() as publishing,
                _open_run(ctx, record, request) as outcome,
            ):
                finished = outcomes.accepted(request.job_id, outcome, ctx.settings)
                publishing.start_soon(_publish_answer, ctx, finished, record, answered)
            return finished
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
            finished = outcomes.rejected(request.job_id, f"docker: {exc}", worker_id)
        except DswError as exc:
            code = type(exc).__name__
            log.warning("cannot run job=%s error=%s", request.job_id, exc)
            finished = outcomes.rejected(request.job_id, str(exc), worker_id)
        except Exception as exc:
            # A bug of ours must not take the worker down, nor come back forever as a redelivery.
            code = "internal_error"
            log.exception("internal error job=%s", request.job_id)
            finished = outcomes.rejected(request.job_id, f"internal error: {exc!r}", worker_id)
        metrics.jobs_rejected.labels(sandbox=ctx.sandbox.name, reason=code).inc()
        await publish_finished(ctx, finished, record)
        answered()
        return finished
    raise AssertionError("unreachable")


async def _publish_answer(
    ctx: JobContext, finished: Finished, record: Record, answered: Answered
) -> None:
    await publish_finished(ctx, finished, record)
    answered()


@asynccontextmanager
async def _open_run(
    ctx: JobContext, record: Record, request: ScriptRequest
) -> AsyncIterator[ScriptOutcome]:
    """One attempt, in a warm pool's container when one is ready, else a cold one; yields the
    outcome once `running` is acknowledged, while the container still exists."""
    running = encode(Running(job_id=request.job_id))
    running_sent = trio.Event()
    async with open_nursery() as nursery:
        warm = ctx.pool.take() if ctx.pool is not None else None

        def started() -> None:
            metrics.queue_wait.observe(max(time.time() - record.timestamp_ms / 1000, 0))
            log.info("running job=%s %s", request.job_id, where(record))
            nursery.start_soon(publish_running)

        async def publish_running() -> None:
            await ctx.kafka.publish(ctx.settings.running_topic, request.job_id, running)
            running_sent.set()

        try:
            async with open_script(
                ctx.docker, ctx.settings, request, started, warm, ctx.egress
            ) as outcome:
                await running_sent.wait()
                yield outcome
                return
        except WarmContainerLost as exc:
            # Before the script ran (nothing was yielded): the job runs cold instead.
            log.warning("warm container lost, running cold job=%s error=%s", request.job_id, exc)
            metrics.pool_replaced.labels(sandbox=ctx.sandbox.name, reason="lost").inc()
        async with open_script(
            ctx.docker, ctx.settings, request, started, egress=ctx.egress
        ) as outcome:
            await running_sent.wait()
            yield outcome
