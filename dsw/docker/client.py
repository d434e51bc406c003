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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from dsw import metrics
from dsw.config import Settings
from dsw.errors import Conflict, DockerError, DockerUnavailable, NotFound

# The newest API version this client was written against; older daemons are spoken to in their own.
MAX_API_VERSION = (1, 45)
MIN_API_VERSION = (1, 40)

Json = dict[str, Any]


def _version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _transport_for(settings: Settings) -> tuple[str, httpx.AsyncBaseTransport]:
    """The base URL and transport for `docker_host`."""
    host = settings.docker_host
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=32)
    if host.startswith("unix:"):
        path = "/" + host.removeprefix("unix:").lstrip("/")
        return "http://docker", httpx.AsyncHTTPTransport(uds=path, limits=limits)
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


@asynccontextmanager
async def open_docker(settings: Settings) -> AsyncIterator[DockerClient]:
    """A client whose API version is negotiated with the daemon. Raises DockerUnavailable."""
    base_url, transport = _transport_for(settings)
    timeout = httpx.Timeout(settings.docker_timeout_s)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout) as http:
        client = DockerClient(http, settings.docker_timeout_s)
        await client.negotiate()
        yield client


class DockerClient:
    """Engine API calls. Every method raises DockerError subclasses, never httpx's errors."""

    def __init__(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        self._http = http
        self._prefix = "/v{}.{}".format(*MIN_API_VERSION)
        # Long polls: bounded connect, unbounded read; the caller's cancel scope is the deadline.
        self._long_poll = httpx.Timeout(None, connect=timeout_s)

    @property
    def api_version(self) -> str:
        return self._prefix.removeprefix("/v")

    async def negotiate(self) -> None:
        info = await self._json("GET", "/version", versioned=False)
        server = _version_tuple(info.get("ApiVersion", "1.40"))
        chosen = min(server, MAX_API_VERSION)
        self._prefix = "/v{}.{}".format(*chosen)

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
        endpoint = _endpoint(method, path)
        url = self._url(path, versioned)
        try:
            try:
                response = await self._http.request(method, url, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled keep-alive connection the daemon had already closed (seen over TLS):
                # a call that may be repeated gets one more try on a fresh connection.
                if not (idempotent or method in ("GET", "HEAD", "DELETE")):
                    raise
                response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise _unavailable(endpoint, exc) from exc
        if response.status_code >= 400:
            raise _error(endpoint, response.status_code, response.content)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        return response.json() if response.content else None

    @asynccontextmanager
    async def _stream(self, method: str, path: str, **params: Any) -> AsyncIterator[httpx.Response]:
        endpoint = _endpoint(method, path)
        request = self._http.build_request(
            method, self._url(path, True), params=params, timeout=self._long_poll
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unavailable(endpoint, exc) from exc
        try:
            if response.status_code >= 400:
                raise _error(endpoint, response.status_code, await response.aread())
            yield response
        except httpx.TransportError as exc:
            raise _unavailable(endpoint, exc) from exc
        finally:
            await response.aclose()

    # -- system ----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._request("GET", "/_ping")

    async def info(self) -> Json:
        result: Json = await self._json("GET", "/info")
        return result

    # -- images ----------------------------------------------------------------------------

    async def image_inspect(self, name: str) -> Json:
        result: Json = await self._json("GET", f"/images/{quote(name, safe='')}/json")
        return result

    async def image_pull(self, name: str) -> None:
        """Pull `name` (repo:tag). Raises DockerError when the pull reports an error."""
        repo, tag = name.rsplit(":", 1) if ":" in name.split("/")[-1] else (name, "latest")
        async with self._stream("POST", "/images/create", fromImage=repo, tag=tag) as response:
            async for line in response.aiter_lines():
                if line.strip() and "error" in (event := json.loads(line)):
                    raise DockerError("POST /images/create", 200, str(event["error"]))

    # -- containers ------------------------------------------------------------------------

    async def container_create(self, name: str, config: Json) -> tuple[str, list[str]]:
        """Create a container; returns its id and the daemon's warnings."""
        result = await self._json(
            "POST", f"/containers/create?name={quote(name, safe='')}", json=config
        )
        return result["Id"], list(result.get("Warnings") or [])

    async def container_put_archive(self, container: str, path: str, tar: bytes) -> None:
        await self._request(
            "PUT",
            f"/containers/{container}/archive",
            idempotent=True,
            params={"path": path},
            content=tar,
            headers={"Content-Type": "application/x-tar"},
        )

    async def container_start(self, container: str) -> None:
        await self._request("POST", f"/containers/{container}/start")

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
    async def open_container_attach(self, container: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """The multiplexed stdout/stderr stream, attached before start (as `docker run` does, so
        nothing a short-lived container writes is missed); it ends when the container does."""
        async with self._stream(
            "POST", f"/containers/{container}/attach", stream=1, stdout=1, stderr=1
        ) as response:
            yield response.aiter_raw()

    @asynccontextmanager
    async def open_container_stats(self, container: str) -> AsyncIterator[AsyncIterator[Json]]:
        """Streamed resource samples (about one a second) while the container runs."""
        async with self._stream("GET", f"/containers/{container}/stats", stream=1) as response:

            async def samples() -> AsyncIterator[Json]:
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)

            yield samples()

    async def container_kill(self, container: str, signal: str = "KILL") -> None:
        await self._request("POST", f"/containers/{container}/kill", params={"signal": signal})

    async def container_stop(self, container: str, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; returns once the container has stopped."""
        await self._request(
            "POST",
            f"/containers/{container}/stop",
            params={"t": max(int(grace_s), 0)},
            timeout=self._long_poll,
        )

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


def _endpoint(method: str, path: str) -> str:
    """ "POST /containers/{id}/start": the endpoint without ids, for errors and metric labels."""
    path = path.split("?")[0]
    path = re.sub(r"^/(containers|images)/(?!json$|create$)[^/]+", r"/\1/{id}", path)
    return f"{method} {path}"


def _unavailable(endpoint: str, exc: httpx.TransportError) -> DockerUnavailable:
    metrics.docker_errors.labels(endpoint=endpoint).inc()
    return DockerUnavailable(endpoint, f"{type(exc).__name__}: {exc}")


def _error(endpoint: str, status: int, body: bytes) -> DockerError:
    metrics.docker_errors.labels(endpoint=endpoint).inc()
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:500].decode("utf-8", "replace")
    kind = {404: NotFound, 409: Conflict}.get(status, DockerError)
    return kind(endpoint, status, message or f"HTTP {status}")
