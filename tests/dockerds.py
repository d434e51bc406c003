"""A private Docker daemon for tests that stop and restart it (the machine's own daemon stays up).

`private_dockerd()` starts a second `dockerd` (Debian's docker.io) beside the machine's, sharing
nothing with it that either could trip over:

    unshare --net -- dockerd
        --data-root <base>/data  --exec-root <base>/exec  --pidfile <base>/docker.pid
        --host unix://<base>/docker.sock  --config-file <base>/daemon.json   ({}: no /etc/docker)
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false

Its managed containerd lives under the exec root (socket, state, pid file, runc root) and the data
root (content, snapshots), so the two daemons never share a containerd. It runs in a network
namespace of its own because `--bridge=none` makes dockerd *delete* any interface named docker0
it can see (moby's `removeDefaultBridgeInterface`, "the --bridge=none use case"): started in the
host's namespace it would take down the machine's docker0. With its own namespace, the flags above
and NetworkMode none in the sandboxes it touches no host interface, route or iptables rule. The
Unix sockets are paths, reachable from any network namespace. What the two daemons still share is
harmless: the cgroup hierarchies (containers under /docker/<id>; ids never collide), the shim
sockets' directory /run/containerd/s (named by a hash of each containerd's own address) and the
read-only /etc/docker/key.json.

`<base>` is a short directory under /tmp (socket paths must stay under 108 bytes). The images
come from the machine's daemon (`docker save | docker load`). `Dockerd.stop()` is SIGTERM and a wait
(dockerd stops its containers and its containerd); `start()` again reuses the data root. At exit
every container and volume is removed through the API, the daemon stopped (SIGKILL past a
deadline, then whatever of its containerd, shims and containers is left), anything still mounted
under `<base>` detached, and `<base>` removed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

HOST_DOCKER = "unix:///var/run/docker.sock"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0  # dockerd gives running containers 10 s, then its own 15 s shutdown timeout
_MNT_DETACH = 2


def dockerd_argv(base: Path) -> list[str]:
    return [
        "unshare",
        "--net",
        "--",
        "dockerd",
        f"--data-root={base / 'data'}",
        f"--exec-root={base / 'exec'}",
        f"--pidfile={base / 'docker.pid'}",
        f"--host=unix://{base / 'docker.sock'}",
        f"--config-file={base / 'daemon.json'}",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--ip-forward=false",
        "--log-level=info",
    ]


def dockerd_problem() -> str | None:
    """Why a private dockerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private dockerd needs root (it mounts, and creates cgroups and namespaces)"
    for tool in ("dockerd", "unshare", "docker", "containerd", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install docker.io)"
    return None


@dataclass
class Dockerd:
    base: Path
    process: trio.Process | None = None
    starts: int = 0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.base / "dockerd.log"

    @property
    def socket(self) -> Path:
        return self.base / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def http(self, timeout_s: float = 10) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(base_url="http://docker", transport=transport, timeout=timeout_s)

    async def start(self) -> None:
        """Start dockerd on this data root and wait until it answers /_ping."""
        assert not self.running, "dockerd is running already"
        self._drop_stale_pidfiles()
        with self.log_path.open("ab") as log:
            log.write(f"---- start {self.starts + 1}\n".encode())
            log.flush()
            self.process = await trio.lowlevel.open_process(
                dockerd_argv(self.base), stdout=log, stderr=subprocess.STDOUT, cwd=self.base
            )
        self.starts += 1
        with trio.fail_after(START_TIMEOUT_S):
            async with self.http(timeout_s=2) as http:
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(
                            f"dockerd exited with {self.process.returncode} at start-up: "
                            f"{self.log_tail()}"
                        )
                    try:
                        if (await http.get("/_ping")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (it stops its containers and containerd); SIGKILL past `timeout_s`.
        Returns dockerd's exit status (None if it was not running)."""
        process = self.process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            return await process.wait()
        process.kill()
        status = await process.wait()
        self.kill_leftovers()
        return status

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _drop_stale_pidfiles(self) -> None:
        """A pid file naming a process that is not ours would make dockerd adopt (and later
        signal) that process as its containerd, or refuse to start."""
        for pidfile in (self.base / "docker.pid", self.base / "exec/containerd/containerd.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid not in self._our_pids():
                pidfile.unlink(missing_ok=True)

    def _our_pids(self) -> set[int]:
        """dockerd, its containerd and the shims of its containers: their command lines name
        this daemon's directories."""
        ours = set()
        marker = str(self.base).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                ours.add(int(entry.name))
        return ours

    def _container_ids(self) -> list[str]:
        containers = self.base / "data" / "containers"
        return [p.name for p in containers.iterdir()] if containers.is_dir() else []

    def kill_leftovers(self) -> None:
        """After a SIGKILL: what dockerd could not stop — its containerd and shims (found by
        their command lines) and its containers' processes (found by their cgroups)."""
        for pid in self._our_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for container in self._container_ids():
            for procs in Path("/sys/fs/cgroup").glob(f"*/docker/{container}/cgroup.procs"):
                try:
                    pids = [int(p) for p in procs.read_text().split()]
                except OSError:
                    continue
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    async def load_images(self, images: Iterable[str], source_host: str = HOST_DOCKER) -> None:
        """`docker -H <source> save IMAGE | docker -H <this> load` for each image."""
        for image in images:
            read_end, write_end = os.pipe()
            try:
                save = await trio.lowlevel.open_process(
                    ["docker", "-H", source_host, "save", image],
                    stdout=write_end,
                    stderr=subprocess.PIPE,
                )
                load = await trio.lowlevel.open_process(
                    ["docker", "-H", self.docker_host, "load", "-q"],
                    stdin=read_end,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            finally:
                os.close(read_end)
                os.close(write_end)
            with trio.fail_after(300):
                saved, loaded = await save.wait(), await load.wait()
            if saved or loaded:
                raise RuntimeError(f"could not copy {image} (save {saved}, load {loaded})")

    async def containers(self) -> list[dict[str, Any]]:
        async with self.http() as http:
            answer = await http.get("/containers/json", params={"all": "1"})
            answer.raise_for_status()
            result: list[dict[str, Any]] = answer.json()
            return result

    async def volumes(self) -> list[dict[str, Any]]:
        async with self.http() as http:
            answer = await http.get("/volumes")
            answer.raise_for_status()
            return list(answer.json().get("Volumes") or [])

    async def remove_everything(self) -> None:
        """Every container (force, with its volumes) and every volume left."""
        async with self.http(timeout_s=30) as http:
            for container in await self.containers():
                await http.delete(f"/containers/{container['Id']}", params={"force": "1", "v": "1"})
            for volume in await self.volumes():
                await http.delete(f"/volumes/{volume['Name']}", params={"force": "1"})


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base) + "/"
    mounts = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = line.split()[4].replace("\\040", " ")
            if target == str(base) or target.startswith(prefix):
                mounts.append(target)
    return mounts


def _detach_mounts(base: Path) -> list[str]:
    """Lazily unmount what is left mounted under `base`, deepest first; what stays mounted."""
    libc = ctypes.CDLL(None, use_errno=True)
    for target in sorted(_mounts_under(base), key=lambda t: t.count("/"), reverse=True):
        libc.umount2(target.encode(), _MNT_DETACH)
    return _mounts_under(base)


@asynccontextmanager
async def private_dockerd(
    images: Iterable[str] = (), source_host: str = HOST_DOCKER
) -> AsyncIterator[Dockerd]:
    """A running private dockerd with `images` copied from the daemon at `source_host`; at exit
    its containers and volumes are removed, it is stopped and its directories are gone."""
    problem = dockerd_problem()
    if problem:
        raise RuntimeError(f"no private dockerd here: {problem}")
    base = Path(tempfile.mkdtemp(prefix="dsw-dockerd-", dir="/tmp"))
    (base / "daemon.json").write_text("{}\n")
    dockerd = Dockerd(base)
    try:
        await dockerd.start()
        await dockerd.load_images(images, source_host)
        yield dockerd
    finally:
        with trio.move_on_after(STOP_TIMEOUT_S + 90, shield=True):
            await _tear_down(dockerd)


async def _tear_down(dockerd: Dockerd) -> None:
    try:
        if dockerd.running:
            with trio.move_on_after(60):
                await dockerd.remove_everything()
    except (httpx.HTTPError, OSError):
        pass  # stopping it below stops its containers; the directories go with it
    finally:
        with trio.move_on_after(STOP_TIMEOUT_S + 10, shield=True) as stopping:
            await dockerd.stop()
        if stopping.cancelled_caught and dockerd.process is not None:
            dockerd.process.kill()
        dockerd.kill_leftovers()
        left = _detach_mounts(dockerd.base)
        if left:
            raise RuntimeError(f"still mounted, {dockerd.base} kept: {left}")
        shutil.rmtree(dockerd.base, ignore_errors=True)
