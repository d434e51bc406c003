"""`just bench`: the worker end to end against the raw Docker Engine floor, in one run.

    python -m benchmarks.bench [--quick | --full] [--jobs N] [--capacity C] [--repetitions R] ...

Phases (see benchmarks/README.md): warm-up; R interleaved rounds of shell `echo hi` jobs, raw
Engine API and worker end to end, one at a time and N at capacity C; C# hello world on the mono
sandbox via `docker run --rm`, the raw API and the worker; the worker's RSS while C jobs are in
flight and while a job floods 1 GB of output. Prints a table and writes .local/bench/*.json.
It only measures: nothing here passes or fails on a time.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from benchmarks.engine import RawEngine, cli_run
from benchmarks.report import (
    latency_summary,
    memory_row,
    phase,
    pooled,
    ratios,
    render,
    stats_row,
    write_json,
)
from benchmarks.worker import (
    HISTOGRAMS,
    RssWindow,
    Seen,
    Topics,
    WorkerProcess,
    cpu_s,
    free_port,
    job_value,
    pids_named,
    run_worker,
)
from dsw.config import MiB, Settings, load_settings
from dsw.container_spec import WORKER_LABEL
from dsw.kafka import Kafka, create_topics, delete_topics, open_kafka, open_reader
from dsw.sandbox_types import SandboxType, load_sandbox_type

ROOT = Path(__file__).resolve().parent.parent
SHELL, MONO = "linux-amd64-shell", "linux-amd64-mono"
ECHO = "echo hi\n"
HELLO = 'Console.WriteLine("Hello from script");'
# The original README's example job carries this NuGet config; the mono type does not upload it.
NUGET = (
    '<?xml version="1.0" encoding="utf-8"?><configuration><packageSources><add key="NuGet '
    'official package source" value="https://nuget.org/api/v2/" /></packageSources>'
    '<activePackageSource><add key="All" value="(Aggregate source)" /></activePackageSource>'
    "</configuration>"
)
FLOOD = "head -c 1000000000 /dev/zero | tr '\\0' x\n"
PRESETS = {
    "quick": {"jobs": 24, "capacity": 4, "repetitions": 4, "serial": 6, "csharp": 3},
    "full": {"jobs": 100, "capacity": 4, "repetitions": 5, "serial": 20, "csharp": 10},
}


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, settings: Settings, kafka: Kafka) -> None:
        self.args = args
        self.settings = settings
        self.kafka = kafka
        self.shell = load_sandbox_type(settings.sandbox_dir, SHELL)
        self.mono = load_sandbox_type(settings.sandbox_dir, MONO)
        raw_settings = msgspec.structs.replace(settings, worker_id=args.run_id + "-raw")
        self.raw = RawEngine(socket_path(settings), raw_settings)
        self.topics = Topics(
            [settings.pending_topic_prefix + t for t in (SHELL, MONO)],
            settings.running_topic,
            settings.finished_topic,
        )
        self.problems: list[str] = []
        self.dockerd, self.containerd = pids_named("dockerd"), pids_named("containerd")

    def cpu(self, worker: WorkerProcess | None = None) -> dict[str, float]:
        """CPU seconds so far of the daemons, this process (the raw client) and the worker."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        found = {
            "dockerd": cpu_s(self.dockerd),
            "containerd": cpu_s(self.containerd),
            "bench": own.ru_utime + own.ru_stime,
        }
        if worker is not None:
            found["worker"] = cpu_s([worker.pid])
        return found

    def pending(self, sandbox: SandboxType) -> str:
        return self.settings.pending_topic_prefix + sandbox.name

    # -- one phase each ----------------------------------------------------------------------

    async def raw_jobs(self, sandbox: SandboxType, script: str, n: int, c: int) -> dict[str, Any]:
        """n raw lifecycles, c at a time; latency from the common start (slot wait included)."""
        limiter = trio.CapacityLimiter(c)
        latencies: list[float] = []
        parts: dict[str, list[float]] = {}
        cpu = self.cpu()
        t0 = time.perf_counter()

        async def one() -> None:
            async with limiter:
                result = await self.raw.run(sandbox, script)
            latencies.append(time.perf_counter() - t0)
            if result.exit_code != 0:
                self.problems.append(f"raw job exited {result.exit_code}")
            for name in ("create_s", "start_s", "wait_s", "logs_s", "remove_s"):
                parts.setdefault(name, []).append(getattr(result, name))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        wall = time.perf_counter() - t0
        means = {k.replace("_s", "_ms"): 1000 * sum(v) / len(v) for k, v in parts.items()}
        return phase(
            latencies, wall, mean_phases=means, cpu_ms_per_job=_per_job(cpu, self.cpu(), n)
        )

    async def raw_serial(self, sandbox: SandboxType, script: str, n: int) -> dict[str, Any]:
        """n raw lifecycles one after another; latency of each."""
        latencies, parts = [], {}
        cpu = self.cpu()
        t0 = time.perf_counter()
        for _ in range(n):
            result = await self.raw.run(sandbox, script)
            latencies.append(result.total_s)
            for name in ("create_s", "start_s", "wait_s", "logs_s", "remove_s"):
                parts.setdefault(name, []).append(getattr(result, name))
        means = {k.replace("_s", "_ms"): 1000 * sum(v) / len(v) for k, v in parts.items()}
        wall = time.perf_counter() - t0
        return phase(
            latencies, wall, mean_phases=means, cpu_ms_per_job=_per_job(cpu, self.cpu(), n)
        )

    def _check(self, seen: list[Seen], expect_stdout: str) -> None:
        for one in seen:
            results = (one.finished or {}).get("scriptResults") or {}
            if results.get("finishedWith") != "SUCCEEDED" or results.get("stdout") != expect_stdout:
                self.problems.append(f"unexpected finished: {str(one.finished)[:300]}")

    async def e2e_jobs(
        self, worker: WorkerProcess, sandbox: SandboxType, script: str, n: int, *, serial: bool
    ) -> dict[str, Any]:
        """n jobs through Kafka and the worker, all at once or one at a time; broker-timestamp
        latency per job, wall-time throughput, the worker's own phase means."""
        before = await worker.histograms()
        jobs = [(id_ := str(uuid.uuid4()), job_value(id_, script)) for _ in range(n)]
        cpu = self.cpu(worker)
        t0 = time.perf_counter()
        with trio.fail_after(60 + 10 * n):
            if serial:
                seen = []
                for job in jobs:
                    seen += await self.topics.run(self.kafka, self.pending(sandbox), [job])
            else:
                seen = await self.topics.run(self.kafka, self.pending(sandbox), jobs)
        wall = max(s.finished_at or 0 for s in seen) - t0
        cpu_per_job = _per_job(cpu, self.cpu(worker), n)
        after = await worker.histograms()
        self._check(seen, "hi\n" if sandbox is self.shell else "Hello from script\n")
        to_running = [
            (s.running_ms - s.pending_ms) / 1000 for s in seen if s.running_ms and s.pending_ms
        ]
        return phase(
            [s.latency_s for s in seen],
            wall,
            pending_to_running_ms=latency_summary(to_running)["mean_ms"],
            worker_phases_ms=_phase_means(before, after),
            cpu_ms_per_job=cpu_per_job,
        )

    # -- the bench ---------------------------------------------------------------------------

    async def shell_rounds(self, worker: WorkerProcess) -> dict[str, Any]:
        a = self.args
        say(f"warm-up: {a.capacity + 2} raw and {a.capacity + 2} worker jobs")
        await self.raw_serial(self.shell, ECHO, 2)
        await self.raw_jobs(self.shell, ECHO, a.capacity, a.capacity)
        await self.e2e_jobs(worker, self.shell, ECHO, 2, serial=True)
        await self.e2e_jobs(worker, self.shell, ECHO, a.capacity, serial=False)
        rounds, peaks = [], []
        for r in range(a.repetitions):
            # ABBA: odd rounds start with raw, even rounds with the worker, so drift cancels.
            order = ["raw", "e2e"] if r % 2 == 0 else ["e2e", "raw"]
            say(f"round {r + 1}/{a.repetitions}: {a.serial} alone, {a.jobs} at C={a.capacity}")
            result: dict[str, Any] = {"round": r + 1, "order": "-".join(order)}
            for kind in order:
                if kind == "raw":
                    result["raw_serial"] = await self.raw_serial(self.shell, ECHO, a.serial)
                else:
                    result["e2e_serial"] = await self.e2e_jobs(
                        worker, self.shell, ECHO, a.serial, serial=True
                    )
            for kind in order:
                if kind == "raw":
                    result["raw_load"] = await self.raw_jobs(self.shell, ECHO, a.jobs, a.capacity)
                else:
                    async with RssWindow(worker).open() as window:
                        result["e2e_load"] = await self.e2e_jobs(
                            worker, self.shell, ECHO, a.jobs, serial=False
                        )
                    result["e2e_load"]["worker_peak_rss_mib"] = window.peak_mib
                    peaks.append(window.peak_mib)
            rounds.append(result)
        return {
            "rounds": rounds,
            "raw_serial": pooled(rounds, "raw_serial"),
            "e2e_serial": pooled(rounds, "e2e_serial"),
            "raw_load": pooled(rounds, "raw_load"),
            "e2e_load": pooled(rounds, "e2e_load"),
            "serial_ratio": ratios(rounds, "e2e_serial", "raw_serial"),
            "load_ratio": ratios(rounds, "e2e_load", "raw_load"),
            "worker_peak_rss_mib_at_capacity": max(peaks),
        }

    async def csharp(self, worker: WorkerProcess) -> dict[str, Any]:
        k = self.args.csharp
        cli = shutil.which("docker") is not None
        runs: dict[str, list[float]] = {"cli": [], "raw": [], "e2e": []}

        async def cli_once() -> None:
            seconds, out = await cli_run(self.settings, self.mono, HELLO)
            runs["cli"].append(seconds)
            if out != b"Hello from script\n":
                self.problems.append(f"docker run printed {out[:200]!r}")

        async def raw_once() -> None:
            runs["raw"].append((await self.raw.run(self.mono, HELLO)).total_s)

        async def e2e_once() -> None:
            id_ = str(uuid.uuid4())
            value = job_value(id_, HELLO, nugetConfigXml=NUGET)
            with trio.fail_after(120):
                seen = await self.topics.run(self.kafka, self.pending(self.mono), [(id_, value)])
            self._check(seen, "Hello from script\n")
            runs["e2e"].append(seen[0].latency_s)

        steps: list[Callable[[], Awaitable[None]]] = [raw_once, e2e_once]
        if cli:
            steps.insert(0, cli_once)
        say(f"C# hello world on mono: warm-up, then {k} x {len(steps)} interleaved")
        for step in steps:
            await step()
        runs = {"cli": [], "raw": [], "e2e": []}
        for i in range(k):
            for j in range(len(steps)):
                await steps[(i + j) % len(steps)]()  # rotate the order each repetition
        summary = {name: latency_summary(values) for name, values in runs.items() if values}
        for stats in summary.values():
            stats["jobs_per_s"] = 1000 / stats["mean_ms"]
        e2e = summary["e2e"]["p50_ms"]
        return {
            "samples_s": runs,
            **summary,
            "e2e_over_raw_p50": e2e / summary["raw"]["p50_ms"],
            "e2e_over_cli_p50": e2e / summary["cli"]["p50_ms"] if cli else math.nan,
        }

    async def flood(self, worker: WorkerProcess) -> dict[str, Any]:
        """One job that prints 1 GB; the worker's cap stops it. RSS and what came back."""
        id_ = str(uuid.uuid4())
        async with RssWindow(worker).open() as window:
            with trio.fail_after(300):
                seen = await self.topics.run(
                    self.kafka, self.pending(self.shell), [(id_, job_value(id_, FLOOD))]
                )
        results = (seen[0].finished or {}).get("scriptResults") or {}
        return {
            "output_limit_bytes": worker.settings.output_limit_bytes,
            "peak_rss_mib": window.peak_mib,
            "rss_samples": window.samples,
            "latency_s": seen[0].latency_s,
            "finished_with": results.get("finishedWith"),
            "output_limit_exceeded": results.get("outputLimitExceeded"),
            "stdout_truncated": results.get("stdoutTruncated"),
            "stdout_chars_in_finished": len(results.get("stdout") or ""),
            "duration_s": results.get("durationSeconds"),
        }


def _per_job(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {name: 1000 * (after[name] - before[name]) / n for name in before}


def _phase_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    means = {}
    for name in HISTOGRAMS:
        total = after[name][0] - before[name][0]
        count = after[name][1] - before[name][1]
        short = name.removeprefix("dsw_").removesuffix("_seconds")
        means[short + "_ms"] = 1000 * total / count if count else math.nan
    return means


def socket_path(settings: Settings) -> str:
    if not settings.docker_host.startswith("unix:"):
        raise SystemExit("bench: the raw baseline needs a local Docker socket (unix:///...)")
    return "/" + settings.docker_host.removeprefix("unix:").lstrip("/")


def _kafka_reachable(bootstrap: str) -> None:
    import socket

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        message = f"bench: no Kafka broker at {bootstrap} ({exc}); run `just provision`"
        raise SystemExit(message) from None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = args.run_id + "-"
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything runs)
    log_path = out / time.strftime("%Y%m%d-%H%M%S-worker.log")
    result: dict[str, Any] = {
        "run_id": args.run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            k: getattr(args, k)
            for k in (
                "preset",
                "jobs",
                "capacity",
                "repetitions",
                "serial",
                "csharp",
                "flood_cap",
                "worker_command",
            )
        },
        "worker_log": str(log_path),
    }
    t0 = time.perf_counter()
    bench_settings = msgspec.structs.replace(settings, worker_id=args.run_id + "-bench")
    async with open_kafka(bench_settings) as kafka:
        bench = Bench(args, settings, kafka)
        try:
            result["machine"] = {
                **await bench.raw.machine([bench.shell.image, bench.mono.image]),
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
            with trio.move_on_after(60, shield=True):
                removed = await bench.raw.remove_labelled(WORKER_LABEL, args.run_id)
                if removed:
                    say(f"removed {removed} leftover container(s)")
                await delete_topics(bootstrap, prefix)
                await bench.raw.aclose()
    result["runtime_s"] = time.perf_counter() - t0
    result["problems"] = bench.problems
    return result


async def _with_workers(bench: Bench, settings: Settings, log: Any) -> dict[str, Any]:
    args, result = bench.args, {}
    say(f"starting the worker (capacity {args.capacity}, log {log.name})")
    async with run_worker(settings, log, args.worker_command) as worker:
        say(f"worker ready after {worker.started_s:.1f} s")
        idle = worker.rss_kib() / 1024
        result["shell"] = await bench.shell_rounds(worker)
        after = worker.rss_kib() / 1024
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
        # Same topics and group, another worker id; only its output cap differs.
        changed = msgspec.structs.replace(
            settings,
            worker_id=args.run_id + "-flood",
            runner_types=(SHELL,),
            max_containers=1,
            output_limit_bytes=args.flood_cap,
            metrics_port=free_port(),
        )
        say(f"memory: the 1 GB job again on a worker with a {args.flood_cap // MiB} MiB cap")
        async with run_worker(changed, log, args.worker_command) as flooder:
            await bench.e2e_jobs(flooder, bench.shell, ECHO, 1, serial=True)  # joins the group
            result["worker"]["flood_worker_idle_rss_mib"] = flooder.rss_kib() / 1024
            result["flood"].append(await bench.flood(flooder))
    return result


def tables(result: dict[str, Any]) -> tuple[str, list[tuple[str, list[list[str]]]], list[str]]:
    """The title, table sections and notes of a result."""
    p, m, sh = result["params"], result["machine"], result["shell"]
    n, c, r, s = p["jobs"], p["capacity"], p["repetitions"], p["serial"]
    title = (
        f"dsw bench ({p['preset']}): {m['cpus']} CPUs, Docker {m['docker']}, cgroup v{m['cgroup']}"
        f" — {result['runtime_s']:.0f} s"
    )
    sections = [
        (
            f"shell `echo hi`, one at a time ({s} x {r} rounds)",
            [
                stats_row("raw Engine API", sh["raw_serial"]),
                stats_row("worker end to end", sh["e2e_serial"], sh["serial_ratio"]),
            ],
        ),
        (
            f"shell `echo hi`, {n} jobs at once, capacity {c} ({r} rounds)",
            [
                stats_row("raw Engine API", sh["raw_load"]),
                stats_row("worker end to end", sh["e2e_load"], sh["load_ratio"]),
            ],
        ),
    ]
    if cs := result.get("csharp"):
        ratio = {"jobs_per_s": math.nan, "p50": cs["e2e_over_raw_p50"]}
        rows = [stats_row("docker run --rm (CLI)", cs["cli"])] if "cli" in cs else []
        rows += [
            stats_row("raw Engine API", cs["raw"]),
            stats_row("worker end to end", cs["e2e"], ratio),
        ]
        sections.append((f"C# hello world (mono), one at a time ({p['csharp']})", rows))
    w, floods = result["worker"], result["flood"]
    memory = [
        memory_row("worker idle, after start-up", w["idle_rss_mib"]),
        memory_row(f"worker peak, {c} jobs in flight", sh["worker_peak_rss_mib_at_capacity"]),
    ]
    for flood in floods:
        cap = flood["output_limit_bytes"]
        cap_text = f"{cap // MiB} MiB" if cap >= MiB else f"{cap // 1024} KiB"
        memory.append(
            memory_row(f"worker peak, job printing 1 GB (cap {cap_text})", flood["peak_rss_mib"])
        )
    sections.append(("memory (worker RSS)", memory))
    notes = [_where_time_goes(sh), _cpu_note(sh), _rounds_note(sh)]
    if cs:
        notes.append(
            f"C#: worker/raw p50 {cs['e2e_over_raw_p50']:.2f}x, "
            f"worker/docker run p50 {cs['e2e_over_cli_p50']:.2f}x"
        )
    for flood in floods:
        notes.append(
            f"1 GB flood, cap {flood['output_limit_bytes']} B: {flood['finished_with']}, "
            f"output limit exceeded={flood['output_limit_exceeded']}, container ran "
            f"{flood['duration_s']} s, {flood['stdout_chars_in_finished']} chars in `finished`"
        )
    notes += [f"PROBLEM: {problem}" for problem in result["problems"][:10]]
    return title, sections, notes


def _where_time_goes(shell: dict[str, Any]) -> str:
    rounds = shell["rounds"]
    raw = {
        k: statistics.fmean(r["raw_serial"]["mean_phases"][k] for r in rounds)
        for k in rounds[0]["raw_serial"]["mean_phases"]
    }
    worker = {
        k: statistics.fmean(r["e2e_serial"]["worker_phases_ms"][k] for r in rounds)
        for k in rounds[0]["e2e_serial"]["worker_phases_ms"]
    }
    raw_text = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in raw.items())
    worker_text = ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in worker.items())
    return f"mean ms one at a time — raw: {raw_text}; worker (its /metrics): {worker_text}"


def _cpu_note(shell: dict[str, Any]) -> str:
    def mean_of(key: str) -> str:
        per_round = [r[key]["cpu_ms_per_job"] for r in shell["rounds"]]
        names = [n for n in ("worker", "bench", "dockerd", "containerd") if n in per_round[0]]
        if key.startswith("e2e"):
            names.remove("bench")  # the bench's Kafka reader, not a cost of the worker
        return ", ".join(
            f"{'raw client' if n == 'bench' else n} {statistics.fmean(p[n] for p in per_round):.0f}"
            for n in names
        )

    return f"CPU ms per job at capacity — raw: {mean_of('raw_load')}; worker: {mean_of('e2e_load')}"


def _rounds_note(shell: dict[str, Any]) -> str:
    def listed(values: list[float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    return (
        "e2e/raw per round — one at a time p50: "
        f"{listed(shell['serial_ratio']['p50_rounds'])}; at capacity jobs/s: "
        f"{listed(shell['load_ratio']['jobs_per_s_rounds'])}, p50: "
        f"{listed(shell['load_ratio']['p50_rounds'])}"
    )


def _size(text: str) -> int:
    units = {"": 1, "k": 1024, "m": MiB, "g": 1024 * MiB}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = text[-1] if text and text[-1] in units else ""
    return int(float(text.removesuffix(unit) or 0) * units[unit])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="just bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        dest="preset",
        action="store_const",
        const="quick",
        help="about two minutes (default)",
    )
    preset.add_argument(
        "--full",
        dest="preset",
        action="store_const",
        const="full",
        help="more jobs and rounds: about ten minutes",
    )
    parser.add_argument("--jobs", "-n", type=int, help="N: jobs per capacity round")
    parser.add_argument(
        "--capacity", "-c", type=int, help="C: jobs in flight (WORKER_MAX_CONTAINERS)"
    )
    parser.add_argument("--repetitions", "-r", type=int, help="R: interleaved raw/worker rounds")
    parser.add_argument("--serial", "-s", type=int, help="one-at-a-time jobs per round")
    parser.add_argument("--csharp", type=int, help="C# repetitions (0 skips)")
    parser.add_argument(
        "--flood-cap",
        type=_size,
        default=64 * MiB,
        help="output cap of the second 1 GB flood run (default 64m; 0 skips it)",
    )
    parser.add_argument(
        "--worker-command",
        type=shlex.split,
        help="command that starts the worker, to compare builds (default: python -m dsw worker)",
    )
    parser.add_argument("--out", default=str(ROOT / ".local" / "bench"), help="JSON folder")
    args = parser.parse_args(argv)
    args.preset = args.preset or "quick"
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("jobs", "capacity", "repetitions", "serial"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1")
    args.run_id = f"bench-{uuid.uuid4().hex[:8]}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say(
        f"{args.preset}: N={args.jobs} C={args.capacity} R={args.repetitions} "
        f"S={args.serial} C#={args.csharp} run={args.run_id}"
    )
    result = trio.run(run, args)
    path = write_json(result, Path(args.out))
    title, sections, notes = tables(result)
    render(title, sections, [*notes, f"JSON: {path} (and latest.json)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
