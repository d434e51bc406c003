"""`just bench`: the worker warm and cold, against the raw Docker Engine floor, in one run.

    python -m benchmarks.bench [--quick | --full] [--jobs N] [--capacity C] [--repetitions R] ...

Two workers at once, each with its own topics: one with its warm pool (default size), one cold
(WORKER_WARM_CONTAINERS=0). Shell `echo hi` and C# hello world one at a time (`docker run --rm`,
the raw cold lifecycle, the raw warm hand-over, worker cold, worker warm); N shell jobs at
capacity C (raw, cold, warm) with the CPU of the worker, dockerd, containerd and the shims; an
idle pool container's memory; the worker's RSS; a job that prints 1 GB. Prints tables and the
targets, writes .local/bench/<time>.json, latest.json and a PNG of the latencies. It never fails
on a time; benchmarks/README.md says how to read it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import socket
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import trio

from benchmarks import phases
from benchmarks.cases import COLD, MONO, SHELL, WARM, Cases
from benchmarks.engine import RawEngine
from benchmarks.host import Daemon, tcp_listeners
from benchmarks.plot import plot
from benchmarks.report import render, say, write_json
from benchmarks.tables import tables
from benchmarks.worker import rss_kib
from dsw.config import MiB, Settings, load_settings, parse_size, unix_socket_path
from dsw.container_spec import WORKER_LABEL
from dsw.kafka import create_topics, delete_topics, open_kafka, open_reader
from tests.workers import free_port, run_worker

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    "quick": {"jobs": 24, "capacity": 4, "repetitions": 4, "serial": 5, "csharp": 5},
    "full": {"jobs": 100, "capacity": 4, "repetitions": 6, "serial": 20, "csharp": 20},
}
PARAMS = ("preset", "jobs", "capacity", "repetitions", "serial", "csharp", "flood_cap")


def _socket_path(settings: Settings) -> str:
    path = unix_socket_path(settings.docker_host)
    if path is None:
        raise SystemExit("bench: the raw baseline needs a local Docker socket (unix:///...)")
    return path


def _first_broker(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


def _kafka_reachable(bootstrap: str) -> None:
    try:
        socket.create_connection(_first_broker(bootstrap), timeout=5).close()
    except OSError as exc:
        message = f"bench: no Kafka broker at {bootstrap} ({exc}); run `just provision`"
        raise SystemExit(message) from None


def worker_settings(args: argparse.Namespace) -> dict[str, Settings]:
    """The two workers' settings: the environment's (defaults), each with its own topics,
    group, id and port, the bench's capacity; the cold one without a pool."""
    prefix = args.run_id + "-"
    base = load_settings(
        runner_types=[SHELL, MONO],
        max_containers=args.capacity,
        running_topic=prefix + "running",
        finished_topic=prefix + "finished",
    )
    # The environment's pool size, unless it turns the pool off: the warm worker has one.
    warm_size = base.warm_containers or None
    return {
        kind: msgspec.structs.replace(
            base,
            worker_id=prefix + kind,
            pending_topic_prefix=f"{prefix}{kind}-pending-",
            consumer_group_prefix=f"{prefix}{kind}-workers.",
            metrics_port=free_port(),
            warm_containers=warm_size if kind == WARM else 0,
        )
        for kind in (WARM, COLD)
    }


async def run(args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    """The whole bench; every container and topic it made is gone when it returns or raises."""
    prefix = args.run_id + "-"
    settings = worker_settings(args)
    base = settings[WARM]
    bootstrap = base.kafka_broker_url
    _kafka_reachable(bootstrap)
    result: dict[str, Any] = {
        "run_id": args.run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_at_start": os.getloadavg(),
        "params": {k: getattr(args, k) for k in PARAMS},
        "worker_command": args.worker_command or "python -m dsw worker",
        "worker_log": str(log_path),
    }
    t0 = time.perf_counter()
    socket_path = _socket_path(base)
    raw = RawEngine(socket_path, msgspec.structs.replace(base, worker_id=prefix + "raw"))
    try:
        async with open_kafka(msgspec.structs.replace(base, worker_id=prefix + "bench")) as kafka:
            cases = Cases(args, settings, kafka, raw)
            try:
                machine = await raw.machine([t.image for t in cases.types])
                daemon = Daemon.find(socket_path, machine["root_dir"], (WORKER_LABEL, prefix))
                cases.broker = tcp_listeners(_first_broker(bootstrap)[1])
                result["machine"] = {
                    **machine,
                    "python": platform.python_version(),
                    "os_cpus": os.cpu_count(),
                    "daemon_pids": {"dockerd": daemon.dockerd, "containerd": daemon.containerd},
                    "daemon_found_by_socket": daemon.exact,
                    "kafka_broker_pids": cases.broker,
                }
                topics = [*cases.topics.pending, base.running_topic, base.finished_topic]
                await create_topics(bootstrap, topics)
                async with open_reader(kafka, topics) as reader, trio.open_nursery() as nursery:
                    nursery.start_soon(cases.topics.follow, reader)
                    with log_path.open("ab") as log:
                        result.update(await _with_workers(cases, daemon, log))
                    nursery.cancel_scope.cancel()
            finally:
                with trio.move_on_after(30, shield=True):
                    await delete_topics(bootstrap, prefix)
    finally:
        with trio.move_on_after(60, shield=True):
            if removed := await raw.remove_labelled(WORKER_LABEL, prefix):
                say(f"removed {removed} leftover container(s)")
                result["leftover_containers"] = removed
            await raw.aclose()
    result["runtime_s"] = time.perf_counter() - t0
    result["load_at_end"] = os.getloadavg()
    result["problems"] = cases.problems
    return result


async def _with_workers(cases: Cases, daemon: Daemon, log: BinaryIO) -> dict[str, Any]:
    args = cases.args
    result: dict[str, Any] = {}
    say(f"starting a warm and a cold worker (capacity {args.capacity} each, log {log.name})")
    async with AsyncExitStack() as stack:
        for kind in (WARM, COLD):
            command = args.worker_command
            if command is None:
                cases.traces[kind] = Path(log.name).with_suffix(f".{kind}-api.jsonl")
                command = [
                    sys.executable,
                    "-m",
                    "benchmarks.traced_worker",
                    str(cases.traces[kind]),
                ]
            cases.workers[kind] = await stack.enter_async_context(
                run_worker(
                    cases.settings[kind],
                    log=log,
                    command=command,
                    ready_timeout_s=120,
                    drain_at_exit=True,
                )
            )
        for kind in (WARM, COLD):
            await cases.settle(kind)
        workers = cases.workers
        result["worker"] = {
            kind: {"startup_s": w.started_s, "idle_rss_mib": rss_kib(w) / 1024}
            for kind, w in workers.items()
        }
        ready = ", ".join(f"{kind} {w.started_s:.1f} s" for kind, w in workers.items())
        say(f"workers ready: {ready}")
        say(f"shell one at a time: {args.repetitions} rounds of {args.serial} per case")
        result["shell"] = await phases.one_at_a_time(
            cases, cases.shell, phases.ECHO, phases.ECHOED, args.repetitions, args.serial
        )
        result["load"] = await phases.at_capacity(cases, daemon)
        if args.csharp:
            say(f"C# hello world one at a time: {args.csharp} rounds")
            result["csharp"] = await phases.one_at_a_time(
                cases,
                cases.mono,
                phases.HELLO,
                phases.HELLOED,
                args.csharp,
                1,
                nugetConfigXml=phases.NUGET,
            )
        say("idle pool containers: memory")
        result["pool_memory"] = await phases.pool_memory(cases, daemon)
        for kind, w in workers.items():
            result["worker"][kind]["rss_after_mib"] = rss_kib(w) / 1024
        say("memory: a job that prints 1 GB, default output cap")
        result["flood"] = [await phases.flood(cases, workers[WARM], WARM)]
    if args.flood_cap:
        # The warm worker's topics and group (it has committed and left), another worker id;
        # only its output cap differs, so that much output really streams through it.
        flooder_settings = msgspec.structs.replace(
            cases.settings[WARM],
            worker_id=args.run_id + "-flood",
            runner_types=(SHELL,),
            max_containers=1,
            warm_containers=None,
            output_limit_bytes=args.flood_cap,
            metrics_port=free_port(),
        )
        say(f"memory: the 1 GB job again on a worker with a {args.flood_cap / MiB:g} MiB cap")
        async with run_worker(
            flooder_settings,
            log=log,
            command=args.worker_command,
            ready_timeout_s=120,
            drain_at_exit=True,
        ) as flooder:
            cases.settings["flood"], cases.workers["flood"] = flooder_settings, flooder
            # One job first: the worker joins the group before the measured one.
            await cases.worker_jobs("flood", cases.shell, phases.ECHO, phases.ECHOED, 1)
            result["worker"]["flood_idle_rss_mib"] = rss_kib(flooder) / 1024
            result["flood"].append(await phases.flood(cases, flooder, WARM))
    return result


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="just bench",
        description="Measure the dsw worker, warm and cold, against the raw Docker Engine floor.",
        epilog="Defaults: --quick. Results: <out>/<time>.json and <out>/latest.json.",
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="N=24 C=4 R=4, S=5, 5 C# rounds: a few minutes (default)",
    )
    preset.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="N=100 C=4 R=6, S=20, 20 C# rounds: about twenty minutes",
    )
    parser.add_argument("--jobs", "-n", type=int, help="N: jobs published at once per round")
    parser.add_argument(
        "--capacity", "-c", type=int, help="C: jobs in flight (WORKER_MAX_CONTAINERS)"
    )
    parser.add_argument("--repetitions", "-r", type=int, help="R: rounds of each shell phase")
    parser.add_argument("--serial", "-s", type=int, help="S: one-at-a-time jobs per case and round")
    parser.add_argument("--csharp", type=int, help="C# hello world rounds, one per case (0 skips)")
    parser.add_argument(
        "--flood-cap",
        type=_size,
        default=64 * MiB,
        help="output cap of the worker that runs the 1 GB job a second time (default 64m; 0 "
        "skips that run)",
    )
    parser.add_argument(
        "--worker-command",
        type=shlex.split,
        help="command that starts the worker, e.g. to compare a build (default: python -m dsw "
        "worker); it gets the WORKER_* variables",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench", help="JSON folder")
    args = parser.parse_args(argv)
    args.preset = args.preset or "quick"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("jobs", "capacity", "repetitions", "serial"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    if args.csharp < 0 or args.flood_cap < 0:
        parser.error("--csharp and --flood-cap cannot be negative")
    args.run_id = f"bench-{uuid.uuid4().hex[:8]}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say(
        f"{args.preset}: N={args.jobs} C={args.capacity} R={args.repetitions} "
        f"serial={args.serial} csharp={args.csharp} run={args.run_id}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / time.strftime("%Y%m%d-%H%M%S-worker.log")
    result = trio.run(run, args, log_path)
    path = write_json(result, args.out)
    picture = plot(result, path.with_suffix(".png"))
    title, sections, notes = tables(result)
    notes.append(f"JSON: {path} (and latest.json); worker log: {log_path}")
    notes.append(
        f"plot: {picture}" if picture else "plot: skipped (no matplotlib: the bench extra)"
    )
    render(title, sections, notes)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
