"""Whether the Docker daemon answers: jobs wait for it, the consumer pauses without it.

A job that meets DockerUnavailable marks the daemon down; the monitor then pings with backoff
until it answers again, and checks it every few seconds while it is up, so an outage is seen
even between jobs.
"""

from __future__ import annotations

import logging

import trio

from dsw.backoff import Backoff
from dsw.docker.client import DockerClient
from dsw.errors import DockerError, DockerUnavailable

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0


class DockerHealth:
    def __init__(self) -> None:
        self.healthy = True
        self.last_error = ""
        self._up = trio.Event()
        self._up.set()
        self._down = trio.Event()

    def failed(self, exc: DockerError) -> None:
        self.last_error = str(exc)
        if self.healthy:
            log.error("Docker is unreachable; not taking jobs until it answers error=%s", exc)
            self.healthy = False
            self._up = trio.Event()
            self._down.set()

    def recovered(self) -> None:
        if not self.healthy:
            log.info("Docker answers again; taking jobs")
            self.healthy = True
            self._up.set()
            self._down = trio.Event()

    async def wait_healthy(self) -> None:
        await self._up.wait()

    async def serve_monitor(self, docker: DockerClient, backoff: Backoff) -> None:
        """Ping while up (every CHECK_EVERY_S) and with backoff while down. Runs until cancelled."""
        while True:
            with trio.move_on_after(CHECK_EVERY_S if self.healthy else backoff.next_s):
                await self._down.wait()
            try:
                await ping(docker)
            except DockerError as exc:
                self.failed(exc)
                await backoff.sleep()
                continue
            backoff.reset()
            self.recovered()


async def ping(docker: DockerClient) -> None:
    """DockerUnavailable unless the daemon answers within CHECK_EVERY_S (a daemon that accepts
    the connection but never answers is as good as gone)."""
    with trio.move_on_after(CHECK_EVERY_S):
        await docker.ping()
        return
    raise DockerUnavailable("GET /_ping", f"no answer within {CHECK_EVERY_S:g} s")
