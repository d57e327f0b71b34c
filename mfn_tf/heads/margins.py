"""Margin functions of the ArcFace family, on cosine logits.

Each `*_target` function maps the cosine between an embedding and its own
class centre, cos(theta), to the penalised cosine that replaces it. Each
`*_logits` function applies that to the target column of a
`(batch, num_classes)` cosine matrix and scales the result by `s`. Only the
target column is penalised, so the acos and sqrt run on `batch` values,
not on `batch * num_classes`, as in insightface.

The functions take `keras.ops` tensors or numpy arrays and return backend
tensors in the input's float dtype. They clip the cosine to [-1, 1] and
keep gradients finite at theta = 0 and theta = pi, where the exact
derivatives of sqrt(1 - cos^2) and acos are infinite.

insightface's numbering of these losses (`--loss-type` of its MXNet
`train.py`): 0 softmax, 2 CosFace, 4 ArcFace, 5 combined margin.
"""

import collections
import math

from keras import ops

DEFAULT_SCALE = 64.0  # s for ArcFace, CosFace and the combined margin
ARCFACE_MARGIN = 0.5  # m of ArcFace (insightface's margin_m)
COSFACE_MARGIN = 0.35  # m of CosFace, insightface README: --loss-type 2 --margin-m 0.35
# (m1, m2, m3) of the combined margin, the values commonly passed to
# insightface as --margin-a 1.0 --margin-m 0.3 --margin-b 0.2.
COMBINED_MARGINS = (1.0, 0.3, 0.2)

# Below this, 1 - cos^2 counts as 0: sqrt returns 0 with a zero gradient
# instead of an infinite one. float32 resolves 1 - cos^2 down to about 1e-7.
_SINE_SQUARED_FLOOR = 1e-12

ArcFaceConstants = collections.namedtuple(
    "ArcFaceConstants", ["cos_m", "sin_m", "threshold", "mm"]
)


def arcface_constants(m):
    """Compute insightface's constants for the ArcFace margin `m`.

    From the loss type 4 branch of insightface's MXNet `train.py`:
    `threshold = cos(pi - m)` is cos(theta) at theta = pi - m, where
    theta + m reaches pi and cos(theta + m) stops decreasing in theta.
    There insightface replaces cos(theta + m) with cos(theta) - mm,
    `mm = sin(pi - m) * m`, which keeps the target logit decreasing.

    Raises:
        ValueError: `m` is outside [0, pi / 2), insightface's range.
    """
    if not 0.0 <= m < math.pi / 2:
        raise ValueError(
            f"The ArcFace margin `m` must be in [0, pi / 2) radians. Received: m={m!r}"
        )
    return ArcFaceConstants(
        cos_m=math.cos(m),
        sin_m=math.sin(m),
        threshold=math.cos(math.pi - m),
        mm=math.sin(math.pi - m) * m,
    )


def _clip_cosine(cos_theta):
    return ops.clip(cos_theta, -1.0, 1.0)


def _sine_from_cosine(cos_theta):
    """Return sqrt(1 - cos^2), exact at cos = +-1 and with a finite gradient."""
    sine_squared = 1.0 - ops.square(cos_theta)
    positive = sine_squared > _SINE_SQUARED_FLOOR
    # The inner `where` keeps sqrt away from 0, because `where` passes a
    # zero gradient to the unused branch but 0 * inf is still NaN.
    safe = ops.where(positive, sine_squared, ops.ones_like(sine_squared))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(sine_squared))


def arcface_target(cos_theta, m=ARCFACE_MARGIN, easy_margin=False):
    """Penalise target cosines with ArcFace's additive angular margin.

    Returns cos(theta + m) where cos(theta) > cos(pi - m) and insightface's
    fallback cos(theta) - m * sin(m) elsewhere. The fallback is not
    continuous at the threshold: with m = 0.5 it jumps from -1 to -1.117.
    With `easy_margin`, returns cos(theta + m) where cos(theta) > 0 and
    cos(theta) unchanged elsewhere.
    """
    constants = arcface_constants(m)
    cos_theta = _clip_cosine(cos_theta)
    sin_theta = _sine_from_cosine(cos_theta)
    cos_theta_plus_m = cos_theta * constants.cos_m - sin_theta * constants.sin_m
    if easy_margin:
        return ops.where(cos_theta > 0.0, cos_theta_plus_m, cos_theta)
    return ops.where(
        cos_theta > constants.threshold,
        cos_theta_plus_m,
        cos_theta - constants.mm,
    )


def cosface_target(cos_theta, m=COSFACE_MARGIN):
    """Penalise target cosines with CosFace's additive cosine margin, cos(theta) - m."""
    return _clip_cosine(cos_theta) - m


def combined_margin_target(
    cos_theta,
    m1=COMBINED_MARGINS[0],
    m2=COMBINED_MARGINS[1],
    m3=COMBINED_MARGINS[2],
):
    """Penalise target cosines with insightface's combined margin.

    Returns cos(m1 * theta + m2) - m3. m1 = 1, m2 = 0 is CosFace with m3,
    and m1 = 1, m3 = 0 is ArcFace with m2 but without ArcFace's fallback.

    NOTE: like insightface's loss type 5, this has no fallback where
    m1 * theta + m2 passes pi, so there the target logit grows again with
    theta. With the default margins that needs theta > 2.84 rad (163 deg).
    """
    cos_theta = _clip_cosine(cos_theta)
    # atan2 instead of acos: the same angle, but its gradient stays finite
    # at cos = +-1 because the clamped sine has a zero gradient there.
    theta = ops.arctan2(_sine_from_cosine(cos_theta), cos_theta)
    return ops.cos(m1 * theta + m2) - m3


def apply_target_margin(cos_theta, onehot, target_cosine, s):
    """Replace the target column of `cos_theta` with `target_cosine` and scale by `s`.

    Args:
        cos_theta: `(batch, num_classes)` cosines.
        onehot: `(batch, num_classes)` one-hot labels in the dtype of
            `cos_theta`.
        target_cosine: function from the `(batch, 1)` target cosines to
            their penalised values.
        s: scale (the feature norm that insightface's `margin_s` fixes).
    """
    target = ops.sum(cos_theta * onehot, axis=-1, keepdims=True)
    penalty = target_cosine(target) - target
    return s * (cos_theta + onehot * penalty)


def arcface_logits(
    cos_theta, onehot, s=DEFAULT_SCALE, m=ARCFACE_MARGIN, easy_margin=False
):
    """Compute ArcFace logits (insightface loss type 4) from cosines."""
    return apply_target_margin(
        cos_theta,
        onehot,
        lambda target: arcface_target(target, m, easy_margin),
        s,
    )


def cosface_logits(cos_theta, onehot, s=DEFAULT_SCALE, m=COSFACE_MARGIN):
    """Compute CosFace logits (insightface loss type 2) from cosines."""
    return apply_target_margin(
        cos_theta, onehot, lambda target: cosface_target(target, m), s
    )


def combined_margin_logits(
    cos_theta,
    onehot,
    s=DEFAULT_SCALE,
    m1=COMBINED_MARGINS[0],
    m2=COMBINED_MARGINS[1],
    m3=COMBINED_MARGINS[2],
):
    """Compute combined-margin logits (insightface loss type 5) from cosines."""
    return apply_target_margin(
        cos_theta,
        onehot,
        lambda target: combined_margin_target(target, m1, m2, m3),
        s,
    )
