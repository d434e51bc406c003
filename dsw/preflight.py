"""Checks before a sandbox type serves jobs: its image is there, the daemon has its runtime and
can apply its seccomp profile, its limits would hold, and a probe container really runs confined.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import trio

from dsw.config import Settings
from dsw.container_spec import (
    JobLimits,
    container_config,
    seccomp_option,
    unenforced,
)
from dsw.docker.client import DockerClient
from dsw.errors import (
    DockerError,
    DockerUnavailable,
    ImageMissing,
    LimitsNotEnforced,
    NotConfinable,
    NotFound,
)
from dsw.sandbox_types import SandboxType

if TYPE_CHECKING:
    from dsw.egress.network import Egress

# The probe container's command (after dsw-entry, which passes its exit status on). It proves the
# type's own profile applies, not merely some filter: io_uring_setup, which Docker's default
# profile allows and dsw's removes, must fail with EPERM (1). perl (perl-base, Essential in every
# Debian and Ubuntu image, so in every sandbox image) makes the raw call: the number 425 is the
# same on x86_64 and aarch64. A few milliseconds in all.
_SECCOMP_PROBE = [
    "sh",
    "-c",
    "grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || exit 3\n"
    "command -v perl >/dev/null 2>&1 || exit 4\n"
    'exec perl -e \'my $p = "\\0" x 120; $! = 0; my $r = syscall(425, 1, $p);'
    " exit($r == -1 && $! == 1 ? 0 : 5)'",
]
# What a probe's exit status says (0: the profile applies; anything else refuses the type).
_PROBE_REFUSALS = {
    3: "a process in it runs under no seccomp filter (the runtime ignores the profile; gVisor "
    "needs `--oci-seccomp`)",
    4: "its image has no perl, which the probe needs to try a removed system call",
    5: "io_uring_setup, which its profile removes, was not refused with EPERM: the container "
    "runs under another seccomp filter than its profile",
}


def probe_refusal(sandbox: SandboxType, exit_code: int | None) -> str | None:
    """None when the probe container's exit status shows the type's seccomp profile applied; else
    why the type is refused (`exit_code` None: the probe did not end in time)."""
    if exit_code == 0:
        return None
    why = (
        "its probe did not end in time"
        if exit_code is None
        else _PROBE_REFUSALS.get(exit_code, f"its probe exited with {exit_code}")
    )
    return f"a {sandbox.name} container does not run under its seccomp profile: {why}"


log = logging.getLogger(__name__)


async def ensure_image(docker: DockerClient, settings: Settings, sandbox: SandboxType) -> None:
    """The type's image is present locally, or pulled within image_pull_timeout_s; ImageMissing."""
    try:
        await docker.image_inspect(sandbox.image)
        return
    except NotFound:
        pass
    log.info("pulling image=%s", sandbox.image)
    hint = f"build it with `just sandbox {sandbox.name}`"
    with trio.move_on_after(settings.image_pull_timeout_s):
        try:
            await docker.image_pull(sandbox.image)
            return
        except DockerError as exc:
            raise ImageMissing(
                f"image {sandbox.image} is missing and the pull failed ({exc.message}); {hint}"
            ) from exc
    raise ImageMissing(f"image {sandbox.image} is missing and the pull timed out; {hint}")


async def check_daemon(docker: DockerClient, sandbox: SandboxType) -> None:
    """The daemon has the type's runtime and applies seccomp profiles; NotConfinable if not."""
    info = await docker.system_info()
    runtimes = sorted(info.get("Runtimes") or {})
    if sandbox.runtime and sandbox.runtime not in runtimes:
        raise NotConfinable(
            f"sandbox type {sandbox.name} needs the runtime {sandbox.runtime!r}, which the Docker "
            f"daemon does not have (it has: {', '.join(runtimes) or 'none'}); install it and "
            "register it in the daemon's daemon.json `runtimes`"
        )
    if not any(o.startswith("name=seccomp") for o in info.get("SecurityOptions") or []):
        raise NotConfinable("the Docker daemon does not support seccomp: sandboxes need it")


async def check_probe(
    docker: DockerClient,
    settings: Settings,
    sandbox: SandboxType,
    egress: Egress | None = None,
) -> None:
    """Create a probe container with the job settings: LimitsNotEnforced if the daemon warns
    that a requested limit would not hold; then check that it stores the type's seccomp profile,
    that a process in it runs under a seccomp filter, and that the filter is the profile's: a
    system call the profile removes fails with EPERM (NotConfinable otherwise)."""
    access = egress.access() if egress and sandbox.network == "egress" else None
    limits = JobLimits.defaults(settings)
    config = container_config(settings, sandbox, limits, str(uuid.uuid4()), access)
    config["Cmd"] = _SECCOMP_PROBE
    name = f"dsw-probe-{uuid.uuid4()}"
    container, warnings = await docker.container_create(name, config)
    try:
        if settings.enable_resource_limits:
            if refused := unenforced(warnings):
                raise LimitsNotEnforced(refused)
            if warnings and settings.blkio_weight:
                _say_blkio_once(warnings)
        stored = (await docker.container_inspect(container))["HostConfig"].get("SecurityOpt")
        if seccomp_option(settings, sandbox) not in (stored or []):
            raise NotConfinable(f"the daemon did not keep the seccomp profile of {sandbox.name}")
        try:
            await docker.container_start(container)
        except DockerError as exc:
            if isinstance(exc, DockerUnavailable):
                raise
            raise NotConfinable(
                f"the daemon cannot start a {sandbox.name} container with the seccomp profile "
                f"{sandbox.seccomp} of {settings.sandbox_dir}: {exc.message}"
            ) from exc
        exit_code = None
        with trio.move_on_after(settings.docker_timeout_s):
            exit_code = await docker.container_wait(container)
        if refusal := probe_refusal(sandbox, exit_code):
            raise NotConfinable(refusal)
    finally:
        if access is not None and egress is not None:
            egress.proxy.revoke(access.token)
        with trio.move_on_after(settings.cleanup_timeout_s, shield=True):
            await docker.container_remove(container)


_told_blkio: list[str] = []


def _say_blkio_once(warnings: list[str]) -> None:
    """The only warning tolerated: the kernel has no block I/O weight. Said once, for what it is."""
    if not _told_blkio:
        _told_blkio.append(warnings[0])
        log.info(
            "this kernel has no block I/O weight (cgroup blkio.weight): WORKER_BLKIO_WEIGHT has "
            "no effect and the sandboxes share disk I/O unweighted; every other limit holds "
            "(daemon: %r)",
            warnings[0],
        )


async def preflight(
    docker: DockerClient, settings: Settings, sandbox: SandboxType, egress: Egress | None = None
) -> None:
    await ensure_image(docker, settings, sandbox)
    if not settings.enable_resource_limits:
        log.warning("resource limits are off (WORKER_ENABLE_RESOURCE_LIMITS=false)")
    await check_daemon(docker, sandbox)
    await check_probe(docker, settings, sandbox, egress)
