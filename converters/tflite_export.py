"""Export the embedding model to TFLite in float32, float16 and int8.

The model is first written as a SavedModel by Keras' `ExportArchive` with
one fixed signature, `serving_default(image) -> {"embedding": ...}`, whose
input is float32 `(1, 112, 112, 3)` RGB pixels in 0-255. The TFLite
converter freezes it and fuses each Keras PReLU into one PRELU op.

- fp32: weights and arithmetic in float32.
- fp16: weights stored as float16 and dequantized at load time; CPU
  kernels compute in float32, GPU delegates may compute in float16.
- int8: full-integer post-training quantization (per-channel weights,
  per-tensor activations calibrated on real faces). The input and output
  stay float32 by default, so apps feed the same pixels to every
  artifact. With `int8_input="uint8"` the model takes the camera's uint8
  pixels directly (scale 1, zero point 0).

The explicit ZeroPadding2D before each stride-2 convolution stays a PAD op:
TFLite's convolutions only know "same" padding, which for stride 2 pads
bottom/right only, not the symmetric pixel that MXNet-trained weights
expect.
"""

import logging
import tempfile
from collections import Counter

import numpy as np

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INT8_INPUT_TYPES = ("float32", "uint8")
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


class TFLiteExportError(RuntimeError):
    """A TFLite conversion that failed or produced an unusable model."""


def _export_saved_model(model, folder, input_size):
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE_KEY,
        lambda image: {OUTPUT_NAME: model(image, training=False)},
        input_signature=[
            tf.TensorSpec((1, input_size, input_size, 3), tf.float32, name=INPUT_NAME)
        ],
    )
    archive.write_out(str(folder), verbose=False)


def _check_representative_images(images):
    if images is None or len(images) == 0:
        raise ValueError(
            "int8 quantization needs representative face images; pass "
            "--calibration-dir with aligned 112x112 faces"
        )


def convert_saved_model(
    saved_model_dir, precision, representative_images=None, int8_input="float32"
):
    """Convert a SavedModel with one image signature to TFLite bytes."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        _check_representative_images(representative_images)
        images = np.asarray(representative_images, dtype=np.float32)

        def representative_dataset():
            for image in images:
                yield {INPUT_NAME: image[None]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_input == "uint8":
            converter.inference_input_type = tf.uint8
    return run_converter(converter)


def run_converter(converter):
    """Return `converter.convert()`, without the deprecation warning of its calibration.

    The converter's int8 calibration runs TensorFlow's own `tf.lite.Interpreter`,
    which warns that it is deprecated; the project runs models with LiteRT.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return converter.convert()


def check_uint8_input(tflite_model):
    """Raise unless a uint8-input model reads raw pixels: scale 1, zero 0.

    The converter derives the input's quantization from the calibration
    images' range, which is 0-255 for any real set of faces. With another
    scale, apps that feed camera bytes would compute wrong embeddings.
    """
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=tflite_model).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if detail["dtype"] != np.uint8 or not np.isclose(scale, 1.0) or zero_point != 0:
        raise TFLiteExportError(
            f"the uint8 input has scale {scale} and zero point {zero_point}, not 1 "
            "and 0: the calibration images do not span pixel values 0-255. Use "
            "more calibration faces, or keep the float32 input."
        )


def convert_to_tflite(
    model,
    precision="fp32",
    representative_images=None,
    int8_input="float32",
    input_size=112,
):
    """Convert a Keras embedding model to TFLite and return the bytes.

    Args:
        model: a Keras model from `(N, size, size, 3)` pixels to embeddings.
        precision: "fp32", "fp16" or "int8".
        representative_images: float32 `(N, size, size, 3)` faces in 0-255
            that calibrate int8 activation ranges (int8 only).
        int8_input: "float32" or "uint8", the int8 model's input type.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if int8_input not in INT8_INPUT_TYPES:
        raise ValueError(
            f"unknown int8 input type {int8_input!r}; expected one of {INT8_INPUT_TYPES}"
        )
    if precision == "int8":
        _check_representative_images(representative_images)
    with tempfile.TemporaryDirectory(prefix="saved-model-") as folder:
        _export_saved_model(model, folder, input_size)
        tflite_model = convert_saved_model(
            folder, precision, representative_images, int8_input=int8_input
        )
    if precision == "int8" and int8_input == "uint8":
        check_uint8_input(tflite_model)
    return tflite_model


def count_tflite_ops(tflite_model):
    """Return a `Counter` of the op types in a TFLite flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(tflite_model))
    # NOTE: `_get_ops_details` is the interpreter's only op listing; it is
    # private but unchanged since TF 2.4 and present in ai-edge-litert 2.3.
    return Counter(op["op_name"] for op in interpreter._get_ops_details())


def export_tflite(model, path, precision="fp32", representative_images=None,
                  int8_input="float32", input_size=112):
    """Write `model` to `path` as TFLite and return its op counts."""
    tflite_model = convert_to_tflite(
        model,
        precision=precision,
        representative_images=representative_images,
        int8_input=int8_input,
        input_size=input_size,
    )
    with open(path, "wb") as file:
        file.write(tflite_model)
    return dict(count_tflite_ops(tflite_model))
