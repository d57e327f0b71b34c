"""BatchNorm folding: the arithmetic by hand, the graph rewrite on real faces."""

import keras
import numpy as np
import pytest

from converters.faces import find_face_images, load_faces, spread_sample
from converters.fold_batchnorm import (
    batchnorm_scale_offset,
    find_foldable_pairs,
    fold_batchnorm,
    fold_into_kernel,
)
from mfn_tf.model.mobilefacenet import MobileFaceNet

# MobileFaceNet has a BatchNorm after each of its 32 convolutions, 17
# depthwise convolutions and its embedding layer.
MOBILEFACENET_BATCHNORMS = 50


def randomize_batchnorm(model, seed=0):
    """Give every BatchNorm non-trivial statistics, so folding matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0.0, 0.2, channels))
    return model


def l2_normalize(embeddings):
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def faces(lfw_images):
    return load_faces(spread_sample(find_face_images(lfw_images), 16))


def test_scale_offset_by_hand():
    scale, offset = batchnorm_scale_offset(
        gamma=[2.0], beta=[1.0], mean=[3.0], variance=[3.0], epsilon=1.0
    )
    # s = 2 / sqrt(3 + 1) = 1, t = 1 - 3 * 1 = -2
    np.testing.assert_allclose(scale, [1.0])
    np.testing.assert_allclose(offset, [-2.0])


def test_fold_into_conv_kernel():
    kernel = np.arange(2 * 3, dtype=np.float64).reshape(1, 1, 2, 3)
    folded_kernel, folded_bias = fold_into_kernel(
        kernel, bias=np.array([1.0, 2.0, 3.0]), scale=np.array([1.0, 2.0, 3.0]),
        offset=np.array([10.0, 20.0, 30.0]),
    )
    np.testing.assert_allclose(folded_kernel[0, 0], [[0, 2, 6], [3, 8, 15]])
    np.testing.assert_allclose(folded_bias, [11, 24, 39])


def test_fold_without_bias():
    _, folded_bias = fold_into_kernel(
        np.ones((3, 2)), bias=None, scale=np.array([2.0, 3.0]), offset=np.array([0.5, -1.0])
    )
    np.testing.assert_allclose(folded_bias, [0.5, -1.0])


def test_fold_into_depthwise_kernel():
    # Two input channels with multiplier 2: output channel i * 2 + m.
    kernel = np.ones((1, 1, 2, 2))
    scale = np.array([1.0, 2.0, 3.0, 4.0])
    folded_kernel, _ = fold_into_kernel(
        kernel, None, scale, np.zeros(4), depthwise=True
    )
    np.testing.assert_allclose(folded_kernel[0, 0], [[1, 2], [3, 4]])


def test_finds_every_mobilefacenet_pair():
    pairs = find_foldable_pairs(MobileFaceNet(width_multiplier=0.25))
    assert len(pairs) == MOBILEFACENET_BATCHNORMS
    assert ("stem_conv", "stem_bn") in pairs
    assert ("gdc_conv", "gdc_bn") in pairs
    assert ("embedding_dense", "embedding_bn") in pairs


def test_folds_through_flatten_of_1x1_conv():
    pairs = find_foldable_pairs(MobileFaceNet(width_multiplier=0.25, embedding_layer="conv"))
    assert ("embedding_conv", "embedding_bn") in pairs


def test_skips_conv_with_two_consumers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    a = keras.layers.BatchNormalization(name="bn")(x)
    b = keras.layers.ReLU(name="relu")(x)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    assert find_foldable_pairs(model) == []
    assert "bn" in {layer.name for layer in fold_batchnorm(model).layers}


def test_folded_layer_names():
    model = MobileFaceNet(width_multiplier=0.25)
    folded = fold_batchnorm(model)
    names = {layer.name for layer in folded.layers}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert {"stem_conv", "stem_pad", "stem_prelu", "embedding_dense", "stage1_block1_add"} <= names
    assert len(folded.layers) == len(model.layers) - MOBILEFACENET_BATCHNORMS
    assert folded.get_layer("stem_conv").use_bias


def test_rejects_non_functional_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="functional"):
        fold_batchnorm(model)


@pytest.mark.shared_data
@pytest.mark.parametrize("embedding_layer", ["dense", "conv"])
def test_folded_matches_on_real_faces(faces, embedding_layer):
    model = randomize_batchnorm(MobileFaceNet(embedding_layer=embedding_layer))
    folded = fold_batchnorm(model)
    expected = np.asarray(model(faces, training=False))
    actual = np.asarray(folded(faces, training=False))
    # Random BatchNorm statistics blow embeddings up to norms of ~1e4, so
    # the tolerance applies to the L2-normalized embeddings that face
    # recognition compares.
    np.testing.assert_allclose(l2_normalize(actual), l2_normalize(expected), atol=1e-5)
    relative = np.abs(actual - expected).max() / np.abs(expected).max()
    assert relative < 1e-5, relative
