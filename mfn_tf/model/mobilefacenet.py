"""MobileFaceNet: Chen et al., "MobileFaceNets: Efficient CNNs for Accurate
Real-Time Face Verification on Mobile Devices", 2018, arXiv:1804.07573.

The backbone maps RGB pixels in 0-255 to a 128-d embedding. It follows the
paper's Table 1 and insightface's `fmobilefacenet` symbol (model-y1), so that
insightface checkpoints import layer for layer:

- the input is normalised inside the model as `(x - 127.5) / 128`;
- every convolution has no bias and is followed by BatchNorm (eps 1e-3,
  momentum 0.9, MXNet's defaults as insightface used them);
- stride-2 convolutions pad one pixel on every side, like MXNet's
  `pad=(1, 1)`, not TensorFlow's asymmetric "same" padding;
- the embedding is a dense layer with bias on the flattened GDConv output,
  then BatchNorm with a fixed scale and eps 2e-5 (insightface's `fc1`).

Layer names are fixed. Weight-decay groups, the MXNet importer and the
converters find layers by these names:

    input_normalization
    stem_conv, stem_bn, stem_prelu                 conv3x3/2, 64
    stem_dw_conv, stem_dw_bn, stem_dw_prelu        depthwise conv3x3, 64
    stage{s}_block{b}_{expand,dw,project}_{conv,bn}, ..._{expand,dw}_prelu,
    stage{s}_block{b}_add                          bottlenecks, s from 1
    last_conv, last_bn, last_prelu                 conv1x1, 512
    gdc_conv, gdc_bn                               linear GDConv 7x7
    embedding_flatten, embedding_dense             linear to 128
      (or embedding_conv, embedding_flatten with embedding_layer="conv")
    embedding_bn                                   BatchNorm, fixed scale
"""

import math

import keras

from mfn_tf.model.batch_norm import FusedBatchNormalization

INPUT_SIZE = 112
PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0

# Bottleneck rows of the paper's Table 1: expansion t, output channels c,
# repeats n, stride s of the first repeat. Feature maps at 112x112 input.
BOTTLENECKS = (
    (2, 64, 5, 2),  # 56x56 -> 28x28
    (4, 128, 1, 2),  # 28x28 -> 14x14
    (2, 128, 6, 1),  # 14x14
    (4, 128, 1, 2),  # 14x14 -> 7x7
    (2, 128, 2, 1),  # 7x7
)
STEM_CHANNELS = 64  # conv3x3/2 and depthwise conv3x3, 112x112 -> 56x56
LAST_CHANNELS = 512  # conv1x1 on the 7x7 map before the GDConv
EMBEDDING_SIZE = 128
TOTAL_STRIDE = 16

# MXNet's BatchNorm defaults, which insightface's MobileFaceNet body uses.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9
# insightface's `fc1` BatchNorm on the embedding.
EMBEDDING_BN_EPSILON = 2e-5
# MXNet initialises PReLU slopes to 0.25.
PRELU_INIT = 0.25

EMBEDDING_LAYERS = ("dense", "conv")


def _kernel_initializer():
    # insightface: Xavier(rnd_type="gaussian", factor_type="out", magnitude=2).
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def make_divisible(channels, divisor=8):
    """Round a scaled channel count to a multiple of `divisor`, as MobileNetV2
    does, never dropping more than 10% below the scaled value."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def _pad_for_stride(x, kernel_size, strides, name):
    """Pad like MXNet (`pad = kernel // 2` on each side) where strides > 1.

    Stride 1 with "same" padding is already symmetric. Stride 2 with "same"
    pads only the bottom and right in TensorFlow, which shifts the sampling
    grid by a pixel against MXNet.
    """
    if strides == 1 or kernel_size == 1:
        return x, "same"
    x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    return x, "valid"


def apply_conv_bn(
    x,
    filters,
    kernel_size,
    strides=1,
    depthwise=False,
    activation=True,
    name=None,
):
    """Convolution (or depthwise), BatchNorm and, if `activation`, PReLU.

    Creates `{name}_conv`, `{name}_bn` and `{name}_prelu`.
    """
    x, padding = _pad_for_stride(x, kernel_size, strides, name)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            depthwise_initializer=_kernel_initializer(),
            name=f"{name}_conv",
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            kernel_initializer=_kernel_initializer(),
            name=f"{name}_conv",
        )(x)
    x = FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    if activation:
        x = keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(PRELU_INIT),
            shared_axes=[1, 2],
            name=f"{name}_prelu",
        )(x)
    return x


def apply_bottleneck(x, expansion, filters, strides, name):
    """Inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project.

    The residual add is used where the stride is 1 and the channel count is
    unchanged, so the first block of a stride-1 row with new channels has none.
    """
    in_channels = x.shape[-1]
    shortcut = x
    x = apply_conv_bn(x, in_channels * expansion, 1, name=f"{name}_expand")
    x = apply_conv_bn(x, None, 3, strides, depthwise=True, name=f"{name}_dw")
    x = apply_conv_bn(x, filters, 1, activation=False, name=f"{name}_project")
    if strides == 1 and in_channels == filters:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def MobileFaceNet(
    embedding_size=EMBEDDING_SIZE,
    width_multiplier=1.0,
    input_size=INPUT_SIZE,
    embedding_layer="dense",
    name="mobilefacenet",
):
    """Build the MobileFaceNet backbone as a Keras functional model.

    Args:
        embedding_size: length of the output embedding (128 in the paper).
        width_multiplier: scales every channel count, rounded to a multiple
            of 8. 1.0 is the paper's network.
        input_size: side of the square RGB input in pixels. It must be a
            multiple of 16; the GDConv kernel is `input_size // 16`.
        embedding_layer: "dense" (insightface's `pre_fc1`) or "conv" (a 1x1
            convolution, the paper's "linear conv1x1") for the linear layer
            after the GDConv.
        name: model name.

    Returns:
        A `keras.Model` from a `(batch, input_size, input_size, 3)` float
        tensor of RGB pixels in 0-255 to a `(batch, embedding_size)` tensor.
    """
    if not isinstance(embedding_size, int) or embedding_size < 1:
        raise ValueError(
            "`embedding_size` must be a positive integer. "
            f"Received: embedding_size={embedding_size!r}"
        )
    if not width_multiplier > 0:
        raise ValueError(
            "`width_multiplier` must be positive. "
            f"Received: width_multiplier={width_multiplier!r}"
        )
    if not isinstance(input_size, int) or input_size < TOTAL_STRIDE or (
        input_size % TOTAL_STRIDE
    ):
        raise ValueError(
            f"`input_size` must be a multiple of {TOTAL_STRIDE}, such as 112. "
            f"Received: input_size={input_size!r}"
        )
    if embedding_layer not in EMBEDDING_LAYERS:
        raise ValueError(
            f"`embedding_layer` must be one of {EMBEDDING_LAYERS}. "
            f"Received: embedding_layer={embedding_layer!r}"
        )

    def scaled(channels):
        if width_multiplier == 1.0:
            return channels
        return make_divisible(channels * width_multiplier)

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = keras.layers.Rescaling(
        PIXEL_SCALE, offset=-PIXEL_MEAN * PIXEL_SCALE, name="input_normalization"
    )(inputs)

    # Stem: 112x112 -> 56x56.
    x = apply_conv_bn(x, scaled(STEM_CHANNELS), 3, strides=2, name="stem")
    x = apply_conv_bn(x, None, 3, depthwise=True, name="stem_dw")

    # Bottlenecks: 56x56 -> 7x7.
    for stage, (expansion, channels, repeats, strides) in enumerate(
        BOTTLENECKS, start=1
    ):
        for block in range(repeats):
            x = apply_bottleneck(
                x,
                expansion,
                scaled(channels),
                strides if block == 0 else 1,
                name=f"stage{stage}_block{block}",
            )

    x = apply_conv_bn(x, scaled(LAST_CHANNELS), 1, name="last")

    # Linear GDConv: a depthwise conv as large as the map, 7x7 -> 1x1.
    gdc_kernel = input_size // TOTAL_STRIDE
    x = keras.layers.DepthwiseConv2D(
        gdc_kernel,
        padding="valid",
        use_bias=False,
        depthwise_initializer=_kernel_initializer(),
        name="gdc_conv",
    )(x)
    x = FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="gdc_bn"
    )(x)

    # Linear layer to the embedding, then insightface's fc1 BatchNorm.
    if embedding_layer == "conv":
        x = keras.layers.Conv2D(
            embedding_size,
            1,
            kernel_initializer=_kernel_initializer(),
            name="embedding_conv",
        )(x)
        x = keras.layers.Flatten(name="embedding_flatten")(x)
    else:
        x = keras.layers.Flatten(name="embedding_flatten")(x)
        x = keras.layers.Dense(
            embedding_size,
            kernel_initializer=_kernel_initializer(),
            name="embedding_dense",
        )(x)
    outputs = FusedBatchNormalization(
        epsilon=EMBEDDING_BN_EPSILON,
        momentum=BN_MOMENTUM,
        scale=False,
        name="embedding_bn",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def count_madds(model):
    """Count the multiply-adds of one forward pass of a Keras model.

    Counts convolutions, depthwise convolutions and dense layers, as the
    MobileNet and MobileFaceNet papers do. BatchNorm, activations, padding
    and adds are left out.

    Returns:
        The count as an int, for a batch of one.
    """
    total = 0
    for layer in _iter_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += height * width * kh * kw * channels
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1] // layer.groups
            total += height * width * kh * kw * in_channels * filters
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.kernel.shape)
    return total


def _iter_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _iter_layers(layer)
        else:
            yield layer
