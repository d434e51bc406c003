"""The `dsw` command: argument parsing and exit codes.

dsw worker          serve jobs from Kafka (settings from WORKER_* variables)
dsw run PATH        run one script in a sandbox, no Kafka
dsw submit PATH...  publish scripts as jobs and wait for their outcomes
dsw reap            remove orphaned sandbox containers
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path

import trio

from dsw import __version__, exit_codes, outcomes
from dsw.config import Settings, describe, load_settings
from dsw.docker import open_docker
from dsw.egress.network import open_egress_for
from dsw.errors import DswError
from dsw.job_files import jobs_from_files
from dsw.log import setup_logging
from dsw.messages import FinishedWith, encode
from dsw.preflight import preflight
from dsw.reaper import reap
from dsw.sandbox import ScriptOutcome, run_script
from dsw.sandbox_types import load_sandbox_type
from dsw.terminal import neutralised, write_output


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


RAW_HELP = "write the script's output to a terminal as is (control sequences included)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsw", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"dsw {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "worker",
        help="serve jobs from Kafka",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve jobs from Kafka until SIGTERM/SIGINT. Settings (environment):\n\n"
        + describe(),
    )

    run = commands.add_parser("run", help="run one script in a sandbox, without Kafka")
    run.add_argument("path", type=Path, help="the script (main.csx, or a .sh for the shell type)")
    run.add_argument(
        "--sandbox",
        help="sandbox type (default: by extension, else the first of WORKER_RUNNER_TYPES)",
    )
    run.add_argument("--nuget-config", type=Path, help="NuGet.Config to put beside the script")
    run.add_argument("--stdin", type=Path, help="file fed to the script's standard input")
    run.add_argument(
        "--timeout", type=_seconds, help="time limit in seconds (default: the worker's)"
    )
    run.add_argument(
        "--json", action="store_true", help="print the result as `finished` carries it"
    )
    run.add_argument("--raw", action="store_true", help=RAW_HELP)

    submit = commands.add_parser(
        "submit",
        help="publish scripts as jobs and wait for their outcomes",
        description="Publish one job per script to pending-<type>, as the scheduler does, and wait "
        "for each `finished`. Exit status: 0 all SUCCEEDED, 1 any FAILED, 124 any hit the time "
        "limit, 3 any REJECTED (the most severe wins), 2 usage or connection errors or --timeout, "
        "130 interrupted (SIGINT/SIGTERM).",
    )
    submit.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="scripts, or directories: every script in them (the type's extension, recursively, "
        "sorted); - reads one from stdin",
    )
    submit.add_argument("--sandbox", help="sandbox type (default: as for `dsw run`)")
    submit.add_argument("--nuget-config", type=Path, help="NuGet.Config sent with every job")
    submit.add_argument("--stdin", type=Path, help="file fed to every script's standard input")
    submit.add_argument(
        "--timeout",
        type=_seconds,
        help="give up after S seconds, publishing included (exit 2)",
    )
    submit.add_argument("--no-wait", action="store_true", help="publish, print the job ids, exit")
    submit.add_argument("--json", action="store_true", help="one `finished` JSON line per job")
    submit.add_argument("--raw", action="store_true", help=RAW_HELP)
    submit.add_argument(
        "--junit",
        type=Path,
        metavar="FILE",
        help="write a JUnit XML report to FILE, however the run ends (timeout, Ctrl-C too)",
    )
    submit.add_argument(
        "--suite", default="dsw", help="the report's testsuite name (default: %(default)s)"
    )

    commands.add_parser("reap", help="remove orphaned sandbox containers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except DswError as exc:
        print(f"dsw: invalid setting: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    setup_logging(settings.log_format, settings.log_level)
    try:
        if args.command == "run":
            return trio.run(_run_command, settings, args)
        if args.command == "reap":
            return trio.run(_reap_command, settings)
        if args.command == "submit":
            return trio.run(_submit_command, settings, args)
        # Imported here: `dsw run` and `dsw reap` need neither aiokafka nor trio-asyncio.
        from dsw.app import serve_worker

        trio.run(serve_worker, settings)
        return exit_codes.SUCCEEDED
    except* DswError as group:
        for error in _leaves(group):
            # Errors name files (a script's name is untrusted): shown as text, never sequences.
            print(f"dsw: {neutralised(str(error))}", file=sys.stderr)
    return exit_codes.USAGE


def _leaves(group: BaseExceptionGroup[DswError]) -> list[DswError]:
    found: list[DswError] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def default_sandbox(settings: Settings, path: str) -> str:
    return "linux-amd64-shell" if path.endswith(".sh") else settings.runner_types[0]


async def _run_command(settings: Settings, args: argparse.Namespace) -> int:
    sandbox = load_sandbox_type(
        settings.sandbox_dir, args.sandbox or default_sandbox(settings, str(args.path))
    )
    # The worker's own checks and limits: what it would reject is refused here (exit 2).
    [(_, _, job)] = jobs_from_files(
        [str(args.path)],
        settings,
        nuget_config=args.nuget_config,
        stdin=args.stdin,
        timeout_s=args.timeout,
    )
    outcome: ScriptOutcome | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        async with (
            open_docker(settings) as docker,
            open_egress_for(docker, settings, [sandbox]) as egress,
        ):
            await preflight(docker, settings, sandbox, egress)
            outcome = await run_script(docker, settings, job.request(sandbox), egress=egress)
        nursery.cancel_scope.cancel(reason="done")
    if outcome is None:
        print("dsw run: interrupted; the container was removed", file=sys.stderr)
        return exit_codes.INTERRUPTED
    finished = outcomes.accepted(job.job_id, outcome, settings)
    if args.json:
        print(encode(finished).decode())
    else:
        assert finished.script_results is not None
        write_output(sys.stdout, finished.script_results.stdout, args.raw)
        write_output(sys.stderr, finished.script_results.stderr, args.raw)
        if outcome.finished_with is not FinishedWith.SUCCEEDED:
            print(
                f"dsw run: {outcome.finished_with.value} (exit code {outcome.exit_code})",
                file=sys.stderr,
            )
    return exit_codes.OF_OUTCOME[outcome.finished_with]


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel(reason="interrupted")
            return


async def _submit_command(settings: Settings, args: argparse.Namespace) -> int:
    from dsw.submit import SubmitOptions, submit

    if args.junit is not None and args.no_wait:
        print("dsw submit: --junit needs the wait; drop --no-wait", file=sys.stderr)
        return exit_codes.USAGE
    options = SubmitOptions(
        paths=args.paths,
        sandbox=args.sandbox or default_sandbox(settings, args.paths[0]),
        nuget_config=args.nuget_config,
        stdin=args.stdin,
        timeout_s=args.timeout,
        wait=not args.no_wait,
        json_lines=args.json,
        raw=args.raw,
        junit=args.junit,
        suite=args.suite,
    )
    return await submit(settings, options)


async def _reap_command(settings: Settings) -> int:
    async with open_docker(settings) as docker:
        removed = await reap(docker, settings)
    print(f"dsw reap: removed {removed} container(s)")
    return exit_codes.SUCCEEDED
