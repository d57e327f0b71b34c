"""Import insightface MobileFaceNet checkpoints (MXNet 1.x) into Keras.

The importer needs no MXNet. It reads the symbol JSON and the `.params`
arrays and builds the project's `MobileFaceNet` with the width, input size
and embedding form that the symbol implies. Then it walks both graphs in
step. Every weighted Keras layer consumes the next MXNet op on the data
path, whose kind, attributes, input connection and array shapes must match.
The first node or array that differs is named in the error, so another
network, another block layout or a params file of another model is rejected
instead of being loaded in part.

What the walk reads from the symbol and sets on the Keras model:

- the scalar ops after `data` (`(x - 127.5) * 0.0078125` in insightface),
  as the `input_normalization` layer's scale and offset;
- each BatchNorm's eps, momentum and `fix_gamma` (MXNet defaults: 1e-3, 0.9,
  True). With `fix_gamma=True` MXNet uses gamma = 1 whatever is stored;
- PReLU slopes (`LeakyReLU act_type="prelu"`). A plain ReLU imports as PReLU
  with zero slopes and a leaky ReLU as a constant slope, the same function;
- the embedding as `FullyConnected` (insightface's `pre_fc1`) or as a 1x1
  `Convolution`, followed by the `fc1` BatchNorm.

Ops that are the identity at inference (`Dropout`, `_copy`, `identity`,
`BlockGrad`, `Flatten`) are looked through. Training checkpoints also contain
the classifier `fc7_weight` (num_classes x embedding), which is returned as
a Keras kernel `(embedding, num_classes)`.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfn_tf.importers.mxnet_checkpoint import checkpoint_paths
from mfn_tf.importers.mxnet_ndarray import load_ndarrays
from mfn_tf.importers.mxnet_symbol import (
    PASS_THROUGH_OPS,
    MXNetSymbol,
    SymbolError,
    parse_bool,
    parse_tuple,
)

logger = logging.getLogger(__name__)

DATA_NAME = "data"
CLASSIFIER_WEIGHT = "fc7_weight"
CLASSIFIER_BIAS = "fc7_bias"

# MXNet 1.x BatchNorm defaults, used where the symbol omits an attribute.
MXNET_BN_EPSILON = 1e-3
MXNET_BN_MOMENTUM = 0.9
MXNET_BN_FIX_GAMMA = True
MXNET_LEAKY_SLOPE = 0.25

SCALAR_OPS = ("_minus_scalar", "_plus_scalar", "_mul_scalar", "_div_scalar", "_rminus_scalar")
BATCH_NORM_OPS = ("BatchNorm", "BatchNorm_v1")
ADD_OPS = ("elemwise_add", "_plus", "_Plus", "broadcast_add", "ElementWiseSum", "add_n")
ACTIVATION_OPS = ("LeakyReLU", "Activation", "relu")

_NOT_MOBILEFACENET_HINT = (
    "Only insightface MobileFaceNet checkpoints (fmobilefacenet with the GDC "
    "embedding, as model-y1) can be imported."
)


class MXNetImportError(ValueError):
    """A checkpoint that does not map onto the project's MobileFaceNet."""


@dataclass
class MXNetImportInfo:
    """Findings of one import: the checkpoint's architecture and its mapping."""

    symbol_path: str
    params_path: str
    mxnet_version: int = None
    width_multiplier: float = 1.0
    input_size: int = 112
    embedding_size: int = 128
    embedding_layer: str = "dense"
    input_scale: float = 1.0
    input_offset: float = 0.0
    activations: list = field(default_factory=list)  # MXNet activation kinds found
    batch_norm_settings: dict = field(default_factory=dict)  # layer: (eps, momentum, fix_gamma)
    skipped_nodes: list = field(default_factory=list)  # pass-through nodes on the path
    head_nodes: list = field(default_factory=list)  # training-head nodes after the embedding
    unused_arrays: list = field(default_factory=list)
    num_classes: int = None
    fc7_bias: np.ndarray = None

    def summary(self):
        """Format the findings as a few lines for logs and the command line."""
        lines = [
            f"symbol {self.symbol_path} (MXNet version code {self.mxnet_version})",
            f"params {self.params_path}",
            f"MobileFaceNet width {self.width_multiplier:g}, input {self.input_size}, "
            f"{self.embedding_size}-d {self.embedding_layer} embedding",
            f"input x * {self.input_scale:g} {'-' if self.input_offset < 0 else '+'} "
            f"{abs(self.input_offset):g}, "
            f"activations {', '.join(self.activations)}",
        ]
        epsilons = sorted({settings[0] for settings in self.batch_norm_settings.values()})
        lines.append(
            f"{len(self.batch_norm_settings)} BatchNorms, eps {', '.join(f'{e:g}' for e in epsilons)}"
        )
        if self.skipped_nodes:
            lines.append(f"identity at inference, skipped: {', '.join(self.skipped_nodes)}")
        if self.num_classes is not None:
            bias = " with bias" if self.fc7_bias is not None else ""
            lines.append(f"classifier fc7: {self.num_classes} classes{bias}")
        if self.unused_arrays:
            lines.append(f"unused arrays: {', '.join(self.unused_arrays)}")
        return "\n".join(lines)


def _int_attr(node, key, default):
    value = node.attrs.get(key, default)
    try:
        return int(value)
    except ValueError as error:
        raise SymbolError(f"{node.describe()}: attribute {key}={value!r} is not an integer") from error


def _float_attr(node, key, default):
    value = node.attrs.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise SymbolError(f"{node.describe()}: attribute {key}={value!r} is not a number") from error


def _bool_attr(node, key, default):
    value = node.attrs.get(key, default)
    try:
        return parse_bool(value)
    except ValueError as error:
        raise SymbolError(f"{node.describe()}: attribute {key}={value!r} is not a boolean") from error


def _tuple_attr(node, key, default):
    value = node.attrs.get(key)
    if value is None:
        return default
    try:
        return parse_tuple(value)
    except (ValueError, SyntaxError, TypeError) as error:
        raise SymbolError(f"{node.describe()}: attribute {key}={value!r} is not a tuple") from error


def _squeezed(shape):
    return tuple(dim for dim in shape if dim != 1)


def _inbound_layers(layer):
    import keras

    return [tensor._keras_history.operation for tensor in keras.tree.flatten(layer.input)]


class _Walk:
    """One lock-step walk of the MXNet data path and the Keras backbone."""

    def __init__(self, symbol, arrays, params_path, backbone, info):
        self.symbol = symbol
        self.arrays = arrays
        self.params_path = params_path
        self.backbone = backbone
        self.info = info
        self.used_arrays = set()
        self.node_of = {}  # Keras layer name -> MXNet node index of its output
        data = symbol.find_variable(DATA_NAME)
        if data is None:
            raise MXNetImportError(
                f"{symbol.path}: no input variable {DATA_NAME!r}. {_NOT_MOBILEFACENET_HINT}"
            )
        self.data = data
        on_path = symbol.descendants(data.index)
        self.ops = []
        for node in symbol.nodes:
            if node.is_variable or node.index not in on_path:
                continue
            if node.op in PASS_THROUGH_OPS:
                info.skipped_nodes.append(f"{node.name} ({node.op})")
            else:
                self.ops.append(node)
        self.position = 0

    # Errors and bookkeeping.

    def mismatch(self, node, layer, detail):
        return MXNetImportError(
            f"{self.symbol.path}: {node.describe()} does not match MobileFaceNet "
            f"layer {layer.name!r} ({type(layer).__name__}): {detail}. "
            f"{_NOT_MOBILEFACENET_HINT}"
        )

    def take(self, layer, ops, description):
        if self.position >= len(self.ops):
            last = self.ops[-1].describe() if self.ops else f"variable {DATA_NAME!r}"
            raise MXNetImportError(
                f"{self.symbol.path}: the graph ends after {last}, where "
                f"MobileFaceNet continues with layer {layer.name!r} "
                f"({description}). {_NOT_MOBILEFACENET_HINT}"
            )
        node = self.ops[self.position]
        if node.op not in ops:
            raise self.mismatch(node, layer, f"expected {description}")
        self.position += 1
        return node

    def check_input(self, node, layer):
        (source,) = _inbound_layers(layer)
        expected = self.node_of[source.name]
        actual = self.symbol.data_input(node)
        if actual.index != expected:
            raise self.mismatch(
                node,
                layer,
                f"its input is {actual.describe()}, but the layer's input "
                f"{source.name!r} corresponds to {self.symbol.nodes[expected].describe()}",
            )

    def array(self, node, position, role, shape, layer):
        name = self.symbol.weight_name(node, position)
        if name is None:
            raise self.mismatch(node, layer, f"input {position} ({role}) is not a variable")
        if name not in self.arrays:
            raise MXNetImportError(
                f"{self.params_path}: no array {name!r} ({role} of "
                f"{node.describe()}, for Keras layer {layer.name!r}). The params "
                "file belongs to another symbol or is incomplete."
            )
        value = self.arrays[name]
        if _squeezed(value.shape) == _squeezed(shape):
            # Vectors are sometimes stored as (1, C); unit axes carry no data.
            value = value.reshape(shape)
        if value.shape != tuple(shape):
            raise MXNetImportError(
                f"{self.params_path}: array {name!r} has shape {value.shape}, but "
                f"MobileFaceNet layer {layer.name!r} needs {tuple(shape)} for "
                f"the {role} of {node.describe()}."
            )
        self.used_arrays.add(name)
        return value.astype(np.float32)

    # One method per Keras layer type.

    def run(self):
        import keras

        handlers = {
            keras.layers.Rescaling: self.map_rescaling,
            keras.layers.DepthwiseConv2D: self.map_convolution,
            keras.layers.Conv2D: self.map_convolution,
            keras.layers.BatchNormalization: self.map_batch_norm,
            keras.layers.PReLU: self.map_prelu,
            keras.layers.Add: self.map_add,
            keras.layers.Dense: self.map_dense,
        }
        for layer in self.backbone.layers:
            if isinstance(layer, keras.layers.InputLayer):
                self.node_of[layer.name] = self.data.index
                continue
            if isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Flatten)):
                (source,) = _inbound_layers(layer)
                self.node_of[layer.name] = self.node_of[source.name]
                continue
            for layer_type, handler in handlers.items():
                if isinstance(layer, layer_type):
                    self.node_of[layer.name] = handler(layer)
                    break
            else:
                raise TypeError(f"the importer has no rule for Keras layer {layer.name!r}")
        self.check_rest()

    def map_rescaling(self, layer):
        scale, offset = 1.0, 0.0
        current = self.data.index
        while self.position < len(self.ops):
            node = self.ops[self.position]
            if node.op not in SCALAR_OPS or self.symbol.data_input(node).index != current:
                break
            value = _float_attr(node, "scalar", None)
            if node.op == "_minus_scalar":
                offset -= value
            elif node.op == "_plus_scalar":
                offset += value
            elif node.op == "_mul_scalar":
                scale, offset = scale * value, offset * value
            elif node.op == "_div_scalar":
                scale, offset = scale / value, offset / value
            else:  # _rminus_scalar: value - x
                scale, offset = -scale, value - offset
            current = node.index
            self.position += 1
        layer.scale = scale
        layer.offset = offset
        self.info.input_scale, self.info.input_offset = scale, offset
        return current

    def expected_padding(self, layer):
        kernel = layer.kernel_size
        (source,) = _inbound_layers(layer)
        if source.__class__.__name__ == "ZeroPadding2D":
            (top, bottom), (left, right) = source.padding
            if top != bottom or left != right:
                raise TypeError(f"asymmetric padding before {layer.name!r}")
            return (top, left)
        if layer.padding == "same":
            return (kernel[0] // 2, kernel[1] // 2)
        return (0, 0)

    def map_convolution(self, layer):
        import keras

        node = self.take(layer, ("Convolution",), "a Convolution")
        self.check_input(node, layer)
        in_channels = _inbound_layers(layer)[0].output.shape[-1]
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        filters = in_channels * layer.depth_multiplier if depthwise else layer.filters
        groups = in_channels if depthwise else layer.groups
        expected = {
            "kernel": tuple(layer.kernel_size),
            "stride": tuple(layer.strides),
            "pad": self.expected_padding(layer),
            "dilate": tuple(layer.dilation_rate),
            "num_filter": filters,
            "num_group": groups,
        }
        actual = {
            "kernel": _tuple_attr(node, "kernel", None),
            "stride": _tuple_attr(node, "stride", (1, 1)),
            "pad": _tuple_attr(node, "pad", (0, 0)),
            "dilate": _tuple_attr(node, "dilate", (1, 1)),
            "num_filter": _int_attr(node, "num_filter", -1),
            "num_group": _int_attr(node, "num_group", 1),
        }
        for key, value in expected.items():
            if actual[key] != value:
                raise self.mismatch(node, layer, f"{key} is {actual[key]}, expected {value}")
        layout = node.attrs.get("layout", "None")
        if layout not in ("None", "NCHW"):
            raise self.mismatch(node, layer, f"layout {layout} is not supported, only NCHW")
        has_bias = not _bool_attr(node, "no_bias", False)
        if has_bias and not layer.use_bias:
            raise self.mismatch(node, layer, "the convolution has a bias, MobileFaceNet's has none")

        kh, kw = layer.kernel_size
        weight = self.array(
            node, 1, "weight", (filters, in_channels // groups, kh, kw), layer
        )
        # MXNet (out, in/groups, kh, kw) -> Keras (kh, kw, in, out) or, for a
        # depthwise kernel, (kh, kw, in, multiplier).
        if depthwise:
            kernel = weight.reshape(in_channels, layer.depth_multiplier, kh, kw)
            kernel = kernel.transpose(2, 3, 0, 1)
        else:
            kernel = weight.transpose(2, 3, 1, 0)
        weights = [kernel]
        if layer.use_bias:
            bias = self.array(node, 2, "bias", (filters,), layer) if has_bias else None
            weights.append(np.zeros(filters, np.float32) if bias is None else bias)
        layer.set_weights(weights)
        return node.index

    def map_dense(self, layer):
        node = self.take(layer, ("FullyConnected",), "a FullyConnected layer")
        self.check_input(node, layer)
        units = layer.units
        in_features = _inbound_layers(layer)[0].output.shape[-1]
        num_hidden = _int_attr(node, "num_hidden", -1)
        if num_hidden != units:
            raise self.mismatch(node, layer, f"num_hidden is {num_hidden}, expected {units}")
        weight = self.array(node, 1, "weight", (units, in_features), layer)
        has_bias = not _bool_attr(node, "no_bias", False)
        if has_bias:
            bias = self.array(node, 2, "bias", (units,), layer)
        else:
            bias = np.zeros(units, np.float32)
        # The GDConv output is (N, C, 1, 1), so MXNet's NCHW flatten order is
        # the channel order, the same as Keras' NHWC flatten of (N, 1, 1, C).
        layer.set_weights([weight.T, bias])
        return node.index

    def map_batch_norm(self, layer):
        node = self.take(layer, BATCH_NORM_OPS, "a BatchNorm")
        self.check_input(node, layer)
        channels = layer.moving_mean.shape[0]
        epsilon = _float_attr(node, "eps", MXNET_BN_EPSILON)
        momentum = _float_attr(node, "momentum", MXNET_BN_MOMENTUM)
        fix_gamma = _bool_attr(node, "fix_gamma", MXNET_BN_FIX_GAMMA)
        axis = _int_attr(node, "axis", 1)
        if axis != 1:
            raise self.mismatch(node, layer, f"axis is {axis}, only the channel axis 1 is supported")

        gamma = self.array(node, 1, "gamma", (channels,), layer)
        beta = self.array(node, 2, "beta", (channels,), layer)
        moving_mean = self.array(node, 3, "moving_mean", (channels,), layer)
        moving_variance = self.array(node, 4, "moving_var", (channels,), layer)
        if fix_gamma:
            gamma = np.ones(channels, np.float32)
        if not layer.scale and not np.all(gamma == 1.0):
            # The embedding BatchNorm has no scale in Keras. gamma * (x - mean)
            # equals (gamma * x) - (gamma * mean), so gamma moves into the
            # linear layer before it and into the moving mean, exactly.
            self.fold_into_linear(layer, gamma)
            moving_mean = moving_mean * gamma

        weights = ([gamma] if layer.scale else []) + [beta, moving_mean, moving_variance]
        layer.set_weights(weights)
        layer.epsilon = epsilon
        layer.momentum = momentum
        self.info.batch_norm_settings[layer.name] = (epsilon, momentum, fix_gamma)
        return node.index

    def fold_into_linear(self, layer, gamma):
        import keras

        (source,) = _inbound_layers(layer)
        while isinstance(source, keras.layers.Flatten):
            (source,) = _inbound_layers(source)
        if not isinstance(source, (keras.layers.Dense, keras.layers.Conv2D)) or not source.use_bias:
            raise TypeError(f"cannot fold the scale of {layer.name!r} into {source.name!r}")
        kernel, bias = source.get_weights()
        source.set_weights([kernel * gamma, bias * gamma])
        logger.info("folded the scale (gamma) of %s into %s", layer.name, source.name)

    def map_prelu(self, layer):
        node = self.take(layer, ACTIVATION_OPS, "an activation (PReLU or ReLU)")
        self.check_input(node, layer)
        channels = layer.alpha.shape[-1]
        act_type = node.attrs.get("act_type", "relu" if node.op == "relu" else "leaky")
        if node.op == "LeakyReLU" and act_type == "prelu":
            name = self.symbol.weight_name(node, 1)
            shared = name in self.arrays and self.arrays[name].size == 1
            # A single stored slope is shared by all channels.
            alpha = self.array(node, 1, "gamma (PReLU slopes)", (1,) if shared else (channels,), layer)
            alpha = np.broadcast_to(alpha, (channels,))
        elif node.op == "LeakyReLU" and act_type == "leaky":
            slope = _float_attr(node, "slope", MXNET_LEAKY_SLOPE)
            alpha = np.full(channels, slope, np.float32)
        elif node.op in ("Activation", "relu") and act_type == "relu":
            alpha = np.zeros(channels, np.float32)
        else:
            raise self.mismatch(
                node, layer, f"activation {node.op} act_type={act_type} has no PReLU equivalent"
            )
        kind = act_type if node.op == "LeakyReLU" else "relu"
        if kind not in self.info.activations:
            self.info.activations.append(kind)
        layer.set_weights([alpha.reshape(layer.alpha.shape)])
        return node.index

    def map_add(self, layer):
        node = self.take(layer, ADD_OPS, "an elementwise add (residual)")
        actual = sorted(self.symbol.resolve(source).index for source in node.inputs)
        expected = sorted(self.node_of[source.name] for source in _inbound_layers(layer))
        if actual != expected:
            names = [self.symbol.nodes[index].name for index in actual]
            expected_names = [self.symbol.nodes[index].name for index in expected]
            raise self.mismatch(node, layer, f"it adds {names}, expected {expected_names}")
        return node.index

    def check_rest(self):
        """Accept what follows the embedding only if it is a training head."""
        embedding = self.node_of[self.backbone.layers[-1].name]
        downstream = self.symbol.descendants(embedding)
        for node in self.ops[self.position :]:
            if node.index not in downstream:
                raise MXNetImportError(
                    f"{self.symbol.path}: {node.describe()} lies on the data path "
                    f"but is not part of MobileFaceNet, which ends at "
                    f"{self.symbol.nodes[embedding].describe()}. {_NOT_MOBILEFACENET_HINT}"
                )
            self.info.head_nodes.append(f"{node.name} ({node.op})")


def _strip_array_prefixes(arrays, path):
    stripped = {}
    for name, value in arrays.items():
        key = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
        if key in stripped:
            raise MXNetImportError(f"{path}: array {key!r} is stored twice (as arg: and aux:).")
        stripped[key] = value
    return stripped


def _infer_architecture(symbol):
    """Read width, input size and embedding form from the symbol's ops.

    These only choose which MobileFaceNet to build; the walk then checks
    every layer, so a wrong guess here ends in an error naming a node.
    """
    data = symbol.find_variable(DATA_NAME)
    on_path = symbol.descendants(data.index) if data is not None else set()
    ops = [
        node
        for node in symbol.nodes
        if not node.is_variable and node.index in on_path and node.op not in PASS_THROUGH_OPS
    ]
    convolutions = [node for node in ops if node.op == "Convolution"]
    if not convolutions:
        return {}
    architecture = {"width_multiplier": _int_attr(convolutions[0], "num_filter", 64) / 64}
    for position, node in enumerate(ops):
        kernel = _tuple_attr(node, "kernel", (1, 1))
        if node.op == "Convolution" and _int_attr(node, "num_group", 1) > 1 and kernel[0] > 3:
            # The GDConv spans the whole final map, input_size / 16 pixels.
            architecture["input_size"] = kernel[0] * 16
            following = ops[position + 2] if position + 2 < len(ops) else None
            if following is not None and following.op == "FullyConnected":
                architecture["embedding_layer"] = "dense"
                architecture["embedding_size"] = _int_attr(following, "num_hidden", 128)
            elif following is not None and following.op == "Convolution":
                architecture["embedding_layer"] = "conv"
                architecture["embedding_size"] = _int_attr(following, "num_filter", 128)
            break
    return architecture


def import_mxnet_checkpoint(prefix, epoch, embedding_size=None):
    """Import an insightface MobileFaceNet checkpoint as a Keras backbone.

    Reads `PREFIX-symbol.json` and `PREFIX-%04d.params` (EPOCH), with numpy
    only.

    Args:
        prefix: checkpoint prefix, as passed to `mx.model.load_checkpoint`.
        epoch: checkpoint epoch.
        embedding_size: the embedding length the caller requires. None
            accepts the checkpoint's.

    Returns:
        `(backbone, fc7_kernel, info)`. `backbone` is the `MobileFaceNet`
        Keras model with the checkpoint's weights. `fc7_kernel` is the
        classifier as a float32 array of shape `(embedding_size,
        num_classes)` where the params contain `fc7_weight`, else None.
        `info` is an `MXNetImportInfo`.

    Raises:
        FileNotFoundError: the symbol or params file is missing.
        NDArrayFileError: the params file is truncated or unreadable.
        SymbolError: the symbol file is not an MXNet graph or has an
            unreadable attribute.
        MXNetImportError: the checkpoint is not a MobileFaceNet the project
            can build, or an array is missing or has the wrong shape.
    """
    symbol_path, params_path = checkpoint_paths(prefix, epoch)
    if not params_path.is_file():
        # insightface names each epoch PREFIX-NNNN.params; list those on disk.
        stem = Path(prefix).name
        epochs = sorted(
            int(path.name[len(stem) + 1 : -len(".params")])
            for path in Path(prefix).parent.glob(f"{stem}-[0-9][0-9][0-9][0-9].params")
        )
        if epochs:
            found = f"Epochs found for this prefix: {', '.join(map(str, epochs))}."
        else:
            found = f"No {stem}-NNNN.params file is in {Path(prefix).parent}; check the prefix."
        raise FileNotFoundError(
            f"MXNet params file not found: {params_path} (checkpoint {prefix},{epoch}). {found}"
        )
    symbol = MXNetSymbol.load(symbol_path)
    arrays = _strip_array_prefixes(load_ndarrays(params_path), params_path)

    try:
        return _import(symbol, arrays, symbol_path, params_path, prefix, epoch, embedding_size)
    except SymbolError as error:
        raise SymbolError(f"{symbol_path}: {error}") from error


def _import(symbol, arrays, symbol_path, params_path, prefix, epoch, embedding_size):
    from mfn_tf.model.mobilefacenet import MobileFaceNet

    architecture = _infer_architecture(symbol)
    info = MXNetImportInfo(str(symbol_path), str(params_path), mxnet_version=symbol.version)
    for key, value in architecture.items():
        setattr(info, key, value)
    if embedding_size is not None and info.embedding_size != embedding_size:
        raise MXNetImportError(
            f"{symbol_path}: the checkpoint's embedding has {info.embedding_size} "
            f"dimensions, but {embedding_size} were requested."
        )
    try:
        backbone = MobileFaceNet(
            embedding_size=info.embedding_size,
            width_multiplier=info.width_multiplier,
            input_size=info.input_size,
            embedding_layer=info.embedding_layer,
        )
    except ValueError as error:
        raise MXNetImportError(
            f"{symbol_path}: the symbol implies a network MobileFaceNet cannot "
            f"build ({error}). {_NOT_MOBILEFACENET_HINT}"
        ) from error

    walk = _Walk(symbol, arrays, params_path, backbone, info)
    walk.run()

    fc7_kernel = None
    if CLASSIFIER_WEIGHT in arrays:
        weight = arrays[CLASSIFIER_WEIGHT]
        if weight.ndim != 2 or weight.shape[1] != info.embedding_size:
            raise MXNetImportError(
                f"{params_path}: array {CLASSIFIER_WEIGHT!r} has shape {weight.shape}, "
                f"expected (num_classes, {info.embedding_size})."
            )
        fc7_kernel = np.ascontiguousarray(weight.T, dtype=np.float32)
        info.num_classes = weight.shape[0]
        walk.used_arrays.add(CLASSIFIER_WEIGHT)
        if CLASSIFIER_BIAS in arrays:
            info.fc7_bias = arrays[CLASSIFIER_BIAS].astype(np.float32).reshape(-1)
            walk.used_arrays.add(CLASSIFIER_BIAS)

    info.unused_arrays = sorted(set(arrays) - walk.used_arrays)
    if info.unused_arrays:
        logger.warning(
            "%s: %d arrays are not part of MobileFaceNet and were not imported: %s",
            params_path,
            len(info.unused_arrays),
            ", ".join(info.unused_arrays[:10]) + (" ..." if len(info.unused_arrays) > 10 else ""),
        )
    logger.info(
        "imported %s,%d: %d-d %s embedding, width %g%s",
        prefix,
        epoch,
        info.embedding_size,
        info.embedding_layer,
        info.width_multiplier,
        f", fc7 with {info.num_classes} classes" if fc7_kernel is not None else "",
    )
    logger.debug("%s", info.summary())
    return backbone, fc7_kernel, info
