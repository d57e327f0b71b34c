"""Margin functions against hand-computed values, edge cases and gradients."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mfn_tf.heads import margins

M = 0.5
# insightface's constants for m = 0.5, computed by hand:
# threshold = cos(pi - 0.5) = -cos(0.5), mm = sin(pi - 0.5) * 0.5 = 0.5 * sin(0.5).
COS_M = 0.8775825618903728
SIN_M = 0.479425538604203
THRESHOLD = -0.8775825618903728
MM = 0.2397127693021015


def as_numpy(x):
    return np.asarray(x)


def test_arcface_constants_for_half_radian():
    constants = margins.arcface_constants(M)
    assert constants.cos_m == pytest.approx(COS_M)
    assert constants.sin_m == pytest.approx(SIN_M)
    assert constants.threshold == pytest.approx(THRESHOLD)
    assert constants.mm == pytest.approx(MM)


@pytest.mark.parametrize("m", [-0.1, math.pi / 2, 2.0])
def test_arcface_constants_reject_margin(m):
    with pytest.raises(ValueError, match=r"\[0, pi / 2\)"):
        margins.arcface_constants(m)


@pytest.mark.parametrize(
    "theta, expected",
    [
        (0.0, COS_M),  # cos(0 + 0.5)
        (math.pi / 2, -SIN_M),  # cos(pi/2 + 0.5) = -sin(0.5)
        (1.0, math.cos(1.5)),
        # Just inside theta + m < pi: still cos(theta + m), close to -1.
        (math.pi - M - 1e-3, math.cos(math.pi - 1e-3)),
        # Just past theta + m = pi: insightface's fallback cos(theta) - mm.
        (math.pi - M + 1e-3, math.cos(math.pi - M + 1e-3) - MM),
        (math.pi, -1.0 - MM),
    ],
)
def test_arcface_target_hand_values(theta, expected):
    cos_theta = np.array([math.cos(theta)], np.float64)
    assert as_numpy(margins.arcface_target(cos_theta, M))[0] == pytest.approx(
        expected, abs=1e-12
    )


def test_arcface_target_jumps_at_threshold():
    # At cos(theta) == threshold exactly the fallback applies (strict >).
    below_and_at = np.array([THRESHOLD + 1e-9, THRESHOLD], np.float64)
    out = as_numpy(margins.arcface_target(below_and_at, M))
    assert out[0] == pytest.approx(-1.0, abs=1e-4)
    assert out[1] == pytest.approx(THRESHOLD - MM, abs=1e-12)


@pytest.mark.parametrize(
    "cos_theta, expected",
    [
        (0.5, math.cos(math.acos(0.5) + M)),
        (1e-6, math.cos(math.acos(1e-6) + M)),
        (0.0, 0.0),  # not > 0: unchanged
        (-0.5, -0.5),
        (-1.0, -1.0),
    ],
)
def test_arcface_easy_margin_hand_values(cos_theta, expected):
    out = margins.arcface_target(np.array([cos_theta]), M, easy_margin=True)
    assert as_numpy(out)[0] == pytest.approx(expected, abs=1e-12)


def test_arcface_target_clips_cosine():
    out = as_numpy(margins.arcface_target(np.array([1.0 + 1e-6, -1.0 - 1e-6]), M))
    assert out[0] == pytest.approx(COS_M, abs=1e-12)
    assert out[1] == pytest.approx(-1.0 - MM, abs=1e-12)


def test_arcface_zero_margin_is_identity():
    cos_theta = np.linspace(-1.0, 1.0, 9)
    np.testing.assert_allclose(
        as_numpy(margins.arcface_target(cos_theta, 0.0)), cos_theta, atol=1e-12
    )


def test_cosface_target_subtracts_margin():
    out = as_numpy(margins.cosface_target(np.array([1.0, 0.0, -1.0, 1.5]), 0.35))
    np.testing.assert_allclose(out, [0.65, -0.35, -1.35, 0.65], atol=1e-12)


@pytest.mark.parametrize(
    "theta, expected",
    [
        (0.0, math.cos(0.3) - 0.2),
        (math.pi / 2, -math.sin(0.3) - 0.2),  # cos(pi/2 + 0.3) - 0.2
        (math.pi, -math.cos(0.3) - 0.2),  # cos(pi + 0.3): no fallback
    ],
)
def test_combined_margin_hand_values(theta, expected):
    out = margins.combined_margin_target(np.array([math.cos(theta)]), 1.0, 0.3, 0.2)
    assert as_numpy(out)[0] == pytest.approx(expected, abs=1e-12)


def test_combined_margin_multiplies_angle():
    cos_theta = np.array([math.cos(0.3)])
    out = margins.combined_margin_target(cos_theta, m1=2.0, m2=0.1, m3=0.0)
    assert as_numpy(out)[0] == pytest.approx(math.cos(0.7), abs=1e-12)


def test_combined_margin_reduces_to_cosface_and_arcface():
    cos_theta = np.linspace(-0.8, 1.0, 10)  # above ArcFace's threshold
    np.testing.assert_allclose(
        as_numpy(margins.combined_margin_target(cos_theta, 1.0, 0.0, 0.35)),
        as_numpy(margins.cosface_target(cos_theta, 0.35)),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        as_numpy(margins.combined_margin_target(cos_theta, 1.0, 0.5, 0.0)),
        as_numpy(margins.arcface_target(cos_theta, 0.5)),
        atol=1e-12,
    )


TARGETS = {
    "arcface": lambda c: margins.arcface_target(c, M),
    "arcface_easy": lambda c: margins.arcface_target(c, M, easy_margin=True),
    "cosface": lambda c: margins.cosface_target(c, 0.35),
    "combined": lambda c: margins.combined_margin_target(c, 1.0, 0.3, 0.2),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_target_gradient_finite_at_edges(name, dtype):
    # theta = 0 and theta = pi exactly, just inside them, and past them.
    eps = 1e-7 if dtype == tf.float32 else 1e-12
    cos_theta = tf.constant(
        [1.0, -1.0, 1.0 - eps, -1.0 + eps, 1.0 + eps, -1.0 - eps], dtype
    )
    with tf.GradientTape() as tape:
        tape.watch(cos_theta)
        out = TARGETS[name](cos_theta)
    gradient = tape.gradient(out, cos_theta)
    assert out.dtype == dtype
    assert np.all(np.isfinite(out.numpy()))
    assert np.all(np.isfinite(gradient.numpy())), gradient.numpy()


def test_arcface_gradient_matches_derivative():
    # d/dc cos(acos(c) + m) = cos(m) + c * sin(m) / sqrt(1 - c^2).
    cos_theta = tf.constant([0.3, -0.6], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(cos_theta)
        out = margins.arcface_target(cos_theta, M)
    expected = COS_M + cos_theta.numpy() * SIN_M / np.sqrt(1 - cos_theta.numpy() ** 2)
    np.testing.assert_allclose(
        tape.gradient(out, cos_theta).numpy(), expected, rtol=1e-10
    )


def test_arcface_fallback_gradient_is_one():
    cos_theta = tf.constant([-0.95, -1.0], tf.float64)  # past the threshold
    with tf.GradientTape() as tape:
        tape.watch(cos_theta)
        out = margins.arcface_target(cos_theta, M)
    np.testing.assert_allclose(tape.gradient(out, cos_theta).numpy(), [1.0, 1.0])


def test_combined_gradient_matches_derivative():
    # d/dc cos(m1 * acos(c) + m2) = m1 * sin(m1 * theta + m2) / sqrt(1 - c^2).
    cos_theta = tf.constant([0.3, -0.6], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(cos_theta)
        out = margins.combined_margin_target(cos_theta, 1.5, 0.3, 0.2)
    theta = np.arccos(cos_theta.numpy())
    expected = 1.5 * np.sin(1.5 * theta + 0.3) / np.sin(theta)
    np.testing.assert_allclose(
        tape.gradient(out, cos_theta).numpy(), expected, rtol=1e-10
    )


def test_arcface_logits_change_only_target_column():
    cos_theta = np.array([[0.9, 0.1, -0.2], [0.3, -1.0, 0.5]], np.float64)
    onehot = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    s = 64.0
    expected = s * cos_theta.copy()
    expected[0, 0] = s * math.cos(math.acos(0.9) + M)
    expected[1, 1] = s * (-1.0 - MM)
    out = as_numpy(margins.arcface_logits(cos_theta, onehot, s=s, m=M))
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_cosface_and_combined_logits():
    cos_theta = np.array([[0.6, 0.2], [0.1, 0.4]], np.float64)
    onehot = np.array([[1, 0], [0, 1]], np.float64)
    np.testing.assert_allclose(
        as_numpy(margins.cosface_logits(cos_theta, onehot, s=30.0, m=0.35)),
        30.0 * np.array([[0.25, 0.2], [0.1, 0.05]]),
        atol=1e-10,
    )
    combined = as_numpy(
        margins.combined_margin_logits(cos_theta, onehot, 64.0, 1.0, 0.3, 0.2)
    )
    assert combined[0, 0] == pytest.approx(
        64.0 * (math.cos(math.acos(0.6) + 0.3) - 0.2)
    )
    assert combined[0, 1] == pytest.approx(64.0 * 0.2)


def test_logits_numpy_and_tensor_agree():
    rng = np.random.default_rng(0)
    cos_theta = rng.uniform(-1, 1, (4, 5)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[[0, 2, 4, 1]]
    from_numpy = as_numpy(margins.arcface_logits(cos_theta, onehot))
    from_tensor = margins.arcface_logits(
        tf.constant(cos_theta), tf.constant(onehot)
    ).numpy()
    np.testing.assert_array_equal(from_numpy, from_tensor)
