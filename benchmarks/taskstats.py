"""What the kernel says about every task that exits: its thread group, parent, name and CPU time.

Containerd's shims and the runc processes they start live a few hundred milliseconds; by the time
/proc could be read a last time they are gone. The kernel's taskstats interface (generic netlink,
CONFIG_TASKSTATS, root) sends one record per exiting thread, for every CPU the listener registers
for, with the thread's exact run time (`cpu_run_real_total`, nanoseconds). `open_exit_listener`
keeps those records while open; it yields None where the interface is unavailable (not root, a
kernel without it), and the caller falls back to /proc alone.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

_NETLINK_GENERIC = 16
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY, _CTRL_ATTR_FAMILY_ID, _CTRL_ATTR_FAMILY_NAME = 3, 1, 2
_TASKSTATS_CMD_GET, _TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 1, 3
_TASKSTATS_TYPE_STATS = 3
_TASKSTATS_TYPE_AGGR_PID = 4
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_SO_RCVBUFFORCE = 33
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_ATTR = struct.Struct("=HH")  # nlattr: length, type
# struct taskstats (linux/taskstats.h, version 10 and later): the offsets of the fields read here.
_RUN_NS, _COMM, _PID_PPID, _TGID = 64, slice(80, 112), 128, 368


@dataclass(frozen=True)
class TaskExit:
    """One exiting thread: its thread group (the process), parent process, name, run time."""

    tgid: int
    pid: int
    ppid: int
    comm: str
    cpu_ns: int


@dataclass
class ExitLog:
    """The records received so far, and how many the kernel dropped (a full socket buffer)."""

    exits: list[TaskExit] = field(default_factory=list)
    lost: int = 0


def _attr(kind: int, data: bytes) -> bytes:
    size = _ATTR.size + len(data)
    return _ATTR.pack(size, kind) + data + b"\0" * (-size % 4)


def _request(family: int, command: int, attrs: bytes, seq: int) -> bytes:
    payload = _GENL.pack(command, 1, 0) + attrs
    return _HEADER.pack(_HEADER.size + len(payload), family, _NLM_F_REQUEST, seq, 0) + payload


def _attrs(data: bytes) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    at = 0
    while at + _ATTR.size <= len(data):
        size, kind = _ATTR.unpack_from(data, at)
        if size < _ATTR.size:
            break
        found.setdefault(kind & 0x3FFF, []).append(data[at + _ATTR.size : at + size])
        at += (size + 3) & ~3
    return found


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload after the generic netlink header) of each message in one datagram."""
    found, at = [], 0
    while at + _HEADER.size <= len(data):
        size, kind = _HEADER.unpack_from(data, at)[:2]
        if size < _HEADER.size:
            break
        found.append((kind, data[at + _HEADER.size + _GENL.size : at + size]))
        at += (size + 3) & ~3
    return found


def _exit_of(stats: bytes) -> TaskExit | None:
    if len(stats) < _TGID + 4:
        return None  # a kernel older than taskstats version 10 has no thread group in it
    pid, ppid = struct.unpack_from("=II", stats, _PID_PPID)
    return TaskExit(
        tgid=struct.unpack_from("=I", stats, _TGID)[0],
        pid=pid,
        ppid=ppid,
        comm=stats[_COMM].split(b"\0", 1)[0].decode(errors="replace"),
        cpu_ns=struct.unpack_from("=Q", stats, _RUN_NS)[0],
    )


def _family_id(sock: socket.socket) -> int:
    sock.send(
        _request(
            _GENL_ID_CTRL, _CTRL_CMD_GETFAMILY, _attr(_CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"), 1
        )
    )
    for kind, payload in _messages(sock.recv(65536)):
        if kind == _NLMSG_ERROR:
            raise OSError(errno.ENOENT, "no TASKSTATS netlink family")
        family = _attrs(payload).get(_CTRL_ATTR_FAMILY_ID)
        if family:
            return int(struct.unpack_from("=H", family[0])[0])
    raise OSError(errno.ENOENT, "no TASKSTATS family id in the answer")


def _register(cpus: int) -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC)
    try:
        sock.bind((0, 0))
        sock.settimeout(5)
        family = _family_id(sock)
        # Exits come in bursts (a Go process's threads all at once): a roomy buffer loses none.
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 * 1024 * 1024)
        mask = f"0-{cpus - 1}\0".encode()
        sock.send(
            _request(
                family, _TASKSTATS_CMD_GET, _attr(_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, mask), 2
            )
        )
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, family


async def _receive(sock: trio.socket.SocketType, family: int, log: ExitLog) -> None:
    while True:
        try:
            data = await sock.recv(1 << 20)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            log.lost += 1  # the kernel dropped records; count it, go on
            continue
        for kind, payload in _messages(data):
            if kind != family:
                continue  # e.g. the acknowledgement of the registration
            for aggregate in _attrs(payload).get(_TASKSTATS_TYPE_AGGR_PID, []):
                for stats in _attrs(aggregate).get(_TASKSTATS_TYPE_STATS, []):
                    if (one := _exit_of(stats)) is not None:
                        log.exits.append(one)


@asynccontextmanager
async def open_exit_listener() -> AsyncIterator[ExitLog | None]:
    """Every thread exit on this host while open (None where taskstats is not available). On
    cancellation the listener stops and the socket is closed."""
    try:
        raw, family = _register(os.cpu_count() or 1)
    except OSError:
        yield None
        return
    log = ExitLog()
    with trio.socket.from_stdlib_socket(raw) as sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive, sock, family, log)
            try:
                yield log
            finally:
                nursery.cancel_scope.cancel(reason="exit listener closed")
