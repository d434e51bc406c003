"""The life of one job's container: create, start, release with its files, wait, collect, remove.

Everything runs inside the caller's trio cancel scope. Whatever happens (success, failure,
timeout, an output cap, a Docker error, cancellation from outside), the container is removed
before `run_script` returns or raises, in a shielded cleanup with its own deadline (a daemon that
does not answer, or answers 5xx while it restarts, is asked again until then); a removal that
fails is logged and left to the reaper, never raised over the result.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from dsw import metrics
from dsw.config import Settings, human_bytes
from dsw.container_output import ContainerOutput, memory_peak
from dsw.container_spec import (
    PROJECT_LABEL,
    WORKER_LABEL,
    JobLimits,
    container_config,
    lifetime_bound_s,
    release,
    resource_limits,
    unenforced,
)
from dsw.docker.client import DockerClient
from dsw.errors import (
    ConfigError,
    Conflict,
    DockerError,
    DockerUnavailable,
    LimitsNotEnforced,
    NotFound,
    SandboxError,
    WarmContainerLost,
)
from dsw.messages import FinishedWith, validate_job_id
from dsw.nursery import open_nursery
from dsw.pool import WarmContainer

if TYPE_CHECKING:
    from dsw.egress.access import EgressAccess
    from dsw.egress.network import Egress
from dsw.reaper import finished_at, may_succeed_later, orphan_reason
from dsw.sandbox_types import SandboxType

log = logging.getLogger(__name__)

# After the container has exited its output stream ends by itself; this bounds a stuck daemon.
LOG_DRAIN_S = 10.0
# While a job waits for another run's container to go, it judges that container again this often
# (another system's run that has ended becomes a leftover a while later).
_MAKE_WAY_RECHECK_S = 10.0


class ScriptRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What to run: a validated job, its sandbox type and its limits."""

    job_id: str
    sandbox: SandboxType
    script: str
    limits: JobLimits
    nuget_config: str | None = None
    stdin: str | None = None


class ScriptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    finished_with: FinishedWith
    stdout: str
    stderr: str
    exit_code: int | None
    duration_s: float
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    output_limit_exceeded: bool = False
    peak_memory_bytes: int | None = None
    # What the worker (or the kernel) did that the script's output cannot tell: lines for stderr.
    note: str = ""


def container_name(job_id: str) -> str:
    return f"sandbox-job-{validate_job_id(job_id)}"


def job_files(request: ScriptRequest) -> dict[str, str]:
    """The files the job's release brings into /tmp/script."""
    files = {request.sandbox.script_name: request.script}
    if request.nuget_config is not None and request.sandbox.nuget_config:
        files["NuGet.Config"] = request.nuget_config
    if request.stdin is not None:
        files["stdin"] = request.stdin
    return files


async def run_script(
    docker: DockerClient,
    settings: Settings,
    request: ScriptRequest,
    on_started: Callable[[], None] | None = None,
    warm: WarmContainer | None = None,
    egress: Egress | None = None,
) -> ScriptOutcome:
    """Run one script in a brand-new container and return its outcome once the container is gone
    (see `open_script`)."""
    async with open_script(docker, settings, request, on_started, warm, egress) as outcome:
        return outcome


@asynccontextmanager
async def open_script(
    docker: DockerClient,
    settings: Settings,
    request: ScriptRequest,
    on_started: Callable[[], None] | None = None,
    warm: WarmContainer | None = None,
    egress: Egress | None = None,
) -> AsyncIterator[ScriptOutcome]:
    """Run one script in a brand-new container (created now, or `warm`, a pool's container that
    never ran a job) and yield its outcome while the container still exists, so that the caller
    can publish it first; the container is removed when the block ends, whatever happened.
    `on_started` runs once the script starts: once the container has said it was released (a
    warm container lost before that never ran the script, and its job's cold run calls
    `on_started` itself, so it runs once per job). A type
    with `network = "egress"` needs `egress`: the container's proxy token is bound to the job
    when it starts and revoked (its tunnels closed) before the container is removed.

    Raises InvalidJobId before touching Docker, LimitsNotEnforced, WarmContainerLost when `warm`
    could not take the job (it is removed; run the job cold), SandboxError when a cold container
    ends before its release (its image could not take the job's files), or DockerError when the
    daemon fails us (never the script's fault). On cancellation the container is killed and
    removed, then Cancelled propagates.
    """
    name = container_name(request.job_id)
    container: str | None = None
    access = warm.egress if warm else _access(request, egress)

    def started() -> None:
        if access is not None and egress is not None:
            egress.proxy.bind(access.token, request.job_id)
        if on_started is not None:
            on_started()

    try:
        if warm is None:
            config = container_config(
                settings, request.sandbox, request.limits, request.job_id, access
            )
            with metrics.container_create.time():
                container = await _create(docker, settings, name, config)
        else:
            container = warm.id
            await _hand_over(docker, settings, request, container, name)
        released = warm.handed_over if warm else (lambda: None)
        yield await _run(docker, settings, request, container, started, warm is not None, released)
    finally:
        if warm is not None:
            warm.handed_over()  # also when it never got to its release
        if access is not None and egress is not None:
            egress.proxy.revoke(access.token)
        with trio.move_on_after(settings.cleanup_timeout_s, shield=True) as cleanup:
            if container is None:
                # The create may have happened without its answer reaching us: the name is ours
                # only if our label says so (it may be another worker's run we were waiting for).
                container = await _ours_by_name(docker, settings, name)
            await remove_container(docker, container, request.job_id)
        if warm is not None:
            warm.removed()  # or left to the reaper: no longer the pool's to name as in use
        if cleanup.cancelled_caught:
            log.warning("container removal timed out job=%s container=%s", request.job_id, name)
            metrics.cleanup_failures.inc()


def _access(request: ScriptRequest, egress: Egress | None) -> EgressAccess | None:
    if request.sandbox.network != "egress":
        return None
    if egress is None:
        raise ConfigError(request.sandbox.name, "network = egress needs the worker's egress proxy")
    return egress.access()


async def _hand_over(
    docker: DockerClient, settings: Settings, request: ScriptRequest, container: str, name: str
) -> None:
    """Make a warm pool's container the job's: its limits on, its name `sandbox-job-<jobId>`
    (every rule keyed on that name holds); its files come with the release. WarmContainerLost
    if the container will not have it."""
    try:
        with metrics.container_create.time():
            if settings.enable_resource_limits and request.limits != JobLimits.defaults(settings):
                limits = resource_limits(settings, request.limits)
                memory = {key: limits[key] for key in ("Memory", "MemorySwap", "MemoryReservation")}
                await docker.container_update(container, memory)
            try:
                await docker.container_rename(container, name)
            except Conflict:
                await _make_way(docker, settings, name)
                await docker.container_rename(container, name)
    except DockerError as exc:
        if isinstance(exc, DockerUnavailable):
            raise
        raise WarmContainerLost(f"warm container {container} refused the job: {exc}") from exc


async def _create(
    docker: DockerClient, settings: Settings, name: str, config: dict[str, Any]
) -> str:
    try:
        container, warnings = await docker.container_create(name, config)
    except Conflict:
        await _make_way(docker, settings, name)
        container, warnings = await docker.container_create(name, config)
    if refused := unenforced(warnings):
        raise LimitsNotEnforced(refused)
    return container


async def _make_way(docker: DockerClient, settings: Settings, name: str) -> None:
    """The job's container name is taken. Ours: a failed attempt of this very run (the worker's
    in-flight registry lets no other run of the job start here), so it is replaced. An orphan
    (by the reaper's rules): replaced. Anything else is another run of the same job, by another
    worker or by another system on this daemon (the original Java worker names its containers
    alike, and its container is its own while created, running, or only just ended): it is
    never touched; this run waits for it to be removed, judging it again every
    _MAKE_WAY_RECHECK_S, within the longest a job can live (then the create meets the taken
    name again and the job fails with that Docker error)."""
    deadline = trio.current_time() + lifetime_bound_s(settings)
    waiting = False
    while True:
        listed = await docker.containers_list(name=f"^/{name}$")
        if not listed:
            return  # gone meanwhile
        container = listed[0]
        labels = container.get("Labels") or {}
        ours = labels.get(WORKER_LABEL) == settings.worker_id
        ended_at = await finished_at(docker, container)
        if ours or orphan_reason(container, settings, (), time.time(), ended_at) is not None:
            log.warning("replacing leftover container name=%s", name)
            await _remove_or_put_aside(docker, container, name)
            return
        if not waiting:
            waiting = True
            log.warning(
                "waiting for another run of this job container=%s worker=%s state=%s",
                name,
                labels.get(WORKER_LABEL, "(unlabelled)"),
                container.get("State"),
            )
        if trio.current_time() >= deadline:
            return
        with trio.move_on_after(min(_MAKE_WAY_RECHECK_S, deadline - trio.current_time())):
            try:
                await docker.container_wait(str(container["Id"]), condition="removed")
            except NotFound:
                pass  # removed before the wait began
            return


async def _remove_or_put_aside(docker: DockerClient, container: dict[str, Any], name: str) -> None:
    """Remove a leftover; one of dsw's that the daemon cannot remove now (after a restart it may
    answer 500 "device or resource busy" for a while) is renamed out of the job's way instead,
    for the reaper (its labels say whose it is)."""
    container_id = str(container["Id"])
    try:
        await docker.container_remove(container_id)
    except DockerError as exc:
        labels = container.get("Labels") or {}
        if isinstance(exc, DockerUnavailable) or labels.get(PROJECT_LABEL) != "dsw":
            raise
        aside = f"{name}-aside-{uuid.uuid4().hex[:8]}"
        await docker.container_rename(container_id, aside)
        log.warning("leftover container put aside for the reaper name=%s error=%s", aside, exc)


async def _ours_by_name(docker: DockerClient, settings: Settings, name: str) -> str | None:
    try:
        existing = await docker.container_inspect(name)
    except DockerError:
        return None  # gone, or the daemon is away: the reaper sees to it
    labels = existing.get("Config", {}).get("Labels") or {}
    return str(existing["Id"]) if labels.get(WORKER_LABEL) == settings.worker_id else None


async def remove_container(docker: DockerClient, container: str | None, job_id: str) -> None:
    """Force-remove a container (if there is one); a daemon that does not answer, or answers 5xx
    (restarting: it says 500 "database not open" while it shuts down), is asked again, with
    backoff, until the caller's deadline (the caller shields it and gives it one), so that the
    container is gone before the job's slot is used again. A failure is logged and counted,
    never raised: the reaper retries it."""
    if container is None:
        return
    delay_s = 0.1
    with metrics.container_cleanup.time():
        while True:
            try:
                await docker.container_remove(container)
                return
            except DockerError as exc:
                if may_succeed_later(exc):
                    log.debug("container removal retried job=%s error=%s", job_id, exc)
                    await trio.sleep(delay_s)
                    delay_s = min(delay_s * 2, 2.0)
                    continue
                log.warning(
                    "container removal failed job=%s container=%s error=%s", job_id, container, exc
                )
                metrics.cleanup_failures.inc()
                return


async def _run(
    docker: DockerClient,
    settings: Settings,
    request: ScriptRequest,
    container: str,
    on_started: Callable[[], None] | None,
    warm: bool,
    released: Callable[[], None] = lambda: None,
) -> ScriptOutcome:
    """Start the container (a warm one runs already), release it with the job's files, then call
    `released`; wait for it within the time limit, and read what it wrote. `on_started` runs
    once the container's release marker has come."""
    output = ContainerOutput(settings, on_started or (lambda: None))
    async with open_nursery() as nursery:
        try:
            stdin = await nursery.start(output.collect, docker, container)
            if not warm:
                with metrics.container_start.time():
                    await docker.container_start(container)
            # The release: the time limit counts from here.
            await stdin.send(release(job_files(request)))
            released()
        except (Conflict, NotFound) as exc:
            if warm:
                raise WarmContainerLost(f"warm container {container} is gone: {exc}") from exc
            raise
        started, started_wall = trio.current_time(), time.time()
        ended = await _wait_for_exit(docker, settings, request, container)
        duration_s = trio.current_time() - started
        metrics.container_run.observe(duration_s)
        with trio.move_on_after(LOG_DRAIN_S):
            await output.done.wait()
        nursery.cancel_scope.cancel(reason="container exited")
    if output.error is not None:
        raise output.error
    exit_code, timed_out, peak = ended.exit_code, ended.timed_out, ended.peak_memory_bytes
    # Ended by a signal that was not the worker's (its stop, when the container had already
    # stopped, stopped nothing: a daemon shutting down may have got there first).
    if exit_code >= 128 and not (ended.timed_out or output.over_limit):
        await _check_not_killed_by_daemon(docker, container, started_wall)
    if not output.released:
        # It ended before the release: the script never ran (a cold run will do it, for a warm
        # container; a cold one's image could not take the job's files).
        if warm:
            raise WarmContainerLost(f"warm container {container} exited before the release")
        raise SandboxError(
            f"the {request.sandbox.name} sandbox exited with {exit_code} before its release: "
            "its image could not take the job's files"
        )
    output.finish()
    report = output.report
    if report is not None:
        oom_killed = bool(report.oom_kills)
        peak = report.peak_memory_bytes
        # The stop came only once the script had ended by itself: its exit code says how.
        timed_out = timed_out and not report.signalled_after_exit
    else:
        # dsw-entry did not get to report (the container was killed): ask the daemon.
        state = (await docker.container_inspect(container)).get("State", {})
        oom_killed = bool(state.get("OOMKilled"))
        peak = peak or output.peak_before_kill
    if timed_out:
        finished_with = FinishedWith.TIME_LIMIT_EXCEEDED
    elif exit_code == 0 and not output.over_limit:
        finished_with = FinishedWith.SUCCEEDED
    else:
        finished_with = FinishedWith.FAILED
    return ScriptOutcome(
        finished_with=finished_with,
        stdout=output.stdout.text(),
        stderr=output.stderr.text(),
        exit_code=exit_code,
        duration_s=round(duration_s, 3),
        oom_killed=oom_killed,
        stdout_truncated=output.stdout.truncated,
        stderr_truncated=output.stderr.truncated,
        output_limit_exceeded=output.over_limit is not None,
        peak_memory_bytes=peak,
        note=_note(settings, request, output.over_limit, oom_killed, timed_out),
    )


def _note(
    settings: Settings, request: ScriptRequest, over_limit: str | None, oom: bool, timed_out: bool
) -> str:
    """What the worker (or the kernel) did that the script's own output cannot tell, one plain
    line per reason."""
    lines = []
    if over_limit:
        limit = human_bytes(settings.output_limit_bytes)
        lines.append(f"dsw: {over_limit} passed the {limit} output limit; the script was stopped")
    if oom:
        limit = human_bytes(request.limits.memory_bytes) if settings.enable_resource_limits else ""
        lines.append(
            f"dsw: the script ran out of memory{f' (limit {limit})' if limit else ''}; "
            "the kernel killed it"
        )
    if timed_out:
        lines.append(
            f"dsw: the script passed its {request.limits.timeout_s:g} s time limit and was stopped"
        )
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class _Ended:
    exit_code: int
    timed_out: bool  # the time limit stopped it (not if it had exited by itself by then)
    peak_memory_bytes: int | None = None  # sampled just before the stop at the time limit


async def _wait_for_exit(
    docker: DockerClient, settings: Settings, request: ScriptRequest, container: str
) -> _Ended:
    """Until the container exits, or the time limit stops it."""
    with trio.move_on_after(request.limits.timeout_s):
        return _Ended(await docker.container_wait(container), False)
    peak = await memory_peak(docker, container)
    stopped, exit_code = await _stop(docker, settings, container)
    return _Ended(exit_code, stopped, peak)


async def _check_not_killed_by_daemon(
    docker: DockerClient, container: str, since_wall: float
) -> None:
    """A container ended by a signal the worker did not send: if the daemon sent it (stopping
    for a restart, or told to by someone), the job met a Docker failure, not its script's:
    DockerUnavailable, so that it runs again. A script that signals itself, or the kernel's
    OOM killer, leaves no such event."""
    kills = await docker.container_kill_events(container, since_wall - 1, time.time() + 1)
    if kills:
        signal = (kills[0].get("Actor") or {}).get("Attributes", {}).get("signal", "?")
        raise DockerUnavailable(
            "POST /containers/{id}/wait", f"the daemon killed the container (signal {signal})"
        )


async def _stop(docker: DockerClient, settings: Settings, container: str) -> tuple[bool, int]:
    """SIGTERM, SIGKILL after the grace; whether it was still running, and the exit code.
    DockerUnavailable if it will not stop."""
    stopped = True
    with trio.move_on_after(settings.stop_grace_s + settings.docker_timeout_s):
        stopped = await docker.container_stop(container, settings.stop_grace_s)
    with trio.move_on_after(settings.docker_timeout_s):
        return stopped, await docker.container_wait(container)
    raise DockerUnavailable("POST /containers/stop", "the container did not stop")
