"""Test helper: a warm pool of the real daemon, served and filled for the length of a `with`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.docker_health import DockerHealth
from dsw.pool import WarmPool
from dsw.sandbox_types import SandboxType


async def wait_for_size(pool: WarmPool, size: int) -> None:
    with trio.fail_after(60):
        while len(pool.names()) != size:  # noqa: ASYNC110 (the pool has no event to offer)
            await trio.sleep(0.05)


@asynccontextmanager
async def open_pool(
    docker: DockerClient,
    settings: Settings,
    sandbox: SandboxType,
    size: int = 2,
    health: DockerHealth | None = None,
    *,
    full: bool = True,
) -> AsyncIterator[WarmPool]:
    """A pool being served (full, unless not `full`); discarded at exit (as a drain does)."""
    pool = WarmPool(docker, settings, sandbox, health or DockerHealth(), size)
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve, stopping)
        if full:
            await wait_for_size(pool, size)
        try:
            yield pool
        finally:
            stopping.set()
