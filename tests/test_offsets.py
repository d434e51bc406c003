"""Commit tracking: only up to the first unfinished offset, per partition."""

from dsw.offsets import OffsetTracker

P0 = ("pending-x", 0)
P1 = ("pending-x", 1)


def test_commits_up_to_the_first_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        assert tracker.begin(P0, offset)
    tracker.finish(P0, 6)
    tracker.finish(P0, 7)
    assert tracker.to_commit() == {P0: 5}
    tracker.committed({P0: 5})
    assert tracker.to_commit() == {}
    tracker.finish(P0, 5)
    assert tracker.to_commit() == {P0: 8}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.begin(P0, 0)
    tracker.begin(P1, 10)
    tracker.finish(P1, 10)
    assert tracker.to_commit() == {P1: 11}
    tracker.committed({P1: 11})
    assert tracker.to_commit() == {}
    assert tracker.to_commit([P1]) == {}


def test_redelivered_offsets_are_not_started_twice() -> None:
    tracker = OffsetTracker()
    tracker.begin(P0, 3)
    tracker.begin(P0, 4)
    tracker.finish(P0, 4)
    assert not tracker.begin(P0, 3)  # still running
    assert not tracker.begin(P0, 4)  # finished, not yet committed
    tracker.finish(P0, 3)
    tracker.committed(tracker.to_commit())
    assert not tracker.begin(P0, 2)  # below the committed position
    assert tracker.begin(P0, 5)


def test_dropped_partitions_are_not_committed() -> None:
    tracker = OffsetTracker()
    tracker.begin(P0, 1)
    tracker.begin(P1, 1)
    assert tracker.keep_only([P1]) == [P0]
    tracker.finish(P0, 1)  # the job still finished, but the partition is someone else's now
    tracker.finish(P1, 1)
    assert tracker.to_commit() == {P1: 2}
    assert tracker.is_new(P0, 1)  # forgotten: the new owner may hand it out again


def test_nothing_to_commit_when_nothing_was_taken() -> None:
    tracker = OffsetTracker()
    assert tracker.to_commit() == {}
    tracker.begin(P0, 0)
    assert not tracker.is_new(P0, 0)
    assert tracker.to_commit() == {}  # nothing finished: nothing to move
