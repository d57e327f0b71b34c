"""Write a benchmark result as Markdown, CSV, JSON and a bar chart."""

import csv
import json
import logging
from pathlib import Path

from bench.results import fastest_by_threads, fusion_min_ratios, fusion_ratios, thread_counts

logger = logging.getLogger(__name__)

# Figures that others published, shown beside Android results for
# comparison. None of them was measured by this project, and they are
# quoted as the project received them, not re-checked against their source.
PUBLISHED_FIGURES = (
    {
        "source": "an earlier MobileFaceNet reproduction converted from MXNet to ncnn",
        "device": "Snapdragon 625",
        "tool": "benchncnn",
        "threads": 4,
        "avg_ms": 61.4,
        "note": "BatchNorm not folded",
    },
    {
        "source": "an earlier MobileFaceNet reproduction converted from MXNet to ncnn",
        "device": "Snapdragon 625",
        "tool": "benchncnn",
        "threads": 8,
        "avg_ms": 28.9,
        "note": "BatchNorm not folded",
    },
    {
        "source": "the MobileFaceNet paper (Chen et al., arXiv:1804.07573)",
        "device": "Snapdragon 820",
        "tool": "the authors' own measurement",
        "threads": 4,
        "avg_ms": 24.0,
        "note": "the paper's abstract gives 18 ms for its fastest variant",
    },
)

CSV_FIELDS = (
    "target",
    "device",
    "artifact",
    "label",
    "runtime",
    "precision",
    "threads",
    "median_ms",
    "min_ms",
    "max_ms",
    "samples",
    "peak_rss_mib",
)


def device_name(result):
    """Return the CPU model (host) or the phone and SoC (Android)."""
    machine = result.machine
    if result.target == "android":
        return f"{machine.get('model', 'unknown phone')} ({machine.get('soc', 'unknown SoC')})"
    return machine.get("cpu_model") or "unknown CPU"


def _format_ms(value):
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _format_mib(value):
    return "n/a" if value is None else f"{value:.0f}"


def _machine_lines(result):
    machine = result.machine
    if result.target == "android":
        lines = [
            f"- Device: {machine.get('manufacturer', '?')} {machine.get('model', '?')}, "
            f"SoC {machine.get('soc', '?')}, Android {machine.get('android', '?')} "
            f"({machine.get('abi', '?')})",
            f"- CPU: {machine.get('cpu_summary', '?')}; fp16 arithmetic "
            f"(asimdhp): {machine.get('fp16_arithmetic', '?')}",
            f"- CPU governor: {machine.get('governor', '?')}",
        ]
    else:
        lines = [
            f"- CPU: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable cores "
            f"({machine.get('logical_cores')} logical, {machine.get('physical_cores')} physical), "
            f"{machine.get('memory_gib')} GiB, {machine.get('system')} {machine.get('machine')}, "
            f"Python {machine.get('python')}",
        ]
        start, end = machine.get("load_average_start"), machine.get("load_average_end")
        if start and end:
            lines.append(
                f"- Load average (1 min): {start[0]} at the start, {end[0]} at the end. "
                "Other processes share the CPU when this is above 0 by much."
            )
    libraries = machine.get("libraries") or {}
    if libraries:
        lines.append("- " + ", ".join(f"{name} {value}" for name, value in libraries.items()))
    return lines


def format_markdown(result):
    """Return the result as a Markdown report."""
    measurements = result.measurements
    fastest = fastest_by_threads(measurements)
    title = "Android" if result.target == "android" else "host"
    lines = [f"# MobileFaceNet benchmark ({title}): {device_name(result)}", ""]
    lines += _machine_lines(result)
    lines += [f"- {key}: {value}" for key, value in result.settings.items()]
    lines += ["", "## Latency per image (ms)", ""]
    lines += [
        "| threads | artifact | median | min | max | peak RSS (MiB) | median / fastest |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for threads in thread_counts(measurements):
        rows = sorted(
            (m for m in measurements if m.threads == threads), key=lambda m: m.median_ms
        )
        for m in rows:
            ratio = m.median_ms / fastest[threads].median_ms
            lines.append(
                f"| {threads} | {m.label} | {_format_ms(m.median_ms)} | {_format_ms(m.min_ms)} "
                f"| {_format_ms(m.max_ms)} | {_format_mib(m.peak_rss_mib)} | {ratio:.2f} |"
            )
    lines += ["", "Fastest at each thread count:", ""]
    for threads, m in fastest.items():
        lines.append(f"- {threads} thread{'s' if threads > 1 else ''}: {m.label}, {_format_ms(m.median_ms)} ms")

    ratios = fusion_ratios(measurements)
    if ratios:
        lines += [
            "",
            "## BatchNorm folding (ncnn fp32)",
            "",
            "The same model converted with and without BatchNorm folded into the "
            "convolutions, medians side by side. Below 1 means folding made it "
            "faster. The last column compares the fastest images, which a busy "
            "machine disturbs least.",
            "",
            "| threads | folded (ms) | unfolded (ms) | folded / unfolded | min folded / min unfolded |",
            "|---:|---:|---:|---:|---:|",
        ]
        min_ratios = fusion_min_ratios(measurements)
        for threads, (folded, unfolded, ratio) in ratios.items():
            lines.append(
                f"| {threads} | {_format_ms(folded)} | {_format_ms(unfolded)} | {ratio:.3f} "
                f"| {min_ratios[threads]:.3f} |"
            )

    if result.target == "android":
        lines += [
            "",
            "## Published figures (other people's measurements, for comparison)",
            "",
            "| source | device | tool | threads | avg (ms) | note |",
            "|---|---|---|---:|---:|---|",
        ]
        for figure in PUBLISHED_FIGURES:
            lines.append(
                f"| {figure['source']} | {figure['device']} | {figure['tool']} | "
                f"{figure['threads']} | {figure['avg_ms']} | {figure['note']} |"
            )
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def write_csv(result, path):
    """Write one row per artifact and thread count."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for m in result.measurements:
            writer.writerow(
                {
                    "target": result.target,
                    "device": device_name(result),
                    "artifact": m.artifact,
                    "label": m.label,
                    "runtime": m.runtime,
                    "precision": m.precision,
                    "threads": m.threads,
                    "median_ms": f"{m.median_ms:.4f}",
                    "min_ms": f"{m.min_ms:.4f}",
                    "max_ms": f"{m.max_ms:.4f}",
                    "samples": len(m.samples_ms),
                    "peak_rss_mib": "" if m.peak_rss_mib is None else f"{m.peak_rss_mib:.1f}",
                }
            )


def plot_latency(result, path):
    """Draw median latency per artifact, one bar per thread count.

    Whiskers span the 10th to 90th percentile of the samples: a single
    preempted image on a busy machine would stretch min-max whiskers over
    the whole chart (the table keeps min and max). The fastest artifact at
    each thread count is outlined in black.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    measurements = result.measurements
    labels = list(dict.fromkeys(m.label for m in measurements))
    threads = thread_counts(measurements)
    by_key = {(m.label, m.threads): m for m in measurements}
    fastest = fastest_by_threads(measurements)

    width = 0.8 / len(threads)
    positions = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(max(7.0, 1.1 * len(labels) + 2), 4.8))
    legend = []
    for index, count in enumerate(threads):
        offsets = positions - 0.4 + width * (index + 0.5)
        rows = [by_key.get((label, count)) for label in labels]
        heights = [m.median_ms if m else np.nan for m in rows]
        spreads = [np.percentile(m.samples_ms, [10, 90]) if m else (0, 0) for m in rows]
        lower = [max(m.median_ms - low, 0) if m else 0 for m, (low, _) in zip(rows, spreads)]
        upper = [max(high - m.median_ms, 0) if m else 0 for m, (_, high) in zip(rows, spreads)]
        bars = axes.bar(
            offsets,
            heights,
            width,
            yerr=[lower, upper],
            capsize=2,
        )
        # The legend gets plain patches: an outlined fastest bar would
        # otherwise give its outline to the legend entry.
        legend.append(
            Patch(facecolor=bars[0].get_facecolor(), label=f"{count} thread{'s' if count > 1 else ''}")
        )
        for bar, m in zip(bars, rows):
            if m is not None and fastest[count] is m:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
    axes.set_xticks(positions)
    axes.set_xticklabels(labels, rotation=25, ha="right")
    axes.set_ylabel("latency per image (ms)\nmedian, whiskers 10th-90th percentile")
    axes.set_title(f"MobileFaceNet, {device_name(result)}", fontsize=10)
    legend.append(Patch(facecolor="white", edgecolor="black", label="fastest at that thread count"))
    axes.legend(handles=legend)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(result, out_dir, stem):
    """Write `{stem}.md`, `.csv`, `.json` and `.png` into `out_dir`.

    Returns:
        `{"markdown": path, "csv": path, "json": path, "chart": path}`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "json": out_dir / f"{stem}.json",
        "chart": out_dir / f"{stem}.png",
    }
    paths["markdown"].write_text(format_markdown(result))
    write_csv(result, paths["csv"])
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot_latency(result, paths["chart"])
    logger.info("wrote %s", ", ".join(str(path) for path in paths.values()))
    return paths
