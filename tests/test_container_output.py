"""The time-limit race, decided deterministically: dsw-entry's report taken off stderr (a stop that
came after the script's end), and the run's verdict when the deadline meets a script that has just
exited (the daemon answers the stop with 304, or dsw-entry says the signal came late).

The verdict is `dsw.sandbox._run`'s; it is driven here by a Docker stand-in whose container exits
exactly when the worker stops it, under trio's autojump clock: no real time, no race.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import trio

from dsw.config import Settings, load_settings
from dsw.container_output import RELEASED, ContainerOutput
from dsw.docker.client import DockerClient
from dsw.docker.logs import STDERR, STDOUT
from dsw.messages import FinishedWith
from dsw.sandbox import ScriptOutcome, _run
from tests.sandbox_runs import request_for


def report(late: int, peak: str = "123456", ooms: str = "0") -> bytes:
    return (
        f"\x00dsw-report peak_memory_bytes={peak} oom_kills={ooms} "
        f"signalled_after_exit={late}\x00\n"
    ).encode()


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


@pytest.fixture
def settings() -> Settings:
    return load_settings({}, worker_id="test-output")


def released(settings: Settings) -> ContainerOutput:
    """Output of a container that has said it was released: what follows is the job's."""
    output = ContainerOutput(settings)
    output.take(STDOUT, RELEASED)
    output.take(STDERR, RELEASED)
    assert output.released
    return output


def test_a_stop_after_the_script_s_end_is_read_from_the_report(settings: Settings) -> None:
    output = released(settings)
    output.take(STDOUT, b"done\n")
    output.take(STDERR, b"warning\n" + report(late=1))
    output.finish()
    assert output.report is not None
    assert output.report.signalled_after_exit
    assert (output.report.peak_memory_bytes, output.report.oom_kills) == (123456, 0)
    assert output.stderr.text() == "warning\n"  # the report never reaches the job's output
    assert output.over_limit is None


def test_a_report_in_pieces_with_empty_values_is_read(settings: Settings) -> None:
    output = released(settings)
    whole = b"err" + report(late=0, peak="", ooms="")
    for at in range(len(whole)):
        output.take(STDERR, whole[at : at + 1])
    output.finish()
    assert output.report is not None
    assert not output.report.signalled_after_exit
    assert (output.report.peak_memory_bytes, output.report.oom_kills) == (None, None)
    assert output.stderr.text() == "err"


def test_a_report_that_is_not_the_last_bytes_is_the_script_s_own_output(
    settings: Settings,
) -> None:
    output = released(settings)
    forged = report(late=1) + b"more\n"
    output.take(STDERR, forged)
    output.finish()
    assert output.report is None
    assert output.stderr.text() == forged.decode()


def test_no_report_is_taken_from_a_stream_over_its_cap(settings: Settings) -> None:
    small = load_settings({}, worker_id="test-output", output_limit_bytes=1024)
    output = released(small)
    output.take(STDOUT, b"x" * 2048)
    output.take(STDERR, report(late=1))
    output.finish()
    assert output.over_limit == "stdout"
    assert output.report is None


class RacingStream:
    """The attached stdin and output: the release marker once released, the rest at the exit."""

    def __init__(self, docker: RacingDocker) -> None:
        self.docker = docker
        self.released = trio.Event()

    async def send(self, data: bytes) -> None:
        assert data.startswith(b"dsw-job main.sh=")
        self.docker.calls.append("release")
        self.released.set()
        await trio.lowlevel.checkpoint()

    async def chunks(self) -> AsyncIterator[bytes]:
        await self.released.wait()
        yield frame(STDOUT, RELEASED) + frame(STDERR, RELEASED)
        await self.docker.exited.wait()
        yield frame(STDERR, self.docker.stderr)


class RacingDocker:
    """A container that is still running when the time limit comes and exits at the stop: the
    stop is answered `stopped` (204: it was running) or not (304: it had already stopped)."""

    def __init__(self, stderr: bytes, exit_code: int, stop_answer: bool) -> None:
        self.stderr = stderr
        self.exit_code = exit_code
        self.stop_answer = stop_answer
        self.exited = trio.Event()
        self.calls: list[str] = []

    @asynccontextmanager
    async def open_container_attach_stdin(self, container: str) -> AsyncIterator[RacingStream]:
        yield RacingStream(self)

    async def container_start(self, container: str) -> None:
        self.calls.append("start")
        await trio.lowlevel.checkpoint()

    async def container_wait(self, container: str, condition: str = "not-running") -> int:
        self.calls.append("wait")
        await self.exited.wait()
        return self.exit_code

    async def container_stats_once(self, container: str) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"memory_stats": {"max_usage": 4096}}

    async def container_stop(self, container: str, grace_s: float) -> bool:
        self.calls.append("stop")
        await trio.lowlevel.checkpoint()
        self.exited.set()
        return self.stop_answer

    async def container_inspect(self, container: str) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"State": {"OOMKilled": False}}

    async def container_kill_events(
        self, container: str, since: float, until: float
    ) -> list[dict[str, Any]]:
        await trio.lowlevel.checkpoint()
        return []


async def run_racing(settings: Settings, docker: RacingDocker) -> ScriptOutcome:
    request = request_for(settings, "exit\n", timeout_s=5)
    outcome = await _run(cast(DockerClient, docker), settings, request, "c0ffee", None, False)
    assert docker.calls == ["start", "release", "wait", "stop", "wait"]  # the deadline first
    return outcome


@pytest.mark.parametrize("exit_code", [0, 3])
async def test_a_stop_answered_already_stopped_reports_the_exit_code(
    settings: Settings, autojump_clock: trio.abc.Clock, exit_code: int
) -> None:
    # 304: the script had ended by itself before the stop reached the daemon.
    docker = RacingDocker(report(late=0), exit_code, stop_answer=False)
    outcome = await run_racing(settings, docker)
    expected = FinishedWith.SUCCEEDED if exit_code == 0 else FinishedWith.FAILED
    assert (outcome.finished_with, outcome.exit_code) == (expected, exit_code)
    assert outcome.note == ""
    assert outcome.stderr == ""
    assert outcome.peak_memory_bytes == 123456  # dsw-entry's, not the sample before the stop


@pytest.mark.parametrize("exit_code", [0, 3])
async def test_a_stop_that_came_after_the_script_s_end_reports_the_exit_code(
    settings: Settings, autojump_clock: trio.abc.Clock, exit_code: int
) -> None:
    # The daemon stopped a running container, but dsw-entry saw the signal only after the
    # script had ended (signalled_after_exit=1): its exit code says how it ended.
    docker = RacingDocker(report(late=1), exit_code, stop_answer=True)
    outcome = await run_racing(settings, docker)
    expected = FinishedWith.SUCCEEDED if exit_code == 0 else FinishedWith.FAILED
    assert (outcome.finished_with, outcome.exit_code) == (expected, exit_code)
    assert outcome.note == ""


async def test_a_script_still_running_at_the_stop_passed_its_time_limit(
    settings: Settings, autojump_clock: trio.abc.Clock
) -> None:
    docker = RacingDocker(b"partial\n" + report(late=0), 143, stop_answer=True)
    outcome = await run_racing(settings, docker)
    assert (outcome.finished_with, outcome.exit_code) == (FinishedWith.TIME_LIMIT_EXCEEDED, 143)
    assert outcome.note == "dsw: the script passed its 5 s time limit and was stopped\n"
    assert outcome.stderr == "partial\n"
