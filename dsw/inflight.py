"""The job ids this worker is running, whatever their sandbox type, and the records that carry them.

A job id names one job. A second record of an id that is in flight here (a redelivery after a
rebalance, a producer's retry, or a forgery: job ids are public) does not start a second run: it
joins the one under way and is answered by it, so the scheduler hears of the job once and no
record can stop, replace or outvote a running job. Each record registers a callback that the
run's answer calls (at once if the answer is already out); a run that ends unanswered (cancelled)
calls none, so its records are redelivered.
"""

from __future__ import annotations

from collections.abc import Callable

Done = Callable[[], None]


class _Run:
    __slots__ = ("answered", "waiting")

    def __init__(self, done: Done) -> None:
        self.waiting: list[Done] = [done]
        self.answered = False


class InFlight:
    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def claim(self, job_id: str, done: Done) -> bool:
        """True: the caller runs `job_id` and later calls `answered` and `ended`. False: it is
        in flight already; `done` is called when that run is answered."""
        run = self._runs.get(job_id)
        if run is None:
            self._runs[job_id] = _Run(done)
            return True
        if run.answered:
            done()
        else:
            run.waiting.append(done)
        return False

    def answered(self, job_id: str) -> None:
        """The run's `finished` is acknowledged: every record that carried the job is done."""
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
