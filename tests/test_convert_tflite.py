"""TFLite export: int8 input types, equalization, argument checks.

The fp32 and fp16 exports, their ops and their LiteRT parity are checked
end to end in test_convert_cli.py.
"""

import numpy as np
import pytest

from converters.equalize import channel_scales, equalize_activations, find_equalization_chains
from converters.faces import find_face_images, load_faces, spread_sample
from converters.fold_batchnorm import fold_batchnorm
from converters.parity import measure_parity
from converters.runtimes import LiteRTRunner
from converters.tflite_export import convert_to_tflite, count_tflite_ops
from mfn_tf.model.mobilefacenet import MobileFaceNet
from test_fold_batchnorm import randomize_batchnorm


@pytest.fixture(scope="module")
def tiny_folded():
    return fold_batchnorm(randomize_batchnorm(MobileFaceNet(width_multiplier=0.25), seed=2))


@pytest.fixture(scope="module")
def faces(lfw_images):
    paths = spread_sample(find_face_images(lfw_images), 40)
    return load_faces(paths)


def write(tmp_path, name, tflite_model):
    path = tmp_path / name
    path.write_bytes(tflite_model)
    return path


@pytest.mark.shared_data
def test_int8_uint8_input(tiny_folded, faces, tmp_path):
    tflite_model = convert_to_tflite(
        tiny_folded, "int8", representative_images=faces[8:], int8_input="uint8"
    )
    runner = LiteRTRunner(write(tmp_path, "int8.tflite", tflite_model), num_threads=1)
    assert runner.input_detail["dtype"] == np.uint8
    assert runner.input_detail["quantization"] == (1.0, 0)
    assert runner.output_detail["dtype"] == np.float32
    ops = count_tflite_ops(tflite_model)
    # Full integer: one QUANTIZE for the input, one DEQUANTIZE for the output.
    assert ops["QUANTIZE"] == 1
    assert ops["DEQUANTIZE"] == 1


def test_int8_needs_faces(tiny_folded):
    with pytest.raises(ValueError, match="calibration-dir"):
        convert_to_tflite(tiny_folded, "int8")


def test_unknown_precision(tiny_folded):
    with pytest.raises(ValueError, match="precision"):
        convert_to_tflite(tiny_folded, "int4")


def test_channel_scales_by_hand():
    scales = channel_scales([1.0, 2.0, 0.0, 4.0])
    # Live channels end at the RMS of their ranges, sqrt((1 + 4 + 16) / 3).
    target = np.sqrt(21 / 3)
    np.testing.assert_allclose(scales, [1 / target, 2 / target, 1.0, 4 / target])


@pytest.mark.shared_data
def test_equalization_keeps_function(faces):
    model = fold_batchnorm(randomize_batchnorm(MobileFaceNet(width_multiplier=0.25), seed=3))
    # stem, 15 expand convs and last_conv feed depthwise convs; stem_dw and
    # the 15 depthwise convs feed pointwise convs.
    assert len(find_equalization_chains(model)) == 33
    expected = np.asarray(model(faces[:8], training=False))
    assert equalize_activations(model, faces[8:]) == 33
    actual = np.asarray(model(faces[:8], training=False))
    assert measure_parity(expected, actual, "fp32").min_cosine > 0.999999
