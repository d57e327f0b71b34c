"""`model_io.json`, `report.json` and `report.md` of a conversion run.

`report.json` is read by the benchmark and the emulated-aarch64 checker,
so its schema is documented in docs/conversion.md; bump SCHEMA_VERSION
when a field changes meaning.
"""

import datetime
import json
import platform
from pathlib import Path

import numpy as np

from converters.runtimes import package_version

SCHEMA_VERSION = 1
MODEL_IO_FILE = "model_io.json"
REPORT_JSON_FILE = "report.json"
REPORT_MD_FILE = "report.md"

# Distributions whose versions decide what a conversion produces.
TOOL_PACKAGES = (
    "mfn-tf",
    "tensorflow",
    "keras",
    "numpy",
    "tf2onnx",
    "onnx",
    "onnxslim",
    "onnxruntime",
    "ai-edge-litert",
    "ncnn",
    "pnnx",
    "tensorflow-model-optimization",
    "tf-keras",
)


def tool_versions():
    """Return the versions of Python and of every conversion tool."""
    versions = {"python": platform.python_version()}
    versions.update({name: package_version(name) for name in TOOL_PACKAGES})
    return versions


def build_model_io(input_size, embedding_size, int8_input="float32", keras_file=None):
    """Describe the exported models' input and output for app developers."""
    return {
        "input": {
            "name": "image",
            "content": "one face aligned to insightface's 5-point template",
            "color_order": "RGB",
            "dtype": "float32",
            "value_range": [0, 255],
            "normalization_in_graph": "(x - 127.5) / 128",
        },
        "output": {
            "name": "embedding",
            "shape": [1, embedding_size],
            "dtype": "float32",
            "l2_normalized": False,
            "compare": "cosine similarity (L2-normalize, then dot product)",
        },
        "keras": {
            "file": keras_file,
            "layout": "NHWC",
            "shape": [None, input_size, input_size, 3],
        },
        "tflite": {
            "layout": "NHWC",
            "shape": [1, input_size, input_size, 3],
            "signature": "serving_default",
            "input_key": "image",
            "output_key": "embedding",
            "int8_input_dtype": int8_input,
            "int8_input_quantization": (
                {"scale": 1.0, "zero_point": 0} if int8_input == "uint8" else None
            ),
        },
        "onnx": {
            "layout": "NCHW",
            "shape": [1, 3, input_size, input_size],
            "input": "image",
            "output": "embedding",
        },
        "ncnn": {
            "layout": "ncnn::Mat w=%d h=%d c=3 (planar RGB)" % (input_size, input_size),
            "input_blob": "in0",
            "output_blob": "out0",
        },
    }


def build_report(source, folded, folded_pairs, parity_faces, calibration, artifacts, options):
    """Assemble the `report.json` dictionary."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_model": str(source),
        "folded": folded,
        "folded_batchnorm_count": len(folded_pairs),
        "parity_faces": parity_faces,
        "calibration": calibration,
        "options": options,
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "tool_versions": tool_versions(),
        "artifacts": artifacts,
    }


def _format_size(size):
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def _key_layers(counts, runtime):
    if not counts:
        return ""
    interesting = {
        "litert": ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "PAD", "FULLY_CONNECTED"),
        "onnxruntime": ("Conv", "PRelu", "Pad", "Gemm", "BatchNormalization", "Transpose"),
        "ncnn": ("Convolution", "ConvolutionDepthWise", "PReLU", "InnerProduct", "BatchNorm"),
        "keras": ("Conv2D", "DepthwiseConv2D", "PReLU", "Dense", "BatchNormalization"),
    }.get(runtime, ())
    return ", ".join(f"{name} {counts[name]}" for name in interesting if counts.get(name))


def render_markdown(report):
    """Render `report.json` as a short human-readable page."""
    lines = [
        "# Conversion report",
        "",
        f"- source model: `{report['source_model']}`",
        f"- created: {report['created']}",
        f"- BatchNorm folded: {'yes' if report['folded'] else 'no'} "
        f"({report['folded_batchnorm_count']} layers)",
        f"- parity faces: {report['parity_faces']['count']} from "
        f"`{report['parity_faces']['dir']}`",
    ]
    if report["calibration"]:
        lines.append(
            f"- int8 calibration faces: {report['calibration']['count']} from "
            f"`{report['calibration']['dir']}`"
        )
    lines += [
        "",
        "| artifact | runtime | precision | size | min cosine | median cosine "
        "| max abs diff | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for artifact in report["artifacts"]:
        parity = artifact.get("parity") or {}
        size = artifact.get("size_bytes")
        cells = [
            f"`{artifact['name']}`",
            artifact["runtime"],
            artifact["precision"],
            _format_size(size) if size else "-",
            f"{parity['min_cosine']:.6f}" if parity else "-",
            f"{parity['median_cosine']:.6f}" if parity else "-",
            f"{parity['max_abs_diff']:.2e}" if parity else "-",
            artifact["status"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Per-face cosine distances: `{PARITY_PLOT_FILE}`."]
    lines += ["", "## Layers", ""]
    for artifact in report["artifacts"]:
        summary = _key_layers(artifact.get("layer_counts"), artifact["runtime"])
        note = f" {artifact['note']}" if artifact.get("note") else ""
        error = f" Error: {artifact['error']}" if artifact.get("error") else ""
        lines.append(f"- `{artifact['name']}`: {summary or 'n/a'}.{note}{error}")
    lines += ["", "## Tool versions", ""]
    lines += [f"- {name}: {version}" for name, version in report["tool_versions"].items()]
    return "\n".join(lines) + "\n"


PARITY_PLOT_FILE = "parity.png"


def save_parity_plot(path, cosines, bars):
    """Plot each artifact's per-face cosine distance to Keras against its bar.

    Args:
        cosines: artifact name -> per-face cosine similarities, in order.
        bars: artifact name -> the minimum cosine similarity it must reach.

    The distance `1 - cosine` is drawn on a log axis, one row per artifact
    and one dot per face. The bar is a red tick, and a dot right of it is a
    face below the bar.
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    names = list(cosines)
    figure = Figure(figsize=(7, 0.45 * len(names) + 1.4))
    axes = figure.subplots()
    floor = 1e-9  # exact agreement would be -inf on the log axis
    for row, name in enumerate(names):
        distances = np.maximum(1.0 - np.asarray(cosines[name], dtype=np.float64), floor)
        axes.scatter(distances, np.full(len(distances), row), s=9, alpha=0.6)
        bar = 1.0 - bars[name]
        axes.plot([bar, bar], [row - 0.35, row + 0.35], color="red", linewidth=2)
    axes.set_xscale("log")
    axes.set_yticks(range(len(names)), names)
    axes.invert_yaxis()
    axes.set_xlabel(
        "1 - cosine similarity to the Keras embedding, per face "
        f"(below {floor:g} drawn at {floor:g}); red: the bar"
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_json(path, data):
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_reports(folder, report, model_io, cosines=None):
    """Write `model_io.json`, `report.json`, `report.md` and, given the
    per-face cosines of the artifacts, `parity.png` into `folder`."""
    folder = Path(folder)
    write_json(folder / MODEL_IO_FILE, model_io)
    write_json(folder / REPORT_JSON_FILE, report)
    (folder / REPORT_MD_FILE).write_text(render_markdown(report))
    if cosines:
        bars = {
            artifact["name"]: artifact["parity"]["bar"]
            for artifact in report["artifacts"]
            if artifact.get("parity")
        }
        save_parity_plot(folder / PARITY_PLOT_FILE, cosines, bars)


def read_report(folder):
    """Load `report.json` and `model_io.json` from a conversion folder."""
    folder = Path(folder)
    report_path = folder / REPORT_JSON_FILE
    if not report_path.is_file():
        raise FileNotFoundError(
            f"{report_path} not found; run `python cli.py convert --out {folder}` first"
        )
    report = json.loads(report_path.read_text())
    if report.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{report_path} has schema version {report.get('schema_version')}, this "
            f"code reads version {SCHEMA_VERSION}; convert the model again"
        )
    model_io_path = folder / MODEL_IO_FILE
    model_io = json.loads(model_io_path.read_text()) if model_io_path.is_file() else {}
    return report, model_io
