"""Commit tracking, pure and synchronous: per partition, commit up to the first unfinished offset.

Jobs finish out of order. A partition's commit position is its lowest running offset, or one past
its highest finished offset when nothing runs, so a crash anywhere redelivers every job whose
`finished` was not acknowledged. Offsets already running or finished above the committed position
are recognised when a rebalance redelivers them, so they are not started twice.
"""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]


class _PartitionState:
    __slots__ = ("committed", "done", "running")

    def __init__(self) -> None:
        self.running: set[int] = set()
        self.done: set[int] = set()
        self.committed = -1

    def position(self) -> int | None:
        if self.running:
            return min(self.running)
        if self.done:
            return max(self.done) + 1
        return None


class OffsetTracker:
    """Which offsets of which partitions are running or finished, and what may be committed."""

    def __init__(self) -> None:
        self._partitions: dict[Partition, _PartitionState] = {}

    def is_new(self, partition: Partition, offset: int) -> bool:
        """False if `offset` is already running, finished or committed (a redelivery)."""
        state = self._partitions.get(partition)
        return state is None or not (
            offset in state.running or offset in state.done or offset < state.committed
        )

    def begin(self, partition: Partition, offset: int) -> bool:
        """Record that `offset` was taken; False (and nothing recorded) if it is not new."""
        if not self.is_new(partition, offset):
            return False
        self._partitions.setdefault(partition, _PartitionState()).running.add(offset)
        return True

    def finish(self, partition: Partition, offset: int) -> None:
        """Record that `offset`'s outcome is safely published. Ignored for dropped partitions."""
        state = self._partitions.get(partition)
        if state is not None and offset in state.running:
            state.running.discard(offset)
            state.done.add(offset)

    def to_commit(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """Positions (next offset to read) that moved past what was last committed."""
        chosen = self._partitions if partitions is None else partitions
        result = {}
        for partition in chosen:
            state = self._partitions.get(partition)
            position = state.position() if state else None
            # Nothing finished yet: the broker's position is already right.
            if state and state.done and position is not None and position > state.committed:
                result[partition] = position
        return result

    def committed(self, positions: dict[Partition, int]) -> None:
        """Forget finished offsets below the positions the broker now has."""
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is None:
                continue
            state.committed = max(state.committed, position)
            state.done = {o for o in state.done if o >= state.committed}

    def keep_only(self, partitions: Iterable[Partition]) -> list[Partition]:
        """After a rebalance: drop partitions no longer assigned; returns the dropped ones.

        Their running jobs still finish and publish, but their offsets are no longer committed
        here: the new owner redelivers from the last committed position.
        """
        kept = set(partitions)
        dropped = [p for p in self._partitions if p not in kept]
        for partition in dropped:
            del self._partitions[partition]
        return dropped
