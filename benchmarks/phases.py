"""The measured phases: one job at a time, N at capacity, an idle pool's memory, the 1 GB flood.

Each phase runs every case it compares in the same rounds, in ABBA order (round 1 in the listed
order, round 2 reversed, ...), so a drift of a shared machine falls on all of them alike, and
returns a plain dict for the JSON.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from benchmarks.cases import COLD, WARM, Cases
from benchmarks.host import CpuWindow, Daemon, memory_kib
from benchmarks.report import median, pooled, say
from benchmarks.worker import RssWindow, job_value
from dsw.container_spec import POOL_LABEL, TYPE_LABEL, WORKER_LABEL
from dsw.sandbox_types import SandboxType
from tests.workers import WorkerProcess

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
# One job at a time: the cases, in the order of round 1.
SERIAL = ("cli", "raw", "raw_warm", COLD, WARM)
# At capacity.
LOAD = ("raw", COLD, WARM)


def abba(cases: tuple[str, ...], round_: int) -> tuple[str, ...]:
    return cases if round_ % 2 == 0 else cases[::-1]


async def one_at_a_time(
    cases: Cases,
    sandbox: SandboxType,
    script: str,
    expect: str,
    rounds: int,
    per_round: int,
    **config: Any,
) -> dict[str, Any]:
    """`per_round` jobs of each case one after another, `rounds` times, after one warm-up each."""
    steps: dict[str, Callable[[int], Awaitable[dict[str, Any]]]] = {
        "cli": lambda n: cases.cli_jobs(sandbox, script, expect, n),
        "raw": lambda n: cases.raw_jobs(sandbox, script, expect, n),
        "raw_warm": lambda n: cases.raw_warm_jobs(sandbox, script, expect, n),
        COLD: lambda n: cases.worker_jobs(COLD, sandbox, script, expect, n, alone=True, **config),
        WARM: lambda n: cases.worker_jobs(WARM, sandbox, script, expect, n, alone=True, **config),
    }
    names = tuple(name for name in SERIAL if name != "cli" or shutil.which("docker"))
    for name in names:
        await steps[name](1)
    per_round_results: list[dict[str, Any]] = []
    for r in range(rounds):
        result: dict[str, Any] = {"round": r + 1}
        for name in abba(names, r):
            result[name] = await steps[name](per_round)
        per_round_results.append(result)
    summary: dict[str, Any] = {"rounds": per_round_results}
    for name in names:
        summary[name] = pooled(per_round_results, name)
        key = "mean_phases" if name.startswith("raw") else "worker_phases_ms"
        if name != "cli":
            summary[name]["phases_ms"] = _mean_of(r[name][key] for r in per_round_results)
        if name in (COLD, WARM):
            summary[name]["pending_to_running_ms"] = statistics.fmean(
                r[name]["pending_to_running_ms"] for r in per_round_results
            )
            summary[name]["pool"] = _sum_of(r[name]["pool"] for r in per_round_results)
            summary[name]["api"] = _api_of([r[name]["api"] for r in per_round_results])
    return summary


async def at_capacity(cases: Cases, daemon: Daemon) -> dict[str, Any]:
    """N shell jobs at once, C in flight, R rounds: raw, cold, warm; CPU and RSS of each."""
    a = cases.args
    shell = cases.shell
    say(f"at capacity: warm-up, then {a.repetitions} rounds of {a.jobs} jobs at C={a.capacity}")
    await cases.raw_jobs(shell, ECHO, ECHOED, a.capacity, a.capacity)
    for kind in (COLD, WARM):
        await cases.worker_jobs(kind, shell, ECHO, ECHOED, a.capacity)
    rounds: list[dict[str, Any]] = []
    for r in range(a.repetitions):
        say(f"round {r + 1}/{a.repetitions}: {a.jobs} jobs at C={a.capacity}")
        result: dict[str, Any] = {"round": r + 1, "order": "-".join(abba(LOAD, r))}
        for name in abba(LOAD, r):
            worker = cases.workers.get(name)
            window = CpuWindow(daemon, worker.pid if worker else None, cases.broker)
            own = _own_cpu_s()
            async with window.open():
                if worker is None:
                    found = await cases.raw_jobs(shell, ECHO, ECHOED, a.jobs, a.capacity)
                else:
                    async with RssWindow(worker).open() as rss:
                        found = await cases.worker_jobs(name, shell, ECHO, ECHOED, a.jobs)
                    found["worker_peak_rss_mib"] = rss.peak_mib
            if worker is None:
                window.seconds["raw client"] = _own_cpu_s() - own
            found["cpu_ms_per_job"] = window.per_job_ms(a.jobs)
            found["shims_seen"] = window.shims
            found["shims_exact"] = window.exact_shims
            found["lost_exit_records"] = window.lost_exit_records
            if name == WARM:
                found["jobs_per_s_with_refill"] = a.jobs / found["settled_s"]
            result[name] = found
        rounds.append(result)
    summary: dict[str, Any] = {"rounds": rounds}
    for name in LOAD:
        summary[name] = pooled(rounds, name)
        summary[name]["cpu_ms_per_job"] = _mean_of(r[name]["cpu_ms_per_job"] for r in rounds)
    for name in (COLD, WARM):
        summary[name]["worker_peak_rss_mib"] = max(r[name]["worker_peak_rss_mib"] for r in rounds)
        summary[name]["pool"] = _sum_of(r[name]["pool"] for r in rounds)
        summary[name]["api"] = _api_of([r[name]["api"] for r in rounds])
        summary[name]["slot_gaps_ms"] = [g for r in rounds for g in r[name]["slot_gaps_ms"]]
        summary[name]["mean_in_flight"] = median([r[name]["mean_in_flight"] for r in rounds])
        summary[name]["ratio_to_raw"] = _ratios(rounds, name, "raw")
    summary[WARM]["jobs_per_s_with_refill"] = median(
        [r[WARM]["jobs_per_s_with_refill"] for r in rounds]
    )
    return summary


def _ratios(rounds: list[dict[str, Any]], case: str, base: str) -> dict[str, Any]:
    """case/base per round (paired: same round, same machine state), and their medians."""
    found: dict[str, Any] = {}
    for key in ("jobs_per_s", "p50_ms"):
        per_round = [r[case][key] / r[base][key] for r in rounds]
        found[key.removesuffix("_ms")] = median(per_round)
        found[key.removesuffix("_ms") + "_rounds"] = per_round
    return found


async def pool_memory(cases: Cases, daemon: Daemon) -> dict[str, Any]:
    """The idle pool containers of the warm worker: cgroup memory (Docker's stats) and the shim's
    memory on the host, per type."""
    await cases.settle(WARM)
    labels = {WORKER_LABEL: cases.workers[WARM].settings.worker_id, POOL_LABEL: "1"}
    type_of = {
        c["Id"]: (c.get("Labels") or {}).get(TYPE_LABEL, "")
        for c in await cases.raw.containers(labels)
    }
    found: dict[str, Any] = {}
    for sandbox in cases.types:
        samples = []
        for container in [c for c, name in type_of.items() if name == sandbox.name]:
            stats = await cases.raw.stats_once(container)
            memory = stats.get("memory_stats") or {}
            detail = memory.get("stats") or {}
            usage = int(memory.get("usage") or 0)
            inactive = int(detail.get("total_inactive_file", detail.get("inactive_file", 0)))
            rss = int(detail.get("total_rss", detail.get("anon", 0)))
            shim = daemon.shim_of(container)
            shim_memory = memory_kib(shim) if shim else {}
            samples.append(
                {
                    "usage_bytes": usage,
                    "working_set_bytes": usage - inactive,
                    "rss_bytes": rss,
                    "shim_rss_kib": shim_memory.get("rss_kib"),
                    "shim_pss_kib": shim_memory.get("pss_kib"),
                }
            )
        found[sandbox.name] = {"containers": len(samples), "samples": samples}
        if samples:
            found[sandbox.name].update(_mean_of(iter(samples)))
    return found


async def flood(cases: Cases, worker: WorkerProcess, kind: str) -> dict[str, Any]:
    """One job that prints 1 GB; the worker's output cap stops it. RSS, and what came back."""
    id_ = str(uuid.uuid4())
    async with RssWindow(worker).open() as window:
        with trio.fail_after(300):
            seen = await cases.topics.run(
                cases.kafka, cases.pending(kind, cases.shell), [(id_, job_value(id_, FLOOD))]
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


def _api_of(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per endpoint over rounds of equal size: calls per job and mean ms (weighted by calls)."""
    found: dict[str, dict[str, float]] = {}
    for name in sorted({name for one in rounds for name in one}):
        present = [one[name] for one in rounds if name in one]
        calls = sum(p["per_job"] for p in present)
        found[name] = {
            "per_job": calls / len(rounds),
            "mean_ms": sum(p["per_job"] * p["mean_ms"] for p in present) / calls,
        }
    return found


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _mean_of(dicts: Any) -> dict[str, float]:
    """The mean of each numeric key over dicts (None values left out)."""
    listed = list(dicts)
    keys = list(
        dict.fromkeys(k for d in listed for k, v in d.items() if isinstance(v, int | float))
    )
    found = {}
    for key in keys:
        values = [d[key] for d in listed if isinstance(d.get(key), int | float)]
        found[key] = statistics.fmean(values) if values else float("nan")
    return found


def _sum_of(dicts: Any) -> dict[str, float]:
    listed = list(dicts)
    return {key: sum(d[key] for d in listed) for key in (listed[0] if listed else {})}
