"""The tf-keras QAT bridge: rebuild, quantize wrappers, a training step."""

import numpy as np
import pytest

from converters.fold_batchnorm import fold_batchnorm
from converters.qat import (
    QATError,
    convert_qat_model,
    distill,
    import_tfmot,
    initialize_ranges,
    quantize_model,
    teacher_embeddings_with_flips,
    to_tf_keras,
)
from converters.tflite_export import count_tflite_ops
from mfn_tf.model.mobilefacenet import MobileFaceNet
from test_fold_batchnorm import randomize_batchnorm


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_batchnorm(MobileFaceNet(width_multiplier=0.25), seed=4)


@pytest.fixture(scope="module")
def images():
    # Smooth random images in 0-255: the bridge needs no real faces.
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (6, 14, 14, 3))
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(tiny_model, images):
    float_model = to_tf_keras(fold_batchnorm(tiny_model))
    qat_model = quantize_model(float_model)
    initialize_ranges(qat_model, float_model, images)
    return float_model, qat_model


@pytest.mark.parametrize("folded", [True, False])
def test_rebuild_matches_keras(tiny_model, images, folded):
    model = fold_batchnorm(tiny_model) if folded else tiny_model
    rebuilt = to_tf_keras(model)
    expected = np.asarray(model(images, training=False))
    actual = rebuilt(images, training=False).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]


def test_rebuild_rejects_unknown_layer():
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.MaxPooling2D(name="pool")(inputs))
    with pytest.raises(QATError, match="pool"):
        to_tf_keras(model)


def test_tfmot_import_restores_environment(monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    import_tfmot()
    import os

    assert "TF_USE_LEGACY_KERAS" not in os.environ


def test_every_layer_wrapped(quantized):
    _, qat_model = quantized
    wrappers = {
        layer.layer.name: layer.quantize_config
        for layer in qat_model.layers
        if hasattr(layer, "quantize_config")
    }
    assert type(wrappers["stem_prelu"]).__name__ == "OutputQuantizeConfig"
    assert type(wrappers["input_normalization"]).__name__ == "OutputQuantizeConfig"
    assert type(wrappers["stem_dw_conv"]).__name__ == "DepthwiseQuantizeConfig"
    prelu_wrappers = [name for name in wrappers if name.endswith("_prelu")]
    assert len(prelu_wrappers) == 33


def test_depthwise_kernel_per_channel(quantized, tiny_model):
    _, qat_model = quantized
    channels = tiny_model.get_layer("stem_dw_conv").kernel.shape[2]
    (kernel_min,) = [
        variable
        for variable in qat_model.non_trainable_variables
        if variable.name.startswith("quant_stem_dw_conv/") and "kernel_min" in variable.name
    ]
    assert kernel_min.shape == (channels,)


def test_ranges_from_faces(quantized, images):
    float_model, qat_model = quantized
    stem = float_model.get_layer("stem_prelu")
    probe_output = stem.output
    import tf_keras

    observed = tf_keras.Model(float_model.inputs, probe_output)(images).numpy().max()
    (output_max,) = [
        variable
        for variable in qat_model.non_trainable_variables
        if variable.name.startswith("quant_stem_prelu/output_max")
    ]
    np.testing.assert_allclose(float(output_max.numpy()), max(observed, 0.0), rtol=1e-6)


@pytest.mark.slow
def test_one_step_then_full_integer(quantized, tiny_model, images):
    _, qat_model = quantized
    teacher = teacher_embeddings_with_flips(fold_batchnorm(tiny_model), images)
    assert teacher.shape == (2, len(images), 128)
    losses = distill(qat_model, images, teacher, steps=1, batch_size=4, progress=False)
    assert len(losses) == 1
    assert np.isfinite(losses[0])
    assert 0.0 <= losses[0] <= 2.0

    ops = count_tflite_ops(convert_qat_model(qat_model, images))
    assert ops["PRELU"] == 33
    assert ops["QUANTIZE"] == 1
    assert ops["DEQUANTIZE"] == 1
