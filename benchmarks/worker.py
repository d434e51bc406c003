"""End to end: a real `dsw worker` subprocess, the bench's topics, and what it can see of both.

`Topics` reads pending, running and finished without a consumer group and keeps, per job id, the
broker timestamps of its records (CreateTime, set by each producer at send time) and when the
bench saw its `finished`. The worker process is the tests' (`tests.workers.run_worker`); here its
RSS is read from /proc and its metrics (histograms, in-flight jobs, pool gauges) from /metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from dsw.config import warm_pool_size
from dsw.kafka import Kafka, Reader, Record
from tests.workers import WorkerProcess, job

# The worker's histograms whose mean per phase says where its time goes.
HISTOGRAMS = (
    "dsw_queue_wait_seconds",
    "dsw_container_create_seconds",
    "dsw_container_start_seconds",
    "dsw_container_run_seconds",
    "dsw_container_cleanup_seconds",
    "dsw_job_end_to_end_seconds",
)


@dataclass
class Seen:
    """One job as the topics show it: broker timestamps (ms) and the bench's arrival time."""

    pending_ms: int | None = None
    running_ms: int | None = None
    finished_ms: int | None = None
    finished_at: float | None = None  # time.perf_counter() when the bench read `finished`
    finished: dict[str, Any] | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def latency_s(self) -> float:
        assert self.pending_ms is not None
        assert self.finished_ms is not None
        return (self.finished_ms - self.pending_ms) / 1000


class Topics:
    """Every record of the bench's topics, sorted by job id as they arrive."""

    def __init__(self, pending: list[str], running: str, finished: str) -> None:
        self.pending, self.running, self.finished = set(pending), running, finished
        self.jobs: dict[str, Seen] = {}

    def expect(self, job_id: str) -> Seen:
        return self.jobs.setdefault(job_id, Seen())

    async def follow(self, reader: Reader) -> None:
        while True:
            records = await reader.take(0.1)
            now = time.perf_counter()
            for record in records:
                self._note(record, now)

    def _note(self, record: Record, now: float) -> None:
        job_id = (record.key or b"").decode()
        seen = self.jobs.get(job_id)
        if seen is None:
            return  # not a job the bench is waiting for
        if record.topic in self.pending:
            seen.pending_ms = record.timestamp_ms
        elif record.topic == self.running:
            seen.running_ms = seen.running_ms or record.timestamp_ms
        elif record.topic == self.finished:
            seen.finished_ms = record.timestamp_ms
            seen.finished_at = now
            seen.finished = json.loads(record.value or b"{}")
        if seen.pending_ms is not None and seen.finished_ms is not None:
            seen.done.set()

    async def run(self, kafka: Kafka, topic: str, jobs: list[tuple[str, bytes]]) -> list[Seen]:
        """Publish `jobs` (id, value) at once and wait for all their `finished`."""
        seen = [self.expect(job_id) for job_id, _ in jobs]
        async with trio.open_nursery() as nursery:
            for job_id, value in jobs:
                nursery.start_soon(kafka.publish, topic, job_id, value)
        for one in seen:
            await one.done.wait()
        return seen


def job_value(job_id: str, script: str, **config: Any) -> bytes:
    return job(script, job_id, **config)[1]


def _kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(worker: WorkerProcess) -> int:
    return _kib(worker.pid, "VmRSS")


def hwm_kib(worker: WorkerProcess) -> int:
    return _kib(worker.pid, "VmHWM")


def reset_hwm(worker: WorkerProcess) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of the worker; False where not allowed."""
    try:
        Path(f"/proc/{worker.pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def scrape(worker: WorkerProcess) -> dict[str, float]:
    """Every sample of the worker's /metrics, keyed `name{labels}` as printed."""
    url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(url)).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def total(samples: dict[str, float], name: str, sandbox: str | None = None) -> float:
    """The sum of a metric's samples (of one sandbox type's, when given)."""
    label = f'sandbox="{sandbox}"'
    return sum(
        value
        for key, value in samples.items()
        if key.partition("{")[0] == name and (sandbox is None or label in key)
    )


async def wait_settled(worker: WorkerProcess, pooled: list[str], timeout_s: float = 120) -> float:
    """Until the worker runs no job and the pools of `pooled` types are full again: its
    containers of finished jobs are gone, the refills done. Returns when (perf_counter)."""
    size = warm_pool_size(worker.settings)
    with trio.fail_after(timeout_s):
        while True:
            samples = await scrape(worker)
            busy = total(samples, "dsw_jobs_in_flight")
            if not busy and all(total(samples, "dsw_pool_idle", t) >= size for t in pooled):
                return time.perf_counter()
            await trio.sleep(0.1)


def read_trace(trace: Path, since: float, until: float) -> list[dict[str, Any]]:
    """The calls of a traced worker's file (`benchmarks.traced_worker`) that started between
    `since` and `until` (time.time())."""
    try:
        with trace.open(encoding="utf-8") as lines:
            calls = [json.loads(line) for line in lines]
    except OSError:
        return []
    return [call for call in calls if since <= call["at"] <= until]


def api_calls(calls: list[dict[str, Any]], jobs: int) -> dict[str, dict[str, float]]:
    """Per endpoint (and Kafka call): calls per job and their mean ms."""
    spent: dict[str, list[float]] = {}
    for call in calls:
        spent.setdefault(call["call"], []).append(call["s"])
    return {
        name: {"per_job": len(times) / jobs, "mean_ms": 1000 * sum(times) / len(times)}
        for name, times in sorted(spent.items())
    }


def slot_gaps(calls: list[dict[str, Any]]) -> list[float]:
    """At capacity, cold: ms from each removal's answer (the job's slot is free once its
    container is gone) to the next container create, where one follows within 2 s."""
    removed = sorted(c["at"] + c["s"] for c in calls if c["call"] == "DELETE /containers/{id}")
    creates = sorted(c["at"] for c in calls if c["call"] == "POST /containers/create")
    gaps = []
    for end in removed:
        later = [at for at in creates if at >= end]
        if later and later[0] - end < 2:
            gaps.append(1000 * (later[0] - end))
    return gaps


def mean_in_flight(calls: list[dict[str, Any]]) -> float:
    """The mean number of the worker's containers alive (create sent, removal not yet answered)
    from its first create to its last removal: C when no slot ever waits."""
    events = sorted(
        [(c["at"], 1) for c in calls if c["call"] == "POST /containers/create"]
        + [(c["at"] + c["s"], -1) for c in calls if c["call"] == "DELETE /containers/{id}"]
    )
    if len(events) < 2 or events[-1][0] <= events[0][0]:
        return float("nan")
    alive, area, last = 0, 0.0, events[0][0]
    for at, change in events:
        area += alive * (at - last)
        alive, last = alive + change, at
    return float(area / (events[-1][0] - events[0][0]))


class RssWindow:
    """Samples a worker's RSS every few milliseconds while open; the peak in MiB."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.peak_kib = 0
        self.hwm_kib: int | None = None
        self.samples = 0

    async def sample(self, every_s: float = 0.02) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(self.worker))
            self.samples += 1
            await trio.sleep(every_s)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[RssWindow]:
        reset = reset_hwm(self.worker)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.sample)
            yield self
            nursery.cancel_scope.cancel()
        self.peak_kib = max(self.peak_kib, rss_kib(self.worker))
        if reset:
            self.hwm_kib = hwm_kib(self.worker)

    @property
    def peak_mib(self) -> float:
        return max(self.peak_kib, self.hwm_kib or 0) / 1024
