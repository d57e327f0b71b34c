"""Classification heads and their margin functions.

Importing this package registers the head layers with Keras' deserializer,
so that saved training models reload.
"""

from mfn_tf.heads.layers import ArcFace, CombinedMargin, CosFace, SoftmaxHead
from mfn_tf.heads.margins import (
    arcface_logits,
    arcface_target,
    combined_margin_logits,
    combined_margin_target,
    cosface_logits,
    cosface_target,
)

__all__ = [
    "ArcFace",
    "CombinedMargin",
    "CosFace",
    "SoftmaxHead",
    "arcface_logits",
    "arcface_target",
    "combined_margin_logits",
    "combined_margin_target",
    "cosface_logits",
    "cosface_target",
]
