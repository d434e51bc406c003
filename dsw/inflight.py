"""The job ids this worker is running, whatever their sandbox type, and the records joining them.

A job id names one job. A second record of an id that is in flight here (a redelivery after a
rebalance, a producer's retry, or a forgery: job ids are public) does not start a second run: it
joins the one under way and is answered by it, so the scheduler hears of the job once and no
record can stop, replace or outvote a running job. Each joining record registers a callback that
the run's answer calls (at once if the answer is already out); a run that ends unanswered
(cancelled) calls none, so those records are redelivered. The record that started the run is the
runner's own to finish. Ids are compared as given: `dsw.intake` makes them canonical (lower case).
"""

from __future__ import annotations

from collections.abc import Callable

Done = Callable[[], None]


class _Run:
    __slots__ = ("answered", "waiting")

    def __init__(self) -> None:
        self.waiting: list[Done] = []
        self.answered = False


class InFlight:
    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def claim(self, job_id: str) -> bool:
        """True: `job_id` was not in flight; the caller runs it and later calls `answered` (if it
        gets an answer out) and `ended`. False: it is in flight; the caller `join`s it."""
        if job_id in self._runs:
            return False
        self._runs[job_id] = _Run()
        return True

    def join(self, job_id: str, done: Done) -> None:
        """`done` is called when the run of `job_id` (in flight) is answered, or now if it is."""
        run = self._runs[job_id]
        if run.answered:
            done()
        else:
            run.waiting.append(done)

    def answered(self, job_id: str) -> None:
        """The run's `finished` is acknowledged: every record that joined it is done."""
        run = self._runs[job_id]
        run.answered = True
        waiting, run.waiting = run.waiting, []
        for done in waiting:
            done()

    def ended(self, job_id: str) -> None:
        """The run is over and its container gone; a later record of the id runs again."""
        del self._runs[job_id]

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._runs

    def job_ids(self) -> set[str]:
        return set(self._runs)
