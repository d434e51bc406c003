"""The hardened container configuration of one job, as the Engine API's create body.

Defaults are the original worker's limits plus: no capabilities, no new privileges, dsw's own
seccomp profile (sandbox/seccomp.json: Docker's default minus io_uring, ptrace and more), a
read-only root with size-limited tmpfs for /tmp and HOME and a sized /dev/shm, a non-root user,
an init process, no container log (output is read by attaching), ulimits, no network unless the
type needs it, no host mounts and no worker environment. No volume either: the job's files come
with its release, over the container's attached stdin, into /tmp/script on its own tmpfs
(`release`); the stdin is the worker's alone, as the container's only way in.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path
from typing import Any

import msgspec

from dsw.config import Settings
from dsw.egress.access import EgressAccess
from dsw.errors import ConfigError
from dsw.sandbox_types import SandboxType

SCRIPT_DIR = "/tmp/script"
HOME = "/home/sandbox"
USER = "10001:10001"
ENTRYPOINT = "/usr/local/bin/dsw-entry"
PROJECT_LABEL = "dsw.project"
JOB_LABEL = "dsw.job"
WORKER_LABEL = "dsw.worker"
HOST_LABEL = "dsw.worker.host"
PID_LABEL = "dsw.worker.pid"
PIDNS_LABEL = "dsw.worker.pidns"
TYPE_LABEL = "dsw.sandbox"
# On a warm pool's container: its job label stays empty (labels never change); once handed over,
# its name says the job.
POOL_LABEL = "dsw.pool"
JOB_NAME_PREFIX = "sandbox-job-"
POOL_NAME_PREFIX = "dsw-pool-"


# Margin on top of the longest a job's container can live.
_LIFETIME_SLACK_S = 60.0


class JobLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one job: the worker's defaults, or what the job asked for within the maxima."""

    timeout_s: float
    memory_bytes: int

    @classmethod
    def defaults(cls, settings: Settings) -> JobLimits:
        return cls(timeout_s=settings.job_timeout_s, memory_bytes=settings.memory_bytes)


def lifetime_bound_s(settings: Settings) -> float:
    """No job's container can legitimately be older than this."""
    return (
        settings.max_job_timeout_s
        + settings.stop_grace_s
        + 2 * settings.docker_timeout_s
        + settings.cleanup_timeout_s
        + _LIFETIME_SLACK_S
    )


def age_bound_s(settings: Settings) -> float:
    """No sandbox container can legitimately be older: a warm one may wait its idle time first."""
    return lifetime_bound_s(settings) + settings.warm_max_idle_s


def pid_namespace() -> str:
    """This process's pid namespace ("pid:[4026531836]"): a pid means something only within it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_labels(settings: Settings) -> dict[str, str]:
    """What says which worker, where, made a container or network (the reaper reads them)."""
    return {
        PROJECT_LABEL: "dsw",
        WORKER_LABEL: settings.worker_id,
        HOST_LABEL: socket.gethostname(),
        PID_LABEL: str(os.getpid()),
        PIDNS_LABEL: pid_namespace(),
    }


def labels(settings: Settings, sandbox: SandboxType, job_id: str) -> dict[str, str]:
    """`job_id` "" for a warm pool's container."""
    return {
        **owner_labels(settings),
        JOB_LABEL: job_id,
        TYPE_LABEL: sandbox.name,
        **({} if job_id else {POOL_LABEL: "1"}),
    }


@functools.cache
def _seccomp_profile(path: Path) -> str:
    """The profile as the Engine API takes it: compact JSON, inline (Docker 20.10 reads no path)."""
    try:
        return json.dumps(json.loads(path.read_text(encoding="utf-8")), separators=(",", ":"))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), f"cannot read the seccomp profile: {exc}") from exc


def seccomp_option(settings: Settings, sandbox: SandboxType) -> str:
    """The `SecurityOpt` entry that applies the type's seccomp profile."""
    return "seccomp=" + _seccomp_profile(Path(settings.sandbox_dir) / sandbox.seccomp)


def _tmpfs(settings: Settings, sandbox: SandboxType) -> str:
    exec_flag = "exec" if sandbox.tmpfs_exec else "noexec"
    return f"rw,nosuid,nodev,{exec_flag},size={settings.tmpfs_bytes}"


def resource_limits(settings: Settings, limits: JobLimits) -> dict[str, Any]:
    if not settings.enable_resource_limits:
        return {}
    result: dict[str, Any] = {
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,  # swap equal to memory: no swap on top
        "MemoryReservation": min(settings.memory_reservation_bytes, limits.memory_bytes),
        "CpuPeriod": settings.cpu_period_us,
        "CpuQuota": settings.cpu_quota_us,
        "CpuShares": settings.cpu_shares,
        "PidsLimit": settings.pids_limit,
    }
    if settings.blkio_weight:
        result["BlkioWeight"] = settings.blkio_weight
    return result


def container_command(sandbox: SandboxType, pooled: bool) -> list[str]:
    """The command after dsw-entry: it waits for the release and takes the job's files, then
    runs the type's command; a warm pool's container of a type with its own waiting command (a
    runner that prepares itself first) runs that, and the runner takes the release itself."""
    if pooled and sandbox.warm_command:
        return ["--warm", *sandbox.warm_command]
    return ["--release", *sandbox.command]


def release(files: dict[str, str]) -> bytes:
    """What the worker writes on a container's stdin to start its job: `dsw-job NAME=SIZE...`,
    then each file's UTF-8 bytes in that order (sandbox/common/dsw-entry reads it)."""
    encoded = {name: text.encode("utf-8") for name, text in files.items()}
    head = " ".join(["dsw-job", *(f"{name}={len(data)}" for name, data in encoded.items())])
    return b"".join([head.encode("ascii"), b"\n", *encoded.values()])


# IPv6 off in the container's own network namespace (every interface, and any made later):
# the egress network's filter is IPv4 only, and with IPv6 a script would reach the host and the
# other containers on the bridge at their fe80:: link-local addresses. Docker 20.10 switches it
# off by itself on a network without IPv6; this does not depend on the daemon's version.
IPV6_OFF = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


def _network(sandbox: SandboxType, egress: EgressAccess | None) -> dict[str, Any]:
    """The container's network: none; the worker's egress network, whose only way out is the
    worker's proxy (DNS goes nowhere: names are the proxy's to resolve), IPv4 only; or Docker's
    bridge."""
    if sandbox.network == "egress":
        if egress is None:
            raise ConfigError(sandbox.name, "network = egress needs the worker's egress proxy")
        return {"NetworkMode": egress.network, "Dns": [egress.proxy_host], "Sysctls": IPV6_OFF}
    return {"NetworkMode": "bridge" if sandbox.network else "none"}


def proxy_env(egress: EgressAccess | None) -> list[str]:
    return [f"{name}={value}" for name, value in (egress.environment if egress else {}).items()]


def container_config(
    settings: Settings,
    sandbox: SandboxType,
    limits: JobLimits,
    job_id: str,
    egress: EgressAccess | None = None,
) -> dict[str, Any]:
    """The create body for `job_id`'s container; with `job_id` "", for a warm pool's container:
    the same hardening, limits and labels (marked as a pool's) and the pool's command."""
    tmpfs = _tmpfs(settings, sandbox)
    uid, gid = USER.split(":")
    pooled = not job_id
    return {
        "Image": sandbox.image,
        "Entrypoint": [ENTRYPOINT],
        "Cmd": container_command(sandbox, pooled),
        # dsw-entry (the entrypoint) counts on docker-init sending stop signals to its group.
        "Env": [*sandbox.env, "TINI_KILL_PROCESS_GROUP=1", *proxy_env(egress)],
        "User": USER,
        "WorkingDir": "/tmp",
        "Labels": labels(settings, sandbox, job_id),
        "Tty": False,
        "OpenStdin": True,  # for the release
        "AttachStdin": False,
        "NetworkDisabled": not sandbox.network,
        "HostConfig": {
            **_network(sandbox, egress),
            # /tmp is a sticky 1777 tmpfs; HOME belongs to the sandbox user (Docker 20.10 ignores
            # a tmpfs `mode` under its copy-up, but honours uid and gid).
            "Tmpfs": {"/tmp": tmpfs, HOME: f"{tmpfs},uid={uid},gid={gid}"},
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges", seccomp_option(settings, sandbox)],
            "ShmSize": settings.shm_bytes,
            "Privileged": False,
            "Init": True,
            "IpcMode": "private",
            "RestartPolicy": {"Name": "no"},
            # The worker reads output by attaching; the daemon keeps no log of it at all.
            "LogConfig": {"Type": "none", "Config": {}},
            "Ulimits": [
                {"Name": "nofile", "Soft": settings.nofile_limit, "Hard": settings.nofile_limit},
                {
                    "Name": "fsize",
                    "Soft": settings.file_size_limit_bytes,
                    "Hard": settings.file_size_limit_bytes,
                },
            ],
            **({"Runtime": sandbox.runtime} if sandbox.runtime else {}),
            **resource_limits(settings, limits),
        },
    }


def unenforced(warnings: list[str]) -> list[str]:
    """The daemon's create warnings that mean a limit would not hold.

    Block I/O weight is applied only where the kernel supports it (as the original did); every
    other warning about a requested setting refuses the job.
    """
    return [w for w in warnings if "Block I/O" not in w and "blkio" not in w.lower()]
