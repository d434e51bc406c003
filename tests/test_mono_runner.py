"""The mono sandbox's C# runner via the real daemon: features, compile errors, stack traces, its
AOT images, and its waiting mode for a warm pool (released by a line on the attached stdin)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import pytest
import trio

from dsw.config import Settings
from dsw.container_spec import container_command, container_config, release
from dsw.docker import DockerClient
from dsw.docker.client import Attached
from dsw.docker.logs import STDERR, STDOUT, FrameParser
from dsw.messages import FinishedWith
from dsw.sandbox import (
    ScriptOutcome,
    ScriptRequest,
    container_name,
    job_files,
    remove_container,
    run_script,
)
from tests.conftest import TEST_SCRIPTS
from tests.sandbox_runs import request_for

# What a script author cannot use: the evaluator's classes, the runner's and the
# evaluator's frames, Mono's IL offsets and module ids.
NOISE = ("<InteractiveExpressionClass>", "__DswScript", "Mono.CSharp", "Dsw.", "[0x", ">:0")


async def run_csx(docker: DockerClient, settings: Settings, script: str) -> ScriptOutcome:
    request = request_for(settings, textwrap.dedent(script), "linux-amd64-mono")
    return await run_script(docker, settings, request)


MONO = "linux-amd64-mono"


def mono_request(settings: Settings, script: str, stdin: str | None = None) -> ScriptRequest:
    return request_for(settings, script, MONO, stdin=stdin, timeout_s=60)


def assert_no_noise(stderr: str) -> None:
    assert [n for n in NOISE if n in stderr] == [], stderr


async def test_csharp_features(docker: DockerClient, settings: Settings) -> None:
    outcome = await run_csx(docker, settings, (TEST_SCRIPTS / "csharp-features.csx").read_text())
    assert (outcome.exit_code, outcome.stderr) == (0, "")
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout.endswith("\nAll checks passed\n")


async def test_compile_error_is_exit_1_with_the_position_in_main_csx(
    docker: DockerClient, settings: Settings
) -> None:
    outcome = await run_csx(docker, settings, (TEST_SCRIPTS / "compile-error.csx").read_text())
    assert outcome.exit_code == 1
    assert outcome.stdout == ""
    assert outcome.stderr == (
        "main.csx(4,13): error CS0029: Cannot implicitly convert type `string' to `int'\n"
    )


async def test_unhandled_exception_is_exit_1(docker: DockerClient, settings: Settings) -> None:
    script = (TEST_SCRIPTS / "unhandled-exception.csx").read_text()
    outcome = await run_csx(docker, settings, script)
    assert outcome.exit_code == 1
    assert outcome.finished_with is FinishedWith.FAILED
    assert outcome.stdout == "Before the exception\n"
    assert outcome.stderr == (
        "Unhandled exception. System.InvalidOperationException: Something went wrong\n"
        "   at <top-level> in main.csx:line 2\n"
    )


TRACES = [
    pytest.param(
        """\
            Console.WriteLine("start");
            Fail(3);

            void Fail(int n)
            {
                if (n > 2)
                    throw new InvalidOperationException("boom");
            }
            """,
        [
            "Unhandled exception. System.InvalidOperationException: boom",
            "   at Fail(Int32 n) in main.csx:line 7",
            "   at <top-level> in main.csx:line 2",
        ],
        id="top-level method",
    ),
    pytest.param(
        """\
            var account = new Account();
            account.Withdraw(
                50);

            class Account
            {
                public int Balance { get; private set; }

                public void Withdraw(int amount)
                {
                    if (amount > Balance)
                        throw new InvalidOperationException("insufficient funds");
                    Balance -= amount;
                }
            }
            """,
        [
            "Unhandled exception. System.InvalidOperationException: insufficient funds",
            "   at Account.Withdraw(Int32 amount) in main.csx:line 12",
            "   at <top-level> in main.csx:line 2",
        ],
        id="class method",
    ),
    pytest.param(
        """\
            Console.WriteLine(new Counter().Total(new[] { 1, 2, 0 }));

            class Counter
            {
                public int Total(int[] values)
                {
                    return values.Sum(v =>
                    {
                        if (v == 0)
                            throw new DivideByZeroException("zero in the list");
                        return 10 / v;
                    });
                }
            }
            """,
        [
            "Unhandled exception. System.DivideByZeroException: zero in the list",
            "   at Counter.Total.lambda(Int32 v) in main.csx:line 10",
            "   at System.Linq.Enumerable.Sum[TSource](IEnumerable`1 source, Func`2 selector)",
            "   at Counter.Total(Int32[] values) in main.csx:line 7",
            "   at <top-level> in main.csx:line 1",
        ],
        id="lambda in a class method",
    ),
    pytest.param(
        """\
            var values = new[] { 1, 2, 3 };
            var doubled = values.Select(v =>
            {
                if (v == 3)
                    throw new ArgumentException("three");
                return v * 2;
            }).ToList();
            """,
        [
            "Unhandled exception. System.ArgumentException: three",
            "   at <top-level>.lambda(Int32 v) in main.csx:line 5",
            "   at System.Linq.Enumerable.SelectArrayIterator`2.ToList()",
            "   at System.Linq.Enumerable.ToList[TSource](IEnumerable`1 source)",
            "   at <top-level> in main.csx:line 7",
        ],
        id="top-level lambda",
    ),
    pytest.param(
        """\
            Wrap();

            void Wrap()
            {
                try
                {
                    Parse("x");
                }
                catch (FormatException e)
                {
                    throw new InvalidOperationException("could not parse", e);
                }
            }

            int Parse(string s) => int.Parse(s);
            """,
        [
            "Unhandled exception. System.InvalidOperationException: could not parse"
            " ---> System.FormatException: Input string was not in a correct format.",
            "   at System.Number.ThrowOverflowOrFormatException(Boolean overflow,"
            " String overflowResourceKey)",
            "   at System.Number.ParseInt32(ReadOnlySpan`1 value, NumberStyles styles,"
            " NumberFormatInfo info)",
            "   at System.Int32.Parse(String s)",
            "   at Parse(String s) in main.csx:line 15",
            "   at Wrap() in main.csx:line 7",
            "   --- End of inner exception stack trace ---",
            "   at Wrap() in main.csx:line 11",
            "   at <top-level> in main.csx:line 1",
        ],
        id="inner exception",
    ),
    pytest.param(
        """\
            await Step();

            async Task Step()
            {
                await Task.Delay(1);
                throw new TimeoutException("late");
            }
            """,
        [
            "Unhandled exception. System.TimeoutException: late",
            "   at Step() in main.csx:line 6",
            "--- End of stack trace from previous location where exception was thrown ---",
            "   at <top-level> in main.csx:line 1",
        ],
        id="awaited async method",
    ),
]


@pytest.mark.parametrize(("script", "trace"), TRACES)
async def test_stack_trace_shows_the_script_s_frames_and_lines(
    docker: DockerClient, settings: Settings, script: str, trace: list[str]
) -> None:
    outcome = await run_csx(docker, settings, script)
    assert outcome.exit_code == 1
    assert outcome.stderr.splitlines() == trace
    assert_no_noise(outcome.stderr)


async def test_environment_exit_code_is_the_script_s(
    docker: DockerClient, settings: Settings
) -> None:
    outcome = await run_csx(docker, settings, (TEST_SCRIPTS / "exit-3.csx").read_text())
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (3, "Exiting with code 3\n", "")


async def test_the_aot_images_are_used_under_the_worker_s_hardening(
    docker: DockerClient, settings: Settings
) -> None:
    # /opt/dsw/aot/check: Mono loads every image the build made (uid 10001, read-only root,
    # noexec /tmp, seccomp), none is refused as out of date.
    request = mono_request(settings, "")
    outcome = await run_in(docker, settings, request, ["sh", "/opt/dsw/aot/check"])
    assert (outcome.exit_code, outcome.stderr) == (0, ""), outcome.stderr
    assert outcome.stdout.startswith("aot/check: ")
    assert outcome.stdout.endswith(" AOT images in use\n")


async def run_in(
    docker: DockerClient, settings: Settings, request: ScriptRequest, command: list[str]
) -> ScriptOutcome:
    """`command` in the job's hardened container instead of the type's own."""
    sandbox = msgspec.structs.replace(request.sandbox, command=tuple(command))
    return await run_script(docker, settings, msgspec.structs.replace(request, sandbox=sandbox))


# ---- the waiting mode -----------------------------------------------------------------------

RELEASED = b"\0dsw-released\0\n"
# dsw-entry's report, the last bytes of stderr (the worker takes it off).
REPORT = re.compile(rb"\0dsw-report [^\0]*\0\n\Z")
# A pool container's command: dsw-entry leaves the control stdin to the waiting runner.
WAITING_CMD = [
    "--warm",
    "mono",
    "/opt/dsw/csx-runner.exe",
    "--wait-for-release",
    "/tmp/script/main.csx",
]
# Long enough for the warm-up (the release may come earlier: the line waits in the pipe).
WARM_UP_S = 4.0


class WaitingContainer:
    """A pool's mono container: its output from the start, and its control channel."""

    def __init__(self, docker: DockerClient, container: str) -> None:
        self.docker = docker
        self.container = container
        self.output = {STDOUT: bytearray(), STDERR: bytearray()}
        self.ended = trio.Event()
        self.ended_at = 0.0  # when its output stream ended (trio's clock)
        self._more = trio.Event()
        self._control: Attached | None = None
        self._control_scope = trio.CancelScope()

    async def collect(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """All it writes, attached before the start with its stdin, the worker's control
        channel, until it ends or close_stdin."""
        parser = FrameParser()
        try:
            with self._control_scope:
                async with self.docker.open_container_attach_stdin(self.container) as control:
                    self._control = control
                    task_status.started()
                    async for chunk in control.chunks():
                        for stream_id, piece in parser.feed(chunk):
                            self.output[stream_id] += piece
                        self._more.set()
                        self._more = trio.Event()
        finally:
            self.ended_at = trio.current_time()
            self.ended.set()
            self._more.set()

    async def release(self, request: ScriptRequest) -> None:
        """What the worker writes: the release line and the job's files."""
        assert self._control is not None
        await self._control.send(release(job_files(request)))

    def close_stdin(self) -> None:
        """Detach the control channel: with StdinOnce the daemon closes the container's stdin
        (what the container writes after that is not read)."""
        self._control_scope.cancel(reason="the end of the control channel")

    async def wait_for_output(self, stream_id: int, data: bytes) -> None:
        while data not in self.output[stream_id]:
            assert not self.ended.is_set(), bytes(self.output[stream_id])
            await self._more.wait()

    async def wait_for_exit(self) -> int:
        exit_code = await self.docker.container_wait(self.container)
        with trio.fail_after(10):
            await self.ended.wait()
        return exit_code

    def stderr_without_report(self) -> bytes:
        return REPORT.sub(b"", bytes(self.output[STDERR]))


@asynccontextmanager
async def open_waiting_container(
    docker: DockerClient, settings: Settings, request: ScriptRequest
) -> AsyncIterator[WaitingContainer]:
    """Created with the worker's hardening, attached, started, its control channel open;
    removed at the end whatever happened."""
    config = container_config(settings, request.sandbox, request.limits, request.job_id)
    # The end of the attached stdin (the worker's control channel) ends the container's.
    assert container_command(request.sandbox, pooled=True) == WAITING_CMD  # as a pool starts it
    config.update(Cmd=WAITING_CMD, OpenStdin=True, AttachStdin=True, StdinOnce=True)
    container, _ = await docker.container_create(container_name(request.job_id), config)
    try:
        waiting = WaitingContainer(docker, container)
        async with trio.open_nursery() as nursery:
            await nursery.start(waiting.collect)
            await docker.container_start(container)
            yield waiting
            nursery.cancel_scope.cancel(reason="the test is done with the container")
    finally:
        with trio.move_on_after(30, shield=True):
            await remove_container(docker, container, request.job_id)


class WarmRun:
    def __init__(self, before: dict[int, bytes], after: dict[int, bytes], exit_code: int) -> None:
        self.before = before
        self.after = after
        self.exit_code = exit_code
        self.release_to_exit_s = 0.0  # until the daemon says it exited
        self.release_to_end_s = 0.0  # until its output stream ended

    def job_output(self, stream_id: int) -> str:
        """The stream after its release marker, as the worker will hand it on."""
        data = self.after[stream_id]
        assert data.startswith(RELEASED), data[:100]
        return data.removeprefix(RELEASED).decode()


async def run_warm(docker: DockerClient, settings: Settings, request: ScriptRequest) -> WarmRun:
    """The script through a waiting container: warm-up, job files, release, exit."""
    async with open_waiting_container(docker, settings, request) as waiting:
        await trio.sleep(WARM_UP_S)
        before = {k: bytes(v) for k, v in waiting.output.items()}
        released = trio.current_time()
        await waiting.release(request)
        exit_code = await waiting.wait_for_exit()
        after = {STDOUT: bytes(waiting.output[STDOUT]), STDERR: waiting.stderr_without_report()}
        run = WarmRun(before, after, exit_code)
        run.release_to_exit_s = trio.current_time() - released
        run.release_to_end_s = waiting.ended_at - released
    return run


WARM_CASES = [
    pytest.param(script.read_text(), None, id=script.name)
    for script in sorted(TEST_SCRIPTS.glob("*.csx"))
    if script.name != "wait-6min.csx"  # test_a_released_script_stopped_at_its_time_limit
] + [
    pytest.param((TEST_SCRIPTS / "read-stdin.csx").read_text(), "first\nsecond\n", id="stdin"),
    pytest.param((TEST_SCRIPTS / "read-stdin.csx").read_text(), "", id="empty stdin"),
    *[pytest.param(textwrap.dedent(str(p.values[0])), None, id=f"trace: {p.id}") for p in TRACES],
]


@pytest.mark.parametrize(("script", "stdin"), WARM_CASES)
async def test_a_released_script_runs_as_a_cold_one(
    docker: DockerClient, settings: Settings, script: str, stdin: str | None
) -> None:
    request = mono_request(settings, script, stdin)
    cold = await run_script(docker, settings, request)
    warm = await run_warm(docker, settings, mono_request(settings, script, stdin))
    assert warm.before == {STDOUT: b"", STDERR: b""}  # nothing before the release
    assert (warm.job_output(STDOUT), warm.job_output(STDERR), warm.exit_code) == (
        cold.stdout,
        cold.stderr,
        cold.exit_code,
    )


async def test_a_released_script_stopped_at_its_time_limit_keeps_its_output(
    docker: DockerClient, settings: Settings
) -> None:
    script = (TEST_SCRIPTS / "wait-6min.csx").read_text()
    cold = await run_script(docker, settings, request_for(settings, script, MONO, timeout_s=3))
    assert cold.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED
    request = mono_request(settings, script)
    async with open_waiting_container(docker, settings, request) as waiting:
        await waiting.release(request)
        with trio.fail_after(30):
            await waiting.wait_for_output(STDOUT, b"Waiting 6 minutes\n")
        # What the worker does at the time limit.
        assert await docker.container_stop(waiting.container, settings.stop_grace_s)
        exit_code = await waiting.wait_for_exit()
        stdout, stderr = bytes(waiting.output[STDOUT]), waiting.stderr_without_report()
    assert (stdout, stderr, exit_code) == (
        RELEASED + cold.stdout.encode(),
        RELEASED + cold.stderr.encode(),
        cold.exit_code,
    )
    assert cold.stdout == "Waiting 6 minutes\n"


async def test_the_end_of_stdin_before_a_release_exits_0_silently(
    docker: DockerClient, settings: Settings
) -> None:
    request = mono_request(settings, (TEST_SCRIPTS / "hello-world.csx").read_text())
    async with open_waiting_container(docker, settings, request) as waiting:
        await trio.sleep(WARM_UP_S)
        waiting.close_stdin()
        assert await waiting.wait_for_exit() == 0
        assert (bytes(waiting.output[STDOUT]), waiting.stderr_without_report()) == (b"", b"")


async def test_a_released_hello_world_ends_sooner_than_a_cold_one(
    docker: DockerClient, settings: Settings
) -> None:
    script = (TEST_SCRIPTS / "hello-world.csx").read_text()
    cold = await run_script(docker, settings, mono_request(settings, script))
    warm = await run_warm(docker, settings, mono_request(settings, script))
    print(f"cold: start to exit {cold.duration_s:.3f} s")
    print(f"warm: release to exit {warm.release_to_exit_s:.3f} s")
    print(f"warm: release to the end of its output {warm.release_to_end_s:.3f} s")
    assert warm.job_output(STDOUT) == cold.stdout == "Hello from script\n"
    assert warm.release_to_exit_s < cold.duration_s
