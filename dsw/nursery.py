"""The nursery idiom of dsw: tasks run side by side, and a single failure leaves as itself.

trio raises every error out of a nursery inside an ExceptionGroup. Where a caller expects one
error (DockerError from a container's run, Cancelled from outside), `open_nursery` unwraps a
group that holds just one; a group of several stays a group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            error = group.exceptions[0]
            # Its traceback and cause stay its own; the group around it says nothing more.
            raise error from error.__cause__  # noqa: ASYNC123
        raise
