"""`docker run --rm` of a sandbox image with the worker's settings as CLI flags.

`cli_args` turns the worker's create body (`dsw.container_spec.container_config`) into flags, and
refuses a HostConfig key it does not translate, so the comparison stays like for like when the
body grows; the script comes in through a read-only bind mount, as in the original worker, and
the entrypoint runs the type's command on it (`dsw-entry CMD...`, no release).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path

import trio

from dsw.config import Settings
from dsw.container_spec import SCRIPT_DIR, JobLimits, container_config
from dsw.sandbox_types import SandboxType

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
# HostConfig keys cli_args turns into flags (Privileged false, RestartPolicy no: the CLI's
# defaults).
_CLI_TRANSLATED = {
    "NetworkMode",
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
    "ShmSize",
    "Runtime",
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
        if option.startswith("seccomp="):
            # The CLI takes a profile's path (and sends its content inline, as the worker does).
            option = f"seccomp={Path(settings.sandbox_dir) / sandbox.seccomp}"
        args += ["--security-opt", option]
    args += ["--init", "--ipc", host["IpcMode"], "--shm-size", str(host["ShmSize"])]
    if "Runtime" in host:
        args += ["--runtime", host["Runtime"]]
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
    return [*args, body["Image"], *sandbox.command]


async def cli_run(settings: Settings, sandbox: SandboxType, script: str) -> tuple[float, bytes]:
    """Seconds of one `docker run --rm` of `script`, and its stdout (RuntimeError with the CLI's
    stderr if it fails). On cancellation the CLI is
    killed (trio's run_process), and `docker run --rm` leaves the container to the daemon's own
    removal; the bench's final cleanup removes what is left by label."""
    with tempfile.TemporaryDirectory(prefix="dsw-bench-") as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / sandbox.script_name
        path.write_text(script, encoding="utf-8")
        path.chmod(0o644)
        args = cli_args(settings, sandbox, folder)
        t0 = time.perf_counter()
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
        seconds = time.perf_counter() - t0
        if done.returncode not in (0, None):
            error = done.stderr.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"docker run exited {done.returncode}: {error}")
        return seconds, done.stdout
