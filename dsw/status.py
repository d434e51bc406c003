"""`/metrics`, `/healthz` and `/readyz` on WORKER_METRICS_PORT, served by trio itself.

`/healthz` answers while the trio tree runs. `/readyz` answers 200 only when Docker answers, the
sandbox images are present, every consumer is running with Kafka reachable, and the worker is not
draining; otherwise 503 with the reasons, one per line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dsw.config import Settings
from dsw.docker_health import DockerHealth
from dsw.drain import Drain
from dsw.errors import ConfigError, DockerError

if TYPE_CHECKING:
    from dsw.docker.client import DockerClient
    from dsw.kafka import Consumer, Kafka

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 5.0
_CHECK_TIMEOUT_S = 2.0


class Readiness:
    """What /readyz looks at; filled in by the app as its parts start."""

    def __init__(self, settings: Settings, drain: Drain) -> None:
        self.settings = settings
        self.drain = drain
        self.docker: DockerClient | None = None
        self.docker_health: DockerHealth | None = None
        self.kafka: Kafka | None = None
        self.images: list[str] = []
        self.consumers: dict[str, Consumer] = {}

    async def problems(self) -> list[str]:
        found = []
        if self.drain.stopping.is_set():
            found.append("draining")
        if self.docker is None or self.docker_health is None:
            found.append("starting: Docker not checked yet")
        elif not self.docker_health.healthy:
            found.append(f"Docker unreachable: {self.docker_health.last_error}")
        else:
            found += await self._missing_images(self.docker)
        if self.kafka is None:
            found.append("starting: Kafka not connected yet")
        elif self.kafka.failing:
            found.append(f"Kafka unreachable: {self.kafka.failing}")
        for name in self.settings.runner_types:
            if name not in self.consumers:
                found.append(f"consumer of {name} not running")
        return found

    async def _missing_images(self, docker: DockerClient) -> list[str]:
        missing = []
        for image in self.images:
            try:
                with trio.fail_after(_CHECK_TIMEOUT_S):
                    await docker.image_inspect(image)
            except (DockerError, trio.TooSlowError) as exc:
                missing.append(f"image {image} not available: {exc}")
        return missing


async def serve_status(
    settings: Settings,
    readiness: Readiness,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP on the metrics port until cancelled; reports the bound port when ready."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(_READ_TIMEOUT_S):
                request = await _read_head(stream)
                code, content_type, body = await _route(request, readiness)
                head = (
                    f"HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.move_on_after(1, shield=True):
                await stream.aclose()

    try:
        listeners = await trio.open_tcp_listeners(settings.metrics_port)
    except OSError as exc:
        message = f"cannot listen on {settings.metrics_port}: {exc}"
        raise ConfigError("WORKER_METRICS_PORT", message) from exc
    log.info("serving /metrics /healthz /readyz port=%d", settings.metrics_port)
    async with trio.open_nursery() as nursery:
        port = listeners[0].socket.getsockname()[1]
        task_status.started(port)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _read_head(stream: trio.SocketStream) -> str:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 8192:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


async def _route(request_line: str, readiness: Readiness) -> tuple[str, str, bytes]:
    parts = request_line.split()
    path = parts[1].split("?")[0] if len(parts) >= 2 else ""
    if path == "/metrics":
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
    if path == "/healthz":
        return "200 OK", "text/plain", b"ok\n"
    if path == "/readyz":
        problems = await readiness.problems()
        if problems:
            return "503 Service Unavailable", "text/plain", ("\n".join(problems) + "\n").encode()
        return "200 OK", "text/plain", b"ready\n"
    return "404 Not Found", "text/plain", b"not found\n"
