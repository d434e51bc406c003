"""A PNG of a result beside its JSON: the latency distributions, throughput and CPU per job.

One row per latency phase (shell and C# one at a time, shell at capacity): the empirical CDF of
every case, the share of jobs done within x ms (x on a log scale: a warm shell job and a cold C#
one are two orders apart), its p50 marked with a dot, and the targets that concern the phase as
dotted vertical lines. The last row: throughput at capacity per round, and the CPU per job of
each part at capacity. matplotlib comes with the `bench` extra; without it `plot` returns None
and the bench goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import percentile
from benchmarks.tables import NAMES

COLORS = {
    "cli": "#7f7f7f",
    "raw": "#1f77b4",
    "raw_warm": "#17becf",
    "cold": "#ff7f0e",
    "warm": "#2ca02c",
}
STYLES = {"raw_warm": "--"}
LOAD = ("raw", "cold", "warm")
CPU_PARTS = (
    ("worker or raw client", "#9467bd"),
    ("dockerd", "#8c564b"),
    ("containerd", "#e377c2"),
    ("shims", "#bcbd22"),
    ("kafka", "#7f7f7f"),
)


def _samples_ms(summary: dict[str, Any], case: str) -> list[float]:
    return sorted(
        1000 * s for one in summary["rounds"] if case in one for s in one[case]["latencies_s"]
    )


def _cdf(axes: Any, summary: dict[str, Any], title: str, lines: list[tuple[float, str]]) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    everything: list[float] = []
    for case, name in NAMES.items():
        values = _samples_ms(summary, case)
        if not values:
            continue
        everything += values
        shares = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
        p50 = percentile(values, 50)
        axes.step(
            [values[0], *values],
            shares,
            where="post",
            color=COLORS[case],
            linestyle=STYLES.get(case, "-"),
            linewidth=2,
            label=f"{name}: p50 {p50:.0f}, p95 {percentile(values, 95):.0f} ms (n={len(values)})",
        )
        axes.plot([p50], [0.5], "o", color=COLORS[case], markersize=6)
    for x, label in lines:
        if x == x:  # not NaN
            axes.axvline(x, color="black", linestyle=":", linewidth=1)
            axes.annotate(
                label, (x, 0.03), rotation=90, fontsize=8, ha="right", va="bottom", alpha=0.8
            )
    axes.set_xscale("log")
    # Labels at 1, 2, 5 per decade over a wide range, more of them over a narrow one.
    wide = bool(everything) and max(everything) > 30 * min(everything)
    axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if wide else (1, 1.5, 2, 3, 5, 7)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_ylim(0, 1.02)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_xlabel("time to result, ms (log scale)")
    axes.set_ylabel("share of jobs done")
    axes.grid(True, which="major", alpha=0.3)
    axes.axhline(0.5, color="black", linewidth=0.5, alpha=0.4)
    axes.axhline(0.95, color="black", linewidth=0.5, alpha=0.4, linestyle="--")
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)


def _throughput(axes: Any, load: dict[str, Any], jobs: int, capacity: int) -> None:
    for i, case in enumerate(LOAD):
        values = load[case]["jobs_per_s_rounds"]
        axes.plot([i] * len(values), values, "o", color=COLORS[case], alpha=0.6)
        axes.hlines(load[case]["jobs_per_s"], i - 0.3, i + 0.3, color=COLORS[case], linewidth=3)
        axes.annotate(
            f"{load[case]['jobs_per_s']:.2f}",
            (i + 0.32, load[case]["jobs_per_s"]),
            va="center",
            fontsize=9,
        )
    axes.set_xticks(range(len(LOAD)), [NAMES[c] for c in LOAD])
    axes.set_xlim(-0.6, len(LOAD) - 0.2)
    axes.set_ylim(bottom=0)
    axes.set_title(f"throughput, {jobs} at once, capacity {capacity}", fontsize=11, loc="left")
    axes.set_ylabel("jobs/s (dots: rounds; bar: median)")
    axes.grid(True, axis="y", alpha=0.3)


def _cpu(axes: Any, load: dict[str, Any]) -> None:
    bottoms = [0.0] * len(LOAD)
    for part, color in CPU_PARTS:
        heights = []
        for case in LOAD:
            cpu = load[case]["cpu_ms_per_job"]
            own = cpu.get("worker", cpu.get("raw client", 0.0))
            heights.append(own if part == "worker or raw client" else cpu.get(part, 0.0))
        axes.bar(range(len(LOAD)), heights, 0.6, bottom=bottoms, color=color, label=part)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for i, top in enumerate(bottoms):
        axes.annotate(f"{top:.0f}", (i, top), ha="center", va="bottom", fontsize=9)
    axes.set_xticks(range(len(LOAD)), [NAMES[c] for c in LOAD])
    axes.set_title("CPU per job at capacity", fontsize=11, loc="left")
    axes.set_ylabel("CPU ms per job")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Write the PNG; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    p, sh, cs, load = result["params"], result["shell"], result.get("csharp"), result["load"]
    rows: Any = [["shell", "shell"], ["csharp", "csharp"], ["load", "load"], ["tput", "cpu"]]
    if not cs:
        rows.remove(["csharp", "csharp"])
    figure, cells = plt.subplot_mosaic(rows, figsize=(13, 4.2 * len(rows)), layout="constrained")
    raw_p50 = sh["raw"]["p50_ms"]
    _cdf(
        cells["shell"],
        sh,
        f"shell `echo hi`, one at a time ({p['serial']} per case and round, "
        f"{p['repetitions']} rounds)",
        [(0.5 * raw_p50, "target warm: 0.5 x raw cold p50")],
    )
    if cs:
        cli = cs["cli"]["p50_ms"] if "cli" in cs else float("nan")
        _cdf(
            cells["csharp"],
            cs,
            f"C# hello world (mono), one at a time ({p['csharp']} rounds)",
            [
                (0.25 * cli, "target warm: 0.25 x docker run p50"),
                (0.6 * cli, "target cold: 0.6 x docker run p50"),
            ],
        )
    _cdf(
        cells["load"],
        load,
        f"shell, {p['jobs']} at once, capacity {p['capacity']}: from the common start "
        "(includes the wait for a slot)",
        [],
    )
    _throughput(cells["tput"], load, p["jobs"], p["capacity"])
    _cpu(cells["cpu"], load)
    m = result["machine"]
    start = " ".join(f"{x:.1f}" for x in result["load_at_start"])
    figure.suptitle(
        f"dsw bench {result['run_id']} ({p['preset']}), {result['started']}: {m['cpus']} CPUs, "
        f"Docker {m['docker']}; load average at start {start}",
        fontsize=12,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
