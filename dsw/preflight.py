"""Checks before a sandbox type serves jobs: its image is there, and its limits would hold."""

from __future__ import annotations

import logging
import uuid

import trio

from dsw.config import Settings
from dsw.container_spec import JobLimits, container_config, unenforced
from dsw.docker.client import DockerClient
from dsw.errors import DockerError, ImageMissing, LimitsNotEnforced, NotFound
from dsw.sandbox_types import SandboxType

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


async def check_limits(docker: DockerClient, settings: Settings, sandbox: SandboxType) -> None:
    """Create (never start) a probe container with the job settings; LimitsNotEnforced if the
    daemon warns that a requested limit would not hold."""
    if not settings.enable_resource_limits:
        log.warning("resource limits are off (WORKER_ENABLE_RESOURCE_LIMITS=false)")
        return
    config = container_config(settings, sandbox, JobLimits.defaults(settings), str(uuid.uuid4()))
    name = f"dsw-probe-{uuid.uuid4()}"
    container, warnings = await docker.container_create(name, config)
    try:
        for warning in warnings:
            log.warning("docker create warning sandbox=%s warning=%r", sandbox.name, warning)
        if refused := unenforced(warnings):
            raise LimitsNotEnforced(refused)
    finally:
        with trio.move_on_after(settings.cleanup_timeout_s, shield=True):
            await docker.container_remove(container)


async def preflight(docker: DockerClient, settings: Settings, sandbox: SandboxType) -> None:
    await ensure_image(docker, settings, sandbox)
    await check_limits(docker, settings, sandbox)
