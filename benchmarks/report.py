"""Statistics of the bench's samples, the terminal tables, and the JSON file."""

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


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


# Columns of words, not figures: left-aligned like the first (names).
LEFT = {"outcome", "target", "result", "measured as"}


def _left(column: int, header: list[str]) -> bool:
    return column == 0 or header[column] in LEFT


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


def write_json(result: dict[str, Any], folder: Path) -> Path:
    """`<folder>/<timestamp>.json` and a copy as `latest.json`; returns the first."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str, allow_nan=True)
    path = folder / time.strftime("%Y%m%d-%H%M%S.json")
    path.write_text(text + "\n")
    (folder / "latest.json").write_text(text + "\n")
    return path
