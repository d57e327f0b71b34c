"""The embedding-only inference model that every export starts from.

A training model is `(image, label) -> logits`, with the backbone nested
under the name "mobilefacenet" and the margin head (`fc7`) on top. Phones
need only `image -> embedding`: the head is dropped, BatchNorm runs on its
moving statistics and, by default, is folded into the layer before it.
The input stays RGB pixels in 0-255; the `(x - 127.5) / 128` scaling is a
layer inside the graph, so apps never normalise themselves.
"""

import keras

from converters.fold_batchnorm import find_foldable_pairs, fold_batchnorm
from mfn_tf.model.loading import ModelLoadError, get_backbone

EMBEDDING_MODEL_NAME = "mobilefacenet_embedding"


def describe_input_output(model):
    """Return `(input_size, embedding_size)` of an embedding model.

    Raises:
        ModelLoadError: the model is not `(N, S, S, 3) -> (N, D)`.
    """
    input_shape = tuple(model.input_shape)
    output_shape = tuple(model.output_shape)
    if (
        len(input_shape) != 4
        or input_shape[1] != input_shape[2]
        or input_shape[3] != 3
        or input_shape[1] is None
    ):
        raise ModelLoadError(
            f"model {model.name!r} takes input of shape {input_shape}; expected "
            "(batch, size, size, 3) RGB images"
        )
    if len(output_shape) != 2 or output_shape[1] is None:
        raise ModelLoadError(
            f"model {model.name!r} returns shape {output_shape}; expected "
            "(batch, embedding_size)"
        )
    return input_shape[1], output_shape[1]


def build_embedding_model(model, fold=True):
    """Return the inference embedding model of a backbone or training model.

    Args:
        model: a MobileFaceNet backbone, or a training model nesting one.
        fold: fold every foldable BatchNorm (see `fold_batchnorm`). Without
            folding the backbone is returned as it is, for reference exports.

    Returns:
        `(embedding_model, folded_pairs)`, where `folded_pairs` lists the
        `(linear_layer, batchnorm)` names that were (or, with `fold=False`,
        could have been) folded.
    """
    backbone = get_backbone(model)
    describe_input_output(backbone)
    pairs = find_foldable_pairs(backbone)
    if not fold:
        return backbone, pairs
    return fold_batchnorm(backbone, name=EMBEDDING_MODEL_NAME), pairs


def count_layers(model, layer_type):
    """Return how many layers of `model` are instances of `layer_type`."""
    return sum(isinstance(layer, layer_type) for layer in model.layers)


def count_prelu_layers(model):
    return count_layers(model, keras.layers.PReLU)
