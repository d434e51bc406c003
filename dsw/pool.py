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
creates only while the containers it holds, is removing, or could not remove yet number fewer
than its size, and a job takes one away before it runs. The pool removes what it made: a removal
the daemon cannot do now (away, or answering 5xx while it restarts) is asked again once it
answers, and at shutdown until the cleanup deadline. Until a job has removed the container it
took, the pool still names it as in use (the reaper must not take it during the hand-over).
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
    unenforced,
)
from dsw.docker.client import DockerClient
from dsw.docker_health import DockerHealth
from dsw.errors import DockerError, DockerUnavailable, LimitsNotEnforced
from dsw.reaper import may_succeed_later
from dsw.sandbox_types import SandboxType

if TYPE_CHECKING:
    from dsw.egress.access import EgressAccess
    from dsw.egress.network import Egress

log = logging.getLogger(__name__)

# A container that dies this soon after it started, twice in a row, means the type cannot pool
# (a broken image or waiting command): the pool waits this long before it tries again.
_BROKEN_BACKOFF_S = 30.0
_DIED_YOUNG_S = 5.0
# Removals the daemon could not do are asked again after this, doubling up to the maximum.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 10.0


@dataclass
class WarmContainer:
    """One pool container: idle until a job takes it."""

    id: str
    name: str
    started_at: float
    egress: EgressAccess | None = None
    watch: trio.CancelScope = field(default_factory=trio.CancelScope)
    # Past its idle time: its watcher removes it.
    expired: bool = False
    # Called once its job is released (or its hand-over failed): the pool may create again.
    handed_over: Callable[[], None] = lambda: None
    # Called once the job has removed it (or given up): the pool stops naming it as in use.
    removed: Callable[[], None] = lambda: None


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
        # Out of the idle set and being removed by the pool (died, too old, discarded).
        self._retiring: dict[str, WarmContainer] = {}
        # Taken by a job that has not removed it yet.
        self._taken: dict[str, WarmContainer] = {}
        self._wanted = trio.Event()  # set when the pool may create again
        self._closed = False
        self._died_young = 0
        self._handing_over = 0
        self._quiet = trio.Event()  # set when no hand-over is under way
        self._quiet.set()
        # Removals the daemon could not do yet (container id or name): asked again.
        self._unremoved: set[str] = set()
        self._retry_s = _RETRY_FIRST_S

    def names(self) -> set[str]:
        """The idle containers' names."""
        return {warm.name for warm in self._idle.values()}

    def in_use(self) -> set[str]:
        """The names the reaper must leave alone: idle containers, those the pool is removing,
        and those taken by a job that has not removed them yet (until its rename, the job's
        id does not name the container)."""
        groups = (self._idle, self._retiring, self._taken)
        return {warm.name for group in groups for warm in group.values()}

    def _held(self) -> int:
        """The pool's own containers that may be on the daemon: what counts against its size."""
        return len(self._idle) + len(self._retiring) + len(self._unremoved)

    def take(self) -> WarmContainer | None:
        """The oldest idle container, now the caller's (it removes it and calls `removed`, then
        `job_done`); None when empty or closed. Refilling waits while a job taken from the pool
        is being handed over (hand-overs are quick, and a create beside one slows it)."""
        gauge = metrics.pool_idle.labels(sandbox=self._sandbox.name)
        if self._closed or not self._idle:
            metrics.pool_misses.labels(sandbox=self._sandbox.name).inc()
            return None
        warm = self._idle.pop(next(iter(self._idle)))
        warm.watch.cancel(reason="handed over")
        self._handing_over += 1
        self._taken[warm.id] = warm
        warm.handed_over = self._once_handed_over()

        def removed() -> None:
            self._taken.pop(warm.id, None)

        warm.removed = removed
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
        """Keep the pool full until `stopping` (drain) or cancellation; then discard it, and
        remove what the daemon could not remove before, asking again until the cleanup
        deadline. Reports started at once: jobs run cold until it has containers."""
        try:
            async with trio.open_nursery() as watchers:
                task_status.started()
                watchers.start_soon(self._close_when_set, stopping, watchers.cancel_scope)
                await self._fill_forever(watchers)
        finally:
            self._closed = True
            with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True):
                # A watcher cancelled before it got to its removal left its container here.
                await self._discard("draining" if stopping.is_set() else "worker stopping", True)
                await self._remove_unremoved_until_done()

    async def _close_when_set(self, stopping: trio.Event, pool_scope: trio.CancelScope) -> None:
        await stopping.wait()
        self._closed = True  # no job takes from it any more
        pool_scope.cancel(reason="draining")

    async def _fill_forever(self, watchers: trio.Nursery) -> None:
        while True:
            if not self._health.healthy:
                await self._health.wait_healthy()
                # What was idle may have gone with the daemon: start again from nothing.
                await self._discard("Docker was unreachable")
                continue
            await self._remove_unremoved()
            self._replace_old()
            if self._held() < self.size:
                while self._handing_over:
                    self._quiet = trio.Event()
                    await self._quiet.wait()
                await self._add(watchers)
                continue
            self._wanted = trio.Event()
            with trio.move_on_after(self._next_wake_s()):
                await self._wanted.wait()

    def _next_wake_s(self) -> float:
        """Until the oldest idle container is due for replacement (those past it are already
        being removed, so this is not zero while one is still there), or until unremoved
        containers are asked for again."""
        wake_s = self._settings.warm_max_idle_s
        if self._idle:
            oldest = next(iter(self._idle.values()))
            wake_s = oldest.started_at + self._settings.warm_max_idle_s - trio.current_time()
        if self._unremoved:
            wake_s = min(wake_s, self._retry_s)
        return max(wake_s, 0.0)

    def _replace_old(self) -> None:
        """Idle containers past their idle time go to their watchers for removal; they count
        against the size until they are gone."""
        now = trio.current_time()
        for warm in list(self._idle.values()):
            if now - warm.started_at >= self._settings.warm_max_idle_s:
                del self._idle[warm.id]
                self._retiring[warm.id] = warm
                warm.expired = True
                warm.watch.cancel(reason="too old")

    async def _add(self, watchers: trio.Nursery) -> None:
        """Create and start one pool container. Whatever stops it half way (a Docker error,
        the pool closing, cancellation), the container is removed: by name, since a create
        whose answer did not reach us may still have made it."""
        name = f"{POOL_NAME_PREFIX}{self._sandbox.name}-{uuid.uuid4().hex[:12]}"
        access = (
            self._egress.access() if self._egress and self._sandbox.network == "egress" else None
        )
        config = container_config(
            self._settings, self._sandbox, JobLimits.defaults(self._settings), "", access
        )
        added = backoff = False
        try:
            container, warnings = await self._docker.container_create(name, config)
            if refused := unenforced(warnings):
                raise LimitsNotEnforced(refused)
            await self._docker.container_start(container)
            warm = WarmContainer(container, name, trio.current_time(), access)
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
                    await self._remove(name)
        if backoff:
            await trio.sleep(_BROKEN_BACKOFF_S)

    async def _watch(self, warm: WarmContainer) -> None:
        """While idle: a container that exits, grows too old, or whose daemon stops answering
        (an outage discards the pool) is removed, and then replaced."""
        exit_code: int | None = None
        outage = False
        with warm.watch:
            try:
                exit_code = await self._docker.container_wait(warm.id)
            except DockerUnavailable as exc:
                outage = True
                self._health.failed(exc)
            except DockerError as exc:
                log.debug("pool watch ended container=%s error=%s", warm.name, exc)
        if warm.id in self._idle:
            del self._idle[warm.id]
            self._retiring[warm.id] = warm
            reason = "outage" if outage else "died"
            if not outage:
                lived_s = trio.current_time() - warm.started_at
                log.warning(
                    "warm container exited while idle, replacing it container=%s exit_code=%s "
                    "lived_s=%.1f",
                    warm.name,
                    exit_code,
                    lived_s,
                )
                self._died_young = self._died_young + 1 if lived_s < _DIED_YOUNG_S else 0
        elif warm.expired:
            reason = "old"
        else:
            return  # handed over to a job, or discarded
        metrics.pool_replaced.labels(sandbox=self._sandbox.name, reason=reason).inc()
        await self._remove_retiring(warm)
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

    async def _remove_retiring(self, warm: WarmContainer) -> None:
        """Remove a container moved to `_retiring`; it counts there until its removal ended."""
        metrics.pool_idle.labels(sandbox=self._sandbox.name).set(len(self._idle))
        try:
            self._revoke(warm.egress)
            await self._remove(warm.id)
        finally:
            self._retiring.pop(warm.id, None)

    async def _discard(self, why: str, abandoned: bool = False) -> None:
        """Remove every idle container and, with `abandoned` (once no watcher runs), those left
        in `_retiring`. Each removal is shielded with its own deadline."""
        if abandoned:
            self._idle.update(self._retiring)
            self._retiring.clear()
        if self._idle:
            log.info(
                "discarding the warm pool sandbox=%s containers=%d reason=%s",
                self._sandbox.name,
                len(self._idle),
                why,
            )
        while self._idle:
            _, warm = self._idle.popitem()
            self._retiring[warm.id] = warm
            warm.watch.cancel(reason=why)
            await self._remove_retiring(warm)
        metrics.pool_idle.labels(sandbox=self._sandbox.name).set(0)

    async def _remove_unremoved(self) -> None:
        """Ask the daemon again for the removals it could not do; while it still cannot, the
        next try waits longer."""
        for container in list(self._unremoved):
            self._unremoved.discard(container)
            await self._remove(container)
        self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S) if self._unremoved else _RETRY_FIRST_S

    async def _remove_unremoved_until_done(self) -> None:
        """At shutdown: ask again, with backoff, until all are gone (the caller's deadline)."""
        self._retry_s = _RETRY_FIRST_S
        while self._unremoved:
            await self._remove_unremoved()
            if self._unremoved:
                await trio.sleep(self._retry_s)

    async def _remove(self, container: str) -> None:
        """Remove one; shielded with its own deadline. What the daemon cannot do now (it does not
        answer, or answers 5xx while it restarts) is kept to be asked again: the pool removes
        what it made, rather than leave it to the reaper."""
        try:
            with trio.move_on_after(self._settings.cleanup_timeout_s, shield=True) as cleanup:
                await self._docker.container_remove(container)
        except DockerError as exc:
            if may_succeed_later(exc):
                log.warning(
                    "could not remove warm container=%s error=%s (again later)", container, exc
                )
                self._unremoved.add(container)
            else:
                log.warning(
                    "could not remove warm container=%s error=%s (the reaper will)", container, exc
                )
                metrics.cleanup_failures.inc()
            return
        if cleanup.cancelled_caught:
            log.warning("removal of warm container=%s timed out (again later)", container)
            self._unremoved.add(container)
