"""Reconnect delays: 100 ms growing to 10 s by default, as the original worker's Kafka backoff."""

from __future__ import annotations

import trio

from dsw.config import Settings


class Backoff:
    """Delays growing from `first_s` to `max_s`; reset after a success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.next_s = first_s

    async def sleep(self) -> None:
        await trio.sleep(self.next_s)
        self.next_s = min(self.next_s * 2, self.max_s)

    def reset(self) -> None:
        self.next_s = self.first_s

    @classmethod
    def of(cls, settings: Settings) -> Backoff:
        return cls(settings.reconnect_backoff_s, settings.reconnect_backoff_max_s)
