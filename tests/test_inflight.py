"""The worker-wide in-flight registry: one run per job id, every record answered once."""

from __future__ import annotations

from dsw.inflight import InFlight

JOB = "7f000001-863c-17b2-8186-3cdeb62e0000"


def test_a_second_record_joins_and_is_done_with_the_run() -> None:
    in_flight, done = InFlight(), []
    assert in_flight.claim(JOB)
    assert not in_flight.claim(JOB)
    in_flight.join(JOB, lambda: done.append("second"))
    assert done == []
    in_flight.answered(JOB)
    assert done == ["second"]
    # Answered but not ended (its container is still being removed): a late record is done
    # at once, and still does not start a run.
    assert not in_flight.claim(JOB)
    in_flight.join(JOB, lambda: done.append("late"))
    assert done == ["second", "late"]
    in_flight.ended(JOB)
    assert JOB not in in_flight
    assert in_flight.claim(JOB)


def test_a_run_that_ends_unanswered_finishes_no_record() -> None:
    in_flight, done = InFlight(), []
    in_flight.claim(JOB)
    in_flight.join(JOB, lambda: done.append(2))
    assert in_flight.job_ids() == {JOB}
    in_flight.ended(JOB)
    assert done == []
    assert in_flight.job_ids() == set()
