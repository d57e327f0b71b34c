"""MobileFaceNet backbone: size, cost, names and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mfn_tf.model.batch_norm import FusedBatchNormalization
from mfn_tf.model.mobilefacenet import MobileFaceNet, count_madds, make_divisible


@pytest.fixture(scope="module")
def model():
    return MobileFaceNet()


def test_trainable_parameter_count(model):
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert 990_000 <= count <= 1_010_000, count


def test_madds_match_paper(model):
    madds = count_madds(model)
    assert abs(madds - 221e6) / 221e6 <= 0.03, madds


def test_output_shape(model):
    images = np.random.RandomState(0).uniform(0, 255, (2, 112, 112, 3))
    embeddings = model(images.astype("float32"), training=False)
    assert embeddings.shape == (2, 128)


def test_table_layer_names(model):
    names = {layer.name for layer in model.layers}
    for name in [
        "input_normalization",
        "stem_conv",
        "stem_dw_conv",
        "stage1_block0_expand_conv",
        "stage1_block4_add",
        "stage3_block5_project_bn",
        "stage5_block1_add",
        "last_prelu",
        "gdc_conv",
        "gdc_bn",
        "embedding_dense",
        "embedding_bn",
    ]:
        assert name in names, name
    assert "stage2_block0_add" not in names  # stride 2: no residual


def test_bottleneck_counts(model):
    blocks = {
        layer.name.rsplit("_", 2)[0]
        for layer in model.layers
        if layer.name.startswith("stage") and layer.name.endswith("_dw_conv")
    }
    assert len(blocks) == 5 + 1 + 6 + 1 + 2


def test_feature_map_sizes(model):
    assert model.get_layer("stem_conv").output.shape[1:3] == (56, 56)
    assert model.get_layer("stage1_block0_dw_conv").output.shape[1:3] == (28, 28)
    assert model.get_layer("stage4_block0_dw_conv").output.shape[1:3] == (7, 7)
    assert model.get_layer("gdc_conv").output.shape[1:] == (1, 1, 512)


def test_prelu_slope_per_channel(model):
    alpha = model.get_layer("stem_prelu").alpha
    assert tuple(alpha.shape) == (1, 1, 64)


def test_input_normalization_matches_insightface(model):
    layer = model.get_layer("input_normalization")
    pixels = np.array([[0.0, 127.5, 255.0]], dtype="float32")
    np.testing.assert_allclose(
        np.asarray(layer(pixels)), (pixels - 127.5) * 0.0078125, atol=1e-6
    )


def test_embedding_bn_has_fixed_scale(model):
    layer = model.get_layer("embedding_bn")
    assert not layer.scale
    assert layer.epsilon == pytest.approx(2e-5)


def test_gradient_for_every_weight():
    model = MobileFaceNet(width_multiplier=0.25)
    images = tf.random.uniform((2, 112, 112, 3), 0, 255, seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(images, training=True)))
    gradients = tape.gradient(loss, model.trainable_weights)
    for weight, gradient in zip(model.trainable_weights, gradients):
        assert gradient is not None, weight.path
        assert np.all(np.isfinite(gradient)), weight.path
        assert np.any(gradient != 0), weight.path


@pytest.mark.parametrize(
    "options",
    [
        {"embedding_size": 256},
        {"width_multiplier": 0.5},
        {"embedding_layer": "conv"},
        {"input_size": 96},
    ],
)
def test_options(options):
    model = MobileFaceNet(**options)
    size = options.get("input_size", 112)
    out = model(np.zeros((1, size, size, 3), "float32"))
    assert out.shape == (1, options.get("embedding_size", 128))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"embedding_size": 0}, "embedding_size"),
        ({"width_multiplier": -1}, "width_multiplier"),
        ({"input_size": 100}, "input_size"),
        ({"embedding_layer": "gap"}, "embedding_layer"),
    ],
)
def test_invalid_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        MobileFaceNet(**options)


def test_make_divisible():
    assert make_divisible(32) == 32
    assert make_divisible(36) == 40
    assert make_divisible(3) == 8


def test_save_load_round_trip(tmp_path, model):
    path = tmp_path / "backbone.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.RandomState(2).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(model(images)), np.asarray(loaded(images)), atol=1e-5
    )


class TestFusedBatchNormalization:
    def test_training_output_matches_keras(self):
        x = np.random.RandomState(0).randn(4, 5, 5, 3).astype("float32") * 2 + 1
        fused = FusedBatchNormalization(momentum=0.9)
        stock = keras.layers.BatchNormalization(momentum=0.9)
        np.testing.assert_allclose(
            np.asarray(fused(x, training=True)),
            np.asarray(stock(x, training=True)),
            atol=1e-5,
        )

    def test_moving_statistics_update(self):
        x = np.random.RandomState(0).randn(4, 5, 5, 3).astype("float32") * 2 + 1
        layer = FusedBatchNormalization(momentum=0.9)
        layer(x, training=True)
        count = 4 * 5 * 5
        np.testing.assert_allclose(
            np.asarray(layer.moving_mean), 0.1 * x.mean(axis=(0, 1, 2)), atol=1e-5
        )
        # The fused kernel uses the unbiased batch variance.
        expected = 0.9 + 0.1 * x.var(axis=(0, 1, 2)) * count / (count - 1)
        np.testing.assert_allclose(
            np.asarray(layer.moving_variance), expected, rtol=1e-5
        )

    def test_without_scale(self):
        x = np.random.RandomState(0).randn(4, 3, 3, 2).astype("float32")
        layer = FusedBatchNormalization(scale=False)
        out = np.asarray(layer(x, training=True))
        np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)

    def test_config_round_trip(self):
        layer = FusedBatchNormalization(epsilon=2e-5, momentum=0.9, scale=False)
        restored = FusedBatchNormalization.from_config(layer.get_config())
        assert restored.epsilon == layer.epsilon
        assert restored.momentum == layer.momentum
        assert restored.scale is False


def test_load_backbone_rejects_non_zip(tmp_path):
    from mfn_tf.model.loading import ModelLoadError, load_backbone

    path = tmp_path / "junk.keras"
    path.write_text("not a model")
    with pytest.raises(ModelLoadError, match="is not a Keras model file"):
        load_backbone(path)
