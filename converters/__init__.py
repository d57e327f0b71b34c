"""Deployment exports of MobileFaceNet: TFLite, ONNX and ncnn, each checked
against the Keras model on real faces.

Modules follow the pipeline: `slim` (embedding-only model), `fold_batchnorm`,
`equalize` (int8 preparation), `tflite_export`, `qat` (the tf-keras bridge),
`onnx_export`, `ncnn_export` with `ncnn_model` (the file format), `runtimes`
(one runner per runtime), `parity`, `report`, and `convert`, which runs them
all for `python cli.py convert`. Names are imported lazily, so that the
command line starts without loading TensorFlow.
"""

import importlib

# public name: module that defines it
_EXPORTS = {
    "ConvertOptions": "converters.options",
    "ConversionError": "converters.convert",
    "convert_model": "converters.convert",
    "build_embedding_model": "converters.slim",
    "fold_batchnorm": "converters.fold_batchnorm",
    "equalize_activations": "converters.equalize",
    "export_tflite": "converters.tflite_export",
    "export_onnx": "converters.onnx_export",
    "export_ncnn": "converters.ncnn_export",
    "export_ncnn_unfolded": "converters.ncnn_export",
    "KerasRunner": "converters.runtimes",
    "LiteRTRunner": "converters.runtimes",
    "OnnxRuntimeRunner": "converters.runtimes",
    "NcnnRunner": "converters.runtimes",
    "open_runner": "converters.runtimes",
    "measure_parity": "converters.parity",
    "PARITY_BARS": "converters.parity",
    "read_report": "converters.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
