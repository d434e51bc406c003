"""Removes containers that no running job owns: those of workers that are gone, and leftovers.

A container is reaped when it carries this project's label and
- its worker ran on this host, in this pid namespace, under a pid that no longer exists, or
- it belongs to this worker but is in use no more: its job is not in flight (a handed-over warm
  container's job is in its name), or it is a warm pool's container the pool no longer holds, or
- it is older than any job could live (maximum timeout plus stop, cleanup and slack); a warm
  pool's idle container is replaced long before (WORKER_WARM_MAX_IDLE_S).
What is in use is asked for each container after the listing, right before it is judged: a job
that began, or a pool container handed over, while the list was on its way is seen.
A container named `sandbox-job-*` without our labels (the original Java worker's, which sets none,
may share the daemon during a migration) is another system's: it is reaped only once it has ended
(exited or dead) more than EXITED_GRACE_S ago, or when it is older than any job could live. One
that is created (between that system's create and start), running, paused, restarting, or that
has only just exited (its output may still be being read) is never touched. Nothing else is ever
touched.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from typing import Any

import trio

from dsw.config import Settings
from dsw.container_spec import (
    HOST_LABEL,
    JOB_LABEL,
    JOB_NAME_PREFIX,
    PID_LABEL,
    PIDNS_LABEL,
    PROJECT_LABEL,
    WORKER_LABEL,
    age_bound_s,
    pid_namespace,
)
from dsw.docker.client import DockerClient
from dsw.egress import filter as packet_filter
from dsw.errors import Conflict, DockerError, DockerUnavailable, NotFound

log = logging.getLogger(__name__)

# A container created this recently may belong to a job that is still being registered.
_YOUNG_S = 30.0
# Another system's container that ended this recently may still have its output and exit code
# read (the original worker reads them, then removes the container itself).
EXITED_GRACE_S = 60.0
_ENDED = ("exited", "dead")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def in_use_as(container: dict[str, Any]) -> str:
    """What a listed container of ours is for: its job id, or a warm pool container's name."""
    labels = container.get("Labels") or {}
    if labels.get(JOB_LABEL):
        return str(labels[JOB_LABEL])
    name = str((container.get("Names") or [""])[0]).lstrip("/")
    return name.removeprefix(JOB_NAME_PREFIX)


def orphan_reason(
    container: dict[str, Any],
    settings: Settings,
    in_use: Collection[str],
    now: float,
    finished_at: float | None = None,
) -> str | None:
    """Why this listed container is an orphan, or None if it may still be in use. `in_use`:
    this worker's job ids in flight and the names of its warm pools' containers (idle, or being
    handed over); `finished_at`: when an unlabelled container ended (see `finished_at`)."""
    labels = container.get("Labels") or {}
    age_s = now - float(container.get("Created", now))
    if age_s > age_bound_s(settings):
        return f"older than any job ({age_s:.0f} s)"
    if labels.get(PROJECT_LABEL) != "dsw":
        return _unlabelled_reason(str(container.get("State", "")), finished_at, now)
    if labels.get(WORKER_LABEL) == settings.worker_id:
        if in_use_as(container) not in in_use and age_s > _YOUNG_S:
            return "no longer in use: not a job in flight, nor in the warm pool"
        return None
    return _owner_gone(labels)


def _unlabelled_reason(state: str, finished_at: float | None, now: float) -> str | None:
    """Another system's container is its own until it has ended, and for a while after."""
    if state not in _ENDED or finished_at is None:
        return None
    ended_s = now - finished_at
    if ended_s <= EXITED_GRACE_S:
        return None
    return f"unlabelled sandbox-job container, {state} {ended_s:.0f} s ago"


async def finished_at(docker: DockerClient, container: dict[str, Any]) -> float | None:
    """When a listed unlabelled container that has ended (exited, dead) finished, from its
    inspect: the list says it only in words ("Exited (0) About a minute ago"). None for any
    other container, one gone meanwhile, or one whose end the daemon does not know. Raises
    DockerError."""
    labels = container.get("Labels") or {}
    if labels.get(PROJECT_LABEL) == "dsw" or container.get("State") not in _ENDED:
        return None
    try:
        state = (await docker.container_inspect(str(container["Id"]))).get("State") or {}
    except NotFound:
        return None
    try:
        moment = datetime.datetime.fromisoformat(str(state.get("FinishedAt") or ""))
    except ValueError:
        return None
    # Docker's zero time (0001-01-01) means it never ran to an end that it recorded.
    return moment.timestamp() if moment.year > 1 else None


def _owner_gone(labels: dict[str, str]) -> str | None:
    """Why the worker that labelled something is gone; None if it may be alive, or elsewhere."""
    # A pid is only checked in the namespace it belongs to: a worker in a container may share
    # the host's name but not its pids.
    same_pids = labels.get(PIDNS_LABEL) == pid_namespace() != ""
    if labels.get(HOST_LABEL) == socket.gethostname() and same_pids:
        pid = labels.get(PID_LABEL, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            return f"its worker (pid {pid}) is gone"
    return None


async def remove_network(docker: DockerClient, name: str, bridge: str) -> None:
    """Remove an egress network and its filter. The daemon lets go of a removed container's
    endpoint a moment after the removal answered: a network still busy is tried again; one
    that stays busy is left to the reaper. The caller sets the deadline."""
    await packet_filter.remove(bridge)
    for _ in range(50):
        try:
            await docker.network_remove(name)
            return
        except Conflict:
            pass
        except DockerError as exc:
            if exc.status != 403:  # "has active endpoints"
                raise
        await trio.sleep(0.1)
    log.warning("egress network %s still has containers; the reaper will remove it", name)


async def reap_networks(docker: DockerClient, settings: Settings) -> int:
    """Remove the egress networks (and their packet filters) of workers that are gone."""
    removed = 0
    for network in await docker.networks_list([f"{PROJECT_LABEL}=dsw"]):
        labels = network.get("Labels") or {}
        reason = _owner_gone(labels)
        if labels.get(WORKER_LABEL) == settings.worker_id or reason is None:
            continue
        bridge = (network.get("Options") or {}).get("com.docker.network.bridge.name", "")
        try:
            await remove_network(docker, str(network["Name"]), bridge)
        except DockerError as exc:
            log.warning("reaper could not remove network=%s error=%s", network.get("Name"), exc)
            continue
        removed += 1
        log.info("reaped network=%s reason=%r", network.get("Name"), reason)
    return removed


def nothing_in_use() -> Collection[str]:
    return ()


async def reap(
    docker: DockerClient,
    settings: Settings,
    in_use: Callable[[], Collection[str]] = nothing_in_use,
    clock: Callable[[], float] = time.time,
) -> int:
    """Remove orphaned containers; returns how many were removed. `in_use` tells this worker's
    job ids in flight and its warm pools' containers; it is asked for each container after the
    listing, with no await between the asking and the removal, so that what began meanwhile is
    spared. `clock`: wall-clock seconds (a test judges as a later round would). Raises
    DockerError on listing."""
    labelled = await docker.containers_list(labels=[f"{PROJECT_LABEL}=dsw"])
    named = await docker.containers_list(name="^/sandbox-job-")
    candidates = {c["Id"]: c for c in [*labelled, *named]}
    removed = 0
    for container_id, container in candidates.items():
        try:
            ended_at = await finished_at(docker, container)
        except DockerError as exc:
            log.warning("reaper could not inspect container=%s error=%s", container_id, exc)
            continue
        reason = orphan_reason(container, settings, in_use(), clock(), ended_at)
        if reason is None:
            continue
        names = ",".join(n.lstrip("/") for n in container.get("Names", []))
        try:
            await docker.container_remove(container_id)
        except DockerError as exc:
            log.warning("reaper could not remove container=%s error=%s", names, exc)
            continue
        removed += 1
        log.info("reaped container=%s reason=%r", names, reason)
    await reap_networks(docker, settings)
    return removed


async def remove_own(docker: DockerClient, settings: Settings) -> int:
    """At the worker's end, once nothing of it runs: remove every container of its own still
    there (one the daemon refused to remove earlier, say); how many. Raises DockerError on
    listing."""
    removed = 0
    for container in await docker.containers_list(labels=[f"{WORKER_LABEL}={settings.worker_id}"]):
        names = ",".join(n.lstrip("/") for n in container.get("Names", []))
        try:
            await docker.container_remove(str(container["Id"]))
        except DockerError as exc:
            log.warning("could not remove container=%s at the end error=%s", names, exc)
            continue
        removed += 1
        log.info("removed container=%s at the end (left over)", names)
    return removed


def may_succeed_later(exc: DockerError) -> bool:
    """Whether a removal that failed so is worth asking again: the daemon did not answer, or
    answered 5xx (a daemon shutting down says 500 "database not open")."""
    return isinstance(exc, DockerUnavailable) or (exc.status or 0) >= 500
