"""A warm pool per sandbox type: started, single-use containers waiting for a job.

A pool container is created and started like a job's container (the same hardening, limits and
labels, marked as this worker's pool container, named `dsw-pool-<type>-<random>`), running the
type's command in a waiting mode: dsw-entry, or the type's own runner once it has prepared what
it can without the job, blocks until the worker releases it with one line on its attached stdin
(`dsw.sandbox` hands a job over). Each serves at most one job and is then removed like any job's
container. The pool keeps `WORKER_WARM_CONTAINERS` ready: it refills one at a time, after a job
has published its result and its container is gone (never taking CPU from running jobs), and
replaces one that dies or has waited longer than `WORKER_WARM_MAX_IDLE_S`. Drain, shutdown and a
Docker outage discard it. Containers on the daemon never exceed capacity + pool size: the pool
creates only while it holds fewer than its size, and a job takes one away before it runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from dsw import metrics
from dsw.config import Settings
from dsw.container_spec import (
    POOL_NAME_PREFIX,
    JobLimits,
    container_config,
    new_volume_name,
    unenforced,
)
from dsw.docker.client import DockerClient
from dsw.docker_health import DockerHealth
from dsw.errors import DockerError, DockerUnavailable, LimitsNotEnforced
from dsw.reaper import remove_sandbox
from dsw.sandbox_types import SandboxType

if TYPE_CHECKING:
    from dsw.egress.access import EgressAccess
    from dsw.egress.network import Egress

log = logging.getLogger(__name__)

# A container that dies this soon after it started, twice in a row, means the type cannot pool
# (a broken image or waiting command): the pool waits this long before it tries again.
_BROKEN_BACKOFF_S = 30.0
_DIED_YOUNG_S = 5.0


@dataclass
class WarmContainer:
    """One idle pool container, until a job takes it."""

    id: str
    name: str
    started_at: float
    volume: str
    egress: EgressAccess | None = None
    watch: trio.CancelScope = field(default_factory=trio.CancelScope)
    # Called once its job is released (or its hand-over failed): the pool may create again.
    handed_over: Callable[[], None] = lambda: None


class WarmPool:
    def __init__(
        self,
        docker: DockerClient,
        settings: Settings,
        sandbox: SandboxType,
        health: DockerHealth,
        size: int,
        egress: Egress | None = None,
    ) -> None:
        self._egress = egress
        self._docker = docker
        self._settings = settings
        self._sandbox = sandbox
        self._health = health
        self.size = size
        self._idle: dict[str, WarmContainer] = {}  # oldest first
        self._wanted = trio.Event()  # set when the pool may create again
        self._closed = False
        self._died_young = 0
        self._handing_over = 0
        self._quiet = trio.Event()  # set when no hand-over is under way
        self._quiet.set()
        # Containers whose removal failed while the daemon was away: removed once it is back.
        self._unremoved: set[tuple[str, str]] = set()

    def names(self) -> set[str]:
        """The idle containers' names: they are in use, whatever the reaper thinks."""
        return {warm.name for warm in self._idle.values()}

    def take(self) -> WarmContainer | None:
        """The oldest idle container, now the caller's (it removes it, then calls `job_done`);
        None when empty. Refilling waits while a job taken from the pool is being handed over
        (hand-overs are quick, and a create beside one slows it)."""
        gauge = metrics.pool_idle.labels(sandbox=self._sandbox.name)
        if not self._idle:
            metrics.pool_misses.labels(sandbox=self._sandbox.name).inc()
            return None
        warm = self._idle.pop(next(iter(self._idle)))
        warm.watch.cancel(reason="handed over")
        self._handing_over += 1
        warm.handed_over = self._once_handed_over()
        gauge.set(len(self._idle))
        metrics.pool_handovers.labels(sandbox=self._sandbox.name).inc()
        return warm

    def _once_handed_over(self) -> Callable[[], None]:
        done = False

        def handed_over() -> None:
            nonlocal done
            if not done:
                done = True
                self._handing_over -= 1
                if not self._handing_over:
                    self._quiet.set()

        return handed_over

    def job_done(self) -> None:
        """A job of this type has published its result and its container is gone: refill."""
        self._wanted.set()

    async def serve(
        self,
        stopping: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the pool full until `stopping` (drain) or cancellation; then discard it. Reports
        started at once: jobs run cold until it has containers."""
        try:
            async with trio.open_nursery() as watchers:
                task_status.started()
                watchers.start_soon(self._discard_when_set, stopping)
                await self._fill_forever(watchers, stopping)
        finally:
            with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True):
                await self._discard("worker stopping")
                for container, volume in list(self._unremoved):
                    self._unremoved.discard((container, volume))
                    await self._remove(container, volume)

    async def _discard_when_set(self, stopping: trio.Event) -> None:
        await stopping.wait()
        self._closed = True
        await self._discard("draining")
        self._wanted.set()
        self._quiet.set()

    async def _fill_forever(self, watchers: trio.Nursery, stopping: trio.Event) -> None:
        while not self._closed:
            if not self._health.healthy:
                await self._health.wait_healthy()
                # What was idle may have gone with the daemon: start again from nothing.
                await self._discard("Docker was unreachable")
                continue
            for container, volume in list(self._unremoved):
                self._unremoved.discard((container, volume))
                await self._remove(container, volume)
            self._replace_old()
            if len(self._idle) < self.size:
                while self._handing_over and not self._closed:
                    self._quiet = trio.Event()
                    await self._quiet.wait()
                if not self._closed:
                    await self._add(watchers)
                continue
            self._wanted = trio.Event()
            with trio.move_on_after(self._next_expiry_s()):
                await self._wanted.wait()

    def _next_expiry_s(self) -> float:
        if not self._idle:
            return self._settings.warm_max_idle_s
        oldest = next(iter(self._idle.values()))
        return max(oldest.started_at + self._settings.warm_max_idle_s - trio.current_time(), 0)

    def _replace_old(self) -> None:
        for warm in list(self._idle.values()):
            if trio.current_time() - warm.started_at > self._settings.warm_max_idle_s:
                warm.watch.cancel(reason="too old")  # its watcher removes it

    async def _add(self, watchers: trio.Nursery) -> None:
        """Create and start one pool container. Whatever stops it half way (a Docker error,
        the pool closing, cancellation), the container is removed: by name, since a create
        whose answer did not reach us may still have made it."""
        name = f"{POOL_NAME_PREFIX}{self._sandbox.name}-{uuid.uuid4().hex[:12]}"
        access = (
            self._egress.access() if self._egress and self._sandbox.network == "egress" else None
        )
        volume = new_volume_name()
        config = container_config(
            self._settings, self._sandbox, JobLimits.defaults(self._settings), "", access, volume
        )
        added = backoff = False
        try:
            container, warnings = await self._docker.container_create(name, config)
            if refused := unenforced(warnings):
                raise LimitsNotEnforced(refused)
            await self._docker.container_start(container)
            if not self._closed:
                warm = WarmContainer(container, name, trio.current_time(), volume, access)
                self._idle[container] = warm
                added = True
                metrics.pool_idle.labels(sandbox=self._sandbox.name).set(len(self._idle))
                watchers.start_soon(self._watch, warm)
        except (DockerError, LimitsNotEnforced) as exc:
            log.warning(
                "could not add a warm container sandbox=%s error=%s", self._sandbox.name, exc
            )
            if isinstance(exc, DockerUnavailable):
                self._health.failed(exc)
            else:
                backoff = True  # an image or limit problem: not again at once
        finally:
            if not added:
                self._revoke(access)
                with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True):
                    await self._remove(name, volume)
        if backoff:
            await trio.sleep(_BROKEN_BACKOFF_S)

    async def _watch(self, warm: WarmContainer) -> None:
        """While idle: a container that exits, or grows too old, is removed and replaced."""
        exit_code: int | None = None
        with warm.watch:
            try:
                exit_code = await self._docker.container_wait(warm.id)
            except DockerError as exc:
                log.debug("pool watch ended container=%s error=%s", warm.name, exc)
        if warm.id not in self._idle:
            return  # handed over to a job, or discarded
        del self._idle[warm.id]
        if warm.watch.cancelled_caught:
            reason = "old"
        else:
            reason = "died"
            lived_s = trio.current_time() - warm.started_at
            log.warning(
                "warm container exited while idle, replacing it container=%s exit_code=%s "
                "lived_s=%.1f",
                warm.name,
                exit_code,
                lived_s,
            )
            self._died_young = self._died_young + 1 if lived_s < _DIED_YOUNG_S else 0
        with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True):
            await self._retire(warm, reason)
        if self._died_young >= 2:
            log.error(
                "warm containers of sandbox=%s exit at once; pausing the pool %.0f s",
                self._sandbox.name,
                _BROKEN_BACKOFF_S,
            )
            self._died_young = 0
            await trio.sleep(_BROKEN_BACKOFF_S)
        self._wanted.set()

    def _revoke(self, access: EgressAccess | None) -> None:
        if access is not None and self._egress is not None:
            self._egress.proxy.revoke(access.token)

    async def _retire(self, warm: WarmContainer, reason: str) -> None:
        self._revoke(warm.egress)
        metrics.pool_replaced.labels(sandbox=self._sandbox.name, reason=reason).inc()
        metrics.pool_idle.labels(sandbox=self._sandbox.name).set(len(self._idle))
        await self._remove(warm.id, warm.volume)

    async def _discard(self, why: str) -> None:
        """Remove every idle container (shielded by the caller where it must be)."""
        if self._idle:
            log.info(
                "discarding the warm pool sandbox=%s containers=%d reason=%s",
                self._sandbox.name,
                len(self._idle),
                why,
            )
        while self._idle:
            _, warm = self._idle.popitem()
            warm.watch.cancel(reason=why)
            self._revoke(warm.egress)
            await self._remove(warm.id, warm.volume)
        metrics.pool_idle.labels(sandbox=self._sandbox.name).set(0)

    async def _remove(self, container: str, volume: str) -> None:
        """Remove one; shielded with its own deadline: a container half removed when the pool
        is cancelled would leave its volume."""
        try:
            with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True):
                await remove_sandbox(self._docker, container, volume)
        except DockerUnavailable as exc:
            log.warning("could not remove warm container=%s error=%s (again later)", container, exc)
            self._unremoved.add((container, volume))
        except DockerError as exc:
            log.warning(
                "could not remove warm container=%s error=%s (the reaper will)", container, exc
            )
            metrics.cleanup_failures.inc()
