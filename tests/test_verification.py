"""k-fold verification math against hand-computed cases and against a
direct loop in the style of insightface's `calculate_roc`/`calculate_val`."""

import numpy as np
import pytest

from mfn_tf.evaluation.verification import (
    ACCURACY_THRESHOLDS,
    TAR_THRESHOLDS,
    accuracy_at_thresholds,
    kfold_split,
    l2_normalize,
    pair_distances,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    verification_accuracy,
)


def reference_accuracy(distances, issame, n_folds, thresholds):
    """insightface's loop: one np.less per threshold and fold."""
    folds = np.array_split(np.arange(len(distances)), n_folds)
    accuracies, best = [], []
    for fold, test in enumerate(folds):
        train = np.concatenate([f for i, f in enumerate(folds) if i != fold])
        train_accuracy = [
            np.mean(np.less(distances[train], t) == issame[train]) for t in thresholds
        ]
        threshold = thresholds[int(np.argmax(train_accuracy))]
        best.append(threshold)
        accuracies.append(np.mean(np.less(distances[test], threshold) == issame[test]))
    return np.array(accuracies), np.array(best)


def reference_tar(distances, issame, far_target, n_folds, thresholds):
    """insightface's `calculate_val`, interpolating on the first threshold of
    every distinct FAR because scipy no longer accepts the repeated values."""
    folds = np.array_split(np.arange(len(distances)), n_folds)
    tars = []
    for fold, test in enumerate(folds):
        train = np.concatenate([f for i, f in enumerate(folds) if i != fold])
        different = ~issame[train]
        far = np.array(
            [np.sum(np.less(distances[train], t) & different) / np.sum(different) for t in thresholds]
        )
        if far.max() >= far_target:
            values, first = np.unique(far, return_index=True)
            threshold = np.interp(far_target, values, thresholds[first])
        else:
            threshold = 0.0
        accepted = np.less(distances[test], threshold)
        tars.append(np.sum(accepted & issame[test]) / np.sum(issame[test]))
    return np.mean(tars), np.std(tars)


def random_pairs(n_pairs, seed):
    rng = np.random.default_rng(seed)
    issame = rng.random(n_pairs) < 0.5
    # Same pairs are closer on average, with overlap, like a real model.
    distances = np.where(issame, rng.normal(0.9, 0.3, n_pairs), rng.normal(1.6, 0.3, n_pairs))
    return np.clip(distances, 0.0, 4.0), issame


def test_kfold_split_sizes_like_sklearn():
    folds = kfold_split(23, 10)
    sizes = [len(test) for _, test in folds]
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.array_equal(np.concatenate([test for _, test in folds]), np.arange(23))
    for train, test in folds:
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(23))


def test_kfold_split_rejects_too_few_pairs():
    with pytest.raises(ValueError, match="9 pairs cannot be split into 10 folds"):
        kfold_split(9, 10)


def test_accuracy_threshold_is_strict():
    # insightface predicts "same" for distance < threshold, never <=.
    assert accuracy_at_thresholds([0.5], [True], [0.5])[0] == 0.0
    assert accuracy_at_thresholds([0.5], [True], [0.5 + 1e-9])[0] == 1.0
    assert accuracy_at_thresholds([0.5], [False], [0.5])[0] == 1.0
    assert accuracy_at_thresholds([0.5], [False], [0.5 + 1e-9])[0] == 0.0


def test_separable_pairs_give_accuracy_one():
    issame = np.tile([True, False], 50)
    distances = np.where(issame, 0.4, 1.3)
    result = verification_accuracy(distances, issame)
    assert result.mean == 1.0
    assert result.std == 0.0
    # The smallest grid threshold above every same distance wins.
    assert np.allclose(result.thresholds, 0.41)


def test_hand_computed_two_folds():
    # Fold A: pairs 0-3, fold B: pairs 4-7.
    distances = np.array([0.2, 0.5, 1.0, 1.5, 0.3, 1.2, 0.9, 2.0])
    issame = np.array([True, True, False, False, True, True, False, False])
    thresholds = np.array([0.25, 0.55, 0.95, 1.25, 1.6])
    result = verification_accuracy(distances, issame, n_folds=2, thresholds=thresholds)
    # Trained on B, accuracies per threshold are 2/4, 3/4, 2/4, 3/4, 3/4: the
    # tie goes to the smallest, 0.55, which gets all of A right. Trained on A,
    # 0.55 is best (4/4) and gets 3 of B right (1.2 is rejected).
    assert result.thresholds.tolist() == [0.55, 0.55]
    assert result.accuracies.tolist() == [1.0, 0.75]
    assert result.mean == pytest.approx(0.875)
    assert result.std == pytest.approx(0.125)


def test_accuracy_matches_insightface_loop():
    distances, issame = random_pairs(617, seed=1)
    result = verification_accuracy(distances, issame)
    accuracies, best = reference_accuracy(distances, issame, 10, ACCURACY_THRESHOLDS)
    assert np.array_equal(result.thresholds, best)
    assert np.allclose(result.accuracies, accuracies, rtol=0, atol=1e-12)


def test_tar_at_far_matches_insightface_loop():
    distances, issame = random_pairs(4000, seed=2)
    result = tar_at_far(distances, issame, far_target=1e-2)
    tar, tar_std = reference_tar(distances, issame, 1e-2, 10, TAR_THRESHOLDS)
    assert result.tar == pytest.approx(tar, abs=1e-12)
    assert result.tar_std == pytest.approx(tar_std, abs=1e-12)


def test_threshold_at_far_interpolates():
    # Four different pairs: FAR steps by 0.25 just above each distance.
    distances = np.array([0.1, 0.5, 1.0, 1.5, 2.0])
    issame = np.array([True, False, False, False, False])
    thresholds = np.array([0.0, 0.6, 1.2, 1.8, 2.4])
    # FAR on the grid: 0, 0.25, 0.5, 0.75, 1; FAR 0.375 is halfway between
    # the thresholds 0.6 and 1.2.
    assert threshold_at_far(distances, issame, 0.375, thresholds) == pytest.approx(0.9)
    assert threshold_at_far(distances, issame, 0.25, thresholds) == pytest.approx(0.6)


def test_threshold_at_far_unreachable_is_zero():
    distances = np.array([3.0, 3.5])
    issame = np.array([False, False])
    assert threshold_at_far(distances, issame, 0.1, np.array([0.0, 1.0, 2.0])) == 0.0


def test_tar_undefined_without_different_pairs():
    distances = np.linspace(0.1, 1.0, 10)
    result = tar_at_far(distances, np.ones(10, dtype=bool))
    assert np.isnan(result.tar)
    assert np.isnan(result.far)


def test_roc_curve_hand_computed():
    distances = np.array([0.1, 0.2, 0.2, 0.4])
    issame = np.array([True, False, True, False])
    curve = roc_curve(distances, issame)
    assert curve.thresholds.tolist() == [-np.inf, 0.1, 0.2, 0.4]
    assert curve.tar.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert curve.far.tolist() == [0.0, 0.0, 0.5, 1.0]
    # AUC = P(same distance < different distance) + P(tie) / 2 = 3.5 / 4.
    assert curve.auc == pytest.approx(0.875)


def test_pair_distances_of_normalized_embeddings():
    embeddings = l2_normalize([[3.0, 4.0], [6.0, 8.0], [1.0, 0.0], [-2.0, 0.0]])
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0)
    assert np.allclose(pair_distances(embeddings), [0.0, 4.0])


def test_pair_distances_rejects_odd_count():
    with pytest.raises(ValueError, match=r"\(2 \* n_pairs, dim\)"):
        pair_distances(np.zeros((3, 4)))
