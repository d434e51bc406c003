"""Drain: stop taking jobs, move the job scopes' deadlines, then cancel on a second interrupt.

The tests are async only for trio's clock; they await nothing (hence ASYNC124's noqa).
"""

from __future__ import annotations

import trio

from dsw.drain import Drain


async def test_begin_moves_every_deadline_and_a_later_scope_is_cancelled_at_once() -> None:  # noqa: ASYNC124
    drain = Drain(5)
    assert not drain.serving
    first, second = drain.job_scope(), drain.job_scope()
    assert drain.serving
    before = trio.current_time()
    drain.begin()
    assert drain.stopping.is_set()
    for scope in (first, second):
        assert before + 5 <= scope.deadline <= trio.current_time() + 5
    late = drain.job_scope()
    assert late.cancel_called


async def test_begin_never_extends_an_earlier_deadline() -> None:  # noqa: ASYNC124
    drain = Drain(60)
    scope = drain.job_scope()
    scope.deadline = trio.current_time() + 1
    drain.begin()
    assert scope.deadline <= trio.current_time() + 1


async def test_cancel_now_cancels_every_scope() -> None:  # noqa: ASYNC124
    drain = Drain(60)
    scopes = [drain.job_scope() for _ in range(3)]
    drain.cancel_now()
    assert all(scope.cancel_called for scope in scopes)
    assert drain.stopping.is_set()
