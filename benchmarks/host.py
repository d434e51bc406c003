"""The host's side of a job: the Docker daemon's processes, the CPU they spend, a shim's memory.

`Daemon.find` names the processes behind the bench's Docker socket: the dockerd listening on it
(found through /proc/net/unix and its open sockets, so another daemon on the same machine, e.g. a
test's, is not counted), its containerd, and the containerd-shim-runc-v2 processes that connect to
that containerd (one per container), of the bench's own containers only (their labels read from
the daemon's `containers/<id>/config.v2.json`, not through the API, which would cost the daemon
CPU in the window). `CpuWindow` counts the CPU time they (and a worker) spend while it is open:

- dockerd and containerd: user + system time from /proc/<pid>/stat, with the children they have
  reaped (containerd's shim bootstraps);
- the Kafka broker, when it runs on this machine (the process listening on its port): what the
  workers' polls, publishes and commits cost it, which the raw client does not pay;
- shims: found by a scan of /proc every 50 ms; a shim still alive at the end counts from /proc
  (less what it had used when the window opened), one that exited counts its threads' exit
  records from the kernel (`benchmarks.taskstats`), as do the runc processes it started (create,
  start, delete, kill and runc's own init stages), but not the container's own processes
  (docker-init and below, or what `docker exec` starts): those are the job's. Without taskstats
  (not root) an exited shim counts what the last scan saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from benchmarks.taskstats import ExitLog, open_exit_listener

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
_SHIM = "containerd-shim"  # comm of containerd-shim-runc-v2 (cut to 15 characters)
_SCAN_S = 0.05


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_s(pid: int, children: bool = False) -> float | None:
    """User + system seconds of `pid` so far (and of the children it reaped); None if gone."""
    fields = _stat(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * _TICK_S


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _args(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _option(args: list[str], *names: str) -> str | None:
    """The value of `--name value` or `--name=value` in args."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _pids() -> list[int]:
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def _listening_inodes(socket_path: str) -> set[str]:
    paths = {socket_path, os.path.realpath(socket_path)}
    found = set()
    with open("/proc/net/unix", encoding="ascii", errors="replace") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] in paths:
                found.add(fields[6])
    return found


def tcp_listeners(port: int) -> list[int]:
    """The processes listening on TCP `port` (the Kafka broker, to count its CPU)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    return [pid for pid in _pids() if inodes and _holds_socket(pid, inodes)]


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            link = os.readlink(fd.path)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class Daemon:
    """The processes of one Docker daemon; `shim_address` "" matches every shim on the host."""

    dockerd: list[int]
    containerd: list[int]
    shim_address: str
    exact: bool  # False: the socket's owner was not found and every dockerd is counted
    root_dir: str = ""  # DockerRootDir: where it keeps containers/<id>/config.v2.json
    label: tuple[str, str] = ("", "")  # a shim counts if its container's label starts so

    @classmethod
    def find(
        cls, socket_path: str, root_dir: str = "", label: tuple[str, str] = ("", "")
    ) -> Daemon:
        pids = _pids()
        dockerds = [pid for pid in pids if _comm(pid) == "dockerd"]
        inodes = _listening_inodes(socket_path)
        owners = [pid for pid in dockerds if _holds_socket(pid, inodes)]
        exact = len(owners) == 1
        chosen = owners if exact else dockerds
        containerds = [p for p in pids if _comm(p) == "containerd" and _ppid(p) in chosen]
        if not containerds:
            containerds = [p for p in pids if _comm(p) == "containerd"]  # a system containerd
        address = ""
        if exact and len(containerds) == 1:
            args = _args(containerds[0])
            address = _option(args, "--address", "-a") or ""
            config = _option(args, "--config", "-c")
            if not address and config:
                address = str(Path(config).parent / "containerd.sock")
        return cls(chosen, containerds, address, exact, root_dir, label)

    def is_shim(self, pid: int, ours_only: bool = True) -> bool:
        """A shim daemon of this containerd (not the short `start` bootstrap), of a container
        that carries `label` (when `ours_only`, and the daemon's files can be read)."""
        if _comm(pid) != _SHIM:
            return False
        args = _args(pid)
        if "start" in args or "delete" in args:
            return False
        if self.shim_address and _option(args, "-address") != self.shim_address:
            return False
        return not ours_only or self._labelled(_option(args, "-id") or "")

    def _labelled(self, container_id: str) -> bool:
        key, prefix = self.label
        if not key or not self.root_dir:
            return True
        path = Path(self.root_dir) / "containers" / container_id / "config.v2.json"
        try:
            labels = json.loads(path.read_text()).get("Config", {}).get("Labels") or {}
        except (OSError, ValueError):
            return True  # cannot tell: counted
        return str(labels.get(key, "")).startswith(prefix)

    def shim_of(self, container_id: str) -> int | None:
        """The shim pid of one container of this daemon."""
        for pid in _pids():
            if self.is_shim(pid, ours_only=False) and _option(_args(pid), "-id") == container_id:
                return pid
        return None


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


@dataclass
class _Shim:
    baseline_s: float  # its CPU when the window opened (0 for one started since)
    last_s: float  # its CPU at the last scan


@dataclass
class CpuWindow:
    """CPU seconds spent between `open()` and its end, per process group."""

    daemon: Daemon
    worker: int | None = None
    broker: list[int] = field(default_factory=list)  # the Kafka broker's processes, if local
    seconds: dict[str, float] = field(default_factory=dict)
    shims: int = 0  # shim processes seen
    lost_exit_records: int = 0
    exact_shims: bool = False  # True when exited shims were counted from taskstats

    def _daemon_cpu(self) -> dict[str, float]:
        found = {
            "dockerd": sum(cpu_s(p, children=True) or 0 for p in self.daemon.dockerd),
            "containerd": sum(cpu_s(p, children=True) or 0 for p in self.daemon.containerd),
        }
        if self.worker is not None:
            found["worker"] = cpu_s(self.worker) or 0
        found["kafka"] = sum(cpu_s(p) or 0 for p in self.broker)
        return found

    @asynccontextmanager
    async def open(self) -> AsyncIterator[CpuWindow]:
        shims: dict[int, _Shim] = {}
        seen: set[int] = set()

        def scan(first: bool = False) -> None:
            for pid in _pids():
                if pid in shims:
                    shims[pid].last_s = cpu_s(pid) or shims[pid].last_s
                elif pid not in seen:
                    seen.add(pid)
                    if self.daemon.is_shim(pid):
                        now = cpu_s(pid) or 0
                        shims[pid] = _Shim(now if first else 0, now)

        async def keep_scanning() -> None:
            while True:
                await trio.sleep(_SCAN_S)
                scan()

        before = self._daemon_cpu()
        scan(first=True)
        async with open_exit_listener() as exits, trio.open_nursery() as nursery:
            nursery.start_soon(keep_scanning)
            yield self
            # A shim leaves shortly after its container's removal returned.
            await trio.sleep(0.3)
            scan()
            nursery.cancel_scope.cancel(reason="window closed")
            after = self._daemon_cpu()
            self.seconds = {name: after[name] - before[name] for name in before}
            self.seconds["shims"] = _shim_cpu_s(shims, exits)
            self.shims = len(shims)
            self.exact_shims = exits is not None
            self.lost_exit_records = exits.lost if exits is not None else 0

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        return {name: 1000 * value / jobs for name, value in self.seconds.items()}


def _shim_cpu_s(shims: dict[int, _Shim], exits: ExitLog | None) -> float:
    """Alive shims from /proc; exited ones, and what they started, from the exit records."""
    total = 0.0
    alive = {pid for pid in shims if cpu_s(pid) is not None}
    for pid in alive:
        total += (cpu_s(pid) or 0) - shims[pid].baseline_s
    if exits is None:
        return total + sum(s.last_s - s.baseline_s for p, s in shims.items() if p not in alive)
    parent = {e.tgid: e.ppid for e in exits.exits if e.pid == e.tgid}
    name = {e.tgid: e.comm for e in exits.exits if e.pid == e.tgid}
    gone = set(shims) - alive

    def started_by_shim(tgid: int) -> bool:
        # runc, up its exited parents (runc init's stages) to a shim; whatever else a shim
        # started (docker-init and below, `docker exec`'s processes) is the container's work.
        for _ in range(4):
            if not name.get(tgid, "").startswith("runc"):
                return False
            tgid = parent.get(tgid, 0)
            if tgid in shims:
                return True
        return False

    exited_ns = 0
    for one in exits.exits:
        if one.tgid in gone or (one.tgid not in shims and started_by_shim(one.tgid)):
            exited_ns += one.cpu_ns
    baseline = sum(shims[pid].baseline_s for pid in gone)
    return total + exited_ns / 1e9 - baseline


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and Pss (its share of pages mapped by several processes) of one process, KiB."""
    found = {}
    for path, key, name in (
        (f"/proc/{pid}/status", "VmRSS:", "rss_kib"),
        (f"/proc/{pid}/smaps_rollup", "Pss:", "pss_kib"),
    ):
        try:
            with open(path, encoding="ascii") as lines:
                for line in lines:
                    if line.startswith(key):
                        found[name] = int(line.split()[1])
                        break
        except OSError:
            continue
    return found


# A container's cgroup CPU counter: cgroup v1 (cgroupfs or systemd driver), then v2.
_CPU_FILES = (
    "/sys/fs/cgroup/cpuacct/docker/{}/cpuacct.usage",
    "/sys/fs/cgroup/cpu,cpuacct/docker/{}/cpuacct.usage",
    "/sys/fs/cgroup/cpuacct/system.slice/docker-{}.scope/cpuacct.usage",
    "/sys/fs/cgroup/docker/{}/cpu.stat",
    "/sys/fs/cgroup/system.slice/docker-{}.scope/cpu.stat",
)


def container_cpu_s(container_id: str) -> float | None:
    """CPU seconds a container's processes have used, from its cgroup; None if not found here."""
    for pattern in _CPU_FILES:
        try:
            text = Path(pattern.format(container_id)).read_text()
        except OSError:
            continue
        if pattern.endswith("cpu.stat"):
            for line in text.splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return None
        return int(text) / 1e9
    return None
