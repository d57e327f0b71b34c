"""Face verification metrics on pairs, as insightface computes them.

insightface's `verification.py` (MXNet era, kept in `arcface_torch/eval`)
defines the numbers that face recognition papers report for LFW, CFP-FP and
AgeDB-30:

- embeddings are L2-normalised; a pair's distance is the squared Euclidean
  distance between its two normalised embeddings (0 to 4);
- a pair is predicted "same" when `distance < threshold`;
- the pairs are split into 10 contiguous folds, in file order, without
  shuffling. On each fold, the threshold from a fixed grid with the best
  accuracy on the other nine folds is applied to that fold;
- Accuracy is the mean and the (population) standard deviation of the ten
  test-fold accuracies;
- TAR@FAR (insightface's "validation rate") picks, per fold, the threshold
  at which the false accept rate on the nine training folds equals the
  target, and measures the true accept rate on the test fold.

Everything here is plain numpy on arrays of distances and labels.
"""

from dataclasses import dataclass

import numpy as np

N_FOLDS = 10
# Threshold grids on the squared distance, as insightface uses them.
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
TAR_THRESHOLDS = np.arange(0, 4, 0.001)
FAR_TARGET = 1e-3


@dataclass(frozen=True)
class FoldAccuracy:
    """Per-fold test accuracies and the thresholds chosen on the other folds."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self):
        return float(np.mean(self.accuracies))

    @property
    def std(self):
        return float(np.std(self.accuracies))


@dataclass(frozen=True)
class TarAtFar:
    """True accept rate at a target false accept rate, over the folds.

    `tar` and `far` are the means of the per-fold test values. A fold's TAR
    is NaN when its test part has no "same" pairs or its training part no
    "different" pairs, and its FAR is NaN when its test part has no
    "different" pairs. A NaN fold makes the mean NaN.
    """

    far_target: float
    tar: float
    tar_std: float
    far: float
    fold_tars: np.ndarray
    fold_thresholds: np.ndarray


@dataclass(frozen=True)
class RocCurve:
    """ROC over all pairs: FAR and TAR at every distinct pair distance."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray

    @property
    def auc(self):
        # Trapezoidal rule, written out because np.trapezoid needs numpy 2.
        return float(np.sum(np.diff(self.far) * (self.tar[1:] + self.tar[:-1]) / 2))


def kfold_split(n_items, n_folds=N_FOLDS):
    """Split `range(n_items)` into `n_folds` contiguous (train, test) folds.

    The first `n_items % n_folds` folds get one item more, which is how
    scikit-learn's `KFold(shuffle=False)`, and so insightface, splits.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_items < n_folds:
        raise ValueError(
            f"{n_items} pairs cannot be split into {n_folds} folds; "
            "use a verification set with at least as many pairs as folds"
        )
    sizes = np.full(n_folds, n_items // n_folds)
    sizes[: n_items % n_folds] += 1
    indices = np.arange(n_items)
    folds = []
    start = 0
    for size in sizes:
        test = indices[start : start + size]
        train = np.concatenate([indices[:start], indices[start + size :]])
        folds.append((train, test))
        start += size
    return folds


def l2_normalize(embeddings, epsilon=1e-12):
    """Scale each row to unit L2 norm (rows of zeros stay zero)."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, epsilon)


def pair_distances(embeddings):
    """Compute the squared Euclidean distance of each pair `(embeddings[2i], embeddings[2i+1])`.

    `embeddings` are expected to be L2-normalised already, which bounds the
    distances to [0, 4].
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) % 2:
        raise ValueError(
            "expected embeddings of shape (2 * n_pairs, dim), got "
            f"{embeddings.shape}"
        )
    difference = embeddings[0::2] - embeddings[1::2]
    return np.sum(np.square(difference), axis=1)


def _check_pairs(distances, issame):
    distances = np.asarray(distances, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if distances.ndim != 1 or distances.shape != issame.shape:
        raise ValueError(
            f"distances {distances.shape} and issame {issame.shape} must be "
            "1-D arrays with one entry per pair"
        )
    return distances, issame


def _accept_counts(distances, thresholds):
    """Number of `distances` below each threshold (strictly, as `np.less`)."""
    return np.searchsorted(np.sort(distances), thresholds, side="left")


def accuracy_at_thresholds(distances, issame, thresholds):
    """Compute the accuracy of the prediction `distance < t` for each threshold `t`."""
    distances, issame = _check_pairs(distances, issame)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    true_accepts = _accept_counts(distances[issame], thresholds)
    false_accepts = _accept_counts(distances[~issame], thresholds)
    true_rejects = np.count_nonzero(~issame) - false_accepts
    return (true_accepts + true_rejects) / len(distances)


def verification_accuracy(
    distances, issame, n_folds=N_FOLDS, thresholds=ACCURACY_THRESHOLDS
):
    """Compute the k-fold verification accuracy (insightface's Accuracy and
    Accuracy-Flip).

    On each fold, the threshold with the best accuracy on the other folds is
    applied to the fold. Among thresholds with equal training accuracy the
    smallest wins, as `np.argmax` picks it in insightface.

    Args:
        distances: squared distances of the L2-normalised pair embeddings.
        issame: one bool per pair.

    Returns:
        A `FoldAccuracy` with one test accuracy and one threshold per fold.
    """
    distances, issame = _check_pairs(distances, issame)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    accuracies = np.zeros(n_folds)
    best_thresholds = np.zeros(n_folds)
    for fold, (train, test) in enumerate(kfold_split(len(distances), n_folds)):
        train_accuracy = accuracy_at_thresholds(
            distances[train], issame[train], thresholds
        )
        best_thresholds[fold] = thresholds[np.argmax(train_accuracy)]
        accuracies[fold] = accuracy_at_thresholds(
            distances[test], issame[test], best_thresholds[fold : fold + 1]
        )[0]
    return FoldAccuracy(accuracies=accuracies, thresholds=best_thresholds)


def _rate(count, total):
    return count / total if total else np.nan


def threshold_at_far(distances, issame, far_target, thresholds=TAR_THRESHOLDS):
    """Return the threshold at which the false accept rate of these pairs is `far_target`.

    FAR is computed on the threshold grid and the threshold is interpolated
    linearly between the grid points around the target. The result is 0
    (accept nothing) when no grid threshold reaches the target, and NaN when
    there are no "different" pairs.

    NOTE: insightface passes the whole FAR curve to `scipy.interpolate.interp1d`,
    which scipy 1.17 rejects ("Expect x to not have duplicates") because FAR
    is flat between distances. Here each flat run keeps its first, that
    is its smallest, threshold, so results can differ from old scipy ones in
    the last digits.
    """
    distances, issame = _check_pairs(distances, issame)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_different = np.count_nonzero(~issame)
    if n_different == 0:
        return np.nan
    far = _accept_counts(distances[~issame], thresholds) / n_different
    if far[-1] < far_target:
        return 0.0
    # FAR is non-decreasing along the grid, so np.unique keeps its order and
    # returns the first grid index of every distinct value.
    far_values, first_index = np.unique(far, return_index=True)
    return float(np.interp(far_target, far_values, thresholds[first_index]))


def tar_at_far(
    distances, issame, far_target=FAR_TARGET, n_folds=N_FOLDS, thresholds=TAR_THRESHOLDS
):
    """Compute the k-fold true accept rate at a false accept rate (insightface's
    `calculate_val`).

    Returns:
        A `TarAtFar` with the mean and standard deviation of the test-fold
        TARs, the mean test-fold FAR and the per-fold thresholds.
    """
    distances, issame = _check_pairs(distances, issame)
    fold_tars = np.zeros(n_folds)
    fold_fars = np.zeros(n_folds)
    fold_thresholds = np.zeros(n_folds)
    for fold, (train, test) in enumerate(kfold_split(len(distances), n_folds)):
        threshold = threshold_at_far(
            distances[train], issame[train], far_target, thresholds
        )
        fold_thresholds[fold] = threshold
        if np.isnan(threshold):
            fold_tars[fold] = fold_fars[fold] = np.nan
            continue
        accepted = distances[test] < threshold
        same = issame[test]
        fold_tars[fold] = _rate(np.count_nonzero(accepted & same), np.count_nonzero(same))
        fold_fars[fold] = _rate(np.count_nonzero(accepted & ~same), np.count_nonzero(~same))
    return TarAtFar(
        far_target=float(far_target),
        tar=float(np.mean(fold_tars)),
        tar_std=float(np.std(fold_tars)),
        far=float(np.mean(fold_fars)),
        fold_tars=fold_tars,
        fold_thresholds=fold_thresholds,
    )


def roc_curve(distances, issame):
    """Compute the ROC over all pairs, with one point per distinct distance.

    Unlike insightface, which averages per-fold TPR and FPR on its 0.01
    threshold grid, this curve uses every pair at once and is exact, so it
    resolves low FARs. The point at threshold `t` predicts "same" for
    `distance <= t`; the curve starts at (0, 0) and ends at (1, 1). Rates
    are NaN where a class has no pairs.
    """
    distances, issame = _check_pairs(distances, issame)
    order = np.argsort(distances, kind="stable")
    sorted_distances = distances[order]
    sorted_same = issame[order]
    # Last index of each run of equal distances.
    last = np.flatnonzero(np.diff(sorted_distances, append=np.inf) > 0)
    true_accepts = np.cumsum(sorted_same)[last]
    false_accepts = np.cumsum(~sorted_same)[last]
    n_same = np.count_nonzero(issame)
    n_different = len(issame) - n_same
    return RocCurve(
        far=_cumulative_rate(false_accepts, n_different),
        tar=_cumulative_rate(true_accepts, n_same),
        thresholds=np.concatenate([[-np.inf], sorted_distances[last]]),
    )


def _cumulative_rate(counts, total):
    """Rates of `counts` out of `total`, preceded by the rate 0 of accepting
    nothing; NaN throughout when `total` is 0."""
    counts = np.concatenate([[0], counts])
    if total == 0:
        return np.full(len(counts), np.nan)
    return counts / total
