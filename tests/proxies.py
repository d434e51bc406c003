"""Stand-ins for the network between the worker and the Docker daemon: a Unix-socket relay that can
be cut and restored (Docker going away), TCP and TLS relays (remote daemons), and an HTTP transport
that answers for the daemon as one restarting would."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import trio

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.docker.client import transport_for

DOCKER_SOCKET = "/var/run/docker.sock"

Wrapper = TypeVar("Wrapper", bound=httpx.AsyncBaseTransport)


async def _pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.move_on_after(1, shield=True):
            await sink.aclose()


async def relay(client: trio.abc.Stream) -> None:
    """Connect `client` to the real daemon's socket, both ways, until either side closes."""
    async with (
        client,
        await trio.open_unix_socket(DOCKER_SOCKET) as daemon,
        trio.open_nursery() as n,
    ):
        n.start_soon(_pipe, client, daemon)
        n.start_soon(_pipe, daemon, client)


class CuttableDocker:
    """A Unix socket relaying to the daemon; `cut()` drops every connection and refuses new ones."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scope: trio.CancelScope | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self._scope:
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.bind(str(self.path))
            sock.listen(64)
            task_status.started()
            try:
                await trio.serve_listeners(relay, [trio.SocketListener(sock)])
            finally:
                self.path.unlink(missing_ok=True)

    def cut(self) -> None:
        assert self._scope is not None
        self._scope.cancel()


def make_certificates(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (ca/cert/key.pem, as
    Docker's DOCKER_CERT_PATH holds them), made with the openssl CLI."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=dsw-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key, csr, cert = f"{name}-key.pem", f"{name}.csr", f"{name}-cert.pem"
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=dsw-test-{name}",
            "-keyout",
            key,
            "-out",
            csr,
        )
        (directory / f"{name}.ext").write_text(extension + "\n")
        run(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            "-out",
            cert,
        )
    os.rename(directory / "client-cert.pem", directory / "cert.pem")
    os.rename(directory / "client-key.pem", directory / "key.pem")


async def serve_tcp_relay(
    certificates: Path | None, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """tcp://127.0.0.1:<port> to the daemon; with `certificates`, TLS that demands a client
    certificate signed by their CA (as dockerd --tlsverify does)."""
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(
        await trio.open_tcp_listeners(0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
    handler: Callable[[trio.abc.Stream], object] = relay
    if certificates is not None:
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=certificates / "ca.pem"
        )
        context.load_cert_chain(certificates / "server-cert.pem", certificates / "server-key.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        listeners = [trio.SSLListener(listener, context) for listener in listeners]

        async def handshake_then_relay(stream: trio.abc.Stream) -> None:
            try:
                await stream.do_handshake()  # type: ignore[attr-defined]
            except trio.BrokenResourceError:
                return  # refused: no or wrong client certificate
            await relay(stream)

        handler = handshake_then_relay
    task_status.started(port)
    await trio.serve_listeners(handler, listeners)  # type: ignore[arg-type]


class RestartingDaemon(httpx.AsyncBaseTransport):
    """The real daemon, but the requests `refused` picks get the answer of a daemon shutting
    down (500 "database not open") while `restarting` (until `refusals` of them, if given);
    with `made` they reach the daemon first (a create during shutdown may still make the
    container)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        refused: Callable[[httpx.Request], bool],
        made: Callable[[httpx.Request], bool] = lambda request: False,
        refusals: int | None = None,
    ) -> None:
        self.inner, self.refused, self.made, self.refusals = inner, refused, made, refusals
        self.restarting = True
        self.answered_500: list[str] = []
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        what = f"{request.method} {request.url.path}"
        self.requests.append(what)
        if not (self.restarting and self.refused(request)):
            return await self.inner.handle_async_request(request)
        if self.made(request):
            response = await self.inner.handle_async_request(request)
            await response.aread()
            await response.aclose()
        self.answered_500.append(what)
        self.restarting = len(self.answered_500) != self.refusals
        return httpx.Response(500, json={"message": "database not open"})

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def open_docker_via(
    settings: Settings, wrap: Callable[[httpx.AsyncBaseTransport], Wrapper]
) -> AsyncIterator[tuple[DockerClient, Wrapper]]:
    """A client made as `open_docker` makes it, its transport wrapped by `wrap`."""
    base_url, transport = transport_for(settings)
    wrapper = wrap(transport)
    timeout = httpx.Timeout(settings.docker_timeout_s)
    async with httpx.AsyncClient(base_url=base_url, transport=wrapper, timeout=timeout) as http:
        client = DockerClient(http, settings.docker_timeout_s)
        await client.negotiate()
        yield client, wrapper


def is_delete(request: httpx.Request) -> bool:
    return request.method == "DELETE"
