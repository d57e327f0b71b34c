"""How far an emulated run's embeddings are from the Keras model's.

Per face, the figures are the cosine similarity and the largest absolute
difference to the Keras embedding. Per verification pair, the figure is
whether the same/different decision at the model's threshold stays the
Keras model's decision. Distances and thresholds follow insightface's protocol
(`mfn_tf.evaluation.verification`): squared Euclidean distance between
L2-normalised embeddings, "same" when `distance < threshold`.
"""

import numpy as np

from converters.parity import cosine_similarities
from mfn_tf.evaluation.verification import l2_normalize, verification_accuracy


def embedding_agreement(reference, candidate):
    """Return count, min/median cosine and max absolute difference to `reference`.

    NaN or infinite embeddings count as a cosine of -1.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    cosines = cosine_similarities(reference, candidate)
    cosines = np.where(np.isfinite(cosines), cosines, -1.0)
    difference = np.abs(reference - candidate)
    return {
        "count": int(len(cosines)),
        "min_cosine": float(np.min(cosines)),
        "median_cosine": float(np.median(cosines)),
        "max_abs_diff": float(np.max(np.where(np.isfinite(difference), difference, np.inf))),
    }


def pair_distances(embeddings, pair_indices):
    """Return the squared distance of each `(i, j)` row of `pair_indices`.

    `embeddings` are normalised here, so any raw model output works.
    """
    normalized = l2_normalize(embeddings)
    pair_indices = np.asarray(pair_indices, dtype=int).reshape(-1, 2)
    difference = normalized[pair_indices[:, 0]] - normalized[pair_indices[:, 1]]
    return np.sum(np.square(difference), axis=1)


def model_threshold(distances, issame):
    """Return `(threshold, accuracy)` of the 10-fold protocol on these pairs.

    The threshold is the median of the ten per-fold thresholds that
    insightface's protocol picks; the accuracy is its mean test-fold
    accuracy.
    """
    folds = verification_accuracy(distances, issame)
    return float(np.median(folds.thresholds)), folds.mean


def decision_changes(reference_distances, candidate_distances, issame, threshold):
    """Count the pairs whose same/different decision differs from the reference's.

    Returns a dictionary: `pairs`, `changed` (with `changed_same` and
    `changed_different`, by the pair's true label), both accuracies at the
    threshold, and `max_distance_change`.
    """
    reference_distances = np.asarray(reference_distances, dtype=np.float64)
    candidate_distances = np.asarray(candidate_distances, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    reference_same = reference_distances < threshold
    # NaN distances compare False, so a broken embedding reads as "different".
    candidate_same = candidate_distances < threshold
    changed = reference_same != candidate_same
    change = np.abs(candidate_distances - reference_distances)
    return {
        "pairs": int(len(issame)),
        "changed": int(np.count_nonzero(changed)),
        "changed_same": int(np.count_nonzero(changed & issame)),
        "changed_different": int(np.count_nonzero(changed & ~issame)),
        "keras_accuracy": float(np.mean(reference_same == issame)),
        "accuracy": float(np.mean(candidate_same == issame)),
        "max_distance_change": float(np.max(np.where(np.isfinite(change), change, np.inf))),
    }
