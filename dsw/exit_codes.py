"""The exit codes of `dsw run` and `dsw submit`, in one place."""

from __future__ import annotations

from dsw.messages import FinishedWith

SUCCEEDED = 0
FAILED = 1
USAGE = 2  # a usage, validation or connection error; `dsw submit --timeout` ran out
REJECTED = 3
TIME_LIMIT = 124  # as timeout(1)
INTERRUPTED = 130  # 128 + SIGINT

OF_OUTCOME = {
    FinishedWith.SUCCEEDED: SUCCEEDED,
    FinishedWith.FAILED: FAILED,
    FinishedWith.TIME_LIMIT_EXCEEDED: TIME_LIMIT,
}
