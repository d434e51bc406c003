"""The `dsw` command: argument parsing and exit codes.

dsw worker          serve jobs from Kafka (settings from WORKER_* variables)
dsw run PATH        run one script in a sandbox, no Kafka
dsw reap            remove orphaned sandbox containers
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid
from pathlib import Path

import trio

from dsw import __version__
from dsw.config import Settings, describe, load_settings
from dsw.container_spec import JobLimits
from dsw.docker import open_docker
from dsw.errors import DswError
from dsw.log import setup_logging
from dsw.messages import Finished, ScriptResults, Status, fit
from dsw.preflight import preflight
from dsw.reaper import reap
from dsw.sandbox import FinishedWith, ScriptOutcome, ScriptRequest, run_script
from dsw.sandbox_types import load_sandbox_type

EXIT_CODES = {
    FinishedWith.SUCCEEDED: 0,
    FinishedWith.FAILED: 1,
    FinishedWith.TIME_LIMIT_EXCEEDED: 124,
}
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
    run.add_argument("--timeout", type=float, help="time limit in seconds (default: the worker's)")
    run.add_argument(
        "--json", action="store_true", help="print the result as `finished` carries it"
    )

    submit = commands.add_parser(
        "submit",
        help="publish scripts as jobs and wait for their outcomes",
        description="Publish one job per script to pending-<type>, as the scheduler does, and wait "
        "for each `finished`. Exit status: 0 all SUCCEEDED, 1 any FAILED, 124 any hit the time "
        "limit, 3 any REJECTED (the most severe wins), 2 usage or connection errors or --timeout.",
    )
    submit.add_argument("paths", nargs="+", metavar="PATH", help="scripts; - reads one from stdin")
    submit.add_argument("--sandbox", help="sandbox type (default: as for `dsw run`)")
    submit.add_argument("--nuget-config", help="NuGet.Config sent with every job")
    submit.add_argument("--stdin", help="file fed to every script's standard input")
    submit.add_argument("--timeout", type=float, help="give up waiting after S seconds (exit 2)")
    submit.add_argument("--no-wait", action="store_true", help="publish, print the job ids, exit")
    submit.add_argument("--json", action="store_true", help="one `finished` JSON line per job")

    commands.add_parser("reap", help="remove orphaned sandbox containers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except DswError as exc:
        print(f"dsw: invalid setting: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings.log_format, settings.log_level)
    code = EXIT_USAGE
    try:
        if args.command == "run":
            code = trio.run(_run_command, settings, args)
        elif args.command == "reap":
            code = trio.run(_reap_command, settings)
        elif args.command == "submit":
            code = trio.run(_submit_command, settings, args)
        else:
            # Imported here: `dsw run` and `dsw reap` need neither aiokafka nor trio-asyncio.
            from dsw.app import serve_worker

            code = trio.run(serve_worker, settings)
    except* DswError as group:
        for error in _leaves(group):
            print(f"dsw: {error}", file=sys.stderr)
    return code


def _leaves(group: BaseExceptionGroup[DswError]) -> list[DswError]:
    found: list[DswError] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _default_sandbox(settings: Settings, path: Path) -> str:
    return "linux-amd64-shell" if path.suffix == ".sh" else settings.runner_types[0]


async def _run_command(settings: Settings, args: argparse.Namespace) -> int:
    sandbox = load_sandbox_type(
        settings.sandbox_dir, args.sandbox or _default_sandbox(settings, args.path)
    )
    try:
        script = (
            args.path.read_text(encoding="utf-8") if str(args.path) != "-" else sys.stdin.read()
        )
        nuget = args.nuget_config.read_text(encoding="utf-8") if args.nuget_config else None
        stdin = args.stdin.read_text(encoding="utf-8") if args.stdin else None
    except OSError as exc:
        print(f"dsw run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    timeout_s = args.timeout or settings.job_timeout_s
    request = ScriptRequest(
        job_id=str(uuid.uuid4()),
        sandbox=sandbox,
        script=script,
        nuget_config=nuget,
        stdin=stdin,
        limits=JobLimits(timeout_s=timeout_s, memory_bytes=settings.memory_bytes),
    )
    outcome: ScriptOutcome | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        async with open_docker(settings) as docker:
            await preflight(docker, settings, sandbox)
            outcome = await run_script(docker, settings, request)
        nursery.cancel_scope.cancel(reason="done")
    if outcome is None:
        print("dsw run: interrupted; the container was removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        finished = Finished(
            job_id=request.job_id,
            status=Status.ACCEPTED,
            script_results=ScriptResults.of(outcome),
            worker_id=settings.worker_id,
        )
        print(fit(finished, settings.max_message_bytes).decode())
    else:
        sys.stdout.write(outcome.stdout)
        sys.stderr.write(outcome.stderr)
        if outcome.finished_with is not FinishedWith.SUCCEEDED:
            print(
                f"dsw run: {outcome.finished_with.value} (exit code {outcome.exit_code}"
                f"{', out of memory' if outcome.oom_killed else ''}"
                f"{', output limit exceeded' if outcome.output_limit_exceeded else ''})",
                file=sys.stderr,
            )
    return EXIT_CODES[outcome.finished_with]


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel(reason="interrupted")
            return


async def _submit_command(settings: Settings, args: argparse.Namespace) -> int:
    from dsw.submit import SubmitOptions, submit

    options = SubmitOptions(
        paths=args.paths,
        sandbox=args.sandbox or _default_sandbox(settings, Path(args.paths[0])),
        nuget_config=args.nuget_config,
        stdin=args.stdin,
        timeout_s=args.timeout,
        wait=not args.no_wait,
        json_lines=args.json,
    )
    return await submit(settings, options)


async def _reap_command(settings: Settings) -> int:
    async with open_docker(settings) as docker:
        removed = await reap(docker, settings)
    print(f"dsw reap: removed {removed} container(s)")
    return 0
