"""One method per Docker Engine API endpoint the worker uses, with Docker's errors mapped to ours.

The transport is httpx: a Unix socket (`unix:///path` or the original's `unix:/path`), plain TCP, or
TCP with TLS client certificates. The API version is negotiated from `/version`. Short calls carry
`docker_timeout_s`; long-poll calls (wait, logs with follow, stats) carry no read timeout, so the
caller's trio cancel scope decides how long they may take.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpcore
import httpx
import trio

from dsw import metrics
from dsw.config import Settings, unix_socket_path
from dsw.errors import Conflict, DockerError, DockerUnavailable, NotFound

# The newest API version this client was written against; older daemons are spoken to in their own.
MAX_API_VERSION = (1, 45)
MIN_API_VERSION = (1, 40)

Json = dict[str, Any]


def _version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def api_version_for(server_api_version: str) -> tuple[int, int]:
    """The version to speak to a daemon that speaks `server_api_version`: its own, up to the
    newest this client knows; DockerError if it is older than the oldest this client can use."""
    try:
        server = _version_tuple(server_api_version)
    except ValueError:
        message = f"unreadable ApiVersion {server_api_version!r}"
        raise DockerError("GET /version", None, message) from None
    if server < MIN_API_VERSION:
        oldest = "{}.{}".format(*MIN_API_VERSION)
        message = f"the daemon speaks API {server_api_version}; dsw needs {oldest} or newer"
        raise DockerError("GET /version", None, message)
    return min(server, MAX_API_VERSION)


def transport_for(settings: Settings) -> tuple[str, httpx.AsyncBaseTransport]:
    """The base URL and transport for `docker_host`."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
    socket_path = unix_socket_path(settings.docker_host)
    if socket_path is not None:
        return "http://docker", httpx.AsyncHTTPTransport(uds=socket_path, limits=limits)
    host = settings.docker_host
    address = host.split("://", 1)[1]
    cert_dir = Path(settings.docker_cert_path) if settings.docker_cert_path else None
    if not (settings.docker_tls_verify or cert_dir or host.startswith("https://")):
        return f"http://{address}", httpx.AsyncHTTPTransport(limits=limits)
    context = ssl.create_default_context(
        cafile=str(cert_dir / "ca.pem") if cert_dir and settings.docker_tls_verify else None
    )
    if not settings.docker_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_dir and (cert_dir / "cert.pem").exists():
        context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    return f"https://{address}", httpx.AsyncHTTPTransport(verify=context, limits=limits)


@contextmanager
def _translated(endpoint: str) -> Iterator[None]:
    """httpx's errors (and unreadable answers) as DockerError: the one mapping of this client,
    around every request and every streamed read."""
    try:
        yield
    except (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        # httpcore's own errors come from an upgraded connection's stream, which httpx leaves bare.
        metrics.docker_errors.labels(endpoint=endpoint).inc()
        raise DockerUnavailable(endpoint, f"{type(exc).__name__}: {exc}") from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        metrics.docker_errors.labels(endpoint=endpoint).inc()
        raise DockerError(endpoint, None, f"{type(exc).__name__}: {exc}") from exc
    except ValueError as exc:  # JSON that does not decode
        metrics.docker_errors.labels(endpoint=endpoint).inc()
        raise DockerError(endpoint, None, f"unreadable answer: {exc}") from exc


@asynccontextmanager
async def open_docker(settings: Settings) -> AsyncIterator[DockerClient]:
    """A client whose API version is negotiated with the daemon. Raises DockerUnavailable."""
    base_url, transport = transport_for(settings)
    timeout = httpx.Timeout(settings.docker_timeout_s)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout) as http:
        client = DockerClient(http, settings.docker_timeout_s)
        await client.negotiate()
        yield client


class Attached:
    """A container's stdin (write) and multiplexed output (read) on one upgraded connection."""

    def __init__(self, endpoint: str, stream: Any) -> None:
        self._endpoint = endpoint
        self._stream = stream

    async def send(self, data: bytes) -> None:
        with _translated(self._endpoint):
            await self._stream.write(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The output as it comes, until the container's streams end."""
        while True:
            with _translated(self._endpoint):
                chunk = await self._stream.read(65536)
            if not chunk:
                return
            yield chunk


class DockerClient:
    """Engine API calls. Every method raises DockerError subclasses, never httpx's errors."""

    def __init__(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        self._http = http
        self._prefix = "/v{}.{}".format(*MIN_API_VERSION)
        self._timeout_s = timeout_s
        # Long polls: bounded connect, unbounded read; the caller's cancel scope is the deadline.
        self._long_poll = httpx.Timeout(None, connect=timeout_s)

    @property
    def api_version(self) -> str:
        return self._prefix.removeprefix("/v")

    async def negotiate(self) -> None:
        info = await self._json("GET", "/version", versioned=False)
        self._prefix = "/v{}.{}".format(*api_version_for(str(info.get("ApiVersion", "1.40"))))

    # -- plumbing --------------------------------------------------------------------------

    def _url(self, path: str, versioned: bool) -> str:
        return self._prefix + path if versioned else path

    async def _request(
        self,
        method: str,
        path: str,
        *,
        versioned: bool = True,
        idempotent: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        endpoint = endpoint_of(method, path)
        url = self._url(path, versioned)
        with _translated(endpoint):
            try:
                response = await self._http.request(method, url, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled keep-alive connection the daemon had already closed (seen over TLS):
                # a call that may be repeated gets one more try on a fresh connection.
                if not (idempotent or method in ("GET", "HEAD", "DELETE")):
                    raise
                response = await self._http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise _error(endpoint, response.status_code, response.content)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        with _translated(endpoint_of(method, path)):
            return response.json() if response.content else None

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, **params: Any
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The answer's body, read as it comes; errors while reading are translated too."""
        endpoint = endpoint_of(method, path)
        with _translated(endpoint):
            request = self._http.build_request(
                method, self._url(path, True), params=params, timeout=self._long_poll
            )
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with _translated(endpoint):
                    body = await response.aread()
                raise _error(endpoint, response.status_code, body)

            async def chunks() -> AsyncIterator[bytes]:
                raw = response.aiter_raw()
                while True:
                    with _translated(endpoint):
                        try:
                            chunk = await anext(raw)
                        except StopAsyncIteration:
                            return
                    yield chunk

            yield chunks()
        finally:
            with _translated(endpoint):
                await response.aclose()

    @asynccontextmanager
    async def _open_json_lines(
        self, method: str, path: str, **params: Any
    ) -> AsyncIterator[AsyncIterator[Json]]:
        """A streamed answer of one JSON object per line."""
        endpoint = endpoint_of(method, path)
        async with self._stream(method, path, **params) as chunks:

            async def objects() -> AsyncIterator[Json]:
                pending = b""
                async for chunk in chunks:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            with _translated(endpoint):
                                decoded = json.loads(line)
                            yield decoded

            yield objects()

    # -- system ----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._request("GET", "/_ping")

    async def system_info(self) -> Json:
        """`GET /info`: the daemon's runtimes, security options, cgroup version, ..."""
        result: Json = await self._json("GET", "/info")
        return result

    # -- images ----------------------------------------------------------------------------

    async def image_inspect(self, name: str) -> Json:
        result: Json = await self._json("GET", f"/images/{quote(name, safe='')}/json")
        return result

    async def image_pull(self, name: str) -> None:
        """Pull `name` (repo:tag). Raises DockerError when the pull reports an error."""
        repo, tag = name.rsplit(":", 1) if ":" in name.split("/")[-1] else (name, "latest")
        async with self._open_json_lines(
            "POST", "/images/create", fromImage=repo, tag=tag
        ) as events:
            async for event in events:
                if "error" in event:
                    raise DockerError("POST /images/create", 200, str(event["error"]))

    # -- containers ------------------------------------------------------------------------

    async def container_create(self, name: str, config: Json) -> tuple[str, list[str]]:
        """Create a container; returns its id and the daemon's warnings. Never cut off half way:
        the daemon would finish a create whose answer nobody waits for, and leave a container
        its caller cannot know of; a cancellation takes effect once the answer is in (within the
        request timeout)."""
        with trio.CancelScope(shield=True) as creating:
            creating.deadline = trio.current_time() + self._timeout_s + 1
            result = await self._json(
                "POST", f"/containers/create?name={quote(name, safe='')}", json=config
            )
        if creating.cancelled_caught:
            raise DockerUnavailable("POST /containers/create", "no answer in time")
        await trio.lowlevel.checkpoint_if_cancelled()
        return result["Id"], list(result.get("Warnings") or [])

    async def container_start(self, container: str) -> None:
        await self._request("POST", f"/containers/{container}/start")

    async def container_rename(self, container: str, name: str) -> None:
        """Conflict if `name` is taken."""
        await self._request(
            "POST", f"/containers/{container}/rename", params={"name": name}, idempotent=True
        )

    async def container_update(self, container: str, resources: Json) -> None:
        """Change a container's resource limits (Memory, MemorySwap, ...), running or not."""
        await self._request("POST", f"/containers/{container}/update", json=resources)

    async def container_wait(self, container: str, condition: str = "not-running") -> int:
        """Wait until the container is not running (or `condition`: "removed", "next-exit");
        returns its exit code. No timeout of its own."""
        result = await self._json(
            "POST",
            f"/containers/{container}/wait",
            params={"condition": condition},
            timeout=self._long_poll,
            idempotent=True,
        )
        return int(result["StatusCode"])

    @asynccontextmanager
    async def open_container_attach_stdin(self, container: str) -> AsyncIterator[Attached]:
        """Attached to a container's stdin, stdout and stderr over an upgraded (hijacked)
        connection: what is written reaches its stdin, the output comes multiplexed, until the
        container's streams end. Before its start, as `docker run` does, nothing a short-lived
        container writes is missed."""
        endpoint = "POST /containers/{id}/attach"
        path = f"/containers/{container}/attach"
        with _translated(endpoint):
            request = self._http.build_request(
                "POST",
                self._url(path, True),
                params={"stream": 1, "stdin": 1, "stdout": 1, "stderr": 1},
                headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                timeout=self._long_poll,
            )
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with _translated(endpoint):
                    body = await response.aread()
                raise _error(endpoint, response.status_code, body)
            stream = response.extensions.get("network_stream")
            if response.status_code != 101 or stream is None:
                raise DockerError(endpoint, response.status_code, "the daemon did not upgrade")
            yield Attached(endpoint, stream)
        finally:
            with _translated(endpoint):
                await response.aclose()

    async def container_kill_events(self, container: str, since: float, until: float) -> list[Json]:
        """The daemon's `kill` events of a container between two times (Unix seconds); the
        answer ends at `until`."""
        filters = {"container": [container], "type": ["container"], "event": ["kill"]}
        params = {"since": f"{since:.3f}", "until": f"{until:.3f}", "filters": json.dumps(filters)}
        async with self._open_json_lines("GET", "/events", **params) as events:
            return [event async for event in events]

    async def container_stats_once(self, container: str) -> Json:
        """One resource sample, now (`one-shot`: without waiting a second for a second sample)."""
        result: Json = await self._json(
            "GET",
            f"/containers/{container}/stats",
            params={"stream": "false", "one-shot": "true"},
        )
        return result

    async def container_kill(self, container: str, signal: str = "KILL") -> None:
        await self._request("POST", f"/containers/{container}/kill", params={"signal": signal})

    async def container_stop(self, container: str, grace_s: float) -> bool:
        """SIGTERM, then SIGKILL after `grace_s`; returns once the container has stopped: True if
        it stopped it, False if the container was no longer running (304)."""
        response = await self._request(
            "POST",
            f"/containers/{container}/stop",
            params={"t": max(int(grace_s), 0)},
            timeout=self._long_poll,
        )
        return response.status_code != 304

    async def container_inspect(self, container: str) -> Json:
        result: Json = await self._json("GET", f"/containers/{container}/json")
        return result

    async def container_remove(self, container: str) -> None:
        """Force-remove the container and its anonymous volumes; a missing one is not an error."""
        try:
            await self._request(
                "DELETE", f"/containers/{container}", params={"force": "true", "v": "true"}
            )
        except NotFound:
            pass

    # -- networks --------------------------------------------------------------------------

    async def network_create(self, config: Json) -> str:
        """Create a network; its id. Conflict if the name is taken."""
        result = await self._json("POST", "/networks/create", json=config)
        return str(result["Id"])

    async def network_inspect(self, network: str) -> Json:
        result: Json = await self._json("GET", f"/networks/{quote(network, safe='')}")
        return result

    async def network_remove(self, network: str) -> None:
        """Remove a network; a missing one is not an error."""
        try:
            await self._request("DELETE", f"/networks/{quote(network, safe='')}")
        except NotFound:
            pass

    async def network_connect(self, network: str, container: str, address: str = "") -> None:
        """Join `container` to `network`, at `address` if given."""
        endpoint: Json = {"IPAMConfig": {"IPv4Address": address}} if address else {}
        await self._request(
            "POST",
            f"/networks/{quote(network, safe='')}/connect",
            json={"Container": container, "EndpointConfig": endpoint},
        )

    async def network_disconnect(self, network: str, container: str) -> None:
        """Leave `network`; a missing network or container is not an error."""
        try:
            await self._request(
                "POST",
                f"/networks/{quote(network, safe='')}/disconnect",
                json={"Container": container, "Force": True},
            )
        except NotFound:
            pass

    async def networks_list(self, labels: list[str]) -> list[Json]:
        result: list[Json] = await self._json(
            "GET", "/networks", params={"filters": json.dumps({"label": labels})}
        )
        return result

    async def containers_list(self, labels: list[str] | None = None, name: str = "") -> list[Json]:
        filters: dict[str, list[str]] = {}
        if labels:
            filters["label"] = labels
        if name:
            filters["name"] = [name]
        result: list[Json] = await self._json(
            "GET", "/containers/json", params={"all": "true", "filters": json.dumps(filters)}
        )
        return result


def endpoint_of(method: str, path: str) -> str:
    """ "POST /containers/{id}/start": the endpoint without ids, for errors and metric labels."""
    path = path.split("?")[0]
    path = re.sub(
        r"^/(containers|images|networks|volumes)/(?!json$|create$)[^/]+", r"/\1/{id}", path
    )
    return f"{method} {path}"


def _error(endpoint: str, status: int, body: bytes) -> DockerError:
    metrics.docker_errors.labels(endpoint=endpoint).inc()
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:500].decode("utf-8", "replace")
    kind = {404: NotFound, 409: Conflict}.get(status, DockerError)
    return kind(endpoint, status, message or f"HTTP {status}")
