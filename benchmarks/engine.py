"""The floor: the Docker Engine's own container lifecycle, measured by a client of its own.

`RawEngine` is a deliberately small Engine API client (httpx over the Unix socket, six calls). It
creates containers with exactly the body the worker sends (`dsw.container_spec.container_config`
with the worker's settings, so the hardening and limits are identical), uploads the script into
/tmp/script as the worker does, then attach → start → wait → read the output → remove (force, with
volumes). Containers have no log driver (the worker's settings), so output comes through the attach
made before start, as for the worker and `docker run`. It does not sample stats or inspect, as the
worker does: those are part of the worker's cost.

`cli_run` is the `docker run --rm` of the same image with the same settings as CLI flags (the
script comes in through a read-only bind mount, as in the original worker).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from dsw.config import Settings
from dsw.container_spec import SCRIPT_DIR, JobLimits, container_config
from dsw.sandbox_types import SandboxType

_HEADER = struct.Struct(">BxxxI")


@dataclass(frozen=True)
class RawResult:
    """One raw lifecycle: its phases in seconds, from create to removal."""

    total_s: float
    create_s: float  # create + archive upload
    attach_s: float
    start_s: float
    wait_s: float
    output_s: float  # the rest of the attach stream, after the exit
    remove_s: float
    exit_code: int
    stdout: bytes


def _tar(name: str, text: str) -> bytes:
    data = text.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _stdout_of(stream: bytes) -> bytes:
    """The stdout frames of a multiplexed (non-TTY) output stream."""
    out, view = bytearray(), memoryview(stream)
    while len(view) >= _HEADER.size:
        kind, size = _HEADER.unpack(view[: _HEADER.size])
        if kind == 1:
            out += view[_HEADER.size : _HEADER.size + size]
        view = view[_HEADER.size + size :]
    return bytes(out)


class RawEngine:
    """create → upload → attach → start → wait → output → remove, nothing else."""

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
        job_id = str(uuid.uuid4())
        body = container_config(self.settings, sandbox, JobLimits.defaults(self.settings), job_id)
        t0 = time.perf_counter()
        created = await self._call(
            "POST", "/containers/create", params={"name": f"sandbox-job-{job_id}"}, json=body
        )
        cid = created.json()["Id"]
        try:
            await self._call(
                "PUT",
                f"/containers/{cid}/archive",
                params={"path": SCRIPT_DIR},
                content=_tar(sandbox.script_name, script),
                headers={"Content-Type": "application/x-tar"},
            )
            t1 = time.perf_counter()
            attach = await self._http.send(
                self._http.build_request(
                    "POST",
                    f"/containers/{cid}/attach",
                    params={"stream": 1, "stdout": 1, "stderr": 1},
                ),
                stream=True,
            )
            try:
                t1a = time.perf_counter()
                await self._call("POST", f"/containers/{cid}/start")
                t2 = time.perf_counter()
                waited = await self._call("POST", f"/containers/{cid}/wait")
                t3 = time.perf_counter()
                output = await attach.aread()
                t4 = time.perf_counter()
            finally:
                await attach.aclose()
        finally:
            with trio.CancelScope(shield=True):
                await self._call(
                    "DELETE", f"/containers/{cid}", params={"force": "true", "v": "true"}
                )
        t5 = time.perf_counter()
        return RawResult(
            total_s=t5 - t0,
            create_s=t1 - t0,
            attach_s=t1a - t1,
            start_s=t2 - t1a,
            wait_s=t3 - t2,
            output_s=t4 - t3,
            remove_s=t5 - t4,
            exit_code=int(waited.json()["StatusCode"]),
            stdout=_stdout_of(output),
        )

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
            await self._call(
                "DELETE", f"/containers/{container['Id']}", params={"force": "true", "v": "true"}
            )
        return len(ours)


_LIMIT_FLAGS = {
    "Memory": "--memory",
    "MemorySwap": "--memory-swap",
    "MemoryReservation": "--memory-reservation",
    "CpuPeriod": "--cpu-period",
    "CpuQuota": "--cpu-quota",
    "CpuShares": "--cpu-shares",
    "PidsLimit": "--pids-limit",
    "BlkioWeight": "--blkio-weight",
}
# HostConfig keys cli_args turns into flags (Mounts: a bind mount replaces the volume; Privileged
# false, RestartPolicy no: the CLI's defaults).
_CLI_TRANSLATED = {
    "NetworkMode",
    "Mounts",
    "Tmpfs",
    "ReadonlyRootfs",
    "CapDrop",
    "SecurityOpt",
    "Privileged",
    "Init",
    "IpcMode",
    "RestartPolicy",
    "LogConfig",
    "Ulimits",
    *_LIMIT_FLAGS,
}


def cli_args(settings: Settings, sandbox: SandboxType, script_dir: str) -> list[str]:
    """`docker run --rm` flags equivalent to the worker's create body (bind mount for the files)."""
    body = container_config(settings, sandbox, JobLimits.defaults(settings), str(uuid.uuid4()))
    host = body["HostConfig"]
    if unknown := set(host) - _CLI_TRANSLATED:
        raise RuntimeError(f"cli_args does not translate HostConfig {sorted(unknown)}; add them")
    args = ["docker", "run", "--rm", "--entrypoint", body["Entrypoint"][0]]
    args += ["--user", body["User"], "--workdir", body["WorkingDir"]]
    for variable in body["Env"]:
        args += ["--env", variable]
    for key, value in body["Labels"].items():
        args += ["--label", f"{key}={value}"]
    args += ["--network", host["NetworkMode"], "--read-only", "--cap-drop", "ALL"]
    for option in host["SecurityOpt"]:
        args += ["--security-opt", option]
    args += ["--init", "--ipc", host["IpcMode"]]
    args += ["--log-driver", host["LogConfig"]["Type"]]
    for key, value in host["LogConfig"]["Config"].items():
        args += ["--log-opt", f"{key}={value}"]
    for path, options in host["Tmpfs"].items():
        args += ["--tmpfs", f"{path}:{options}"]
    for limit in host["Ulimits"]:
        args += ["--ulimit", f"{limit['Name']}={limit['Soft']}:{limit['Hard']}"]
    for key, flag in _LIMIT_FLAGS.items():
        if key in host:
            args += [flag, str(host[key])]
    args += ["--mount", f"type=bind,src={script_dir},dst={SCRIPT_DIR},readonly"]
    return [*args, body["Image"], *body["Cmd"]]


async def cli_run(settings: Settings, sandbox: SandboxType, script: str) -> tuple[float, bytes]:
    """Seconds of one `docker run --rm` of `script`, and its stdout."""
    with tempfile.TemporaryDirectory(prefix="dsw-bench-") as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / sandbox.script_name
        path.write_text(script, encoding="utf-8")
        path.chmod(0o644)
        args = cli_args(settings, sandbox, folder)
        t0 = time.perf_counter()
        done = await trio.run_process(args, capture_stdout=True, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0, done.stdout
