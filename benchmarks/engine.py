"""The floor: the Docker Engine's own container lifecycle, measured by a client of its own.

`RawEngine` is a deliberately small Engine API client (httpx over the Unix socket, a handful of
calls). It creates containers with exactly the body the worker sends
(`dsw.container_spec.container_config` with the worker's settings, so the hardening and limits are
identical), then attach (with stdin, before start, so nothing is missed) → start → the release
with the script (`dsw.container_spec.release`, as the worker writes it) → the output until the
container's streams end → wait → remove. It does not inspect or sample stats, as the worker may:
those are part of the worker's cost.

`prepare_warm` and `run_warm` are the same floor for a warm pool's container: created and started
beforehand with the pool's body (the type's waiting command), then, on the clock, the hand-over
the worker does (rename), an attach with stdin, the release with the script, the output until the
container exits, the exit code, the removal. No memory update: the bench's jobs ask for the
default limits, which the pool's containers already have.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from dsw.config import Settings
from dsw.container_output import RELEASED
from dsw.container_spec import POOL_NAME_PREFIX, JobLimits, container_config, release
from dsw.sandbox_types import SandboxType

_HEADER = struct.Struct(">BxxxI")


@dataclass(frozen=True)
class RawResult:
    """One raw lifecycle: its total and its phases in seconds, in order, up to the removal."""

    total_s: float
    phases_s: dict[str, float]
    exit_code: int
    stdout: bytes


class _Clock:
    """Seconds between marks, each named after what it ended."""

    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self._last
        self._last = now

    def result(self, exit_code: int, stdout: bytes) -> RawResult:
        return RawResult(self._last - self.start, self.phases, exit_code, stdout)


def _stdout_of(stream: bytes, released: bool = False) -> bytes:
    """The stdout frames of a multiplexed (non-TTY) output stream (with `released`, what
    follows the release marker)."""
    out, view = bytearray(), memoryview(stream)
    while len(view) >= _HEADER.size:
        kind, size = _HEADER.unpack(view[: _HEADER.size])
        if kind == 1:
            out += view[_HEADER.size : _HEADER.size + size]
        view = view[_HEADER.size + size :]
    if released:
        at = out.find(RELEASED)
        return bytes(out[at + len(RELEASED) :]) if at >= 0 else b""
    return bytes(out)


class RawEngine:
    """create → attach → start → release → output → wait → remove, nothing else."""

    def __init__(self, socket_path: str, settings: Settings) -> None:
        transport = httpx.AsyncHTTPTransport(uds=socket_path)
        self._http = httpx.AsyncClient(
            # Unversioned paths: the daemon's own API version, which the worker negotiates too.
            base_url="http://docker",
            transport=transport,
            timeout=httpx.Timeout(120),
        )
        self.settings = settings

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400 and response.status_code != 404:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response

    async def run(self, sandbox: SandboxType, script: str) -> RawResult:
        """create, attach, start, release, output, wait, remove."""
        job_id = str(uuid.uuid4())
        body = container_config(self.settings, sandbox, JobLimits.defaults(self.settings), job_id)
        clock = _Clock()
        created = await self._call(
            "POST", "/containers/create", params={"name": f"sandbox-job-{job_id}"}, json=body
        )
        cid = created.json()["Id"]
        clock.mark("create")
        try:
            output, waited = await self._release_and_run(cid, sandbox, script, clock, start=True)
        finally:
            with trio.move_on_after(30, shield=True):
                await self._remove(cid)
        clock.mark("remove")
        return clock.result(waited, _stdout_of(output, released=True))

    async def _release_and_run(
        self, cid: str, sandbox: SandboxType, script: str, clock: _Clock, start: bool
    ) -> tuple[bytes, int]:
        """Attach with stdin, start (unless it runs), release with the script, read the output
        until the streams end, wait for the exit code: the output and the exit code."""
        attach = await self._http.send(
            self._http.build_request(
                "POST",
                f"/containers/{cid}/attach",
                params={"stream": 1, "stdin": 1, "stdout": 1, "stderr": 1},
                headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            ),
            stream=True,
        )
        try:
            stream = attach.extensions.get("network_stream")
            if attach.status_code != 101 or stream is None:
                raise RuntimeError(f"attach with stdin: {attach.status_code}")
            clock.mark("attach")
            if start:
                await self._call("POST", f"/containers/{cid}/start")
                clock.mark("start")
            await stream.write(release({sandbox.script_name: script}))
            clock.mark("release")
            output = bytearray()
            while chunk := await stream.read(65536):
                output += chunk
            clock.mark("output")
        finally:
            await attach.aclose()
        waited = await self._call("POST", f"/containers/{cid}/wait")
        clock.mark("wait" if start else "exit_code")
        return bytes(output), int(waited.json()["StatusCode"])

    async def prepare_warm(self, sandbox: SandboxType) -> str:
        """Create and start a container as a warm pool does (off the clock); its id."""
        body = container_config(self.settings, sandbox, JobLimits.defaults(self.settings), "")
        name = f"{POOL_NAME_PREFIX}{sandbox.name}-{uuid.uuid4().hex[:12]}"
        cid = str(
            (
                await self._call("POST", "/containers/create", params={"name": name}, json=body)
            ).json()["Id"]
        )
        try:
            await self._call("POST", f"/containers/{cid}/start")
        except BaseException:
            with trio.move_on_after(30, shield=True):
                await self._remove(cid)
            raise
        return cid

    async def run_warm(self, sandbox: SandboxType, script: str, cid: str) -> RawResult:
        """Hand a prepared container a job and run it: rename, attach with stdin, release with
        the script, output, exit code, removal."""
        clock = _Clock()
        try:
            await self._call(
                "POST", f"/containers/{cid}/rename", params={"name": f"sandbox-job-{uuid.uuid4()}"}
            )
            clock.mark("rename")
            output, waited = await self._release_and_run(cid, sandbox, script, clock, start=False)
        finally:
            with trio.move_on_after(30, shield=True):
                await self._remove(cid)
        clock.mark("remove")
        return clock.result(waited, _stdout_of(output, released=True))

    async def _remove(self, cid: str) -> None:
        await self._call("DELETE", f"/containers/{cid}", params={"force": "true", "v": "true"})

    async def containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The running containers that carry all of `labels`."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        found = await self._call("GET", "/containers/json", params={"filters": filters})
        return list(found.json())

    async def stats_once(self, cid: str) -> dict[str, Any]:
        """One resource sample of a container, now (`docker stats --no-stream`)."""
        params = {"stream": "false", "one-shot": "true"}
        return dict((await self._call("GET", f"/containers/{cid}/stats", params=params)).json())

    async def machine(self, images: list[str]) -> dict[str, Any]:
        """What the daemon says about this machine; raises if an image is missing."""
        info = (await self._call("GET", "/info")).json()
        version = (await self._call("GET", "/version")).json()
        for image in images:
            if (await self._call("GET", f"/images/{image}/json")).status_code == 404:
                raise SystemExit(f"bench: image {image} is missing; run `just sandboxes`")
        return {
            "cpus": info.get("NCPU"),
            "memory_gib": round(info.get("MemTotal", 0) / 2**30, 1),
            "docker": version.get("Version"),
            "api": version.get("ApiVersion"),
            "cgroup": info.get("CgroupVersion"),
            "storage_driver": info.get("Driver"),
            "kernel": info.get("KernelVersion"),
            "root_dir": info.get("DockerRootDir"),
        }

    async def remove_labelled(self, label: str, prefix: str) -> int:
        """Remove every container whose `label` starts with `prefix` (cleanup after a run)."""
        found = await self._call(
            "GET", "/containers/json", params={"all": "true", "filters": f'{{"label":["{label}"]}}'}
        )
        ours = [
            c for c in found.json() if (c.get("Labels") or {}).get(label, "").startswith(prefix)
        ]
        for container in ours:
            await self._remove(container["Id"])
        return len(ours)
