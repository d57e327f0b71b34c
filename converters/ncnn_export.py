"""Convert the ONNX export to ncnn with the `pnnx` binary from PyPI.

The `pnnx` wheel bundles a standalone converter binary next to a Python
wrapper. The wrapper imports torch, which the wheel declares as a
dependency (several GB), so this project installs the wheel with
`--no-deps` and runs the binary directly.

pnnx writes several side files (`.pnnx.param`, `.pnnx.bin`, `.pnnx.onnx`,
`_pnnx.py`, `_ncnn.py`); only the `.ncnn.param` and `.ncnn.bin` that apps
load are kept. The blob names are pnnx's: input `in0`, output `out0`.
"""

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from converters.fold_batchnorm import LINEAR_LAYER_TYPES, fold_batchnorm, find_foldable_pairs
from converters.ncnn_model import (
    NcnnLayer,
    WeightArray,
    count_layer_types,
    read_model,
    read_param,
    write_model,
)

logger = logging.getLogger(__name__)

INPUT_BLOB = "in0"
OUTPUT_BLOB = "out0"
PNNX_ENV = "MFN_TF_PNNX"
PNNX_TIMEOUT_S = 300

# Layers that must not appear in a converted MobileFaceNet: a Permute means
# a layout change leaked through, a BatchNorm that folding was skipped.
FORBIDDEN_LAYERS = ("Permute",)
FOLDED_FORBIDDEN_LAYERS = ("BatchNorm",)


class NcnnExportError(RuntimeError):
    """pnnx is missing or failed, or its output has a forbidden layer."""


def find_pnnx():
    """Return the path of the pnnx converter binary.

    `MFN_TF_PNNX` overrides the search; otherwise the binary inside the
    installed `pnnx` package is used (found without importing the package,
    whose `__init__` imports torch).

    Raises:
        NcnnExportError: no binary was found.
    """
    override = os.environ.get(PNNX_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise NcnnExportError(f"{PNNX_ENV}={override}: no such file")
        return path
    spec = importlib.util.find_spec("pnnx")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            for name in ("pnnx", "pnnx.exe"):
                path = Path(folder) / name
                if path.is_file():
                    return path
    raise NcnnExportError(
        "the pnnx converter binary was not found. Install it without torch: "
        "`pip install --no-deps -c constraints.txt pnnx` (as `make setup` "
        f"does), or set {PNNX_ENV} to the path of a pnnx binary."
    )


def run_pnnx(onnx_path, param_path, bin_path, fp16=False, input_size=112, optlevel=2):
    """Convert an ONNX file to an ncnn `.param`/`.bin` pair with pnnx.

    pnnx runs in a temporary folder so that its side files never reach
    the output folder.

    Raises:
        NcnnExportError: pnnx exited with an error, timed out or wrote no
            ncnn files. The message has pnnx's output.
    """
    pnnx = find_pnnx()
    with tempfile.TemporaryDirectory(prefix="pnnx-") as work:
        work = Path(work)
        model = work / "model.onnx"
        shutil.copyfile(onnx_path, model)
        command = [
            str(pnnx),
            str(model),
            f"inputshape=[1,3,{input_size},{input_size}]",
            f"fp16={int(bool(fp16))}",
            f"optlevel={optlevel}",
            f"ncnnparam={work / 'model.ncnn.param'}",
            f"ncnnbin={work / 'model.ncnn.bin'}",
        ]
        logger.debug("running %s", " ".join(command))
        try:
            result = subprocess.run(
                command, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as error:
            raise NcnnExportError(
                f"pnnx timed out after {PNNX_TIMEOUT_S} s converting {onnx_path}"
            ) from error
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise NcnnExportError(
                f"pnnx failed on {onnx_path} (exit status {result.returncode}):\n"
                f"{output[-4000:]}"
            )
        for produced in ("model.ncnn.param", "model.ncnn.bin"):
            if not (work / produced).is_file():
                raise NcnnExportError(
                    f"pnnx exited without writing {produced} for {onnx_path}:\n{output[-4000:]}"
                )
        shutil.move(work / "model.ncnn.param", param_path)
        shutil.move(work / "model.ncnn.bin", bin_path)


def check_ncnn_layers(counts, folded=True):
    """Raise NcnnExportError if a converted model has a forbidden layer."""
    forbidden = FORBIDDEN_LAYERS + (FOLDED_FORBIDDEN_LAYERS if folded else ())
    found = {name: counts[name] for name in forbidden if counts.get(name)}
    if found:
        raise NcnnExportError(
            f"the ncnn model has layers it must not have: {found}. A Permute "
            "means an NHWC/NCHW transpose survived the ONNX export; a BatchNorm "
            "in a folded model means folding missed a layer."
        )


def export_ncnn(onnx_path, param_path, bin_path, fp16=False, input_size=112):
    """Convert the folded ONNX model to ncnn and return its layer counts.

    Args:
        fp16: store the weights as float16 (pnnx `fp16=1`); ncnn computes
            in fp16 where the CPU supports it.
    """
    run_pnnx(onnx_path, param_path, bin_path, fp16=fp16, input_size=input_size)
    counts = count_layer_types(read_param(param_path))
    check_ncnn_layers(counts, folded=True)
    return dict(counts)


def _linear_layers_in_order(model):
    layers = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if type(node.operation) in LINEAR_LAYER_TYPES:
                layers.append(node.operation)
    return layers


def _ncnn_kernel(layer):
    """Return a Keras kernel in ncnn's (out, in, kh, kw) order, flattened."""
    import keras

    kernel = np.asarray(layer.kernel.numpy(), dtype=np.float32)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # (kh, kw, in, multiplier) -> output channel i * multiplier + m.
        return kernel.transpose(2, 3, 0, 1).reshape(-1)
    if isinstance(layer, keras.layers.Dense):
        return kernel.T.reshape(-1)
    return kernel.transpose(3, 2, 0, 1).reshape(-1)


def _batchnorm_weights(layer):
    channels = layer.moving_mean.shape[0]
    gamma = layer.gamma.numpy() if layer.scale else np.ones(channels)
    beta = layer.beta.numpy() if layer.center else np.zeros(channels)
    arrays = (gamma, layer.moving_mean.numpy(), layer.moving_variance.numpy(), beta)
    return [WeightArray(np.asarray(array, dtype=np.float32), tagged=False) for array in arrays]


def unfold_ncnn_batchnorm(layers, model):
    """Split each folded ncnn convolution back into convolution + BatchNorm.

    `layers` is the ncnn model of `fold_batchnorm(model)`. Its Convolution,
    ConvolutionDepthWise and InnerProduct layers are matched, in order, to
    the linear layers of `model`, which must agree in output size and
    weight count. Each one whose Keras layer had a BatchNorm gets the
    original kernel and bias back, followed by an ncnn BatchNorm layer with
    the Keras statistics. This is the model a converter writes without
    folding, kept as the benchmarks' reference for the cost of BatchNorm.

    Raises:
        NcnnExportError: the layers do not match the Keras model.
    """
    linear_layers = _linear_layers_in_order(model)
    bn_after = dict(find_foldable_pairs(model))
    ncnn_linear = [
        layer
        for layer in layers
        if layer.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct")
    ]
    if len(ncnn_linear) != len(linear_layers):
        raise NcnnExportError(
            f"the ncnn model has {len(ncnn_linear)} convolution/inner-product "
            f"layers but the Keras model has {len(linear_layers)} linear layers"
        )
    unfolded = []
    matches = dict(zip((id(layer) for layer in ncnn_linear), linear_layers))
    for layer in layers:
        keras_layer = matches.get(id(layer))
        if keras_layer is None or keras_layer.name not in bn_after:
            unfolded.append(layer)
            continue
        kernel = _ncnn_kernel(keras_layer)
        size_key = "2" if layer.type == "InnerProduct" else "6"
        bias_key = "1" if layer.type == "InnerProduct" else "5"
        if layer.int_param(0) != keras_layer.output.shape[-1] or layer.int_param(size_key) != kernel.size:
            raise NcnnExportError(
                f"ncnn layer {layer.name} ({layer.type}, {layer.int_param(0)} outputs, "
                f"{layer.int_param(size_key)} weights) does not match Keras layer "
                f"{keras_layer.name} ({keras_layer.output.shape[-1]} outputs, "
                f"{kernel.size} weights)"
            )
        float16 = layer.weights[0].float16
        weights = [WeightArray(kernel, tagged=True, float16=float16)]
        if keras_layer.use_bias:
            weights.append(WeightArray(keras_layer.bias.numpy().astype(np.float32), tagged=False))
        layer.params[bias_key] = str(int(keras_layer.use_bias))
        layer.weights = weights

        batchnorm = model.get_layer(bn_after[keras_layer.name])
        pre_bn_blob = f"{layer.outputs[0]}_{batchnorm.name}"
        bn_layer = NcnnLayer(
            type="BatchNorm",
            name=batchnorm.name,
            inputs=[pre_bn_blob],
            outputs=list(layer.outputs),
            params={"0": str(layer.int_param(0)), "1": f"{batchnorm.epsilon:e}"},
            weights=_batchnorm_weights(batchnorm),
        )
        layer.outputs = [pre_bn_blob]
        unfolded.extend([layer, bn_layer])
    return unfolded


def export_ncnn_unfolded(model, param_path, bin_path, fp16=False, input_size=112):
    """Export `model` to ncnn with every BatchNorm as its own layer.

    pnnx folds BatchNorm into convolutions on its own, so the model is
    converted folded and then split again by `unfold_ncnn_batchnorm`.

    Returns:
        The layer counts of the written `.param`.
    """
    from converters.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="unfolded-") as work:
        work = Path(work)
        export_onnx(fold_batchnorm(model), work / "folded.onnx", input_size=input_size)
        run_pnnx(
            work / "folded.onnx",
            work / "folded.param",
            work / "folded.bin",
            fp16=fp16,
            input_size=input_size,
        )
        layers = read_model(work / "folded.param", work / "folded.bin")
    layers = unfold_ncnn_batchnorm(layers, model)
    write_model(param_path, bin_path, layers)
    counts = count_layer_types(layers)
    check_ncnn_layers(counts, folded=False)
    return dict(counts)
