"""The worker's nursery tree: signals, reaper, Docker monitor, and per sandbox type a server that
takes only as many jobs as it has capacity for, a job nursery, and graceful drain.

    serve_worker
    ├── serve_signals       1st SIGTERM/SIGINT: stop taking jobs, drain; 2nd SIGINT: cancel now
    ├── serve_status        /metrics, /healthz, /readyz
    ├── serve_reaper        orphaned containers, every REAP_EVERY_S
    ├── DockerHealth        pings; the servers pause while Docker is away
    └── TypeServer (each)   consumer on pending-<type>, group workers.<type> (dsw.server)
        ├── WarmPool        started single-use containers waiting for a job (dsw.pool)
        ├── poll loop       take ≤ free capacity, pause/resume, commit finished positions
        └── job nursery     one task per record, inside a cancel scope that drain moves
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import trio

from dsw import metrics
from dsw.backoff import Backoff
from dsw.config import Settings, warm_pool_size
from dsw.docker import DockerClient, open_docker
from dsw.docker_health import DockerHealth
from dsw.drain import Drain
from dsw.egress.network import Egress, open_egress_for
from dsw.errors import DockerError, DockerUnavailable, KafkaUnavailable
from dsw.inflight import InFlight
from dsw.jobs import JobContext
from dsw.kafka import create_topics, open_kafka
from dsw.pool import WarmPool
from dsw.preflight import preflight
from dsw.reaper import reap, remove_own
from dsw.sandbox_types import SandboxType, load_sandbox_types
from dsw.server import TypeServer
from dsw.status import Readiness, serve_status

log = logging.getLogger(__name__)

REAP_EVERY_S = 60.0


async def serve_worker(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return."""
    sandboxes = load_sandbox_types(settings.sandbox_dir, settings.runner_types)
    drain = Drain(settings.drain_timeout_s)
    readiness = Readiness(settings, drain)
    async with trio.open_nursery() as root:
        root.start_soon(serve_signals, drain, root.cancel_scope)
        if settings.metrics_port:
            await root.start(serve_status, settings, readiness)
        docker_backoff = Backoff.of(settings)
        while True:
            try:
                async with open_docker(settings) as docker:
                    await _serve_with_docker(settings, sandboxes, docker, drain, readiness)
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


async def _serve_with_docker(
    settings: Settings,
    sandboxes: dict[str, SandboxType],
    docker: DockerClient,
    drain: Drain,
    readiness: Readiness,
) -> None:
    async with open_egress_for(docker, settings, sandboxes.values()) as egress:
        await _serve_confined(settings, sandboxes, docker, drain, readiness, egress)


async def _serve_confined(
    settings: Settings,
    sandboxes: dict[str, SandboxType],
    docker: DockerClient,
    drain: Drain,
    readiness: Readiness,
    egress: Egress | None,
) -> None:
    for sandbox in sandboxes.values():
        await preflight(docker, settings, sandbox, egress)
    readiness.docker = docker
    readiness.images = [sandbox.image for sandbox in sandboxes.values()]
    metrics.containers_reaped.inc(await reap(docker, settings))
    health = DockerHealth()
    readiness.docker_health = health
    log.info(
        "worker starting id=%s types=%s capacity=%d broker=%s docker_api=%s",
        settings.worker_id,
        ",".join(sandboxes),
        settings.max_containers,
        settings.kafka_broker_url,
        docker.api_version,
    )
    in_flight = InFlight()
    size = warm_pool_size(settings)
    pools = {
        name: WarmPool(docker, settings, sandbox, health, size, egress) if size else None
        for name, sandbox in sandboxes.items()
    }
    async with open_kafka(settings) as kafka, trio.open_nursery() as services:
        await ensure_topics(settings, sandboxes)
        servers = [
            TypeServer(
                JobContext(
                    settings,
                    docker,
                    kafka,
                    health,
                    sandbox,
                    settings.consumer_group_prefix + sandbox.name,
                    pools[sandbox.name],
                    egress,
                ),
                in_flight,
                drain,
                readiness,
            )
            for sandbox in sandboxes.values()
        ]

        def in_use() -> set[str]:
            # Asked by the reaper for each container it judges, after its listing.
            pooled = {name for pool in pools.values() if pool for name in pool.in_use()}
            return in_flight.job_ids() | pooled

        services.start_soon(serve_reaper, docker, settings, in_use)
        services.start_soon(health.serve_monitor, docker, Backoff.of(settings))
        readiness.kafka = kafka
        async with trio.open_nursery() as types:
            for server in servers:
                types.start_soon(server.serve)
        services.cancel_scope.cancel(reason="servers stopped")
    # Nothing of this worker runs any more: what of it is still on the daemon goes too.
    with trio.move_on_after(settings.cleanup_timeout_s):
        try:
            metrics.containers_reaped.inc(await remove_own(docker, settings))
        except DockerError as exc:
            log.warning("could not list this worker's containers at the end error=%s", exc)


async def ensure_topics(settings: Settings, sandboxes: dict[str, SandboxType]) -> None:
    """The topics this worker reads and writes, created with the scheduler's layout where they are
    missing, so that its first start needs no broker-side auto-creation (and logs no alarm)."""
    pending = [settings.pending_topic_prefix + name for name in sandboxes]
    topics = [
        *pending,
        settings.running_topic,
        settings.finished_topic,
        *(topic + settings.dead_letter_suffix for topic in pending),
    ]
    try:
        created = await create_topics(
            settings.kafka_broker_url,
            topics,
            settings.topic_partitions,
            settings.topic_replication_factor,
        )
    except KafkaUnavailable as exc:
        # Not allowed to create them, say: each consumer waits for its topic to appear.
        log.warning("waiting for topics to exist: %s", exc)
        return
    if created:
        log.info("created topics=%s partitions=%d", ",".join(created), settings.topic_partitions)


async def serve_signals(drain: Drain, startup: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not drain.stopping.is_set():
                log.info("%s: not taking new jobs; draining up to %ss", name, drain.drain_timeout_s)
                drain.begin()
                if not drain.serving:
                    startup.cancel(reason=name)
            elif signum == signal.SIGINT:
                log.warning("second SIGINT: cancelling running jobs now")
                drain.cancel_now()


async def serve_reaper(
    docker: DockerClient, settings: Settings, in_use: Callable[[], set[str]]
) -> None:
    """Every REAP_EVERY_S, remove orphans; `in_use` names this worker's job ids in flight and
    its warm pools' containers (idle, being removed, or taken by a job that has not removed them
    yet), asked afresh for each container the reaper judges."""
    while True:
        await trio.sleep(REAP_EVERY_S)
        try:
            metrics.containers_reaped.inc(await reap(docker, settings, in_use))
        except DockerUnavailable as exc:
            log.warning("reaper skipped: %s", exc)
