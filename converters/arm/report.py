"""`arm_report.json`, `arm_report.md` and `arm_cosine.png` of an emulated check."""

import datetime
import json
import platform
from pathlib import Path

import numpy as np

from converters.arm import runner

SCHEMA_VERSION = 1
REPORT_JSON_FILE = "arm_report.json"
REPORT_MD_FILE = "arm_report.md"
PLOT_FILE = "arm_cosine.png"
# 1 - cosine is plotted on a log axis; exact agreement is drawn here.
PLOT_FLOOR = 1e-9


def build_report(model_dir, keras_model, face_set, emulator, cpus, threads, results, notes):
    """Assemble the `arm_report.json` dictionary."""
    stamp = emulator.sysroot.stamp() or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_dir": str(model_dir),
        "keras_model": str(keras_model),
        "faces": face_set.description if face_set.pair_indices is None else None,
        "pairs": face_set.description if face_set.pair_indices is not None else None,
        "face_count": int(len(face_set.images)),
        "emulation": {
            "qemu": str(emulator.qemu),
            "qemu_version": emulator.qemu_version,
            "sysroot": str(emulator.sysroot.root),
            "debian_suite": stamp.get("debian_suite"),
            "python": stamp.get("python"),
            "wheels": stamp.get("wheels"),
            "threads": threads,
        },
        "host": {"platform": platform.platform(), "processor": platform.machine()},
        "cpus": [cpu.to_dict() for cpu in cpus],
        "settings": runner.SETTINGS,
        "results": results,
        "notes": notes,
    }


def _status(entry):
    if entry["status"] == "skipped":
        return "skipped"
    if entry["status"] == "failed":
        return "**error**"
    if entry["judged"]:
        return "pass" if entry["meets_bar"] else f"**below {entry['bar']}**"
    return "measured"


def _decisions(entry):
    decisions = entry.get("decisions")
    if not decisions:
        return "-"
    return f"{decisions['changed']} of {decisions['pairs']} (max Δd {decisions['max_distance_change']:.2g})"


def render_markdown(report):
    """Render `arm_report.json` as a short page, one table per CPU."""
    emulation = report["emulation"]
    lines = [
        "# Emulated aarch64 check",
        "",
        f"- conversion: `{report['model_dir']}`; reference: Keras model `{report['keras_model']}`",
        f"- emulator: {emulation['qemu_version']}; sysroot Debian {emulation['debian_suite']}, "
        f"Python {emulation['python']}, "
        + ", ".join(f"{name} {version}" for name, version in (emulation["wheels"] or {}).items()
                    if name in ("numpy", "ncnn", "ai-edge-litert")),
        f"- threads per run: {emulation['threads']}; created {report['created']}",
    ]
    if report["pairs"]:
        pairs = report["pairs"]
        lines.append(
            f"- faces: {report['face_count']} from {pairs['count']} pairs of `{pairs['file']}` "
            f"({pairs['same']} same, {pairs['different']} different; selection "
            f"{pairs['selection']}, shift {pairs['shift_x']} px)"
        )
        # For unit vectors, squared distance d and cosine c satisfy d = 2 - 2c.
        lines.append(
            f"- threshold: squared distance of L2-normalised embeddings "
            f"{pairs['threshold']:.4f} (cosine similarity {1 - pairs['threshold'] / 2:.4f}), "
            f"{pairs['threshold_source']}"
        )
        if pairs.get("excluded_pairs_min_margin") is not None:
            lines.append(
                f"- every pair left out is at least {pairs['excluded_pairs_min_margin']:.4f} "
                "from the threshold, so it can change decision only if its distance moves more"
            )
    else:
        faces = report["faces"]
        lines.append(f"- faces: {faces['count']} from `{faces['dir']}` (shift {faces['shift_x']} px)")
    lines += [
        "",
        "Settings marked `pass` compute in fp32 and must reach the artifact's parity "
        "bar; `measured` settings store or compute in fp16 and have no bar.",
    ]
    for cpu in report["cpus"]:
        lines += [
            "",
            f"## {cpu['spec']}",
            "",
            f"MIDR {cpu['midr']}; fp16 arithmetic (asimdhp): "
            f"{'yes' if cpu['fp16_arithmetic'] else 'no'}; dot product: "
            f"{'yes' if cpu['dot_product'] else 'no'}; LSE atomics: "
            f"{'yes' if cpu['lse_atomics'] else 'no'}.",
            "",
            "| artifact | setting | min cosine | median cosine | max abs diff "
            "| changed decisions | status |",
            "|---|---|---|---|---|---|---|",
        ]
        for entry in report["results"]:
            if entry["cpu"] != cpu["spec"]:
                continue
            has_figures = entry["status"] == "ok"
            cells = [
                f"`{entry['artifact']}`",
                entry["setting"],
                f"{entry['min_cosine']:.6f}" if has_figures else "-",
                f"{entry['median_cosine']:.6f}" if has_figures else "-",
                f"{entry['max_abs_diff']:.2e}" if has_figures else "-",
                _decisions(entry) if has_figures else "-",
                _status(entry),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    details = [
        f"- {entry['cpu']} / `{entry['artifact']}` / {entry['setting']}: "
        + (entry.get("reason") or entry.get("error", "")).replace("\n", " ")
        for entry in report["results"]
        if entry["status"] in ("skipped", "failed")
    ]
    if details or report["notes"]:
        lines += ["", "## Skipped and failed runs", ""] + details
        lines += [f"- {note}" for note in report["notes"]]
    lines += ["", "## Settings", ""]
    for runtime, settings in report["settings"].items():
        for name, description in settings.items():
            lines.append(f"- {runtime} `{name}`: {description}")
    return "\n".join(lines) + "\n"


def write_reports(folder, report):
    """Write `arm_report.json` and `arm_report.md` into `folder`; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / REPORT_JSON_FILE
    markdown_path = folder / REPORT_MD_FILE
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path.write_text(render_markdown(report))
    return json_path, markdown_path


def plot_cosines(cosines_by_cell, path):
    """Plot 1 - cosine per face for each run, one panel per CPU.

    Rows are shared by all panels, so a run skipped on one CPU leaves its
    row empty there.

    Args:
        cosines_by_cell: {cpu: [(label, cosines array or None, bar or None), ...]};
            None cosines mark a run that produced no embeddings.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(cpu, rows) for cpu, rows in cosines_by_cell.items() if rows]
    if not panels:
        return None
    labels = list(dict.fromkeys(label for _, rows in panels for label, _, _ in rows))
    position = {label: index for index, label in enumerate(labels)}
    height = max(2.5, 0.35 * len(labels) + 1.2)
    # The first panel also shows the row labels, which are long.
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(3.5 + 4.5 * len(panels), height),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for axis, (cpu, rows) in zip(axes[0], panels):
        for label, cosines, bar in rows:
            row = position[label]
            if cosines is None:
                continue
            gaps = np.clip(1.0 - np.asarray(cosines, dtype=np.float64), PLOT_FLOOR, None)
            axis.scatter(gaps, np.full(len(gaps), row), s=8, alpha=0.6)
            if bar is not None:
                axis.plot([1.0 - bar] * 2, [row - 0.35, row + 0.35], color="black", linewidth=1)
        axis.set_xscale("log")
        axis.set_title(cpu)
        axis.set_xlabel("1 - cosine to Keras, per face (tick: fp32 bar)")
        axis.grid(True, axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)))
    axes[0][0].set_yticklabels(labels)
    axes[0][0].set_ylim(-0.5, len(labels) - 0.5)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
