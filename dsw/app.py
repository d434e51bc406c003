"""The worker's nursery tree: signals, reaper, Docker monitor, and per sandbox type a consumer
that takes only as many jobs as it has capacity for, a job nursery, and graceful drain.

    serve_worker
    ├── serve_signals       1st SIGTERM/SIGINT: stop taking jobs, drain; 2nd SIGINT: cancel now
    ├── serve_reaper        orphaned containers, every REAP_EVERY_S
    ├── DockerHealth        pings; the consumers pause while Docker is away
    ├── serve_status        /metrics, /healthz, /readyz
    └── serve_type (each)   consumer on pending-<type>, group workers.<type>
        ├── poll loop       take ≤ free capacity, pause/resume, commit finished positions
        └── job nursery     one task per job, inside a cancel scope that drain moves
"""

from __future__ import annotations

import logging
import signal

import trio

from dsw import metrics
from dsw.backoff import Backoff
from dsw.config import Settings
from dsw.docker import DockerClient, open_docker
from dsw.docker_health import DockerHealth
from dsw.errors import DockerUnavailable
from dsw.jobs import Accepted, DeadLetter, JobContext, Rejected, dead_letter, parse, reject, run_job
from dsw.kafka import Consumer, Kafka, Record, open_kafka
from dsw.offsets import OffsetTracker
from dsw.preflight import preflight
from dsw.reaper import reap
from dsw.sandbox_types import SandboxType, load_sandbox_types
from dsw.status import Status, serve_status

log = logging.getLogger(__name__)

POLL_S = 0.5
REAP_EVERY_S = 60.0


class Drain:
    """Shutdown in two steps: stop taking jobs and give running ones a deadline; then cancel."""

    def __init__(self, settings: Settings, status: Status) -> None:
        self.settings = settings
        self.status = status
        self.stopping = trio.Event()
        self._scopes: list[trio.CancelScope] = []

    def job_scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.stopping.is_set():
            scope.cancel(reason="shutting down")
        self._scopes.append(scope)
        return scope

    def begin(self) -> None:
        self.stopping.set()
        self.status.draining = True
        deadline = trio.current_time() + self.settings.drain_timeout_s
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, deadline)

    def cancel_now(self) -> None:
        self.begin()
        for scope in self._scopes:
            scope.cancel(reason="second interrupt")


async def serve_worker(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
    sandboxes = load_sandbox_types(settings.sandbox_dir, settings.runner_types)
    status = Status(settings)
    drain = Drain(settings, status)
    async with trio.open_nursery() as root:
        root.start_soon(serve_signals, drain, root.cancel_scope)
        if settings.metrics_port:
            await root.start(serve_status, settings, status)
        docker_backoff = Backoff.of(settings)
        while True:
            try:
                async with open_docker(settings) as docker:
                    await _serve_with_docker(settings, sandboxes, docker, drain, status)
                break
            except DockerUnavailable as exc:
                if drain.stopping.is_set():
                    break
                log.error(
                    "Docker is unreachable at startup; retry_in_s=%s error=%s",
                    docker_backoff.next_s,
                    exc,
                )
                await docker_backoff.sleep()
        root.cancel_scope.cancel(reason="worker stopped")
    log.info("worker stopped")
    return 0


async def _serve_with_docker(
    settings: Settings,
    sandboxes: dict[str, SandboxType],
    docker: DockerClient,
    drain: Drain,
    status: Status,
) -> None:
    for sandbox in sandboxes.values():
        await preflight(docker, settings, sandbox)
    status.docker = docker
    status.images = [sandbox.image for sandbox in sandboxes.values()]
    metrics.containers_reaped.inc(await reap(docker, settings))
    health = DockerHealth()
    status.docker_health = health
    log.info(
        "worker starting id=%s types=%s capacity=%d broker=%s",
        settings.worker_id,
        ",".join(sandboxes),
        settings.max_containers,
        settings.kafka_broker_url,
    )
    async with open_kafka(settings) as kafka, trio.open_nursery() as services:
        contexts = [
            JobContext(settings, docker, kafka, health, sandbox, OffsetTracker())
            for sandbox in sandboxes.values()
        ]
        services.start_soon(serve_reaper, docker, settings, contexts)
        services.start_soon(health.serve_monitor, docker, Backoff.of(settings))
        status.kafka = kafka
        async with trio.open_nursery() as types:
            for ctx in contexts:
                types.start_soon(serve_type, ctx, drain, status)
        services.cancel_scope.cancel(reason="consumers stopped")


async def serve_signals(drain: Drain, startup: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not drain.stopping.is_set():
                log.info(
                    "%s: not taking new jobs; draining up to %ss",
                    name,
                    drain.settings.drain_timeout_s,
                )
                drain.begin()
                if not drain._scopes:
                    startup.cancel(reason=name)
            elif signum == signal.SIGINT:
                log.warning("second SIGINT: cancelling running jobs now")
                drain.cancel_now()


async def serve_reaper(
    docker: DockerClient, settings: Settings, contexts: list[JobContext]
) -> None:
    while True:
        await trio.sleep(REAP_EVERY_S)
        active = {job_id for ctx in contexts for job_id in ctx.in_flight}
        try:
            metrics.containers_reaped.inc(await reap(docker, settings, active))
        except DockerUnavailable as exc:
            log.warning("reaper skipped: %s", exc)


async def serve_type(ctx: JobContext, drain: Drain, status: Status) -> None:
    """Consume pending-<type> until drained; every job task lives in this function's nursery."""
    settings, name = ctx.settings, ctx.sandbox.name
    topic = settings.pending_topic_prefix + name
    group = settings.consumer_group_prefix + name
    limiter = trio.CapacityLimiter(settings.max_containers)
    metrics.capacity.labels(sandbox=name).set(settings.max_containers)
    async with ctx.kafka.open_consumer(topic, group, ctx.tracker) as consumer:
        status.consumers[name] = consumer
        log.info("consuming topic=%s group=%s", topic, group)
        with drain.job_scope():
            async with trio.open_nursery() as jobs:
                await _poll(ctx, consumer, limiter, jobs, drain)
        with trio.move_on_after(settings.kafka_timeout_s, shield=True):
            await consumer.commit()
        del status.consumers[name]
    log.info("stopped consuming topic=%s", topic)


async def _poll(
    ctx: JobContext,
    consumer: Consumer,
    limiter: trio.CapacityLimiter,
    jobs: trio.Nursery,
    drain: Drain,
) -> None:
    """Take records while there is capacity; keep polling (paused) so the group keeps us.

    Once draining, it only polls and commits until the last job task has ended.
    """
    name = ctx.sandbox.name
    while not (drain.stopping.is_set() and not jobs.child_tasks):
        taking = not drain.stopping.is_set() and ctx.docker_health.healthy
        free = int(limiter.available_tokens) if taking else 0
        assigned = consumer.assignment()
        metrics.partitions_paused.labels(sandbox=name).set(0 if free else len(assigned))
        if free:
            consumer.resume(assigned)
            records = await consumer.take(max_records=free, timeout_s=POLL_S)
        else:
            consumer.pause(assigned)
            with trio.move_on_after(POLL_S):
                await ctx.slot_freed.wait()
            ctx.slot_freed = trio.Event()
            # Polling while paused keeps the group's membership (max.poll.interval.ms).
            records = await consumer.take(max_records=1, timeout_s=0)
        held_back: set[tuple[str, int]] = set()
        for record in records:
            partition = (record.topic, record.partition)
            if partition in held_back or not ctx.tracker.is_new(partition, record.offset):
                continue
            if drain.stopping.is_set() or not _dispatch(ctx, record, limiter, jobs):
                # No room: read it again once a slot is free.
                consumer.seek(partition, record.offset)
                held_back.add(partition)
        if not await consumer.commit():
            metrics.commit_failures.inc()


def _dispatch(
    ctx: JobContext, record: Record, limiter: trio.CapacityLimiter, jobs: trio.Nursery
) -> bool:
    """Start the record's task; False if it needs a slot and none is free."""
    partition = (record.topic, record.partition)
    try:
        parsed: DeadLetter | Rejected | Accepted = parse(record, ctx.settings, ctx.sandbox)
    except Exception as exc:
        # A record that trips a bug of ours must not stop the partition: keep it aside.
        log.exception(
            "cannot read record topic=%s partition=%s offset=%s",
            record.topic,
            record.partition,
            record.offset,
        )
        parsed = DeadLetter(f"internal error reading the record: {exc!r}", "internal_error")
    if isinstance(parsed, Accepted) and parsed.job_id in ctx.in_flight:
        log.info(
            "job already in flight job=%s topic=%s partition=%s offset=%s",
            parsed.job_id,
            record.topic,
            record.partition,
            record.offset,
        )
        metrics.jobs_deduplicated.labels(sandbox=ctx.sandbox.name).inc()
        ctx.tracker.begin(partition, record.offset)
        ctx.in_flight[parsed.job_id].append((partition, record.offset))
        return True
    token = object()
    if isinstance(parsed, Accepted):
        try:
            limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            return False
    ctx.tracker.begin(partition, record.offset)
    metrics.jobs_received.labels(sandbox=ctx.sandbox.name).inc()
    if isinstance(parsed, DeadLetter):
        jobs.start_soon(dead_letter, ctx, record, parsed)
    elif isinstance(parsed, Rejected):
        jobs.start_soon(reject, ctx, record, parsed)
    else:
        ctx.in_flight[parsed.job_id] = [(partition, record.offset)]
        jobs.start_soon(_job_with_slot, ctx, record, parsed, limiter, token)
    return True


async def _job_with_slot(
    ctx: JobContext,
    record: Record,
    accepted: Accepted,
    limiter: trio.CapacityLimiter,
    token: object,
) -> None:
    try:
        await run_job(ctx, record, accepted)
    finally:
        limiter.release_on_behalf_of(token)
        ctx.slot_freed.set()


__all__ = ["Kafka", "serve_worker"]
