"""Stand-ins for the network between the worker and the Docker daemon: a Unix-socket relay that can
be cut and restored (Docker going away), and TCP and TLS relays (remote daemons)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import trio

DOCKER_SOCKET = "/var/run/docker.sock"


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
