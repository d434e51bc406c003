"""The measured phases: raw lifecycles, jobs through the worker, C# hello world, the 1 GB flood.

Every phase returns a plain dict (it goes into the JSON as it is). Latency is per job: for the
raw client the lifecycle's own time, or, when N jobs start together, the time from the common
start (a job waiting for a slot waits, as a job waits in Kafka); for the worker, the broker
timestamp of its `finished` minus that of its pending record. Throughput is jobs over wall time.
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from benchmarks.engine import RawEngine, RawResult, cli_run
from benchmarks.report import latency_summary, phase, pooled, ratios, say
from benchmarks.worker import (
    HISTOGRAMS,
    RssWindow,
    Seen,
    Topics,
    cpu_s,
    histograms,
    job_value,
    pids_named,
)
from dsw.config import Settings
from dsw.kafka import Kafka
from dsw.sandbox_types import SandboxType, load_sandbox_type
from tests.workers import WorkerProcess

SHELL, MONO = "linux-amd64-shell", "linux-amd64-mono"
ECHO, ECHOED = "echo hi\n", "hi\n"
# The original's hello world (sandbox/test-scripts/hello-world.csx).
HELLO, HELLOED = 'Console.WriteLine("Hello from script");', "Hello from script\n"
# The original README's example job carries this NuGet config; the mono type does not upload it.
NUGET = (
    '<?xml version="1.0" encoding="utf-8"?><configuration><packageSources><add key="NuGet '
    'official package source" value="https://nuget.org/api/v2/" /></packageSources>'
    '<activePackageSource><add key="All" value="(Aggregate source)" /></activePackageSource>'
    "</configuration>"
)
FLOOD = "head -c 1000000000 /dev/zero | tr '\\0' x\n"
_RAW_PARTS = ("create_s", "attach_s", "start_s", "wait_s", "output_s", "remove_s")


class Bench:
    """The bench's clients (raw Engine API, Kafka, topic reader) and its phases."""

    def __init__(
        self, args: argparse.Namespace, settings: Settings, kafka: Kafka, raw: RawEngine
    ) -> None:
        self.args = args
        self.settings = settings
        self.kafka = kafka
        self.raw = raw
        self.shell = load_sandbox_type(settings.sandbox_dir, SHELL)
        self.mono = load_sandbox_type(settings.sandbox_dir, MONO)
        self.topics = Topics(
            [self.pending(self.shell), self.pending(self.mono)],
            settings.running_topic,
            settings.finished_topic,
        )
        self.problems: list[str] = []
        self._dockerd, self._containerd = pids_named("dockerd"), pids_named("containerd")

    def pending(self, sandbox: SandboxType) -> str:
        return self.settings.pending_topic_prefix + sandbox.name

    def cpu(self, worker: WorkerProcess | None = None) -> dict[str, float]:
        """CPU seconds so far of the daemons, this process (the raw client) and the worker."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        found = {
            "dockerd": cpu_s(self._dockerd),
            "containerd": cpu_s(self._containerd),
            "bench": own.ru_utime + own.ru_stime,
        }
        if worker is not None:
            found["worker"] = cpu_s([worker.pid])
        return found

    # -- raw Engine API --------------------------------------------------------------------

    async def raw_jobs(
        self,
        sandbox: SandboxType,
        script: str,
        n: int,
        capacity: int = 1,
        *,
        alone: bool = False,
        expect: str = ECHOED,
    ) -> dict[str, Any]:
        """n raw lifecycles, `capacity` at a time (one at a time when `alone`)."""
        limiter = trio.CapacityLimiter(1 if alone else capacity)
        latencies: list[float] = []
        results: list[RawResult] = []
        cpu = self.cpu()
        t0 = time.perf_counter()

        async def one() -> None:
            async with limiter:
                result = await self.raw.run(sandbox, script)
            latencies.append(result.total_s if alone else time.perf_counter() - t0)
            results.append(result)
            if result.exit_code != 0 or result.stdout != expect.encode():
                self.problems.append(f"raw job: exit {result.exit_code}, {result.stdout[:200]!r}")

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        wall = time.perf_counter() - t0
        means = {
            part.replace("_s", "_ms"): 1000 * sum(getattr(r, part) for r in results) / n
            for part in _RAW_PARTS
        }
        return phase(
            latencies, wall, mean_phases=means, cpu_ms_per_job=_per_job(cpu, self.cpu(), n)
        )

    # -- through the worker -----------------------------------------------------------------

    async def worker_jobs(
        self,
        worker: WorkerProcess,
        sandbox: SandboxType,
        script: str,
        n: int,
        *,
        alone: bool = False,
        expect: str = ECHOED,
    ) -> dict[str, Any]:
        """n jobs through Kafka and the worker, all published at once or one at a time."""
        before = await histograms(worker)
        jobs = [(id_ := str(uuid.uuid4()), job_value(id_, script)) for _ in range(n)]
        cpu = self.cpu(worker)
        t0 = time.perf_counter()
        seen: list[Seen] = []
        with trio.fail_after(60 + 10 * n):
            for batch in [[job] for job in jobs] if alone else [jobs]:
                seen += await self.topics.run(self.kafka, self.pending(sandbox), batch)
        wall = max(s.finished_at or 0 for s in seen) - t0
        cpu_per_job = _per_job(cpu, self.cpu(worker), n)
        self._check(seen, expect)
        to_running = [
            (s.running_ms - s.pending_ms) / 1000 for s in seen if s.running_ms and s.pending_ms
        ]
        return phase(
            [s.latency_s for s in seen],
            wall,
            pending_to_running_ms=latency_summary(to_running)["mean_ms"],
            worker_phases_ms=_phase_means(before, await histograms(worker)),
            cpu_ms_per_job=cpu_per_job,
        )

    def _check(self, seen: list[Seen], stdout: str) -> None:
        for one in seen:
            results = (one.finished or {}).get("scriptResults") or {}
            if results.get("finishedWith") != "SUCCEEDED" or results.get("stdout") != stdout:
                self.problems.append(f"unexpected finished: {str(one.finished)[:300]}")

    # -- the bench's parts -----------------------------------------------------------------

    async def shell_rounds(self, worker: WorkerProcess) -> dict[str, Any]:
        """Warm-up, then R rounds: one at a time and N at capacity C, raw and worker paired."""
        a = self.args
        say(f"warm-up: {a.capacity + 2} raw and {a.capacity + 2} worker jobs")
        await self.raw_jobs(self.shell, ECHO, 2, alone=True)
        await self.raw_jobs(self.shell, ECHO, a.capacity, a.capacity)
        await self.worker_jobs(worker, self.shell, ECHO, 2, alone=True)
        await self.worker_jobs(worker, self.shell, ECHO, a.capacity)
        rounds, peaks = [], []
        for r in range(a.repetitions):
            # ABBA: odd rounds start with raw, even rounds with the worker, so drift cancels.
            order = ["raw", "e2e"] if r % 2 == 0 else ["e2e", "raw"]
            say(f"round {r + 1}/{a.repetitions}: {a.serial} alone, {a.jobs} at C={a.capacity}")
            result: dict[str, Any] = {"round": r + 1, "order": "-".join(order)}
            for kind in order:
                if kind == "raw":
                    result["raw_serial"] = await self.raw_jobs(
                        self.shell, ECHO, a.serial, alone=True
                    )
                else:
                    result["e2e_serial"] = await self.worker_jobs(
                        worker, self.shell, ECHO, a.serial, alone=True
                    )
            for kind in order:
                if kind == "raw":
                    result["raw_load"] = await self.raw_jobs(self.shell, ECHO, a.jobs, a.capacity)
                else:
                    async with RssWindow(worker).open() as window:
                        result["e2e_load"] = await self.worker_jobs(
                            worker, self.shell, ECHO, a.jobs
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
        """Hello world on mono, one at a time: `docker run --rm`, raw API, worker, rotated."""
        k = self.args.csharp
        runs: dict[str, list[float]] = {"cli": [], "raw": [], "e2e": []}

        async def cli_once() -> None:
            seconds, out = await cli_run(self.settings, self.mono, HELLO)
            runs["cli"].append(seconds)
            if out.decode(errors="replace") != HELLOED:
                self.problems.append(f"docker run printed {out[:200]!r}")

        async def raw_once() -> None:
            result = await self.raw.run(self.mono, HELLO)
            runs["raw"].append(result.total_s)
            if result.stdout != HELLOED.encode():
                self.problems.append(f"raw C#: exit {result.exit_code}, {result.stdout[:200]!r}")

        async def e2e_once() -> None:
            id_ = str(uuid.uuid4())
            value = job_value(id_, HELLO, nugetConfigXml=NUGET)
            with trio.fail_after(120):
                seen = await self.topics.run(self.kafka, self.pending(self.mono), [(id_, value)])
            self._check(seen, HELLOED)
            runs["e2e"].append(seen[0].latency_s)

        steps: list[Callable[[], Awaitable[None]]] = [raw_once, e2e_once]
        if shutil.which("docker"):
            steps.insert(0, cli_once)
        say(f"C# hello world on mono: warm-up, then {k} x {len(steps)} interleaved")
        for step in steps:
            await step()
        for samples in runs.values():
            samples.clear()
        for i in range(k):
            for j in range(len(steps)):
                await steps[(i + j) % len(steps)]()  # the order rotates each repetition
        summary: dict[str, Any] = {
            name: latency_summary(values) for name, values in runs.items() if values
        }
        for stats in summary.values():
            stats["jobs_per_s"] = 1000 / stats["mean_ms"]
        e2e = summary["e2e"]["p50_ms"]
        return {
            "samples_s": runs,
            **summary,
            "e2e_over_raw_p50": e2e / summary["raw"]["p50_ms"],
            "e2e_over_cli_p50": e2e / summary["cli"]["p50_ms"] if "cli" in summary else math.nan,
        }

    async def flood(self, worker: WorkerProcess) -> dict[str, Any]:
        """One job that prints 1 GB; the worker's output cap stops it. RSS, and what came back."""
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
    """Mean ms of each of the worker's histograms between two scrapes."""
    means = {}
    for name in HISTOGRAMS:
        total = after[name][0] - before[name][0]
        count = after[name][1] - before[name][1]
        short = name.removeprefix("dsw_").removesuffix("_seconds")
        means[short + "_ms"] = 1000 * total / count if count else math.nan
    return means
