"""The training model (backbone + margin head) and where its weights start."""

import logging
from pathlib import Path

import keras
import numpy as np

from mfn_tf.heads import ArcFace, CombinedMargin, CosFace, SoftmaxHead
from mfn_tf.model.loading import BACKBONE_NAME, get_backbone
from mfn_tf.model.mobilefacenet import MobileFaceNet

logger = logging.getLogger(__name__)

HEAD_NAME = "fc7"


def build_head(recipe, num_classes):
    """The margin head of `recipe.loss`, named "fc7" as in insightface."""
    if recipe.loss == "softmax":
        return SoftmaxHead(num_classes, name=HEAD_NAME)
    if recipe.loss == "arcface":
        return ArcFace(
            num_classes,
            s=recipe.margin_s,
            m=recipe.margin_m,
            easy_margin=recipe.easy_margin,
            name=HEAD_NAME,
        )
    if recipe.loss == "cosface":
        return CosFace(num_classes, s=recipe.margin_s, m=recipe.margin_m, name=HEAD_NAME)
    if recipe.loss == "combined":
        return CombinedMargin(
            num_classes,
            s=recipe.margin_s,
            m1=recipe.margin_m1,
            m2=recipe.margin_m2,
            m3=recipe.margin_m3,
            name=HEAD_NAME,
        )
    raise ValueError(f"unknown loss {recipe.loss!r}")


def build_training_model(backbone, head):
    """`(image, label) -> logits`: the backbone nested under its own name,
    then the head on `(embedding, label)`."""
    size = backbone.input_shape[1]
    image = keras.Input((size, size, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    embedding = backbone(image)
    logits = head([embedding, label])
    return keras.Model([image, label], logits, name=f"{BACKBONE_NAME}_train")


def build_backbone(recipe):
    return MobileFaceNet(
        embedding_size=recipe.embedding_size,
        width_multiplier=recipe.width_multiplier,
        embedding_layer=recipe.embedding_layer,
        name=BACKBONE_NAME,
    )


def load_pretrained(spec):
    """Load a pretrained backbone and, where the checkpoint has one, its fc7.

    Args:
        spec: a `.keras` file written by this project (a backbone or a
            training model), or an insightface MXNet checkpoint as
            `PREFIX,EPOCH`.

    Returns:
        `(backbone, fc7_kernel)`, where `fc7_kernel` is a numpy array of
        shape `(embedding_size, num_classes)`, or None.
    """
    if "," in str(spec) and not Path(spec).exists():
        from mfn_tf.importers import import_mxnet_checkpoint

        prefix, _, epoch = str(spec).rpartition(",")
        backbone, fc7_kernel, _ = import_mxnet_checkpoint(prefix, int(epoch))
        return backbone, fc7_kernel

    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"pretrained model not found: {path}")
    model = keras.models.load_model(path, compile=False)
    backbone = get_backbone(model)
    fc7_kernel = None
    for layer in model.layers:
        if layer.name == HEAD_NAME and hasattr(layer, "kernel"):
            fc7_kernel = np.asarray(layer.kernel)
    return backbone, fc7_kernel


def start_from_pretrained(spec, head, embedding_size):
    """Build a training model whose weights start from `spec`.

    The backbone comes from the checkpoint as it is (its layers, BatchNorm
    eps included); its embedding size must match the recipe's. fc7 loads
    when the checkpoint has one with the same number of classes; with
    another class count (fine-tuning on a new dataset) fc7 starts from its
    initializer and a warning says so.
    """
    backbone, fc7_kernel = load_pretrained(spec)
    if backbone.output_shape[-1] != embedding_size:
        raise ValueError(
            f"{spec}: the pretrained embedding has {backbone.output_shape[-1]} "
            f"dimensions but the recipe asks for {embedding_size}; pass "
            f"--set embedding_size={backbone.output_shape[-1]}"
        )
    model = build_training_model(backbone, head)
    if fc7_kernel is None:
        logger.info("%s has no fc7: the classifier starts from its initializer", spec)
    elif tuple(fc7_kernel.shape) != tuple(head.kernel.shape):
        logger.warning(
            "fc7 not loaded: %s has %d classes, the training data has %d; "
            "the classifier starts from its initializer",
            spec,
            fc7_kernel.shape[1],
            head.kernel.shape[1],
        )
    else:
        head.kernel.assign(fc7_kernel.astype(head.kernel.dtype))
        logger.info("Loaded backbone and fc7 (%d classes) from %s", fc7_kernel.shape[1], spec)
    return model

