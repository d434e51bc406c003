"""Shutdown in two steps: stop taking jobs and give running ones a deadline; then cancel them."""

from __future__ import annotations

import trio


class Drain:
    """Every job nursery runs in a scope made here; `begin` moves their deadlines, as hypercorn
    drains by moving its task group's deadline."""

    def __init__(self, drain_timeout_s: float) -> None:
        self.drain_timeout_s = drain_timeout_s
        self.stopping = trio.Event()
        self._scopes: list[trio.CancelScope] = []

    @property
    def serving(self) -> bool:
        """Whether any job scope exists yet (before that, there is nothing to drain)."""
        return bool(self._scopes)

    def job_scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.stopping.is_set():
            scope.cancel(reason="shutting down")
        self._scopes.append(scope)
        return scope

    def begin(self) -> None:
        self.stopping.set()
        deadline = trio.current_time() + self.drain_timeout_s
        for scope in self._scopes:
            scope.deadline = min(scope.deadline, deadline)

    def cancel_now(self) -> None:
        self.begin()
        for scope in self._scopes:
            scope.cancel(reason="second interrupt")
