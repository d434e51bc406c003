"""Removes containers that no running job owns: those of workers that are gone, and leftovers.

A container is reaped when it carries this project's label and
- its worker ran on this host, in this pid namespace, under a pid that no longer exists, or
- it belongs to this worker but is in use no more: its job is not in flight (a handed-over warm
  container's job is in its name), or it is a warm pool's container the pool no longer holds, or
- it is older than any job could live (maximum timeout plus stop, cleanup and slack); a warm
  pool's idle container is replaced long before (WORKER_WARM_MAX_IDLE_S).
A container named `sandbox-job-*` without our labels (the original Java worker's, which sets none,
may share the daemon during a migration) is reaped only when it is not running, or older than any
job could live: a live run of another system is never touched. Nothing else is ever touched.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Collection
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
    VOLUME_PREFIX,
    WORKER_LABEL,
    age_bound_s,
    pid_namespace,
)
from dsw.docker.client import DockerClient
from dsw.egress import filter as packet_filter
from dsw.errors import Conflict, DockerError

log = logging.getLogger(__name__)

# A container created this recently may belong to a job that is still being registered.
_YOUNG_S = 30.0


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
    container: dict[str, Any], settings: Settings, in_use: Collection[str], now: float
) -> str | None:
    """Why this listed container is an orphan, or None if it may still be in use. `in_use`:
    this worker's job ids in flight and the names of its warm pool's idle containers."""
    labels = container.get("Labels") or {}
    age_s = now - float(container.get("Created", now))
    if age_s > age_bound_s(settings):
        return f"older than any job ({age_s:.0f} s)"
    if labels.get(PROJECT_LABEL) != "dsw":
        if container.get("State") == "running":
            return None  # another system's live run (the original worker sets no labels)
        return "unlabelled sandbox-job container, not running"
    if labels.get(WORKER_LABEL) == settings.worker_id:
        if in_use_as(container) not in in_use and age_s > _YOUNG_S:
            return "no longer in use: not a job in flight, nor in the warm pool"
        return None
    return _owner_gone(labels)


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


async def reap(docker: DockerClient, settings: Settings, in_use: Collection[str] = ()) -> int:
    """Remove orphaned containers; returns how many were removed. Raises DockerError on listing."""
    labelled = await docker.containers_list(labels=[f"{PROJECT_LABEL}=dsw"])
    named = await docker.containers_list(name="^/sandbox-job-")
    candidates = {c["Id"]: c for c in [*labelled, *named]}
    removed = 0
    now = time.time()
    for container_id, container in candidates.items():
        reason = orphan_reason(container, settings, in_use, now)
        if reason is None:
            continue
        names = ",".join(n.lstrip("/") for n in container.get("Names", []))
        volumes = [
            str(mount["Name"])
            for mount in container.get("Mounts") or []
            if str(mount.get("Name", "")).startswith(VOLUME_PREFIX)
        ]
        try:
            await docker.container_remove(container_id)
            for volume in volumes:
                await docker.volume_remove(volume)
        except DockerError as exc:
            log.warning("reaper could not remove container=%s error=%s", names, exc)
            continue
        removed += 1
        log.info("reaped container=%s reason=%r", names, reason)
    await reap_volumes(docker, now)
    await reap_networks(docker, settings)
    return removed


async def remove_sandbox(docker: DockerClient, container: str, volume: str | None) -> None:
    """Force-remove a sandbox container and then its job-files volume. Raises DockerError."""
    await docker.container_remove(container)
    if volume:
        await docker.volume_remove(volume)


async def reap_volumes(docker: DockerClient, now: float) -> int:
    """Remove dsw's job-files volumes that no container uses: those a reaped container leaves,
    and those a restarting daemon kept although it answered their removal (or their container's
    create) with an error. A volume is made with its container, so one without it for a while
    is no one's."""
    removed = 0
    for volume in await docker.volumes_list(name=VOLUME_PREFIX, dangling=True):
        if not str(volume.get("Name", "")).startswith(VOLUME_PREFIX):
            continue
        created = str(volume.get("CreatedAt") or "")
        try:
            age_s = now - datetime.datetime.fromisoformat(created).timestamp()
        except ValueError:
            age_s = 0.0
        if age_s <= _YOUNG_S:
            continue
        try:
            await docker.volume_remove(str(volume["Name"]))
        except DockerError as exc:
            log.warning("reaper could not remove volume=%s error=%s", volume.get("Name"), exc)
            continue
        removed += 1
        log.info("reaped volume=%s (no container uses it)", volume.get("Name"))
    return removed
