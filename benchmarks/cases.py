"""The ways the bench runs a job, each n times: the worker warm or cold, the raw floors, docker run.

Every method returns a plain dict (a phase, into the JSON as it is). Latency is per job: for the
raw client and `docker run` the lifecycle's own time, or, when n jobs start together, the time
from the common start (a job waiting for a slot waits, as a job waits in Kafka); for a worker,
the broker timestamp of its `finished` minus that of its pending record. A worker's phase ends
once it has settled: no job in flight (the last containers removed), its pools full again and
their new containers done preparing, so nothing of one phase runs into the next.
"""

from __future__ import annotations

import argparse
import math
import time
import uuid
from pathlib import Path
from typing import Any

import trio

from benchmarks.docker_run import cli_run
from benchmarks.engine import RawEngine, RawResult
from benchmarks.host import container_cpu_s
from benchmarks.report import latency_summary, phase
from benchmarks.worker import (
    HISTOGRAMS,
    Seen,
    Topics,
    api_calls,
    job_value,
    mean_in_flight,
    read_trace,
    scrape,
    slot_gaps,
    total,
)
from benchmarks.worker import wait_settled as wait_worker_settled
from dsw.config import Settings, warm_pool_size
from dsw.container_spec import POOL_LABEL, WORKER_LABEL
from dsw.kafka import Kafka
from dsw.sandbox_types import SandboxType, load_sandbox_type
from tests.workers import WorkerProcess

SHELL, MONO = "linux-amd64-shell", "linux-amd64-mono"
WARM, COLD = "warm", "cold"
# A container is done preparing when its cgroup uses less than this much CPU per 250 ms.
_QUIET_CPU_S = 0.005


class Cases:
    """The bench's clients (raw Engine API, Kafka, topic reader) and its two workers."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: dict[str, Settings],
        kafka: Kafka,
        raw: RawEngine,
    ) -> None:
        self.args = args
        self.settings = settings  # per worker kind: WARM, COLD
        self.kafka = kafka
        self.raw = raw
        base = settings[WARM]
        self.shell = load_sandbox_type(base.sandbox_dir, SHELL)
        self.mono = load_sandbox_type(base.sandbox_dir, MONO)
        self.types = [self.shell, self.mono]
        self.topics = Topics(
            [self.pending(kind, t) for kind in settings for t in self.types],
            base.running_topic,
            base.finished_topic,
        )
        self.workers: dict[str, WorkerProcess] = {}
        self.broker: list[int] = []  # the local Kafka broker's processes (its CPU is counted)
        # The Engine API calls of each worker run through benchmarks.traced_worker.
        self.traces: dict[str, Path] = {}
        self.problems: list[str] = []

    def pending(self, kind: str, sandbox: SandboxType) -> str:
        return self.settings[kind].pending_topic_prefix + sandbox.name

    # -- raw Engine API and docker run ------------------------------------------------------

    async def raw_jobs(
        self, sandbox: SandboxType, script: str, expect: str, n: int, capacity: int = 1
    ) -> dict[str, Any]:
        """n raw cold lifecycles, `capacity` at a time (one at a time when 1)."""
        limiter = trio.CapacityLimiter(capacity)
        latencies: list[float] = []
        results: list[RawResult] = []
        t0 = time.perf_counter()

        async def one() -> None:
            async with limiter:
                result = await self.raw.run(sandbox, script)
            latencies.append(result.total_s if capacity == 1 else time.perf_counter() - t0)
            results.append(result)
            self._check_raw(result, expect)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return phase(latencies, time.perf_counter() - t0, mean_phases=_mean_phases(results))

    async def raw_warm_jobs(
        self, sandbox: SandboxType, script: str, expect: str, n: int
    ) -> dict[str, Any]:
        """n hand-overs of prepared containers, one at a time; preparing is off the clock."""
        latencies: list[float] = []
        results: list[RawResult] = []
        wall = 0.0
        for _ in range(n):
            container = await self.raw.prepare_warm(sandbox)
            await self.wait_quiet([container])
            result = await self.raw.run_warm(sandbox, script, container)
            latencies.append(result.total_s)
            wall += result.total_s
            results.append(result)
            self._check_raw(result, expect)
        return phase(latencies, wall, mean_phases=_mean_phases(results))

    def _check_raw(self, result: RawResult, expect: str) -> None:
        if result.exit_code != 0 or result.stdout != expect.encode():
            self.problems.append(f"raw job: exit {result.exit_code}, {result.stdout[:200]!r}")

    async def cli_jobs(
        self, sandbox: SandboxType, script: str, expect: str, n: int
    ) -> dict[str, Any]:
        """n `docker run --rm`, one at a time."""
        latencies: list[float] = []
        for _ in range(n):
            seconds, out = await cli_run(self.settings[COLD], sandbox, script)
            latencies.append(seconds)
            if out.decode(errors="replace") != expect:
                self.problems.append(f"docker run printed {out[:200]!r}")
        return phase(latencies, sum(latencies))

    # -- through a worker -------------------------------------------------------------------

    async def worker_jobs(
        self,
        kind: str,
        sandbox: SandboxType,
        script: str,
        expect: str,
        n: int,
        *,
        alone: bool = False,
        **config: Any,
    ) -> dict[str, Any]:
        """n jobs through Kafka and the worker `kind`, all published at once or one at a time;
        returns once the worker has settled."""
        worker = self.workers[kind]
        before = await scrape(worker)
        jobs = [(id_ := str(uuid.uuid4()), job_value(id_, script, **config)) for _ in range(n)]
        since = time.time()
        t0 = time.perf_counter()
        seen: list[Seen] = []
        with trio.fail_after(120 + 20 * n):
            for batch in [[job] for job in jobs] if alone else [jobs]:
                seen += await self.topics.run(self.kafka, self.pending(kind, sandbox), batch)
        wall = max(s.finished_at or 0 for s in seen) - t0
        settled = await self.settle(kind) - t0
        until = time.time()
        after = await scrape(worker)
        calls = read_trace(self.traces[kind], since, until) if kind in self.traces else []
        self._check(seen, expect)
        to_running = [
            (s.running_ms - s.pending_ms) / 1000 for s in seen if s.running_ms and s.pending_ms
        ]
        pool = {
            name: total(after, f"dsw_pool_{name}_total", sandbox.name)
            - total(before, f"dsw_pool_{name}_total", sandbox.name)
            for name in ("handovers", "misses", "replaced")
        }
        return phase(
            [s.latency_s for s in seen],
            wall,
            settled_s=settled,
            pending_to_running_ms=latency_summary(to_running)["mean_ms"],
            worker_phases_ms=_histogram_means(before, after),
            pool=pool,
            api=api_calls(calls, n),
            slot_gaps_ms=slot_gaps(calls) if kind == COLD and not alone else [],
            mean_in_flight=mean_in_flight(calls) if kind == COLD and not alone else math.nan,
            window=[since, until],
        )

    def _check(self, seen: list[Seen], stdout: str) -> None:
        for one in seen:
            results = (one.finished or {}).get("scriptResults") or {}
            if results.get("finishedWith") != "SUCCEEDED" or results.get("stdout") != stdout:
                self.problems.append(f"unexpected finished: {str(one.finished)[:300]}")

    async def settle(self, kind: str) -> float:
        """Until the worker `kind` runs nothing and its pools are full and quiet; perf_counter
        then (before the wait for quiet: the refill is done, the preparing is the container's)."""
        worker = self.workers[kind]
        pooled = list(worker.settings.runner_types) if warm_pool_size(worker.settings) else []
        at = await wait_worker_settled(worker, pooled)
        if pooled:
            await self.wait_quiet(await self.pool_containers(kind))
        return at

    async def pool_containers(self, kind: str) -> list[str]:
        labels = {WORKER_LABEL: self.workers[kind].settings.worker_id, POOL_LABEL: "1"}
        return [c["Id"] for c in await self.raw.containers(labels)]

    async def wait_quiet(self, containers: list[str], timeout_s: float = 60) -> None:
        """Until these containers' processes have stopped working (a warm command done
        preparing): under 5 ms of CPU in 250 ms, from their cgroups (else Docker's stats)."""

        async def used_s() -> float:
            found = 0.0
            for container in containers:
                cpu = container_cpu_s(container)
                if cpu is None:
                    stats = await self.raw.stats_once(container)
                    usage = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
                    cpu = usage.get("total_usage", 0) / 1e9
                found += cpu
            return found

        with trio.move_on_after(timeout_s) as waited:
            last = await used_s()
            while True:
                await trio.sleep(0.25)
                now = await used_s()
                if now - last < _QUIET_CPU_S:
                    return
                last = now
        if waited.cancelled_caught:
            self.problems.append(f"containers still busy after {timeout_s:.0f} s: {containers}")


def _mean_phases(results: list[RawResult]) -> dict[str, float]:
    if not results:
        return {}
    return {
        part + "_ms": 1000 * sum(r.phases_s[part] for r in results) / len(results)
        for part in results[0].phases_s
    }


def _histogram_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms of each of the worker's histograms between two scrapes."""
    means = {}
    for name in HISTOGRAMS:
        spent = total(after, name + "_sum") - total(before, name + "_sum")
        count = total(after, name + "_count") - total(before, name + "_count")
        short = name.removeprefix("dsw_").removesuffix("_seconds")
        means[short + "_ms"] = 1000 * spent / count if count else math.nan
    return means
