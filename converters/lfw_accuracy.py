"""LFW verification accuracy of every converted artifact next to Keras.

    python -m converters.lfw_accuracy --converted DIR \\
        --pairs lfw/pairs.txt --images lfw/images [--shift-x 8]

Each artifact that passed in DIR's `report.json` (with `--include-failed`,
also those below their parity bar) embeds every LFW image and its mirror
with its own runtime. The pairs are scored with the project's verification
code: insightface's Accuracy-Flip, 10 folds, threshold chosen on the other
nine. The source model runs in Keras on the same images for the reference
row. The table goes to stdout and, with `--markdown FILE`, into a file.
"""

import logging
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from converters.report import read_report
from converters.runtimes import KerasRunner, open_runner

logger = logging.getLogger(__name__)


def load_lfw(pairs_path, images_root, shift_x=0):
    """Load the images of LFW's pairs once each.

    Returns:
        `(images, pair_indices, issame)`: float32 `(N, 112, 112, 3)` RGB
        images in 0-255, an int array `(P, 2)` of indices into `images`,
        and a bool array `(P,)`.
    """
    from mfn_tf.data.images import decode_rgb, shift_x as shift_image
    from mfn_tf.data.lfw import read_pairs

    pairs = read_pairs(pairs_path)
    index = {}
    pair_indices = []
    for pair in pairs:
        row = []
        for path in pair.paths(images_root):
            row.append(index.setdefault(path, len(index)))
        pair_indices.append(row)
    images = np.empty((len(index), 112, 112, 3), dtype=np.float32)
    for path, position in tqdm(index.items(), desc="loading LFW", unit="image"):
        if not Path(path).is_file():
            raise FileNotFoundError(f"LFW image {path} named in {pairs_path} not found")
        image = decode_rgb(Path(path).read_bytes(), str(path), (112, 112))
        images[position] = shift_image(image, shift_x)
    issame = np.array([pair.issame for pair in pairs])
    return images, np.array(pair_indices), issame


def embed_with_flip(runner, images, description, chunk=256):
    """Embed images and their mirrors; return an `Embeddings`."""
    from mfn_tf.evaluation.embedding import Embeddings

    parts = {"original": [], "flipped": []}
    with tqdm(total=2 * len(images), desc=description, unit="image") as bar:
        for start in range(0, len(images), chunk):
            batch = images[start : start + chunk]
            parts["original"].append(runner.embed(batch))
            parts["flipped"].append(runner.embed(batch[:, :, ::-1]))
            bar.update(2 * len(batch))
    return Embeddings(
        original=np.concatenate(parts["original"]),
        flipped=np.concatenate(parts["flipped"]),
    )


def score(name, embeddings, pair_indices, issame):
    """Score per-image embeddings on the pairs with the k-fold protocol."""
    from mfn_tf.evaluation.embedding import Embeddings
    from mfn_tf.evaluation.evaluate import score_embeddings

    order = pair_indices.reshape(-1)
    paired = Embeddings(original=embeddings.original[order], flipped=embeddings.flipped[order])
    return score_embeddings(name, paired, issame)


def evaluate_converted(folder, pairs_path, images_root, shift_x=0, num_threads=1, model=None,
                       include_failed=False):
    """Return one result row per model: the Keras source, then each artifact.

    Args:
        folder: a `python cli.py convert` output folder.
        model: the Keras source model; loaded from the report's
            `source_model` when None.
        include_failed: also evaluate artifacts below their parity bar
            (their `.failed` files), marked as failed in the table.
    """
    from mfn_tf.model.loading import load_backbone

    folder = Path(folder)
    report, model_io = read_report(folder)
    images, pair_indices, issame = load_lfw(pairs_path, images_root, shift_x)
    if model is None:
        model = load_backbone(report["source_model"])
    rows = []
    keras_result = score(
        "Keras (source)", embed_with_flip(KerasRunner(model), images, "keras"), pair_indices, issame
    )
    rows.append({"name": "Keras (source model)", "runtime": "keras", "precision": "fp32",
                 "status": "reference", "result": keras_result})
    for artifact in report["artifacts"]:
        if artifact["format"] == "keras":
            continue
        if artifact["status"] != "passed" and not (include_failed and artifact.get("parity")):
            continue
        runner = open_runner(
            artifact["runtime"],
            [folder / name for name in artifact["files"]],
            precision=artifact["precision"],
            num_threads=num_threads,
            model_io=model_io,
        )
        embeddings = embed_with_flip(runner, images, artifact["name"])
        rows.append({
            "name": artifact["name"],
            "runtime": artifact["runtime"],
            "precision": artifact["precision"],
            "status": artifact["status"],
            "result": score(artifact["name"], embeddings, pair_indices, issame),
        })
    return rows


def format_table(rows):
    """Render result rows as a markdown table with the change from Keras."""
    reference = rows[0]["result"].accuracy
    lines = [
        "| model | runtime | precision | parity | Accuracy-Flip (%) | change vs Keras "
        "(points) | TAR@FAR=1e-3 (%) | XNorm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        result = row["result"]
        change = 100 * (result.accuracy - reference)
        lines.append(
            f"| `{row['name']}` | {row['runtime']} | {row['precision']} | {row['status']} "
            f"| {100 * result.accuracy:.2f} +- {100 * result.accuracy_std:.2f} "
            f"| {change:+.2f} | {100 * result.tar_at_far:.2f} | {result.xnorm:.2f} |"
        )
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--converted", "folder", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Output folder of `python cli.py convert`.")
@click.option("--pairs", "pairs_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LFW pairs.txt (10 folds of 300 same and 300 different pairs).")
@click.option("--images", "images_root", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of aligned 112x112 LFW images, Name/Name_0001.jpg.")
@click.option("--shift-x", type=int, default=0, show_default=True,
              help="Shift image content right by this many pixels (edge-padded), "
              "e.g. 8 to move SphereFace-style 96x112-template crops onto "
              "insightface's alignment.")
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=1,
              show_default=True, help="Threads of each runtime.")
@click.option("--include-failed", is_flag=True,
              help="Also evaluate artifacts that missed their parity bar.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table to this file.")
def main(folder, pairs_path, images_root, shift_x, num_threads, include_failed, markdown_path):
    """Measure LFW accuracy of each converted artifact and of its source."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = evaluate_converted(
        folder, pairs_path, images_root, shift_x, num_threads, include_failed=include_failed
    )
    table = format_table(rows)
    click.echo(table)
    if markdown_path:
        markdown_path.write_text(table)


if __name__ == "__main__":
    main()
