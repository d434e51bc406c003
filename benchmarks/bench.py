"""`just bench`: the worker end to end against the raw Docker Engine floor, in one run.

    python -m benchmarks.bench [--quick | --full] [--jobs N] [--capacity C] [--repetitions R] ...

Warm-up; R interleaved rounds of shell `echo hi` jobs (raw Engine API and worker end to end, one
at a time and N at capacity C); C# hello world on the mono sandbox (`docker run --rm`, raw API,
worker); the worker's RSS while C jobs are in flight and while a job prints 1 GB. Prints a table,
writes .local/bench/<time>.json and latest.json. It only measures: nothing passes or fails on a
time. benchmarks/README.md says how to read it.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import trio

from benchmarks.engine import RawEngine
from benchmarks.phases import ECHO, MONO, SHELL, Bench
from benchmarks.report import render, say, tables, write_json
from benchmarks.worker import rss_kib
from dsw.config import MiB, Settings, load_settings, parse_size, unix_socket_path
from dsw.container_spec import WORKER_LABEL
from dsw.kafka import create_topics, delete_topics, open_kafka, open_reader
from tests.workers import free_port, run_worker

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    "quick": {"jobs": 24, "capacity": 4, "repetitions": 4, "serial": 6, "csharp": 3},
    "full": {"jobs": 100, "capacity": 4, "repetitions": 6, "serial": 20, "csharp": 10},
}
PARAMS = ("preset", "jobs", "capacity", "repetitions", "serial", "csharp", "flood_cap")


def _socket_path(settings: Settings) -> str:
    path = unix_socket_path(settings.docker_host)
    if path is None:
        raise SystemExit("bench: the raw baseline needs a local Docker socket (unix:///...)")
    return path


def _kafka_reachable(bootstrap: str) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        message = f"bench: no Kafka broker at {bootstrap} ({exc}); run `just provision`"
        raise SystemExit(message) from None


async def run(args: argparse.Namespace, log_path: Path) -> dict[str, Any]:
    """The whole bench; every container and topic it made is gone when it returns or raises."""
    prefix = args.run_id + "-"
    # The worker's settings: the environment's (defaults), with the bench's own topics, group,
    # id, port and capacity. The raw client creates its containers from the same settings.
    settings = load_settings(
        worker_id=args.run_id + "-worker",
        runner_types=[SHELL, MONO],
        max_containers=args.capacity,
        pending_topic_prefix=prefix + "pending-",
        consumer_group_prefix=prefix + "workers.",
        running_topic=prefix + "running",
        finished_topic=prefix + "finished",
        metrics_port=free_port(),
    )
    bootstrap = settings.kafka_broker_url
    _kafka_reachable(bootstrap)
    result: dict[str, Any] = {
        "run_id": args.run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {k: getattr(args, k) for k in PARAMS},
        "worker_command": args.worker_command or "python -m dsw worker",
        "worker_log": str(log_path),
    }
    t0 = time.perf_counter()
    raw = RawEngine(
        _socket_path(settings), msgspec.structs.replace(settings, worker_id=prefix + "raw")
    )
    bench_settings = msgspec.structs.replace(settings, worker_id=prefix + "bench")
    try:
        async with open_kafka(bench_settings) as kafka:
            bench = Bench(args, settings, kafka, raw)
            try:
                result["machine"] = {
                    **await raw.machine([bench.shell.image, bench.mono.image]),
                    "python": platform.python_version(),
                    "os_cpus": os.cpu_count(),
                }
                topics = [bench.pending(bench.shell), bench.pending(bench.mono)]
                topics += [settings.running_topic, settings.finished_topic]
                await create_topics(bootstrap, topics)
                async with open_reader(kafka, topics) as reader, trio.open_nursery() as nursery:
                    nursery.start_soon(bench.topics.follow, reader)
                    with log_path.open("ab") as log:
                        result.update(await _with_workers(bench, settings, log))
                    nursery.cancel_scope.cancel()
            finally:
                with trio.move_on_after(30, shield=True):
                    await delete_topics(bootstrap, prefix)
    finally:
        with trio.move_on_after(60, shield=True):
            if removed := await raw.remove_labelled(WORKER_LABEL, prefix):
                say(f"removed {removed} leftover container(s)")
            await raw.aclose()
    result["runtime_s"] = time.perf_counter() - t0
    result["problems"] = bench.problems
    return result


async def _with_workers(bench: Bench, settings: Settings, log: BinaryIO) -> dict[str, Any]:
    args = bench.args
    result: dict[str, Any] = {}
    say(f"starting the worker (capacity {args.capacity}, log {log.name})")
    async with run_worker(
        settings, log=log, command=args.worker_command, ready_timeout_s=120, drain_at_exit=True
    ) as worker:
        say(f"worker ready after {worker.started_s:.1f} s")
        idle = rss_kib(worker) / 1024
        result["shell"] = await bench.shell_rounds(worker)
        after = rss_kib(worker) / 1024
        if args.csharp:
            result["csharp"] = await bench.csharp(worker)
        say("memory: a job that prints 1 GB, default output cap")
        result["flood"] = [await bench.flood(worker)]
        result["worker"] = {
            "startup_s": worker.started_s,
            "idle_rss_mib": idle,
            "rss_after_shell_rounds_mib": after,
        }
    if args.flood_cap:
        # Same topics and group (the first worker has committed and left), another worker id;
        # only its output cap differs, so that much output really streams through it.
        flooder_settings = msgspec.structs.replace(
            settings,
            worker_id=args.run_id + "-flood",
            runner_types=(SHELL,),
            max_containers=1,
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
            await bench.worker_jobs(flooder, bench.shell, ECHO, 1, alone=True)  # joins the group
            result["worker"]["flood_worker_idle_rss_mib"] = rss_kib(flooder) / 1024
            result["flood"].append(await bench.flood(flooder))
    return result


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="just bench",
        description="Measure the dsw worker against the raw Docker Engine floor.",
        epilog="Defaults: --quick. Results: <out>/<time>.json and <out>/latest.json.",
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="N=24 C=4 R=4, about two minutes (default)",
    )
    preset.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="N=100 C=4 R=6, more one-at-a-time and C# samples: about ten minutes",
    )
    parser.add_argument("--jobs", "-n", type=int, help="N: jobs published at once per round")
    parser.add_argument(
        "--capacity", "-c", type=int, help="C: jobs in flight (WORKER_MAX_CONTAINERS)"
    )
    parser.add_argument("--repetitions", "-r", type=int, help="R: interleaved raw/worker rounds")
    parser.add_argument("--serial", "-s", type=int, help="one-at-a-time jobs per round")
    parser.add_argument("--csharp", type=int, help="C# hello world repetitions (0 skips)")
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
    title, sections, notes = tables(result)
    render(title, sections, [*notes, f"JSON: {path} (and latest.json); worker log: {log_path}"])
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
