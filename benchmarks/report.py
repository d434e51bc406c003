"""Statistics of the bench's samples, the terminal table, and the JSON file."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Row = list[str]
Section = tuple[str, list[str], list[Row]]  # title, header, rows
MiB = 1024 * 1024


def say(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean in ms of latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms) if ms else math.nan,
    }


def phase(latencies_s: Sequence[float], wall_s: float, **extra: Any) -> dict[str, Any]:
    """One measured phase: its latencies, throughput over wall time, and anything else."""
    return {
        "jobs": len(latencies_s),
        "wall_s": wall_s,
        "jobs_per_s": len(latencies_s) / wall_s if wall_s else math.nan,
        **latency_summary(latencies_s),
        "latencies_s": list(latencies_s),
        **extra,
    }


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def pooled(rounds: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """Across rounds: median jobs/s, percentiles of every latency of every round."""
    phases = [r[key] for r in rounds]
    latencies = [s for p in phases for s in p["latencies_s"]]
    return {
        "jobs_per_s": median([p["jobs_per_s"] for p in phases]),
        "jobs_per_s_rounds": [p["jobs_per_s"] for p in phases],
        **latency_summary(latencies),
    }


def ratios(rounds: Sequence[dict[str, Any]], e2e: str, raw: str) -> dict[str, Any]:
    """e2e/raw per round (paired: same round, same machine state), and their medians."""
    tput = [r[e2e]["jobs_per_s"] / r[raw]["jobs_per_s"] for r in rounds]
    p50 = [r[e2e]["p50_ms"] / r[raw]["p50_ms"] for r in rounds]
    p95 = [r[e2e]["p95_ms"] / r[raw]["p95_ms"] for r in rounds]
    return {
        "jobs_per_s": median(tput),
        "p50": median(p50),
        "p95": median(p95),
        "jobs_per_s_rounds": tput,
        "p50_rounds": p50,
        "p95_rounds": p95,
    }


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


STATS = ["", "jobs/s", "p50 ms", "p95 ms", "p99 ms", "e2e/raw\njobs/s", "e2e/raw\np50"]
MEMORY = ["", "RSS MiB", "outcome"]


def stats_row(name: str, stats: dict[str, Any], ratio: dict[str, Any] | None = None) -> Row:
    return [
        name,
        _num(stats.get("jobs_per_s"), 2),
        _num(stats.get("p50_ms")),
        _num(stats.get("p95_ms")),
        _num(stats.get("p99_ms")),
        _ratio(ratio["jobs_per_s"]) if ratio else "",
        _ratio(ratio["p50"]) if ratio else "",
    ]


def _left(column: int, header: list[str]) -> bool:
    """Names and the memory table's outcome are left-aligned; figures right-aligned."""
    return column == 0 or (header is MEMORY and column == 2)


def render(title: str, sections: list[Section], notes: list[str]) -> None:
    """Rich tables on a terminal, aligned plain text otherwise."""
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(title, style="bold", highlight=False)
        for name, header, rows in sections:
            table = Table(title=name, title_justify="left", box=box.SIMPLE_HEAD)
            for i, column in enumerate(header):
                table.add_column(
                    column,
                    justify="left" if _left(i, header) else "right",
                )
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for note in notes:
            console.print(note, highlight=False, soft_wrap=True)
        return
    print(title)
    for name, header, rows in sections:
        lines = [[h.replace("\n", " ") for h in header], *rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        print(f"\n{name}")
        for line in lines:
            cells = [
                c.ljust(w) if _left(i, header) else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            print("  " + "  ".join(cells).rstrip())
    print()
    for note in notes:
        print(note)


def _cap(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size / 1024:g} KiB"


def tables(result: dict[str, Any]) -> tuple[str, list[Section], list[str]]:
    """The title, tables and notes of a result."""
    p, m, sh = result["params"], result["machine"], result["shell"]
    n, c, r, s = p["jobs"], p["capacity"], p["repetitions"], p["serial"]
    title = (
        f"dsw bench ({p['preset']}): {m['cpus']} CPUs, Docker {m['docker']}, cgroup v{m['cgroup']}"
        f"; N={n} C={c} R={r}; {result['runtime_s']:.0f} s"
    )
    sections: list[Section] = [
        (
            f"shell `echo hi`, one at a time ({s} per round, {r} rounds)",
            STATS,
            [
                stats_row("raw Engine API", sh["raw_serial"]),
                stats_row("worker end to end", sh["e2e_serial"], sh["serial_ratio"]),
            ],
        ),
        (
            f"shell `echo hi`, {n} at once, capacity {c} ({r} rounds; latency includes queueing)",
            STATS,
            [
                stats_row("raw Engine API", sh["raw_load"]),
                stats_row("worker end to end", sh["e2e_load"], sh["load_ratio"]),
            ],
        ),
    ]
    if cs := result.get("csharp"):
        ratio = {"jobs_per_s": math.nan, "p50": cs["e2e_over_raw_p50"]}
        rows = [stats_row("docker run --rm", cs["cli"])] if "cli" in cs else []
        rows += [
            stats_row("raw Engine API", cs["raw"]),
            stats_row("worker end to end", cs["e2e"], ratio),
        ]
        sections.append((f"C# hello world (mono), one at a time ({p['csharp']} each)", STATS, rows))
    w = result["worker"]
    memory = [
        ["idle, after start-up", _num(w["idle_rss_mib"], 1), ""],
        [f"peak, {c} jobs in flight", _num(sh["worker_peak_rss_mib_at_capacity"], 1), ""],
    ]
    for flood in result["flood"]:
        outcome = (
            f"{flood['finished_with']}{' at the cap' if flood['output_limit_exceeded'] else ''}"
            f" after {flood['duration_s']} s, {flood['stdout_chars_in_finished'] / 1024:.0f} KiB"
            " of stdout in `finished`"
        )
        cap = _cap(flood["output_limit_bytes"])
        memory.append(
            [f"peak, job printing 1 GB, cap {cap}", _num(flood["peak_rss_mib"], 1), outcome]
        )
    sections.append(("worker memory", MEMORY, memory))
    notes = [_where_time_goes(sh), _cpu_note(sh), _rounds_note(sh)]
    if cs and "cli" in cs:
        notes.append(f"C#: worker / docker run --rm p50 {cs['e2e_over_cli_p50']:.2f}x")
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


def write_json(result: dict[str, Any], folder: Path) -> Path:
    """`<folder>/<timestamp>.json` and a copy as `latest.json`; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str, allow_nan=True)
    path = folder / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(text + "\n")
    (folder / "latest.json").write_text(text + "\n")
    return path
