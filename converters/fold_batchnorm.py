"""Fold inference-mode BatchNorm into the linear layer before it.

In inference mode a BatchNorm is a per-channel affine map,

    y = gamma * (x - mean) / sqrt(variance + epsilon) + beta = s * x + t,

so after a Conv2D, DepthwiseConv2D or Dense layer it folds into that
layer's kernel and bias:

    kernel' = kernel * s   (per output channel),
    bias'   = (bias - mean) * s + beta.

The folded graph has one layer less per BatchNorm, which every runtime
(TFLite, ONNX, ncnn) then runs as a single convolution with bias.
"""

import logging

import keras
import numpy as np

logger = logging.getLogger(__name__)

# Exact types only: subclasses such as SeparableConv2D or Conv2DTranspose
# keep their kernels in other layouts.
LINEAR_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)


def batchnorm_scale_offset(gamma, beta, mean, variance, epsilon):
    """Return the per-channel `(s, t)` of `y = s * x + t` for a BatchNorm.

    Computed in float64 so that folding adds no rounding beyond the final
    cast to the layer's dtype.
    """
    gamma, beta, mean, variance = (
        np.asarray(value, dtype=np.float64) for value in (gamma, beta, mean, variance)
    )
    scale = gamma / np.sqrt(variance + epsilon)
    offset = beta - mean * scale
    return scale, offset


def fold_into_kernel(kernel, bias, scale, offset, depthwise=False):
    """Return `(kernel', bias')` of a linear layer followed by `s * x + t`.

    `kernel` has its output channels on the last axis (Conv2D `(kh, kw, in,
    out)`, Dense `(in, out)`), except a depthwise kernel `(kh, kw, in,
    multiplier)`, whose output channel `i * multiplier + m` is
    `kernel[..., i, m]`. `bias` may be None (a layer without bias).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    if depthwise:
        flat_shape = kernel.shape[:-2] + (kernel.shape[-2] * kernel.shape[-1],)
        folded_kernel = (kernel.reshape(flat_shape) * scale).reshape(kernel.shape)
    else:
        folded_kernel = kernel * scale
    if bias is None:
        bias = np.zeros_like(scale)
    folded_bias = np.asarray(bias, dtype=np.float64) * scale + offset
    return folded_kernel, folded_bias


def _batchnorm_parameters(layer):
    channels = layer.moving_mean.shape[0]
    gamma = layer.gamma.numpy() if layer.scale else np.ones(channels)
    beta = layer.beta.numpy() if layer.center else np.zeros(channels)
    return batchnorm_scale_offset(
        gamma,
        beta,
        layer.moving_mean.numpy(),
        layer.moving_variance.numpy(),
        layer.epsilon,
    )


def _producer(tensor):
    return tensor._keras_history.operation


def _consumer_counts(model):
    counts = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.input_tensors:
                counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    return counts


def _is_channels_last_batchnorm(layer, rank):
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axis = layer.axis if isinstance(layer.axis, int) else None
    return axis in (-1, rank - 1)


def _is_foldable_linear(layer):
    if type(layer) not in LINEAR_LAYER_TYPES:
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    return keras.activations.serialize(layer.activation) in ("linear", None)


def find_foldable_pairs(model):
    """Find the BatchNorms of a functional model that fold into a layer.

    A BatchNorm on the channel (last) axis folds when its input comes from
    a linear Conv2D, DepthwiseConv2D or Dense layer that feeds nothing
    else. The input may also pass through a Flatten of a 1x1 feature map,
    as after the embedding layer built as a 1x1 convolution.

    Returns:
        A list of `(linear_layer_name, batchnorm_layer_name)` pairs in
        graph order.
    """
    consumers = _consumer_counts(model)
    pairs = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if node.is_input or len(node.input_tensors) != 1:
                continue
            tensor = node.input_tensors[0]
            if not _is_channels_last_batchnorm(layer, len(tensor.shape)):
                continue
            producer = _producer(tensor)
            if isinstance(producer, keras.layers.Flatten):
                if consumers.get(id(tensor), 0) != 1:
                    continue
                tensor = producer._inbound_nodes[0].input_tensors[0]
                if len(tensor.shape) != 4 or tuple(tensor.shape[1:3]) != (1, 1):
                    continue
                producer = _producer(tensor)
            if _is_foldable_linear(producer) and consumers.get(id(tensor), 0) == 1:
                pairs.append((producer.name, layer.name))
    return pairs


def _clone_layer(layer, use_bias=None):
    config = layer.get_config()
    if use_bias is not None:
        config["use_bias"] = use_bias
    return layer.__class__.from_config(config)


def fold_batchnorm(model, name=None):
    """Return a copy of a functional model with its BatchNorms folded.

    Every BatchNorm that `find_foldable_pairs` lists disappears and its
    linear layer gains a bias. Other layers are copied with their weights
    and keep their names, so the result's layer names are the original's
    without the folded BatchNorms. Nested models are not searched: pass the
    backbone (`mfn_tf.model.loading.get_backbone`).

    Raises:
        ValueError: `model` is not a functional model.
    """
    if not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"fold_batchnorm needs a functional Keras model; {model.name!r} is a "
            f"{type(model).__name__}. Rebuild it with the functional API."
        )
    pairs = find_foldable_pairs(model)
    folded_into = {linear: bn for linear, bn in pairs}
    folded_bns = set(folded_into.values())

    tensors = {}
    new_inputs = []
    for tensor in model.inputs:
        layer = _producer(tensor)
        new_input = keras.Input(
            batch_shape=tensor.shape, dtype=tensor.dtype, name=layer.name
        )
        tensors[id(tensor)] = new_input
        new_inputs.append(new_input)

    # Weights are set once the copied layers are built by their first call.
    weight_updates = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.operation
            args, kwargs = node.arguments.fill_in(tensors)
            if layer.name in folded_bns:
                outputs = args[0]
            elif layer.name in folded_into:
                new_layer = _clone_layer(layer, use_bias=True)
                outputs = new_layer(*args, **kwargs)
                weight_updates.append((new_layer, layer, folded_into[layer.name]))
            else:
                new_layer = _clone_layer(layer)
                outputs = new_layer(*args, **kwargs)
                new_layer.set_weights(layer.get_weights())
            for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(old)] = new

    for new_layer, layer, bn_name in weight_updates:
        scale, offset = _batchnorm_parameters(model.get_layer(bn_name))
        bias = layer.bias.numpy() if layer.use_bias else None
        kernel, bias = fold_into_kernel(
            layer.kernel.numpy(),
            bias,
            scale,
            offset,
            depthwise=isinstance(layer, keras.layers.DepthwiseConv2D),
        )
        dtype = new_layer.bias.dtype
        new_layer.kernel.assign(kernel.astype(dtype))
        new_layer.bias.assign(bias.astype(dtype))

    outputs = [tensors[id(tensor)] for tensor in model.outputs]
    # A single tensor rather than a one-element list, so that calling the
    # model with an array matches its input structure.
    if len(outputs) == 1:
        outputs = outputs[0]
    if len(new_inputs) == 1:
        new_inputs = new_inputs[0]
    logger.debug("folded %d BatchNorm layers into %s", len(pairs), model.name)
    return keras.Model(new_inputs, outputs, name=name or model.name)
