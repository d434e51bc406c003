"""A container's output as the worker reads it: stdout and stderr, capped, and dsw-entry's report.

The output is read by attaching before the container starts (`docker run` does the same, so
nothing a short-lived container writes is missed) and split into capped buffers. When a stream
passes its cap the worker detaches and kills the container.

dsw-entry (every sandbox image's entrypoint) ends stderr with a report of what the worker cannot
learn once the container is gone, read where the kernel keeps it, in the container's own cgroup
before it goes away: the memory high-water mark and the count of OOM kills; and whether a stop
signal came only after the script had ended by itself:
`NUL "dsw-report peak_memory_bytes=N oom_kills=K signalled_after_exit=0|1" NUL LF`.
The report is taken off stderr (only when it is the stream's very last bytes) and never reaches
the job's output; its room does not count against the cap. A script can forge its own report,
and so misstate its own peak memory or exit; nothing else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import trio

from dsw.config import Settings
from dsw.docker.client import Attached, DockerClient, Json
from dsw.docker.logs import STDERR, STDOUT, CappedOutput, FrameParser
from dsw.errors import Conflict, DockerError, NotFound

log = logging.getLogger(__name__)

RELEASED = b"\x00dsw-released\x00\n"
_REPORT = re.compile(
    rb"\x00dsw-report peak_memory_bytes=(\d*) oom_kills=(\d*) signalled_after_exit=([01])\x00\n\Z"
)
REPORT_MAX_BYTES = 128


@dataclass(frozen=True)
class EntryReport:
    peak_memory_bytes: int | None
    oom_kills: int | None
    signalled_after_exit: bool


def memory_peak_of(stats: Json) -> int | None:
    """A stats sample's high-water mark (cgroup v1 has it; v2 not, in Docker 20.10)."""
    peak = (stats.get("memory_stats") or {}).get("max_usage")
    return int(peak) if peak else None


class _UntilReleased:
    """A warm pool container's stream: what comes before the release marker (the pool's own
    processes, before the job was theirs) is dropped; the job's output starts after it."""

    def __init__(self) -> None:
        self.released = False
        self._pending = b""
        self.dropped_bytes = 0

    def feed(self, piece: bytes) -> bytes:
        if self.released:
            return piece
        data = self._pending + piece
        at = data.find(RELEASED)
        if at < 0:
            # Keep what could be the start of the marker; drop the rest.
            keep = len(RELEASED) - 1
            self.dropped_bytes += max(len(data) - keep, 0)
            self._pending = data[-keep:]
            return b""
        self.released = True
        self.dropped_bytes += at
        self._pending = b""
        return data[at + len(RELEASED) :]


class ContainerOutput:
    """What one container writes, and what the worker does about it. Each stream starts after
    dsw-entry's release marker; `on_released` is told once the marker has come on every stream:
    the script is about to run (a warm container lost before that never ran it)."""

    def __init__(self, settings: Settings, on_released: Callable[[], None] = lambda: None) -> None:
        # Past WORKER_MAX_MESSAGE_BYTES nothing could be published: counted, not kept.
        limit, keep = settings.output_limit_bytes, settings.max_message_bytes
        self.stdout = CappedOutput(limit, keep)
        self.stderr = CappedOutput(
            limit, keep, reserve_bytes=REPORT_MAX_BYTES, tail_bytes=REPORT_MAX_BYTES
        )
        # The stream that passed its cap ("stdout", "stderr"), if one did.
        self.over_limit: str | None = None
        # The peak the daemon reported just before the worker killed the container.
        self.peak_before_kill: int | None = None
        self.report: EntryReport | None = None
        self.done = trio.Event()
        self.error: DockerError | None = None
        self.gates = {STDOUT: _UntilReleased(), STDERR: _UntilReleased()}
        self._on_released: Callable[[], None] | None = on_released

    @property
    def released(self) -> bool:
        """Whether the job's script got to run."""
        return all(gate.released for gate in self.gates.values())

    def take(self, stream: int, piece: bytes) -> None:
        """A piece of one stream; notes the stream that passes its cap."""
        gate = self.gates.get(stream)
        if gate is not None:
            piece = gate.feed(piece)
            if self._on_released is not None and self.released:
                on_released, self._on_released = self._on_released, None
                on_released()
        name, output = {STDOUT: ("stdout", self.stdout), STDERR: ("stderr", self.stderr)}.get(
            stream, ("", None)
        )
        if piece and output is not None and not output.append(piece):
            self.over_limit = self.over_limit or name

    async def read(self, chunks: AsyncIterator[bytes]) -> None:
        """Frames from `chunks` into the streams, until they end or a cap is passed."""
        parser = FrameParser()
        async for chunk in chunks:
            for stream, piece in parser.feed(chunk):
                self.take(stream, piece)
            if self.over_limit:
                return

    async def collect(
        self,
        docker: DockerClient,
        container: str,
        *,
        task_status: trio.TaskStatus[Attached] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Attach with stdin and report the attachment (for the release), then read until the
        container's streams end; kill the container when a cap is passed. A failure to attach
        is raised; a later one is kept in `error`."""
        attached = False
        try:
            async with docker.open_container_attach_stdin(container) as stream:
                task_status.started(stream)
                attached = True
                await self.read(stream.chunks())
            await self.after_reading(docker, container)
        except DockerError as exc:
            if not attached:
                raise
            self.error = exc
        finally:
            self.done.set()

    async def after_reading(self, docker: DockerClient, container: str) -> None:
        """Once detached (the daemon would block a kill behind an attach nobody reads any more):
        kill the container if a cap was passed."""
        if self.over_limit:
            await self._kill(docker, container)

    async def _kill(self, docker: DockerClient, container: str) -> None:
        self.peak_before_kill = await memory_peak(docker, container)
        try:
            await docker.container_kill(container)
        except (Conflict, NotFound):
            pass  # it has already stopped

    def finish(self) -> None:
        """Once the streams have ended: take dsw-entry's report off stderr."""
        match = _REPORT.search(bytes(self.stderr.tail))
        if match is not None and not self.over_limit:
            self.stderr.drop_tail(len(match[0]))
            peak, ooms, late = match[1], match[2], match[3] == b"1"
            self.report = EntryReport(
                int(peak) if peak else None, int(ooms) if ooms else None, late
            )
        if self.over_limit is None:
            # Between the cap and its reserve: not killed for it, but over it all the same.
            self.over_limit = "stderr" if self.stderr.over_limit else None


async def memory_peak(docker: DockerClient, container: str) -> int | None:
    """The container's memory high-water mark now, from one stats sample; None if the daemon
    cannot say (cgroup v2, or it is away)."""
    try:
        return memory_peak_of(await docker.container_stats_once(container))
    except DockerError as exc:
        log.debug("no memory sample container=%s error=%s", container, exc)
        return None
