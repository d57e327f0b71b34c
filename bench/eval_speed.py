"""Evaluation speed and accuracy: the project's `eval` path against MXNet.

    python bench/eval_speed.py --checkpoint PREFIX,EPOCH --bin lfw.bin \\
        --mxnet-python .venv-mxnet/bin/python --threads 2 --repeats 3

Both sides embed every image of the `.bin` and its mirror (12,000 images
and 12,000 mirrors for LFW), from the same decoded pixels, with the same
batch size and CPU thread count:

- MXNet: the original checkpoint in `mx.mod.Module`, two forward passes per
  batch (images, then mirrors), run by `bench/mxnet_reference.py` in the
  MXNet environment;
- the project: the checkpoint imported into Keras and embedded by
  `mfn_tf.evaluation.embedding.ImageEmbedder`, the code behind `cli.py eval`.

Each side's embeddings are scored with the project's 10-fold verification
(`score_embeddings`), so only the network runtime differs. One-time set-up
(MXNet's bind, the import and the tf.function trace) is reported but not
timed into the ratio. The sides take turns run by run, so that a change in
the machine's load reaches both, and the median of `--repeats` runs is
reported per side.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

REFERENCE_SCRIPT = REPO_ROOT / "bench" / "mxnet_reference.py"

logger = logging.getLogger("eval_speed")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="insightface checkpoint as PREFIX,EPOCH")
    parser.add_argument("--bin", required=True, type=Path, help="verification .bin, such as lfw.bin")
    parser.add_argument(
        "--mxnet-python",
        default=os.environ.get("MFN_TF_MXNET_PYTHON"),
        help="Python of the MXNet environment (default: $MFN_TF_MXNET_PYTHON)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for each side")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch, mirrors extra")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the decoded images and MXNet's embeddings here (default: a temporary folder)",
    )
    return parser.parse_args(argv)


def describe_machine():
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def run_mxnet(args, images_path, workdir):
    """Embed once with MXNet; return (originals, mirrors, seconds, set-up seconds)."""
    prefix, epoch = args.checkpoint.rsplit(",", 1)
    originals = workdir / "mxnet_original.npy"
    mirrors = workdir / "mxnet_flipped.npy"
    timing = workdir / "mxnet_timing.json"
    command = [
        args.mxnet_python,
        str(REFERENCE_SCRIPT),
        "embed",
        prefix,
        epoch,
        str(images_path),
        str(originals),
        "--flip",
        "--flip-out",
        str(mirrors),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--timing-json",
        str(timing),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"MXNet side failed ({' '.join(command)}):\n{result.stderr}")
    (seconds,) = json.loads(timing.read_text())["seconds"]
    return np.load(originals), np.load(mirrors), seconds, wall - seconds


class KerasSide:
    """The project's eval path, set up once and then timed run by run."""

    def __init__(self, args, images):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

        from mfn_tf.evaluation.embedding import ImageEmbedder
        from mfn_tf.model.loading import load_backbone

        started = time.perf_counter()
        backbone = load_backbone(args.checkpoint)
        self.embedder = ImageEmbedder(backbone, args.batch_size)
        self.embedder(images[: args.batch_size])  # traces the tf.function once
        self.setup_seconds = time.perf_counter() - started
        self.images = images

    def run(self):
        """Embed once; return (Embeddings, seconds)."""
        started = time.perf_counter()
        embeddings = self.embedder(self.images, flip=True, progress=True)
        return embeddings, time.perf_counter() - started


def score(name, embeddings, issame):
    from mfn_tf.evaluation.evaluate import score_embeddings

    started = time.perf_counter()
    result = score_embeddings(name, embeddings, issame)
    return result, time.perf_counter() - started


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.mxnet_python:
        sys.exit("no MXNet environment: pass --mxnet-python or set MFN_TF_MXNET_PYTHON (`make mxnet-env`)")

    from mfn_tf.data.verification_bin import decode_images, load_bin
    from mfn_tf.evaluation.embedding import Embeddings

    started = time.perf_counter()
    encoded, issame = load_bin(args.bin)
    images = decode_images(encoded, (112, 112))
    decode_seconds = time.perf_counter() - started
    logger.info("decoded %d images of %s in %.1f s", len(images), args.bin, decode_seconds)

    # The sides take turns, so that a change in the machine's load during
    # the benchmark reaches both. Keras goes first, so that a broken set-up
    # fails before the longer MXNet side.
    keras_side = KerasSide(args, images)
    ours_seconds, mx_seconds, mx_setups = [], [], []
    with tempfile.TemporaryDirectory(prefix="eval_speed_") as directory:
        workdir = args.workdir or Path(directory)
        workdir.mkdir(parents=True, exist_ok=True)
        images_path = workdir / "images.npy"
        np.save(images_path, images)
        for run in range(1, args.repeats + 1):
            logger.info("run %d/%d, Keras: %d images with mirrors", run, args.repeats, len(images))
            ours, seconds = keras_side.run()
            ours_seconds.append(seconds)
            logger.info("run %d/%d, MXNet: %d images with mirrors", run, args.repeats, len(images))
            mx_original, mx_flipped, seconds, setup = run_mxnet(args, images_path, workdir)
            mx_seconds.append(seconds)
            mx_setups.append(setup)
    theirs = Embeddings(original=mx_original, flipped=mx_flipped)
    ours_setup, mx_setup = keras_side.setup_seconds, statistics.median(mx_setups)

    ours_result, ours_score_seconds = score("keras", ours, issame)
    mx_result, mx_score_seconds = score("mxnet", theirs, issame)

    combined_ours, combined_theirs = ours.combined, theirs.combined
    cosines = np.sum(combined_ours * combined_theirs, axis=1) / (
        np.linalg.norm(combined_ours, axis=1) * np.linalg.norm(combined_theirs, axis=1)
    )
    ours_total = statistics.median(ours_seconds) + ours_score_seconds
    mx_total = statistics.median(mx_seconds) + mx_score_seconds
    report = {
        "bin": str(args.bin),
        "checkpoint": args.checkpoint,
        "images": int(len(images)),
        "pairs": int(len(issame)),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": describe_machine(),
        "decode_seconds": decode_seconds,
        "keras": {
            "setup_seconds": ours_setup,
            "embed_seconds": ours_seconds,
            "embed_median_seconds": statistics.median(ours_seconds),
            "score_seconds": ours_score_seconds,
            "total_seconds": ours_total,
            "accuracy_flip": ours_result.accuracy,
            "accuracy_flip_std": ours_result.accuracy_std,
            "xnorm": ours_result.xnorm,
        },
        "mxnet": {
            "setup_seconds": mx_setup,
            "embed_seconds": mx_seconds,
            "embed_median_seconds": statistics.median(mx_seconds),
            "score_seconds": mx_score_seconds,
            "total_seconds": mx_total,
            "accuracy_flip": mx_result.accuracy,
            "accuracy_flip_std": mx_result.accuracy_std,
            "xnorm": mx_result.xnorm,
        },
        "time_ratio_keras_over_mxnet": ours_total / mx_total,
        "min_embedding_cosine": float(cosines.min()),
    }

    rows = [("", "Keras (project eval)", "MXNet Module")]
    for key, label in [
        ("embed_median_seconds", "embed + mirrors, median s"),
        ("score_seconds", "10-fold scoring, s"),
        ("total_seconds", "total, s"),
        ("setup_seconds", "set-up (not timed), s"),
    ]:
        rows.append((label, f"{report['keras'][key]:.2f}", f"{report['mxnet'][key]:.2f}"))
    rows.append(
        (
            "Accuracy-Flip",
            f"{ours_result.accuracy:.5f}+-{ours_result.accuracy_std:.5f}",
            f"{mx_result.accuracy:.5f}+-{mx_result.accuracy_std:.5f}",
        )
    )
    for row in rows:
        print(f"{row[0]:<28}{row[1]:>24}{row[2]:>24}")
    print(
        f"time ratio Keras/MXNet {report['time_ratio_keras_over_mxnet']:.2f}; "
        f"min cosine between the sides' embeddings {report['min_embedding_cosine']:.7f}"
    )
    print(f"machine: {report['machine']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
