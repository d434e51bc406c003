"""Docker's multiplexed log/attach stream, parsed incrementally, and byte-capped output buffers.

A non-TTY container's stream is a sequence of frames: an 8-byte header (stream id: 1 stdout,
2 stderr; three zero bytes; big-endian payload length) and the payload. Payloads are handed on
piece by piece as they arrive, so a huge frame never sits whole in memory.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Iterator

STDOUT = 1
STDERR = 2
_HEADER = struct.Struct(">BxxxI")


class FrameParser:
    """Feed raw chunks; get (stream id, payload piece) pairs. Holds at most one partial header."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        view = memoryview(chunk)
        while view:
            if self._remaining:
                piece = view[: self._remaining]
                self._remaining -= len(piece)
                view = view[len(piece) :]
                yield self._stream, bytes(piece)
                continue
            needed = _HEADER.size - len(self._header)
            self._header += view[:needed]
            view = view[needed:]
            if len(self._header) == _HEADER.size:
                self._stream, self._remaining = _HEADER.unpack(self._header)
                self._header.clear()


class CappedOutput:
    """One stream: counts up to `limit_bytes` (the cap), keeps the first `keep_bytes` of it
    (default: all) and the last `tail_bytes`; what is not kept is counted and dropped. The cap
    is passed past `limit_bytes + reserve_bytes` (room for a trailer its writer may add)."""

    def __init__(
        self,
        limit_bytes: int,
        keep_bytes: int | None = None,
        *,
        reserve_bytes: int = 0,
        tail_bytes: int = 0,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.keep_bytes = limit_bytes if keep_bytes is None else min(keep_bytes, limit_bytes)
        self.reserve_bytes = reserve_bytes
        self.tail_bytes = tail_bytes
        self._data = bytearray()
        self.tail = bytearray()
        self.total_bytes = 0

    def append(self, piece: bytes) -> bool:
        """Keep what fits; returns False once the cap (and its reserve) has been passed."""
        self.total_bytes += len(piece)
        room = self.keep_bytes - len(self._data)
        if room > 0:
            self._data += piece[:room]
        if self.tail_bytes:
            self.tail += piece[-self.tail_bytes :]
            del self.tail[: -self.tail_bytes]
        return self.total_bytes <= self.limit_bytes + self.reserve_bytes

    def drop_tail(self, size_bytes: int) -> None:
        """Forget the stream's last `size_bytes` (a trailer that is not the writer's output)."""
        self.total_bytes -= size_bytes
        del self._data[self.total_bytes :]
        del self.tail[len(self.tail) - size_bytes :]

    @property
    def over_limit(self) -> bool:
        return self.total_bytes > self.limit_bytes

    @property
    def truncated(self) -> bool:
        return self.total_bytes > self.keep_bytes

    def text(self) -> str:
        """UTF-8 with invalid bytes as U+FFFD; a character cut by the cap is dropped, NULs kept."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return decoder.decode(self._data, final=not self.truncated)
