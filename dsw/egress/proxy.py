"""The egress proxy: HTTP/HTTPS forwarding for the sandboxes, one token per container.

    proxy = EgressProxy(settings, EgressPolicy.from_settings(settings))
    host, port = await nursery.start(proxy.serve, "172.30.0.1")
    token = proxy.new_token()                # a container is created (a warm one: no job yet)
    env = proxy_environment(token, host, port)   # HTTP_PROXY, http_proxy, HTTPS_PROXY, ...
    proxy.bind(token, job_id)                # its job starts: logs and caps name the job
    proxy.revoke(token)                      # the job ended: its connections close at once

A client authenticates with `Proxy-Authorization: Basic base64("dsw:<token>")`, which curl sends
at once from the URL in HTTPS_PROXY/http_proxy and .NET's HttpClient (NuGet) after a 407 with
`Proxy-Authenticate: Basic`, on a new connection. `CONNECT host:port` answers `200 Connection
Established` and relays bytes both ways; an absolute-form request (`GET http://host/path`) goes
to the destination in origin-form with `Host`, without the proxy's headers, with `Connection:
close`, and is then relayed the same way. Each request is judged by the EgressPolicy and
connected only to an address it passed. Errors are plain-text answers that a script shows: 400,
405, 408, 414, 431 and 505 (the request), 407 (no valid token), 429 (WORKER_EGRESS_MAX_CONNECTIONS
per token, or WORKER_EGRESS_MAX_BYTES spent), 403 (the policy), 502 (no address, no connection
within WORKER_EGRESS_CONNECT_TIMEOUT_S), 503 (WORKER_EGRESS_MAX_CONNECTIONS from one address, or
256 over all, still sending their request head: before a token is known, a container is its
address). A relay ends when the destination closes, after
WORKER_EGRESS_IDLE_TIMEOUT_S without a byte, past the job's byte cap, or at `revoke`.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import secrets
from collections import Counter, OrderedDict
from http import HTTPStatus
from typing import NamedTuple

import trio

from dsw import metrics
from dsw.config import KiB, Settings
from dsw.egress.policy import Allowed, EgressPolicy

log = logging.getLogger(__name__)

_HEAD_LIMIT_BYTES = 16 * KiB
_LINE_LIMIT_BYTES = 8 * KiB
_CHUNK_BYTES = 64 * KiB
_HEAD_TIMEOUT_S = 10.0
_ANSWER_TIMEOUT_S = 5.0
_CLOSE_TIMEOUT_S = 1.0
# Connections still sending their head (no token known yet), over every container; one
# container (its address) may hold WORKER_EGRESS_MAX_CONNECTIONS of them, so that a script cannot
# take all of them (it has 1024 file descriptors, and the head 10 s) and shut out every other job.
_MAX_UNAUTHENTICATED = 256
_REMEMBERED_REVOKED = 4096
_SECRET = re.compile(r"^[A-Za-z0-9_-]{16,}$")  # safe in a URL's user information
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
_FORWARDED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
# Hop-by-hop headers of the client's connection to the proxy; the body's framing
# (Content-Length, Transfer-Encoding) stays, since the body is relayed as it comes.
_DROPPED = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"}
_FRAMING = {"content-length", "transfer-encoding"}


def proxy_url(token: str, host: str, port: int) -> str:
    """`http://dsw:<token>@host:port`, the proxy as a sandbox's client is told of it."""
    return f"http://dsw:{token}@{f'[{host}]' if ':' in host else host}:{port}"


def proxy_environment(token: str, host: str, port: int) -> dict[str, str]:
    """The variables that make curl and .NET (HttpClient, NuGet, dotnet-script) use the proxy.
    Both cases: curl reads http_proxy only in lower case, NuGet's own reader only http_proxy
    (for every scheme), .NET's HttpClient either."""
    url = proxy_url(token, host, port)
    env = dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), url)
    env |= dict.fromkeys(("no_proxy", "NO_PROXY"), "localhost,127.0.0.1,::1")
    return env


class _Reply(Exception):
    """An answer instead of a relay: `code` with `message` as its plain-text body."""

    def __init__(self, code: int, outcome: str, message: str, *headers: str) -> None:
        super().__init__(message)
        self.code, self.outcome, self.message, self.headers = code, outcome, message, headers


class _Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    rest: bytes  # what came after the head: the start of a body, or of a tunnel's bytes


class _Client:
    """One container's token: its job, its open connections and the bytes it relayed."""

    def __init__(self) -> None:
        self.job_id: str | None = None
        self.scopes: set[trio.CancelScope] = set()
        self.bytes_relayed = 0

    @property
    def job(self) -> str:
        return self.job_id or "-"


class EgressProxy:
    """The token registry and the server. Single trio thread: no locks."""

    def __init__(self, settings: Settings, policy: EgressPolicy) -> None:
        self.settings = settings
        self.policy = policy
        self._clients: dict[str, _Client] = {}
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self._unauthenticated: Counter[str] = Counter()  # by the client's address

    def new_token(self) -> str:
        """A fresh random token, registered."""
        token = secrets.token_hex(16)
        self.register(token)
        return token

    def register(self, token: str) -> None:
        """Accept `token` from now on (no job yet). ValueError if it is registered or was
        revoked lately."""
        if token in self._clients or token in self._revoked or not _SECRET.match(token):
            raise ValueError("token already registered, revoked, or not 16+ of [A-Za-z0-9_-]")
        self._clients[token] = _Client()

    def bind(self, token: str, job_id: str) -> None:
        """Attribute `token`'s requests to `job_id`. KeyError if unknown or revoked."""
        self._clients[token].job_id = job_id

    def revoke(self, token: str) -> None:
        """Close `token`'s connections now and refuse it from then on; nothing if unknown."""
        client = self._clients.pop(token, None)
        self._revoked[token] = None
        while len(self._revoked) > _REMEMBERED_REVOKED:
            self._revoked.popitem(last=False)
        if client is not None:
            for scope in client.scopes:
                scope.cancel()
            if client.scopes:
                log.info("egress revoked job=%s closing=%d", client.job, len(client.scopes))

    async def serve(
        self,
        host: str,
        port: int = 0,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on host:port, report the bound (host, port), serve until cancelled; then every
        connection is closed before this returns. OSError if it cannot listen."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            async with trio.open_nursery() as nursery:
                bound = listeners[0].socket.getsockname()
                log.info("egress proxy listening address=%s port=%d", bound[0], bound[1])
                task_status.started((str(bound[0]), int(bound[1])))
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)
        finally:
            for listener in listeners:
                with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                    await listener.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_client(stream)
        except _Reply as reply:
            metrics.egress_connections.labels(outcome=reply.outcome).inc()
            await _answer(stream, reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:
            log.exception("egress connection failed")
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await stream.aclose()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        maximum, cap = self.settings.egress_max_connections, self.settings.egress_max_bytes
        try:
            source = str(stream.socket.getpeername()[0])
        except OSError:
            return  # gone already
        if self._unauthenticated[source] >= maximum:
            message = "dsw egress: too many connections from this container sending no request"
            raise _Reply(503, "busy", f"{message} ({maximum}: WORKER_EGRESS_MAX_CONNECTIONS)")
        if self._unauthenticated.total() >= _MAX_UNAUTHENTICATED:
            raise _Reply(503, "busy", "dsw egress: too many connections at once; try again")
        self._unauthenticated[source] += 1
        try:
            request = _parse_head(*await _read_head(stream))
            client = self._authenticated(request.headers)
        finally:
            self._unauthenticated[source] -= 1
            if not self._unauthenticated[source]:
                del self._unauthenticated[source]
        if len(client.scopes) >= maximum:
            log.warning("egress connection cap job=%s connections=%d", client.job, maximum)
            message = f"dsw egress: {maximum} connections open (WORKER_EGRESS_MAX_CONNECTIONS)"
            raise _Reply(429, "too_many", message)
        if cap and client.bytes_relayed >= cap:
            message = f"dsw egress: this job relayed {cap} bytes (WORKER_EGRESS_MAX_BYTES)"
            raise _Reply(429, "too_many", message)
        with trio.CancelScope() as scope:  # revoke() cancels it
            client.scopes.add(scope)
            try:
                await self._forward(stream, client, request)
            finally:
                client.scopes.discard(scope)

    def _authenticated(self, headers: list[tuple[str, str]]) -> _Client:
        values = [value for name, value in headers if name.lower() == "proxy-authorization"]
        scheme, _, encoded = (values[0] if len(values) == 1 else "").partition(" ")
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True).decode()
        except ValueError:
            credentials = ""
        user, _, token = credentials.partition(":")
        client = self._clients.get(token) if scheme.lower() == "basic" and user == "dsw" else None
        if client is not None:
            return client
        if not values:
            # .NET's first request on every connection: it sends credentials only after a 407.
            problem, outcome = "missing", "challenged"
            log.debug("egress credentials missing")
        else:
            problem = "revoked" if token in self._revoked else "unknown or malformed"
            outcome = "unauthorized"
            log.warning("egress credentials %s", problem)
        message = f"dsw egress: proxy credentials {problem} (they come in the proxy URL)"
        raise _Reply(407, outcome, message, 'Proxy-Authenticate: Basic realm="dsw"')

    async def _forward(self, stream: trio.SocketStream, client: _Client, request: _Request) -> None:
        if request.method == "CONNECT":
            host, port = _authority(request.target, None)
            path = ""
        else:
            host, port, path = _absolute_target(request.method, request.target)
        verdict = await self.policy.check(host, port)
        if not isinstance(verdict, Allowed):
            where = f"{host}:{port}"
            if verdict.code == 403:
                log.warning(
                    "egress refused job=%s target=%s reason=%s", client.job, where, verdict.reason
                )
                metrics.egress_refused.labels(reason=verdict.reason).inc()
                raise _Reply(403, "refused", verdict.message)
            log.info("egress failed job=%s target=%s reason=%s", client.job, where, verdict.reason)
            raise _Reply(verdict.code, verdict.reason, verdict.message)
        upstream, address = await self._connect(verdict, client.job)
        try:
            if request.method == "CONNECT":
                await stream.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                kind, first = "tunnel", request.rest
            else:
                kind, first = "forwarded", _forwarded_head(request, host, port, path) + request.rest
            metrics.egress_connections.labels(outcome=kind).inc()
            ended, relayed = await self._relay(stream, upstream, client, first)
            log.log(
                logging.WARNING if ended == "byte cap" else logging.INFO,
                "egress %s job=%s target=%s:%d address=%s bytes=%d ended=%s",
                *(kind, client.job, host, port, address, relayed, ended),
            )
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await upstream.aclose()

    async def _connect(self, allowed: Allowed, job: str) -> tuple[trio.SocketStream, str]:
        """A connection to the first of the checked addresses that answers, each within
        WORKER_EGRESS_CONNECT_TIMEOUT_S (an address family without a route fails at once)."""
        failures = []
        for address in allowed.addresses:
            try:
                with trio.fail_after(self.settings.egress_connect_timeout_s):
                    return await trio.open_tcp_stream(address, allowed.port), address
            except (OSError, trio.TooSlowError) as exc:
                failures.append(f"{address}: {exc or 'timed out'}")
        why = "; ".join(failures)
        log.info("egress unreachable job=%s target=%s:%d %s", job, allowed.host, allowed.port, why)
        message = f"dsw egress: cannot connect to {allowed.host}:{allowed.port} ({why})"
        raise _Reply(502, "unreachable", message)

    async def _relay(
        self, stream: trio.SocketStream, upstream: trio.SocketStream, client: _Client, first: bytes
    ) -> tuple[str, int]:
        """`first` to the destination, then both ways until the destination closes (a client
        closing its side is passed on), a reset, WORKER_EGRESS_IDLE_TIMEOUT_S without a byte, or
        the job's byte cap. Returns what ended it and the bytes relayed."""
        idle_s, cap = self.settings.egress_idle_timeout_s, self.settings.egress_max_bytes
        ended, relayed = "idle", 0

        def finish(why: str) -> None:
            nonlocal ended
            if not scope.cancel_called:  # the first reason is the one
                ended = why
                scope.cancel()

        async def send(sink: trio.SocketStream, data: bytes) -> None:
            nonlocal relayed
            scope.deadline = trio.current_time() + idle_s
            passed = data[: max(cap - client.bytes_relayed, 0)] if cap else data
            client.bytes_relayed += len(passed)
            relayed += len(passed)
            metrics.egress_bytes.inc(len(passed))
            await sink.send_all(passed)
            if len(passed) < len(data):
                finish("byte cap")

        async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
            try:
                while data := await source.receive_some(_CHUNK_BYTES):
                    await send(sink, data)
                if source is upstream:
                    finish("closed")
                else:
                    await upstream.send_eof()  # the client is done sending; the answer may follow
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                finish("reset")

        metrics.egress_tunnels.inc()
        try:
            with trio.CancelScope(deadline=trio.current_time() + idle_s) as scope:
                await send(upstream, first)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pipe, stream, upstream)
                    nursery.start_soon(pipe, upstream, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            ended = "reset"
        finally:
            metrics.egress_tunnels.dec()
        return ended, relayed


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """The request head without its blank line, and whatever came after it."""
    data = bytearray()
    with trio.move_on_after(_HEAD_TIMEOUT_S):
        while True:
            end = data.find(b"\r\n\r\n")
            line = data.find(b"\r\n")
            if (line if line >= 0 else len(data)) > _LINE_LIMIT_BYTES:
                raise _Reply(414, "bad_request", "dsw egress: request line too long")
            if (end if end >= 0 else len(data)) > _HEAD_LIMIT_BYTES:
                raise _Reply(431, "bad_request", "dsw egress: request head too large")
            if end >= 0:
                return bytes(data[:end]), bytes(data[end + 4 :])
            chunk = await stream.receive_some(_HEAD_LIMIT_BYTES)
            if not chunk:
                raise trio.ClosedResourceError("the client closed before its request head ended")
            data += chunk
    raise _Reply(408, "bad_request", f"dsw egress: no complete request head in {_HEAD_TIMEOUT_S} s")


def _parse_head(head: bytes, rest: bytes) -> _Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise _Reply(400, "bad_request", "dsw egress: not an HTTP request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        code = 505 if version.startswith("HTTP/") else 400
        raise _Reply(code, "bad_request", "dsw egress: only HTTP/1.1 and HTTP/1.0 requests")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise _Reply(400, "bad_request", "dsw egress: malformed header line")
        headers.append((name, value.strip(" \t")))
    return _Request(method, target, version, headers, rest)


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """host and port of `host:port`, `[v6]:port` (port optional only with a default)."""
    host, port = text, ""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")) or not _is_ipv6(host):
            raise _Reply(400, "bad_request", f"dsw egress: not host:port: {text!r:.100}")
        port = after[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if not _HOST.match(host):
            raise _Reply(400, "bad_request", f"dsw egress: not host:port: {text!r:.100}")
    elif not _HOST.match(host):
        raise _Reply(400, "bad_request", f"dsw egress: not a host name: {text!r:.100}")
    if not port and default_port is not None:
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _Reply(400, "bad_request", f"dsw egress: no port (1-65535) in {text!r:.100}")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return "%" not in text


def _absolute_target(method: str, target: str) -> tuple[str, int, str]:
    if method not in _FORWARDED_METHODS:
        allowed = ", ".join(("CONNECT", *_FORWARDED_METHODS))
        raise _Reply(
            405, "bad_request", f"dsw egress: method {method} not forwarded", f"Allow: {allowed}"
        )
    if not target.lower().startswith("http://"):
        why = (
            "https:// goes through CONNECT"
            if target.lower().startswith("https://")
            else ("a proxy needs an absolute http://host/path target")
        )
        raise _Reply(400, "bad_request", f"dsw egress: {why}")
    rest = target[len("http://") :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    if "@" in authority:
        raise _Reply(400, "bad_request", "dsw egress: no user information in the target, please")
    host, port = _authority(authority, 80)
    return host, port, path if path.startswith("/") else "/" + path


def _forwarded_head(request: _Request, host: str, port: int, path: str) -> bytes:
    """The request in origin-form for the destination: its own Host, none of the proxy's
    headers, and `Connection: close` (one request per connection: nothing to parse after it)."""
    named = {
        token.strip().lower()
        for name, value in request.headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    authority = f"[{host}]" if ":" in host else host
    authority += "" if port == 80 else f":{port}"
    lines = [f"{request.method} {path} {request.version}", f"Host: {authority}"]
    for name, value in request.headers:
        lower = name.lower()
        if lower == "host" or lower in _DROPPED or (lower in named and lower not in _FRAMING):
            continue
        lines.append(f"{name}: {value}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _answer(stream: trio.SocketStream, reply: _Reply) -> None:
    body = (reply.message + "\n").encode()
    head = [f"HTTP/1.1 {reply.code} {HTTPStatus(reply.code).phrase}", *reply.headers]
    head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    head += ["Connection: close", "", ""]
    with trio.move_on_after(_ANSWER_TIMEOUT_S):
        try:
            await stream.send_all("\r\n".join(head).encode("latin-1") + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
