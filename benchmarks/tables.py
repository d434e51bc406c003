"""The terminal's view of a result: its tables, the targets with PASS or MISS, and notes.

The targets are ratios of the same run (so a busy machine weighs on both sides); the bench only
reports them and never fails on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks.report import MiB, Row, Section, num, percentile, ratio

NAMES = {
    "cli": "docker run --rm",
    "raw": "raw cold lifecycle",
    "raw_warm": "raw warm hand-over",
    "cold": "worker cold",
    "warm": "worker warm",
}
MB = 1_000_000
_SERIAL = ["", "n", "p50 ms", "p95 ms", "mean ms", "p50 /\ndocker run", "p50 /\nraw cold"]
_LOAD = ["", "jobs/s", "/raw\njobs/s", "p50 ms", "p95 ms", "pool\nhit/miss", "peak worker\nRSS MiB"]
_CPU = [
    "CPU ms per job",
    "worker or\nraw client",
    "dockerd",
    "containerd",
    "shims",
    "Kafka\nbroker",
    "host total",
]
_POOL = ["idle pool container", "n", "usage MiB", "working\nset MiB", "rss MiB", "shim\nRSS MiB"]
_POOL += ["shim\nPSS MiB"]
_MEMORY = ["worker RSS", "MiB", "outcome"]
_API = ["call", "cold, one\nat a time", "ms", "warm, one\nat a time", "ms"]
_API += ["cold at\ncapacity", "warm at\ncapacity"]
_TARGETS = ["target", "measured as", "ratio", "limit", "result"]


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    value: float
    limit: float
    at_most: bool  # value <= limit passes (else value >= limit)

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def row(self) -> Row:
        sign = "<=" if self.at_most else ">="
        verdict = "-" if math.isnan(self.value) else "PASS" if self.passed else "MISS"
        return [self.name, self.measured, num(self.value, 2), f"{sign} {self.limit:g}", verdict]


def _p50(phase: dict[str, Any] | None, case: str) -> float:
    if not phase or case not in phase:
        return math.nan
    return float(phase[case]["p50_ms"])


def targets(result: dict[str, Any]) -> list[Target]:
    cs, sh, load = result.get("csharp"), result["shell"], result["load"]
    rss = load["warm"]["worker_peak_rss_mib"] * MiB / MB
    return [
        Target(
            "C# hello p50, warm",
            "worker warm / docker run --rm",
            _p50(cs, "warm") / _p50(cs, "cli"),
            0.25,
            True,
        ),
        Target(
            "C# hello p50, cold",
            "worker cold / docker run --rm",
            _p50(cs, "cold") / _p50(cs, "cli"),
            0.6,
            True,
        ),
        Target(
            "shell echo p50, warm",
            "worker warm / raw cold lifecycle",
            _p50(sh, "warm") / _p50(sh, "raw"),
            0.5,
            True,
        ),
        Target(
            "throughput at capacity, warm",
            "jobs/s worker warm / raw cold (median of rounds)",
            load["warm"]["ratio_to_raw"]["jobs_per_s"],
            1.0,
            False,
        ),
        Target(
            "throughput at capacity, cold",
            "jobs/s worker cold / raw cold (median of rounds)",
            load["cold"]["ratio_to_raw"]["jobs_per_s"],
            0.95,
            False,
        ),
        Target(
            "worker RSS, pool full + C in flight",
            f"peak MB of the warm worker at capacity ({rss:.1f} MB)",
            rss,
            80,
            True,
        ),
    ]


def _serial_rows(summary: dict[str, Any]) -> list[Row]:
    rows = []
    for case, name in NAMES.items():
        if case not in summary:
            continue
        stats = summary[case]
        rows.append(
            [
                name,
                str(stats["n"]),
                num(stats["p50_ms"]),
                num(stats["p95_ms"]),
                num(stats["mean_ms"]),
                ratio(stats["p50_ms"] / _p50(summary, "cli")),
                ratio(stats["p50_ms"] / _p50(summary, "raw")),
            ]
        )
    return rows


def _load_rows(load: dict[str, Any]) -> list[Row]:
    rows = []
    for case in ("raw", "cold", "warm"):
        stats = load[case]
        pool = stats.get("pool") or {}
        rows.append(
            [
                NAMES[case],
                num(stats["jobs_per_s"], 2),
                ratio(stats["ratio_to_raw"]["jobs_per_s"]) if "ratio_to_raw" in stats else "",
                num(stats["p50_ms"]),
                num(stats["p95_ms"]),
                f"{pool['handovers']:.0f}/{pool['misses']:.0f}" if pool else "",
                num(stats.get("worker_peak_rss_mib"), 1) if case != "raw" else "",
            ]
        )
    return rows


def _cpu_rows(load: dict[str, Any]) -> list[Row]:
    rows = []
    for case in ("raw", "cold", "warm"):
        cpu = load[case]["cpu_ms_per_job"]
        own = cpu.get("worker", cpu.get("raw client", math.nan))
        parts = [cpu["dockerd"], cpu["containerd"], cpu["shims"], cpu.get("kafka", math.nan)]
        host = sum(v for v in parts if not math.isnan(v))
        rows.append([NAMES[case], num(own, 1), *(num(v, 1) for v in parts), num(host + own, 1)])
    return rows


def _pool_rows(memory: dict[str, Any]) -> list[Row]:
    rows = []
    for sandbox, found in memory.items():
        if not found["containers"]:
            rows.append([sandbox, "0", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                sandbox,
                str(found["containers"]),
                num(found["usage_bytes"] / MiB, 2),
                num(found["working_set_bytes"] / MiB, 2),
                num(found["rss_bytes"] / MiB, 2),
                num((found.get("shim_rss_kib") or math.nan) / 1024, 1),
                num((found.get("shim_pss_kib") or math.nan) / 1024, 1),
            ]
        )
    return rows


def _memory_rows(result: dict[str, Any]) -> list[Row]:
    w, load, c = result["worker"], result["load"], result["params"]["capacity"]
    rows = [
        ["warm, idle with its pool full", num(w["warm"]["idle_rss_mib"], 1), ""],
        ["cold, idle", num(w["cold"]["idle_rss_mib"], 1), ""],
        [
            f"warm, peak at capacity ({c} in flight, pool refilling)",
            num(load["warm"]["worker_peak_rss_mib"], 1),
            "",
        ],
        [
            f"cold, peak at capacity ({c} in flight)",
            num(load["cold"]["worker_peak_rss_mib"], 1),
            "",
        ],
    ]
    for flood in result["flood"]:
        outcome = (
            f"{flood['finished_with']}{' at the cap' if flood['output_limit_exceeded'] else ''}"
            f" after {flood['duration_s']} s, {flood['stdout_chars_in_finished'] / 1024:.0f} KiB"
            " of stdout in `finished`"
        )
        size = flood["output_limit_bytes"]
        cap = f"{size / MiB:g} MiB" if size >= MiB else f"{size / 1024:g} KiB"
        rows.append(
            [f"peak, a job printing 1 GB, cap {cap}", num(flood["peak_rss_mib"], 1), outcome]
        )
    return rows


def _api_rows(result: dict[str, Any]) -> list[Row]:
    """Calls per job and their mean ms, per endpoint, as the traced workers made them."""
    sh, load = result["shell"], result["load"]
    columns = [sh["cold"].get("api", {}), sh["warm"].get("api", {})]
    columns += [load["cold"].get("api", {}), load["warm"].get("api", {})]
    names = sorted({name for column in columns for name in column})
    rows = []
    for name in names:
        row = [name]
        for i, column in enumerate(columns):
            call = column.get(name)
            row.append(num(call["per_job"], 2) if call else "")
            if i < 2:
                row.append(num(call["mean_ms"]) if call else "")
        rows.append(row)
    if rows:
        totals = [num(sum(call["per_job"] for call in column.values()), 2) for column in columns]
        rows.append(["all calls", totals[0], "", totals[1], "", totals[2], totals[3]])
    return rows


def tables(result: dict[str, Any]) -> tuple[str, list[Section], list[str]]:
    """The title, tables and notes of a result."""
    p, m = result["params"], result["machine"]
    n, c, r, s = p["jobs"], p["capacity"], p["repetitions"], p["serial"]
    load_avg = " ".join(f"{x:.1f}" for x in result["load_at_start"])
    title = (
        f"dsw bench ({p['preset']}): {m['cpus']} CPUs, Docker {m['docker']}, cgroup v{m['cgroup']}"
        f"; N={n} C={c} R={r} S={s}; {result['runtime_s']:.0f} s; load average at start "
        f"{load_avg}"
    )
    sections: list[Section] = [
        (
            f"shell `echo hi`, one at a time ({s} per case, {r} rounds)",
            _SERIAL,
            _serial_rows(result["shell"]),
        )
    ]
    if cs := result.get("csharp"):
        sections.append(
            (
                f"C# hello world (mono), one at a time ({p['csharp']} rounds)",
                _SERIAL,
                _serial_rows(cs),
            )
        )
    load = result["load"]
    sections += [
        (
            f"shell `echo hi`, {n} at once, capacity {c} ({r} rounds; latency includes queueing)",
            _LOAD,
            _load_rows(load),
        ),
        (f"CPU per job at capacity (mean of {r} rounds)", _CPU, _cpu_rows(load)),
        (
            "idle pool containers: cgroup memory (Docker stats one-shot) and shim on the host",
            _POOL,
            _pool_rows(result["pool_memory"]),
        ),
        ("worker memory", _MEMORY, _memory_rows(result)),
        (
            "targets (ratios of this run; reported, never failed on)",
            _TARGETS,
            [t.row() for t in targets(result)],
        ),
    ]
    if api := _api_rows(result):
        title_api = "Engine API and Kafka calls per job (shell), as the traced workers made them"
        sections.insert(-1, (title_api, _API, api))
    notes = [*_where_time_goes(result), _rounds_note(load)]
    if gaps := load["cold"].get("slot_gaps_ms"):
        notes.append(
            f"worker cold at capacity, a freed slot to the next job's create: p50 "
            f"{percentile(gaps, 50):.0f} ms, p90 {percentile(gaps, 90):.0f} ms (n={len(gaps)}; "
            "the raw client's limiter hands a slot on at once); containers alive on average "
            f"{load['cold']['mean_in_flight']:.2f} of {result['params']['capacity']}"
        )
    notes.append(
        f"warm at capacity with its refill: {load['warm']['jobs_per_s_with_refill']:.2f} jobs/s "
        "(until the pool is full again)"
    )
    if not all(one[case]["shims_exact"] for one in load["rounds"] for case in NAMES if case in one):
        notes.append("shims: no taskstats here (not root?): exited shims count their last scan")
    notes.append(f"load average at end {' '.join(f'{x:.1f}' for x in result['load_at_end'])}")
    notes += [f"PROBLEM: {problem}" for problem in result["problems"][:10]]
    return title, sections, notes


def _phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in phases.items())


def _where_time_goes(result: dict[str, Any]) -> list[str]:
    lines = []
    for label, key in (("shell", "shell"), ("C#", "csharp")):
        summary = result.get(key)
        if not summary:
            continue
        for case in ("raw", "raw_warm", "cold", "warm"):
            if case in summary:
                lines.append(
                    f"mean ms one at a time, {label}, {NAMES[case]}: "
                    + _phases_text(summary[case]["phases_ms"])
                    + (
                        f"; pending to running {summary[case]['pending_to_running_ms']:.0f}"
                        if "pending_to_running_ms" in summary[case]
                        else ""
                    )
                )
    return lines


def _rounds_note(load: dict[str, Any]) -> str:
    def listed(values: list[float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    return (
        "at capacity, per round jobs/s over raw — cold: "
        f"{listed(load['cold']['ratio_to_raw']['jobs_per_s_rounds'])}; warm: "
        f"{listed(load['warm']['ratio_to_raw']['jobs_per_s_rounds'])}"
    )
