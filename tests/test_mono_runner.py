"""The mono sandbox's C# runner via the real daemon: features, compile errors, stack traces."""

from __future__ import annotations

import textwrap

import pytest

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.messages import FinishedWith
from dsw.sandbox import ScriptOutcome, run_script
from tests.conftest import TEST_SCRIPTS
from tests.sandbox_runs import request_for

# What a script author cannot use: the evaluator's classes, the runner's and the
# evaluator's frames, Mono's IL offsets and module ids.
NOISE = ("<InteractiveExpressionClass>", "__DswScript", "Mono.CSharp", "Dsw.", "[0x", ">:0")


async def run_csx(docker: DockerClient, settings: Settings, script: str) -> ScriptOutcome:
    request = request_for(settings, textwrap.dedent(script), "linux-amd64-mono")
    return await run_script(docker, settings, request)


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


@pytest.mark.parametrize(
    ("script", "trace"),
    [
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
    ],
)
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
