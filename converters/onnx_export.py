"""Export the embedding model to ONNX with an NCHW input and PRelu nodes.

tf2onnx converts the Keras graph, whose convolutions are NHWC, by wrapping
each one in Transposes and then cancelling pairs. The exported function
takes an NCHW input and transposes it to NHWC itself, so that first
Transpose cancels too and none is left in the graph. ncnn would map a
leftover NHWC/NCHW Transpose to a Permute layer, which is slow and
sometimes wrong.

Keras computes PReLU as `relu(x) - alpha * relu(-x)`, which tf2onnx 1.17
writes as Relu, Neg, Relu, Mul and Add: five nodes, and five ncnn layers,
per activation. `fuse_prelu` turns each such pattern back into one `PRelu`.
onnxslim then folds constants, merges MatMul and Add into Gemm and the
explicit Pad of the stride-2 depthwise convolutions into their `pads`.
"""

import logging
from collections import Counter

import numpy as np

logger = logging.getLogger(__name__)

ONNX_OPSET = 13
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


class OnnxExportError(RuntimeError):
    """An ONNX graph that breaks one of the properties the export promises."""


def _consumers(graph):
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _producers(graph):
    return {output: node for node in graph.node for output in node.output}


def fuse_prelu(model):
    """Replace every `relu(x) + c * relu(-x)` pattern by `PRelu(x, -c)`.

    Matches `Add(Relu(x), Mul(Relu(Neg(x)), c))` with the operands of Add
    and Mul in either order and `c` a constant initializer whose shape is
    1 everywhere except the channel axis 1 (or a scalar). The slope is
    stored as `(channels, 1, 1)`, the shape PyTorch exports and pnnx maps
    to an ncnn PReLU layer. Edits `model` in place.

    Returns:
        The number of PRelu nodes created.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    producers = _producers(graph)
    consumers = _consumers(graph)
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {output.name for output in graph.output}

    def produced_by(name, op_type):
        node = producers.get(name)
        return node if node is not None and node.op_type == op_type else None

    def private(node):
        # An intermediate node of the pattern must feed only the pattern.
        return all(
            len(consumers.get(name, [])) == 1 and name not in graph_outputs
            for name in node.output
        )

    removed = set()
    replacements = {}  # id of the Add node: the PRelu node that replaces it
    new_initializers = []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for positive_name, negative_name in (add.input, reversed(add.input)):
            positive = produced_by(positive_name, "Relu")
            mul = produced_by(negative_name, "Mul")
            if positive is None or mul is None:
                continue
            for relu_name, constant_name in (mul.input, reversed(mul.input)):
                negative_relu = produced_by(relu_name, "Relu")
                if negative_relu is None or constant_name not in initializers:
                    continue
                neg = produced_by(negative_relu.input[0], "Neg")
                if neg is None or neg.input[0] != positive.input[0]:
                    continue
                if not all(private(node) for node in (positive, mul, negative_relu, neg)):
                    continue
                constant = numpy_helper.to_array(initializers[constant_name])
                slope = _prelu_slope(constant)
                if slope is None:
                    continue
                slope_name = f"{add.name or add.output[0]}_prelu_slope"
                new_initializers.append(numpy_helper.from_array(slope, slope_name))
                prelu = onnx.helper.make_node(
                    "PRelu",
                    [positive.input[0], slope_name],
                    list(add.output),
                    name=(add.name or add.output[0]).rsplit("/", 1)[0],
                )
                replacements[id(add)] = prelu
                removed.update(id(node) for node in (positive, mul, negative_relu, neg))
                break
            if id(add) in replacements:
                break

    nodes = []
    for node in graph.node:
        if id(node) in removed:
            continue
        nodes.append(replacements.get(id(node), node))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_initializers)
    _remove_unused_initializers(graph)
    return len(replacements)


def _prelu_slope(constant):
    """Return the PRelu slope `-constant` as `(channels, 1, 1)`, or None."""
    constant = np.asarray(constant, dtype=np.float32)
    if constant.size == 1:
        return (-constant).reshape(1)
    if constant.ndim != 4 or constant.shape[0] != 1 or constant.shape[2:] != (1, 1):
        return None
    return (-constant).reshape(constant.shape[1], 1, 1)


def _remove_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input}
    used.update(output.name for output in graph.output)
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _rename_value(graph, old, new):
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for index, name in enumerate(node.output):
            if name == old:
                node.output[index] = new
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def count_op_types(model):
    """Return a `Counter` of the graph's node types."""
    return Counter(node.op_type for node in model.graph.node)


def ops_after_input(model):
    """Return the op types of the nodes that read the graph input."""
    input_name = model.graph.input[0].name
    return [node.op_type for node in model.graph.node if input_name in node.input]


def _batchnorm_as_fused_op(layer):
    """Return a callable that runs an inference BatchNorm as FusedBatchNormV3.

    tf2onnx maps that op to one ONNX BatchNormalization node, where Keras'
    own inference arithmetic would become loose Mul and Add nodes.
    """
    import tensorflow as tf

    def call(inputs, training=None, mask=None):
        if len(inputs.shape) != 4:
            return layer(inputs, training=False)
        channels = inputs.shape[-1]
        gamma = layer.gamma if layer.scale else tf.ones((channels,), inputs.dtype)
        beta = layer.beta if layer.center else tf.zeros((channels,), inputs.dtype)
        outputs, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=gamma,
            offset=beta,
            mean=layer.moving_mean,
            variance=layer.moving_variance,
            epsilon=layer.epsilon,
            data_format="NHWC",
            is_training=False,
        )
        return outputs

    return call


def _tf_function_nchw(model, input_size, keep_batchnorm):
    import keras
    import tensorflow as tf

    input_spec = tf.TensorSpec((1, 3, input_size, input_size), tf.float32, name=INPUT_NAME)

    def replace_batchnorm(operation):
        if isinstance(operation, keras.layers.BatchNormalization):
            return _batchnorm_as_fused_op(operation)
        return operation

    @tf.function(input_signature=[input_spec])
    def embed_nchw(image):
        image = tf.transpose(image, [0, 2, 3, 1])
        if keep_batchnorm:
            return model._run_through_graph(image, operation_fn=replace_batchnorm)
        return model(image, training=False)

    return embed_nchw.get_concrete_function()


def _run_tf2onnx(concrete_function, keep_batchnorm):
    """Convert a concrete function with tf2onnx's default optimizers.

    With `keep_batchnorm`, the back-to-back optimizer, which folds a
    BatchNormalization into the Conv before it, is left out.
    """
    import tensorflow as tf
    from tf2onnx import optimizer, tf_loader
    from tf2onnx.tfonnx import process_tf_graph

    input_names = [t.name for t in concrete_function.inputs if t.dtype != tf.resource]
    output_names = [t.name for t in concrete_function.outputs]
    graph_def = tf_loader.from_function(concrete_function, input_names, output_names)
    optimizers = dict(optimizer._get_optimizers())
    if keep_batchnorm:
        del optimizers["remove_back_to_back"]
    with tf.Graph().as_default() as tf_graph:
        tf.import_graph_def(graph_def, name="")
        onnx_graph = process_tf_graph(
            tf_graph,
            opset=ONNX_OPSET,
            input_names=input_names,
            output_names=output_names,
        )
        onnx_graph = optimizer.optimize_graph(onnx_graph, optimizers=optimizers)
        onnx_model = onnx_graph.make_model("mobilefacenet embedding")
    _rename_value(onnx_model.graph, onnx_model.graph.input[0].name, INPUT_NAME)
    _rename_value(onnx_model.graph, onnx_model.graph.output[0].name, OUTPUT_NAME)
    return onnx_model


def _slim(onnx_model):
    import onnxslim

    # FusionConvBN, FusionConvMul and FusionConvAdd would fold an unfolded
    # BatchNorm into the Conv before it. Folding is `fold_batchnorm`'s job,
    # and the unfolded export exists to keep BatchNorm separate.
    return onnxslim.slim(
        onnx_model,
        skip_fusion_patterns=["FusionConvBN", "FusionConvMul", "FusionConvAdd"],
    )


def convert_to_onnx(model, input_size=112, keep_batchnorm=False):
    """Convert a Keras embedding model to an ONNX `ModelProto`.

    The graph takes `image`, float32 `(1, 3, input_size, input_size)` RGB
    pixels in 0-255, and returns `embedding`, float32 `(1, D)`.

    Args:
        model: a functional Keras model from NHWC images to embeddings.
        input_size: side of the square input in pixels.
        keep_batchnorm: write each BatchNorm of `model` as an ONNX
            BatchNormalization node instead of letting tf2onnx fold it into
            the Conv before it. Only the unfolded reference export for
            benchmarks needs this.
    """
    concrete_function = _tf_function_nchw(model, input_size, keep_batchnorm)
    onnx_model = _run_tf2onnx(concrete_function, keep_batchnorm)
    # onnxslim first removes the Transpose pairs that tf2onnx leaves between
    # the nodes of a PReLU pattern, then cleans up after the fusion.
    onnx_model = _slim(onnx_model)
    prelu_count = fuse_prelu(onnx_model)
    logger.debug("replaced %d Relu/Neg/Mul/Add patterns by PRelu", prelu_count)
    onnx_model = _slim(onnx_model)
    onnx_model.producer_name = "mfn-tf"
    return onnx_model


def check_onnx_graph(onnx_model, prelu_layers, folded=True):
    """Raise OnnxExportError unless the graph has the promised form.

    Checks: no Transpose reads the input, every PReLU layer of the Keras
    model became one PRelu node and no Relu/Neg pattern is left, and, for a
    folded model, no BatchNormalization node.
    """
    ops = count_op_types(onnx_model)
    after_input = ops_after_input(onnx_model)
    if "Transpose" in after_input:
        raise OnnxExportError(
            f"a Transpose follows the ONNX input (nodes after it: {after_input}); "
            "the NCHW input did not cancel tf2onnx's layout change"
        )
    if ops.get("PRelu", 0) != prelu_layers or ops.get("Neg", 0):
        raise OnnxExportError(
            f"expected {prelu_layers} PRelu nodes and no Neg, found "
            f"{ops.get('PRelu', 0)} PRelu and {ops.get('Neg', 0)} Neg: the "
            "PReLU pattern written by tf2onnx was not fully fused"
        )
    if folded and ops.get("BatchNormalization", 0):
        raise OnnxExportError(
            f"{ops['BatchNormalization']} BatchNormalization nodes remain in a "
            "folded model"
        )


def export_onnx(model, path, input_size=112, keep_batchnorm=False):
    """Write `model` to `path` as ONNX and return the graph's op counts.

    Raises:
        OnnxExportError: the graph breaks a property of `check_onnx_graph`.
    """
    import keras
    import onnx

    onnx_model = convert_to_onnx(model, input_size=input_size, keep_batchnorm=keep_batchnorm)
    prelu_layers = sum(isinstance(layer, keras.layers.PReLU) for layer in model.layers)
    folded = not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    check_onnx_graph(onnx_model, prelu_layers, folded=folded)
    onnx.save(onnx_model, str(path))
    return dict(count_op_types(onnx_model))
