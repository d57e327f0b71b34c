"""Evaluate a backbone on insightface verification sets (`lfw.bin`, ...).

A target is read once into a `VerificationSet` (decoded images and labels),
embedded with its mirror, and scored with the k-fold protocol in
`mfn_tf.evaluation.verification`. `format_result_lines` prints the result in
insightface's log format, for example:

    [lfw][112000]XNorm: 11.182153
    [lfw][112000]Accuracy-Flip: 0.99517+-0.00450
    [lfw][112000]TAR@FAR=0.001: 0.97967+-0.01127
"""

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfn_tf.data.verification_bin import InvalidBinError, decode_images, load_bin
from mfn_tf.evaluation.embedding import DEFAULT_BATCH_SIZE, ImageEmbedder
from mfn_tf.evaluation.verification import (
    FAR_TARGET,
    N_FOLDS,
    RocCurve,
    l2_normalize,
    pair_distances,
    roc_curve,
    tar_at_far,
    verification_accuracy,
)

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("lfw", "cfp_fp", "agedb_30")


@dataclass(frozen=True)
class VerificationSet:
    """Decoded images of a `.bin` (pairs in order a0, b0, a1, b1, ...) and
    one bool per pair."""

    name: str
    images: np.ndarray
    issame: np.ndarray
    path: str | None = None

    @property
    def n_pairs(self):
        return len(self.issame)


@dataclass(frozen=True)
class VerificationResult:
    """Verification figures of one backbone on one set."""

    name: str
    n_pairs: int
    flip: bool
    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    best_thresholds: np.ndarray
    xnorm: float
    far_target: float
    tar_at_far: float
    tar_at_far_std: float
    far: float
    roc: RocCurve

    def to_dict(self):
        """Figures as JSON-ready Python types; NaN becomes None (null)."""
        return {
            "n_pairs": self.n_pairs,
            "flip": self.flip,
            "accuracy": _finite_or_none(self.accuracy),
            "accuracy_std": _finite_or_none(self.accuracy_std),
            "fold_accuracies": [_finite_or_none(v) for v in self.fold_accuracies],
            "best_thresholds": [_finite_or_none(v) for v in self.best_thresholds],
            "xnorm": _finite_or_none(self.xnorm),
            "far_target": self.far_target,
            "tar_at_far": _finite_or_none(self.tar_at_far),
            "tar_at_far_std": _finite_or_none(self.tar_at_far_std),
            "far": _finite_or_none(self.far),
            "roc_auc": _finite_or_none(self.roc.auc),
        }


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def load_verification_set(path, name=None, image_size=(112, 112)):
    """Read and decode a verification `.bin`.

    Raises:
        FileNotFoundError: `path` does not exist.
        InvalidBinError: the file is not a `.bin`, or an image in it cannot
            be decoded or has another size than `image_size`.
    """
    images, issame = load_bin(path)
    return decode_verification_set(path, images, issame, name=name, image_size=image_size)


def decode_verification_set(path, images, issame, name=None, image_size=(112, 112)):
    """Decode the encoded images that `load_bin(path)` returned.

    Raises:
        InvalidBinError: an image cannot be decoded or has another size
            than `image_size`; the message names the file and the image.
    """
    path = Path(path)
    try:
        decoded = decode_images(images, image_size)
    except ValueError as error:
        raise InvalidBinError(f"{path}: {error}") from error
    logger.debug("decoded %s: %d pairs", path, len(issame))
    return VerificationSet(
        name=name or path.stem, images=decoded, issame=issame, path=str(path)
    )


def find_target(data_dir, name):
    """Return the path of target `name` in `data_dir`, `data_dir/name.bin`.

    Raises:
        FileNotFoundError: the file is missing; the message lists the `.bin`
            files that `data_dir` contains.
    """
    data_dir = Path(data_dir)
    path = data_dir / f"{name}.bin"
    if path.is_file():
        return path
    present = sorted(p.stem for p in data_dir.glob("*.bin")) if data_dir.is_dir() else []
    if not data_dir.is_dir():
        hint = f"{data_dir} is not a directory"
    elif present:
        hint = f"targets in {data_dir}: {', '.join(present)}"
    else:
        hint = f"{data_dir} contains no .bin files"
    raise FileNotFoundError(
        f"verification set {name!r} not found: {path} does not exist ({hint})"
    )


def score_embeddings(name, embeddings, issame, n_folds=N_FOLDS, far_target=FAR_TARGET):
    """Score the un-normalised `Embeddings` of a set with the k-fold protocol."""
    distances = pair_distances(l2_normalize(embeddings.combined))
    accuracy = verification_accuracy(distances, issame, n_folds=n_folds)
    tar = tar_at_far(distances, issame, far_target=far_target, n_folds=n_folds)
    return VerificationResult(
        name=name,
        n_pairs=len(issame),
        flip=embeddings.flipped is not None,
        accuracy=accuracy.mean,
        accuracy_std=accuracy.std,
        fold_accuracies=accuracy.accuracies,
        best_thresholds=accuracy.thresholds,
        xnorm=embeddings.xnorm,
        far_target=tar.far_target,
        tar_at_far=tar.tar,
        tar_at_far_std=tar.tar_std,
        far=tar.far,
        roc=roc_curve(distances, issame),
    )


def evaluate_set(embedder, verification_set, flip=True, progress=False):
    """Embed a `VerificationSet` with an `ImageEmbedder` and score it."""
    started = time.perf_counter()
    embeddings = embedder(
        verification_set.images,
        flip=flip,
        progress=progress,
        description=verification_set.name,
    )
    seconds = time.perf_counter() - started
    n_forward = len(verification_set.images) * (2 if flip else 1)
    logger.info(
        "%s: %d forward passes in %.1f s (%.1f images/s)",
        verification_set.name,
        n_forward,
        seconds,
        n_forward / max(seconds, 1e-9),
    )
    return score_embeddings(verification_set.name, embeddings, verification_set.issame)


def evaluate_bin(
    backbone, path, batch_size=DEFAULT_BATCH_SIZE, flip=True, name=None, progress=False
):
    """Evaluate `backbone` on one `.bin` file and return its `VerificationResult`."""
    verification_set = load_verification_set(
        path, name=name, image_size=tuple(backbone.input_shape[1:3])
    )
    embedder = ImageEmbedder(backbone, batch_size)
    return evaluate_set(embedder, verification_set, flip=flip, progress=progress)


def format_result_lines(result, step):
    """Format the insightface log lines of one result at a global step.

    insightface prints "Accuracy-Flip" for embeddings summed with their
    mirror and "Accuracy" for the original images alone.
    """
    prefix = f"[{result.name}][{step}]"
    accuracy_name = "Accuracy-Flip" if result.flip else "Accuracy"
    return [
        f"{prefix}XNorm: {result.xnorm:f}",
        f"{prefix}{accuracy_name}: {result.accuracy:1.5f}+-{result.accuracy_std:1.5f}",
        f"{prefix}TAR@FAR={result.far_target:g}: "
        f"{result.tar_at_far:1.5f}+-{result.tar_at_far_std:1.5f}",
    ]
