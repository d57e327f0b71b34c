"""Compare a converted model's embeddings with the Keras model's.

Face recognition compares embeddings by cosine similarity, so that is the
figure each artifact must reach against the Keras model on real faces.
The bars leave room for each storage precision's rounding and no more:
a wrong layout, a dropped bias or a mis-folded BatchNorm costs far more.
"""

from dataclasses import asdict, dataclass

import numpy as np

# Minimum cosine similarity to the Keras embedding, per precision.
PARITY_BARS = {
    "fp32": 0.99999,
    "fp16": 0.9999,
    "int8": 0.99,
}


class ParityError(RuntimeError):
    """An artifact whose embeddings do not match the Keras model's."""


@dataclass(frozen=True)
class Parity:
    """Agreement of one artifact with the Keras model on `count` faces."""

    count: int
    min_cosine: float
    median_cosine: float
    max_abs_diff: float
    bar: float

    @property
    def passed(self):
        return self.min_cosine >= self.bar

    def to_dict(self):
        return {**asdict(self), "passed": self.passed}


def cosine_similarities(reference, candidate):
    """Return the row-wise cosine similarity of two `(N, D)` arrays."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(
            f"embedding shapes differ: {reference.shape} (reference) vs "
            f"{candidate.shape} (candidate)"
        )
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-30)


def measure_parity(reference, candidate, precision):
    """Measure how closely `candidate` embeddings follow `reference`.

    NaN or infinite embeddings count as a cosine of -1, so they fail.
    """
    if precision not in PARITY_BARS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {sorted(PARITY_BARS)}"
        )
    cosines = cosine_similarities(reference, candidate)
    cosines = np.where(np.isfinite(cosines), cosines, -1.0)
    return Parity(
        count=len(cosines),
        min_cosine=float(np.min(cosines)),
        median_cosine=float(np.median(cosines)),
        max_abs_diff=float(np.max(np.abs(np.asarray(reference) - np.asarray(candidate)))),
        bar=PARITY_BARS[precision],
    )


def describe_failure(artifact, parity):
    """Return the message for an artifact below its parity bar."""
    return (
        f"{artifact}: minimum cosine similarity to the Keras model is "
        f"{parity.min_cosine:.6f} on {parity.count} faces, below the bar of "
        f"{parity.bar} (median {parity.median_cosine:.6f}, max abs diff "
        f"{parity.max_abs_diff:.3g})"
    )
