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
    (default: all); what is not kept is counted and dropped."""

    def __init__(self, limit_bytes: int, keep_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.keep_bytes = limit_bytes if keep_bytes is None else min(keep_bytes, limit_bytes)
        self._data = bytearray()
        self.total_bytes = 0

    def append(self, piece: bytes) -> bool:
        """Keep what fits; returns False once the cap has been passed."""
        self.total_bytes += len(piece)
        room = self.keep_bytes - len(self._data)
        if room > 0:
            self._data += piece[:room]
        return self.total_bytes <= self.limit_bytes

    @property
    def truncated(self) -> bool:
        return self.total_bytes > self.keep_bytes

    def text(self) -> str:
        """UTF-8 with invalid bytes as U+FFFD; a character cut by the cap is dropped, NULs kept."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return decoder.decode(self._data, final=not self.truncated)
