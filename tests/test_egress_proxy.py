"""dsw.egress.proxy: the real proxy on 127.0.0.1 in front of real local servers (a plain HTTP
one, a raw echo one for CONNECT, a TLS one), spoken to in raw bytes and by httpx and curl.
Nothing here connects anywhere but 127.0.0.1."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from prometheus_client import REGISTRY

from dsw.config import Settings, load_settings
from dsw.egress import proxy as proxy_module
from dsw.egress.policy import EgressPolicy
from dsw.egress.proxy import EgressProxy, proxy_environment, proxy_url
from tests.proxies import make_certificates

GREETING = b"hello from the raw server\n"


@pytest.fixture(autouse=True)
def only_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the policy ever let something else through, no connection leaves 127.0.0.1/::1."""
    real = trio.open_tcp_stream

    async def guarded(host: str | bytes, port: int, **options: Any) -> trio.SocketStream:
        assert host in ("127.0.0.1", "::1"), f"a test tried to connect to {host!r}"
        return await real(host, port, **options)

    monkeypatch.setattr(trio, "open_tcp_stream", guarded)


async def read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def read_all(stream: trio.abc.ReceiveStream, data: bytes = b"") -> bytes:
    """Until the other side closes, or resets (it closed with bytes of ours unread)."""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


class Origin:
    """A plain HTTP server on 127.0.0.1: answers `you asked <path>` plus the request's body,
    and keeps every request head it got."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head, body = await read_head(stream)
            self.heads.append(head)
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    while len(body) < int(line.split(b":")[1]):
                        body += await stream.receive_some(65536)
            path = head.split(b" ")[1]
            answer = b"you asked " + path + b"\n" + body
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(answer)
                + answer
            )


async def echo(stream: trio.SocketStream) -> None:
    """The raw server: a greeting, then every byte back until the client closes."""
    async with stream:
        try:
            await stream.send_all(GREETING)
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


async def serve(nursery: trio.Nursery, handler: Any) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin()
    server.port = await serve(nursery, server.handle)
    return server


@pytest.fixture
async def raw_port(nursery: trio.Nursery) -> int:
    return await serve(nursery, echo)


class Proxy(msgspec.Struct):
    proxy: EgressProxy
    port: int
    token: str

    def url(self) -> str:
        return proxy_url(self.token, "127.0.0.1", self.port)

    async def ask(
        self, line: str, extra: bytes = b"", end: bytes = b"\r\n"
    ) -> tuple[int, bytes, bytes]:
        """`line` (a request line) with this token's credentials, `extra` and `end`."""
        request = line.encode() + b"\r\n" + credentials(self.token) + extra + end
        return await ask(self.port, request)


@asynccontextmanager
async def running(resolver: Any = None, **changes: Any) -> AsyncIterator[Proxy]:
    settings: Settings = load_settings(**changes)
    policy = EgressPolicy.from_settings(settings)
    if resolver is not None:
        policy.resolver = resolver
    proxy = EgressProxy(settings, policy)
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(proxy.serve, "127.0.0.1")
        token = proxy.new_token()
        proxy.bind(token, "7f000001-863c-17b2-8186-3cdeb62e0000")
        yield Proxy(proxy, port, token)
        nursery.cancel_scope.cancel()


def credentials(token: str, user: str = "dsw") -> bytes:
    return b"Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()) + b"\r\n"


async def ask(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send raw bytes to the proxy; (status, head, body) of the answer, read to the end."""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(request)
            head, rest = await read_head(stream)
            body = await read_all(stream, rest)
    return int(head.split(b" ")[1]), head, body


async def open_tunnel(proxy: Proxy, target: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode()
    await stream.send_all(request + credentials(proxy.token) + b"\r\n")
    with trio.fail_after(10):
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += await stream.receive_some(1)  # exactly the head: the rest is the tunnel's
    assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n", head
    return stream


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = b""
    with trio.fail_after(10):
        while len(data) < size:
            chunk = await stream.receive_some(size - len(data))
            assert chunk, f"closed after {len(data)} of {size} bytes"
            data += chunk
    return data


async def send_ignoring_resets(stream: trio.SocketStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def tunnels_and_forwarded() -> tuple[float, float]:
    return (
        sample("dsw_egress_connections_total", outcome="tunnel"),
        sample("dsw_egress_connections_total", outcome="forwarded"),
    )


async def test_connect_relays_both_ways_to_an_allowed_address(raw_port: int) -> None:
    before = sample("dsw_egress_bytes_total")
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"]) as proxy:
        stream = await open_tunnel(proxy, f"127.0.0.1:{raw_port}")
        async with stream:
            assert await receive_exactly(stream, len(GREETING)) == GREETING
            assert sample("dsw_egress_tunnels") == 1
            payload = os.urandom(200_000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, payload)
                assert await receive_exactly(stream, len(payload)) == payload
    assert sample("dsw_egress_bytes_total") - before == len(GREETING) + 2 * len(payload)
    assert sample("dsw_egress_tunnels") == 0


async def test_ipv6_proxy_and_destination(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="::1"))
    port = listeners[0].socket.getsockname()[1]
    settings = load_settings(egress_allow=[f"[::1]:{port}"])
    proxy = EgressProxy(settings, EgressPolicy.from_settings(settings))
    host, proxy_port = await nursery.start(proxy.serve, "::1")
    assert host == "::1"
    token = proxy.new_token()
    stream = await trio.open_tcp_stream("::1", proxy_port)
    async with stream:
        await stream.send_all(
            f"CONNECT [::1]:{port} HTTP/1.1\r\n".encode() + credentials(token) + b"\r\n"
        )
        expected = b"HTTP/1.1 200 Connection Established\r\n\r\n" + GREETING
        assert await receive_exactly(stream, len(expected)) == expected


async def test_plain_http_is_forwarded_in_origin_form_without_the_proxys_headers(
    origin: Origin,
) -> None:
    async with running(egress_allow=[f"127.0.0.1:{origin.port}"]) as proxy:
        body = b"x" * 70_000
        status, _, answer = await proxy.ask(
            f"POST http://127.0.0.1:{origin.port}/feed/index.json?q=1 HTTP/1.1",
            b"Host: elsewhere.example\r\nProxy-Connection: keep-alive\r\n"
            b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Kept: yes\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            end=b"",
        )
    assert status == 200
    assert answer == b"you asked /feed/index.json?q=1\n" + body
    assert origin.heads == [
        b"POST /feed/index.json?q=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{origin.port}\r\n".encode()
        + f"X-Kept: yes\r\nContent-Length: {len(body)}\r\nConnection: close".encode()
    ]


async def test_without_the_allow_entry_a_local_address_is_403(origin: Origin) -> None:
    before = sample("dsw_egress_refused_total", reason="loopback")
    async with running() as proxy:
        for target in (f"127.0.0.1:{origin.port}", f"localhost:{origin.port}"):
            status, head, body = await proxy.ask(f"CONNECT {target} HTTP/1.1")
            assert status == 403
            assert b"Content-Type: text/plain" in head
            assert b"a loopback address; only WORKER_EGRESS_ALLOW can open it" in body
        status, _, body = await proxy.ask(f"GET http://localhost:{origin.port}/ HTTP/1.1")
        assert status == 403
        assert body == b"dsw egress: localhost resolves to 127.0.0.1, a loopback address; " \
            b"only WORKER_EGRESS_ALLOW can open it\n"  # fmt: skip
    assert origin.heads == []
    assert sample("dsw_egress_refused_total", reason="loopback") - before == 3


async def test_an_allowed_address_does_not_open_a_name_that_points_there(origin: Origin) -> None:
    async with running(egress_allow=[f"127.0.0.1:{origin.port}"]) as proxy:
        status, _, body = await proxy.ask(f"CONNECT localhost:{origin.port} HTTP/1.1")
    assert status == 403
    assert b"is not listed in WORKER_EGRESS_ALLOW" in body


async def test_the_metadata_address_is_403() -> None:
    async with running() as proxy:
        for line in ("CONNECT 169.254.169.254:80 HTTP/1.1", "GET http://169.254.169.254/ HTTP/1.1"):
            status, _, body = await proxy.ask(line)
            assert status == 403
            assert body.startswith(b"dsw egress: 169.254.169.254 is the cloud metadata address")


async def test_missing_unknown_and_revoked_tokens_are_407(raw_port: int) -> None:
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"]) as proxy:
        connect = f"CONNECT 127.0.0.1:{raw_port} HTTP/1.1\r\n".encode()
        revoked = proxy.proxy.new_token()
        proxy.proxy.revoke(revoked)
        for extra, problem in [
            (b"", b"missing"),
            (credentials("0" * 32), b"unknown or malformed"),
            (credentials(proxy.token, user="root"), b"unknown or malformed"),
            (
                b"Proxy-Authorization: Bearer " + proxy.token.encode() + b"\r\n",
                b"unknown or malformed",
            ),
            (b"Proxy-Authorization: Basic !!!\r\n", b"unknown or malformed"),
            (credentials(proxy.token) * 2, b"unknown or malformed"),
            (credentials(revoked), b"revoked"),
        ]:
            status, head, body = await ask(proxy.port, connect + extra + b"\r\n")
            assert status == 407, extra
            assert b'\r\nProxy-Authenticate: Basic realm="dsw"\r\n' in head
            assert (
                body
                == b"dsw egress: proxy credentials " + problem + b" (they come in the proxy URL)\n"
            )
        with pytest.raises(ValueError, match="revoked"):
            proxy.proxy.register(revoked)


async def test_revoke_closes_an_open_tunnel_at_once(raw_port: int) -> None:
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"]) as proxy:
        async with await open_tunnel(proxy, f"127.0.0.1:{raw_port}") as stream:
            await receive_exactly(stream, len(GREETING))
            proxy.proxy.revoke(proxy.token)
            with trio.fail_after(2):
                assert await read_all(stream) == b""
        status, _, _ = await proxy.ask(f"CONNECT 127.0.0.1:{raw_port} HTTP/1.1")
        assert status == 407


async def test_the_connection_cap_is_429(raw_port: int) -> None:
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"], egress_max_connections=2) as proxy:
        target = f"127.0.0.1:{raw_port}"
        first, second = await open_tunnel(proxy, target), await open_tunnel(proxy, target)
        status, _, body = await proxy.ask(f"CONNECT {target} HTTP/1.1")
        assert status == 429
        assert b"WORKER_EGRESS_MAX_CONNECTIONS" in body
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the proxy saw it close
        assert len(proxy.proxy._clients[proxy.token].scopes) == 1
        async with await open_tunnel(proxy, target):
            pass
        await second.aclose()


async def test_the_byte_cap_closes_the_tunnel(raw_port: int) -> None:
    cap = 100_000
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"], egress_max_bytes=cap) as proxy:
        stream = await open_tunnel(proxy, f"127.0.0.1:{raw_port}")
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(send_ignoring_resets, stream, b"x" * 200_000)
            with trio.fail_after(5):
                received = await read_all(stream)
        # Both ways count: what went out and came back is the cap, no more. (What the client
        # gets of it depends on the reset that closing with its bytes unread sends.)
        assert proxy.proxy._clients[proxy.token].bytes_relayed == cap
        assert received.startswith(GREETING)
        assert len(received) < cap
        status, _, body = await proxy.ask(f"CONNECT 127.0.0.1:{raw_port} HTTP/1.1")
        assert status == 429
        assert b"WORKER_EGRESS_MAX_BYTES" in body


async def test_an_idle_tunnel_is_closed(raw_port: int) -> None:
    async with running(egress_allow=[f"127.0.0.1:{raw_port}"], egress_idle_timeout_s=0.3) as proxy:
        stream = await open_tunnel(proxy, f"127.0.0.1:{raw_port}")
        with trio.fail_after(3):
            assert await read_all(stream) == GREETING
        await stream.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"hello\r\n\r\n", 400),
        (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
        (b"GET http://user@127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT [not-v6]:443 HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT bad host:443 HTTP/1.1\r\n\r\n", 400),
        (b"TRACE http://127.0.0.1/ HTTP/1.1\r\n\r\n", 405),
        (b"GET http://127.0.0.1/ HTTP/2.0\r\n\r\n", 505),
        (b"GET http://127.0.0.1/ HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET http://127.0.0.1/ HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"GET http://127.0.0.1/" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET http://127.0.0.1/ HTTP/1.1\r\n" + b"X-Big: yes\r\n" * 2000 + b"\r\n", 431),
    ],
)
async def test_malformed_requests_are_4xx(request_bytes: bytes, status: int) -> None:
    async with running() as proxy:
        line, _, rest = request_bytes.partition(b"\r\n")
        answer, head_bytes, body = await proxy.ask(line.decode(), rest, end=b"")
        assert answer == status, body
        assert body.startswith(b"dsw egress: ")
        if status == 405:
            assert b"\r\nAllow: CONNECT, GET, HEAD, POST" in head_bytes


async def open_silent(port: int, source: str) -> trio.SocketStream:
    """A connection from `source` that starts a request head and never ends it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    await stream.send_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n")
    return stream


async def ask_from(source: str, port: int, request: bytes) -> tuple[int, bytes]:
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port, local_address=source) as stream:
            await stream.send_all(request)
            head, rest = await read_head(stream)
            body = await read_all(stream, rest)
    return int(head.split(b" ")[1]), body


async def test_one_address_cannot_take_every_unauthenticated_slot(raw_port: int) -> None:
    """A container (one source address) holding WORKER_EGRESS_MAX_CONNECTIONS connections that
    never finish their head is refused more, at once; another container is not."""
    target = f"127.0.0.1:{raw_port}"
    connect = f"CONNECT {target} HTTP/1.1\r\n".encode()
    async with running(egress_allow=[target], egress_max_connections=2) as proxy:
        silent = [await open_silent(proxy.port, "127.0.0.2") for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()  # the proxy reads their heads
        assert proxy.proxy._unauthenticated["127.0.0.2"] == 2
        status, body = await ask_from("127.0.0.2", proxy.port, connect + b"\r\n")
        assert status == 503
        assert b"WORKER_EGRESS_MAX_CONNECTIONS" in body
        status, body = await ask_from("127.0.0.3", proxy.port, connect + b"\r\n")
        assert status == 407  # past the cap, to the credentials
        tunnel = await open_tunnel(proxy, target)  # from 127.0.0.1
        assert await receive_exactly(tunnel, len(GREETING)) == GREETING
        await tunnel.aclose()
        for stream in silent:
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert not proxy.proxy._unauthenticated
        status, _ = await ask_from("127.0.0.2", proxy.port, connect + b"\r\n")
        assert status == 407


async def test_every_address_together_has_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_module, "_MAX_UNAUTHENTICATED", 3)
    async with running(egress_max_connections=2) as proxy:
        silent = [await open_silent(proxy.port, f"127.0.0.{n}") for n in (2, 2, 3)]
        await trio.testing.wait_all_tasks_blocked()
        status, body = await ask_from("127.0.0.4", proxy.port, b"CONNECT x:1 HTTP/1.1\r\n\r\n")
        assert status == 503
        assert b"too many connections at once" in body
        for stream in silent:
            await stream.aclose()


async def test_a_head_that_never_ends_is_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_module, "_HEAD_TIMEOUT_S", 0.2)
    async with running() as proxy:
        status, _, _ = await ask(proxy.port, b"GET http://127.0.0.1/ HTTP/1.1\r\n")
    assert status == 408


async def test_a_failed_connection_or_resolution_is_502() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]

    async def no_such_name(host: str, port: int) -> Sequence[str]:
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with running(
        no_such_name, egress_allow=[f"127.0.0.1:{closed_port}", "*.example"]
    ) as proxy:
        with trio.fail_after(5):
            status, _, body = await proxy.ask(f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1")
        assert status == 502
        assert body.startswith(f"dsw egress: cannot connect to 127.0.0.1:{closed_port}".encode())
        status, _, body = await proxy.ask("CONNECT nowhere.example:443 HTTP/1.1")
        assert status == 502
        assert (
            body
            == b"dsw egress: cannot resolve nowhere.example: [Errno -2] Name or service not known\n"
        )


async def test_the_proxy_connects_to_the_checked_address_and_never_resolves_again(
    raw_port: int,
) -> None:
    asked = []

    async def once(host: str, port: int) -> Sequence[str]:
        await trio.lowlevel.checkpoint()
        asked.append(host)
        if len(asked) > 1:
            raise AssertionError("resolved twice")
        return ["127.0.0.1"]

    async with running(once, egress_allow=[f"rebind.example:{raw_port}"]) as proxy:
        stream = await open_tunnel(proxy, f"rebind.example:{raw_port}")
        async with stream:
            assert await receive_exactly(stream, len(GREETING)) == GREETING
    assert asked == ["rebind.example"]


async def test_serve_closes_every_connection_when_cancelled(raw_port: int) -> None:
    settings = load_settings(egress_allow=[f"127.0.0.1:{raw_port}"])
    fds_before = len(os.listdir("/proc/self/fd"))
    proxy = EgressProxy(settings, EgressPolicy.from_settings(settings))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(proxy.serve, "127.0.0.1")
            running_proxy = Proxy(proxy, port, proxy.new_token())
            tunnels = [await open_tunnel(running_proxy, f"127.0.0.1:{raw_port}") for _ in range(3)]
            for stream in tunnels:
                assert await receive_exactly(stream, len(GREETING)) == GREETING
            idle = await trio.open_tcp_stream("127.0.0.1", port)  # never sends its head
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        for stream in [*tunnels, idle]:
            assert await read_all(stream) == b""  # the proxy closed its side
            await stream.aclose()
    assert sample("dsw_egress_tunnels") == 0
    assert not proxy._clients[running_proxy.token].scopes
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    make_certificates(directory)
    return directory


@pytest.fixture
async def tls_port(nursery: trio.Nursery, certificates: Path) -> int:
    """An HTTPS server on 127.0.0.1 (the certificate's name), behind which CONNECT must go."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server-cert.pem", certificates / "server-key.pem")

    async def handle(stream: trio.SocketStream) -> None:
        async with trio.SSLStream(stream, context, server_side=True) as tls:
            try:
                head, _ = await read_head(tls)  # type: ignore[arg-type]
                answer = b"secure " + head.split(b" ")[1]
                await tls.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer
                )
            except trio.BrokenResourceError:
                pass

    return await serve(nursery, handle)


async def test_httpx_through_the_proxy_with_credentials_in_the_url(
    origin: Origin, tls_port: int, certificates: Path
) -> None:
    tunnels, forwarded = tunnels_and_forwarded()
    allow = [f"127.0.0.1:{origin.port}", f"127.0.0.1:{tls_port}"]
    async with running(egress_allow=allow) as proxy:
        verify = ssl.create_default_context(cafile=certificates / "ca.pem")
        async with httpx.AsyncClient(proxy=proxy.url(), verify=verify, timeout=10) as client:
            plain = await client.get(f"http://127.0.0.1:{origin.port}/plain")
            secure = await client.get(f"https://127.0.0.1:{tls_port}/secure")
            denied = await client.get(
                f"http://127.0.0.1:{origin.port + 1 if origin.port < 65535 else 1}/x"
            )
        async with httpx.AsyncClient(proxy=proxy_url("0" * 32, "127.0.0.1", proxy.port)) as client:
            unknown = await client.get(f"http://127.0.0.1:{origin.port}/")
    assert (plain.status_code, plain.text) == (200, "you asked /plain\n")
    assert (secure.status_code, secure.text) == (200, "secure /secure")
    assert denied.status_code == 403
    assert "loopback" in denied.text
    assert unknown.status_code == 407
    assert b"proxy-authorization" not in origin.heads[0].lower()
    assert tunnels_and_forwarded() == (tunnels + 1, forwarded + 1)  # the proxy carried both


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl on this machine")
async def test_curl_through_the_proxy_from_its_environment(
    origin: Origin, tls_port: int, certificates: Path, raw_port: int
) -> None:
    tunnels, forwarded = tunnels_and_forwarded()
    allow = [f"127.0.0.1:{origin.port}", f"127.0.0.1:{tls_port}"]
    async with running(egress_allow=allow) as proxy:
        env = {
            "PATH": os.environ["PATH"],
            **proxy_environment(proxy.token, "127.0.0.1", proxy.port),
        }
        env["no_proxy"] = env["NO_PROXY"] = ""  # 127.0.0.1 is the test's destination here
        results = []
        for url in (
            f"http://127.0.0.1:{origin.port}/curl",
            f"https://127.0.0.1:{tls_port}/curl",
            f"http://127.0.0.1:{raw_port}/",  # not listed
        ):
            results.append(
                await trio.run_process(
                    [
                        "curl",
                        "-sS",
                        "--max-time",
                        "10",
                        "--cacert",
                        str(certificates / "ca.pem"),
                        url,
                    ],
                    env=env,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            )
    assert [r.stdout for r in results[:2]] == [b"you asked /curl\n", b"secure /curl"]
    assert results[2].stdout.startswith(b"dsw egress: 127.0.0.1 is a loopback address")
    assert b"proxy-authorization" not in origin.heads[0].lower()
    assert tunnels_and_forwarded() == (tunnels + 1, forwarded + 1)  # the proxy carried both


async def test_a_client_that_waits_for_the_challenge_gets_through(origin: Origin) -> None:
    """.NET's HttpClient (NuGet): no credentials at first; after the 407, a new connection with."""
    async with running(egress_allow=[f"127.0.0.1:{origin.port}"]) as proxy:
        url = f"http://127.0.0.1:{origin.port}/v3/index.json"
        request = f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        status, head, _ = await ask(proxy.port, request + b"\r\n")
        assert status == 407
        assert b"Connection: close" in head
        status, _, body = await ask(proxy.port, request + credentials(proxy.token) + b"\r\n")
    assert (status, body) == (200, b"you asked /v3/index.json\n")
