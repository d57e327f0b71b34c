"""ONNX export: PRelu fusion, NCHW input, folded graph, onnxruntime parity."""

import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.fold_batchnorm import fold_batchnorm
from converters.onnx_export import (
    OnnxExportError,
    check_onnx_graph,
    convert_to_onnx,
    count_op_types,
    fuse_prelu,
    ops_after_input,
)
from converters.runtimes import OnnxRuntimeRunner
from mfn_tf.model.mobilefacenet import MobileFaceNet
from test_fold_batchnorm import randomize_batchnorm

CHANNELS = 3


def prelu_pattern_model(swap_operands=False, share_relu=False):
    """`relu(x) + c * relu(-x)` as tf2onnx writes Keras' PReLU, c = -alpha."""
    alpha = np.array([0.25, 0.5, 2.0], dtype=np.float32)
    constant = numpy_helper.from_array((-alpha).reshape(1, CHANNELS, 1, 1), "c")
    mul_inputs = ["c", "negative_relu"] if swap_operands else ["negative_relu", "c"]
    add_inputs = ["mul", "positive"] if swap_operands else ["positive", "mul"]
    nodes = [
        helper.make_node("Relu", ["x"], ["positive"]),
        helper.make_node("Neg", ["x"], ["negative"]),
        helper.make_node("Relu", ["negative"], ["negative_relu"]),
        helper.make_node("Mul", mul_inputs, ["mul"]),
        helper.make_node("Add", add_inputs, ["y"], name="block/prelu/add"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 4, 4])]
    if share_relu:
        outputs.append(helper.make_tensor_value_info("positive", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "prelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, 4, 4])],
        outputs,
        initializer=[constant],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model, alpha


def run_onnx(model, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(["y"], {"x": x})[0]


@pytest.mark.parametrize("swap_operands", [False, True])
def test_fuse_prelu_replaces_pattern(swap_operands):
    model, alpha = prelu_pattern_model(swap_operands)
    x = np.random.default_rng(0).normal(size=(1, CHANNELS, 4, 4)).astype(np.float32)
    expected = np.where(x > 0, x, alpha.reshape(1, CHANNELS, 1, 1) * x)

    assert fuse_prelu(model) == 1
    assert dict(count_op_types(model)) == {"PRelu": 1}
    np.testing.assert_allclose(run_onnx(model, x), expected, atol=1e-6)
    slope = numpy_helper.to_array(model.graph.initializer[0])
    assert slope.shape == (CHANNELS, 1, 1)


def test_fuse_prelu_keeps_shared_nodes():
    model, _ = prelu_pattern_model(share_relu=True)
    assert fuse_prelu(model) == 0
    assert count_op_types(model)["Neg"] == 1


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_batchnorm(MobileFaceNet(width_multiplier=0.25))


@pytest.fixture(scope="module")
def folded_onnx(tiny_model):
    return convert_to_onnx(fold_batchnorm(tiny_model))


def test_folded_graph_ops(folded_onnx):
    ops = count_op_types(folded_onnx)
    assert ops["PRelu"] == 33
    assert ops["Conv"] == 32 + 17
    assert ops["Gemm"] == 1
    for absent in ("BatchNormalization", "Transpose", "Pad", "Relu", "Neg"):
        assert absent not in ops, absent


def test_no_transpose_after_input(folded_onnx):
    assert ops_after_input(folded_onnx) == ["Mul"]


def test_input_output_names_and_shapes(folded_onnx):
    (graph_input,) = folded_onnx.graph.input
    (graph_output,) = folded_onnx.graph.output
    assert graph_input.name == "image"
    assert graph_output.name == "embedding"
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == [1, 3, 112, 112]


def test_onnxruntime_matches_keras(folded_onnx, tiny_model, tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(folded_onnx, str(path))
    faces = np.random.default_rng(0).uniform(0, 255, (4, 112, 112, 3)).astype(np.float32)
    expected = np.asarray(tiny_model(faces, training=False))
    actual = OnnxRuntimeRunner(path).embed(faces)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.fixture(scope="module")
def unfolded_onnx(tiny_model):
    return convert_to_onnx(tiny_model, keep_batchnorm=True)


def test_keep_batchnorm_writes_batchnorm_nodes(tiny_model, unfolded_onnx):
    four_d_batchnorms = sum(
        isinstance(layer, keras.layers.BatchNormalization) and len(layer.input.shape) == 4
        for layer in tiny_model.layers
    )
    assert count_op_types(unfolded_onnx)["BatchNormalization"] == four_d_batchnorms
    check_onnx_graph(unfolded_onnx, prelu_layers=33, folded=False)


def test_check_rejects_batchnorm_in_folded(unfolded_onnx):
    with pytest.raises(OnnxExportError, match="BatchNormalization"):
        check_onnx_graph(unfolded_onnx, prelu_layers=33, folded=True)
