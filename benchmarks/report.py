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


def stats_row(name: str, stats: dict[str, Any], ratio: dict[str, Any] | None = None) -> Row:
    return [
        name,
        _num(stats.get("jobs_per_s"), 2),
        _num(stats.get("p50_ms")),
        _num(stats.get("p95_ms")),
        _num(stats.get("p99_ms")),
        _ratio(ratio["jobs_per_s"]) if ratio else "",
        _ratio(ratio["p50"]) if ratio else "",
        "",
    ]


def memory_row(name: str, mib: float | None) -> Row:
    return [name, "", "", "", "", "", "", _num(mib, 1)]


HEADER = ["", "jobs/s", "p50 ms", "p95 ms", "p99 ms", "e2e/raw jobs/s", "e2e/raw p50", "RSS MiB"]


def render(title: str, sections: list[tuple[str, list[Row]]], notes: list[str]) -> None:
    """A rich table on a terminal, aligned plain text otherwise."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for i, name in enumerate(HEADER):
            table.add_column(name, justify="left" if i == 0 else "right")
        for s, (section, rows) in enumerate(sections):
            table.add_row(f"[bold]{section}[/bold]", end_section=False)
            for i, row in enumerate(rows):
                table.add_row(*row, end_section=i == len(rows) - 1 and s < len(sections) - 1)
        console = Console()
        console.print(table)
        for note in notes:
            console.print(note, highlight=False, soft_wrap=True)
        return
    lines: list[Row] = [HEADER]
    for section, rows in sections:
        lines.append([f"[{section}]"] + [""] * (len(HEADER) - 1))
        lines += [["  " + row[0], *row[1:]] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    print(title)
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())
    for note in notes:
        print(note)


def write_json(result: dict[str, Any], folder: Path) -> Path:
    """`<folder>/<timestamp>.json` and a copy as `latest.json`; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str, allow_nan=True)
    path = folder / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(text + "\n")
    (folder / "latest.json").write_text(text + "\n")
    return path
