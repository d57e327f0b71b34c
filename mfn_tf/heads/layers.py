"""Classification heads (insightface's `fc7`) that turn embeddings into logits.

Every head is called as `head([embedding, label])` and returns
`(batch, num_classes)` float32 logits for
`SparseCategoricalCrossentropy(from_logits=True)`. Every head keeps its
class centres in one weight named `kernel` of shape
`(embedding_size, num_classes)`, with insightface's initializer
(normal, stddev 0.01). A softmax-pretrained `fc7` kernel can therefore be
assigned unchanged to an ArcFace `fc7`, where its columns become the class
centres. Keras' `.weights.h5` files key layers by class, not by name, so
`load_weights` does not carry it across head classes: copy the kernel.

The heads compute in float32 by default, also under a `mixed_float16` or
`mixed_bfloat16` global policy, and cast half-precision embeddings to
float32 on input. float16 resolves logits near s = 64 only to 1/32 and
angles near theta = 0 only to about 0.03 rad, and bfloat16 is coarser.
"""

import keras
from keras import ops

from mfn_tf.heads import margins

# insightface initialises fc7_weight with mx.init.Normal(0.01).
KERNEL_STDDEV = 0.01
# Floor on the squared norm in L2 normalisation, as in tf.math.l2_normalize.
_L2_EPSILON = 1e-12
_HALF_PRECISION = ("float16", "bfloat16")


def l2_normalize(x, axis=-1):
    """Divide `x` by its L2 norm along `axis`."""
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, _L2_EPSILON))


class _ClassifierHead(keras.layers.Layer):
    """Base of the heads: the `kernel` weight, input checks and the config."""

    def __init__(self, num_classes, kernel_initializer=None, **kwargs):
        # A head computes in float32 unless the caller asks for a dtype.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(
                "`num_classes` must be an integer >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        if self.compute_dtype in _HALF_PRECISION:
            raise ValueError(
                f"{type(self).__name__} must compute in float32, because its "
                "logits and margins lose too much precision in "
                f"{self.compute_dtype}. Leave `dtype` unset (float32). "
                f"Received: dtype={self.dtype_policy.name!r}"
            )
        self.num_classes = num_classes
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=KERNEL_STDDEV)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        embedding_shape = self._split_shape(input_shape)[0]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(embedding_shape[-1], self.num_classes),
            initializer=self.kernel_initializer,
        )

    def _split_shape(self, input_shape):
        is_pair_of_shapes = (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) == 2
            and all(isinstance(shape, (list, tuple)) for shape in input_shape)
        )
        if not is_pair_of_shapes:
            raise ValueError(
                f"{type(self).__name__} takes [embedding, label]. "
                f"Received input shape: {input_shape!r}"
            )
        embedding_shape, label_shape = input_shape
        if len(embedding_shape) != 2:
            raise ValueError(
                f"{type(self).__name__} takes an embedding of shape "
                f"(batch, embedding_size). Received: {embedding_shape!r}"
            )
        return embedding_shape, label_shape

    def _split_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(
                f"{type(self).__name__} takes a list [embedding, label]. "
                f"Received: {type(inputs).__name__}"
            )
        embedding, label = inputs
        # Labels arrive as (batch,) or (batch, 1), int or float.
        label = ops.cast(ops.reshape(label, (-1,)), "int32")
        return embedding, label

    def compute_output_shape(self, input_shape):
        embedding_shape = self._split_shape(input_shape)[0]
        return (embedding_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="mfn_tf")
class SoftmaxHead(_ClassifierHead):
    """Plain softmax classifier: logits = embedding @ kernel.

    insightface's loss type 0 without the bias, used for the softmax
    pretraining stage. No normalisation and no margin. The label input is
    accepted so that every head has the same signature, and ignored.
    """

    def call(self, inputs):
        embedding, _ = self._split_inputs(inputs)
        return ops.matmul(embedding, self.kernel)


class _CosineHead(_ClassifierHead):
    """Base of the margin heads: cosines of L2-normalised embedding and centres."""

    def __init__(self, num_classes, s=margins.DEFAULT_SCALE, **kwargs):
        super().__init__(num_classes, **kwargs)
        if not s > 0:
            raise ValueError(f"The scale `s` must be positive. Received: s={s!r}")
        self.s = s

    def call(self, inputs):
        embedding, label = self._split_inputs(inputs)
        cos_theta = ops.matmul(
            l2_normalize(embedding, axis=-1), l2_normalize(self.kernel, axis=0)
        )
        onehot = ops.one_hot(label, self.num_classes, dtype=cos_theta.dtype)
        return self.margin_logits(cos_theta, onehot)

    def margin_logits(self, cos_theta, onehot):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config["s"] = self.s
        return config


@keras.saving.register_keras_serializable(package="mfn_tf")
class ArcFace(_CosineHead):
    """ArcFace head (insightface loss type 4): s * cos(theta + m) on the target.

    Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", arXiv:1801.07698. Where theta + m passes pi, the target
    logit is s * (cos(theta) - m * sin(m)), insightface's fallback. With
    `easy_margin`, the margin applies only where cos(theta) > 0. See
    `margins.arcface_target`.
    """

    def __init__(
        self,
        num_classes,
        s=margins.DEFAULT_SCALE,
        m=margins.ARCFACE_MARGIN,
        easy_margin=False,
        **kwargs,
    ):
        super().__init__(num_classes, s=s, **kwargs)
        margins.arcface_constants(m)  # raises on a margin outside [0, pi/2)
        self.m = m
        self.easy_margin = bool(easy_margin)

    def margin_logits(self, cos_theta, onehot):
        return margins.arcface_logits(
            cos_theta, onehot, self.s, self.m, self.easy_margin
        )

    def get_config(self):
        config = super().get_config()
        config.update({"m": self.m, "easy_margin": self.easy_margin})
        return config


@keras.saving.register_keras_serializable(package="mfn_tf")
class CosFace(_CosineHead):
    """CosFace head (insightface loss type 2): s * (cos(theta) - m) on the target.

    Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", arXiv:1801.09414.
    """

    def __init__(
        self, num_classes, s=margins.DEFAULT_SCALE, m=margins.COSFACE_MARGIN, **kwargs
    ):
        super().__init__(num_classes, s=s, **kwargs)
        if not m >= 0:
            raise ValueError(f"The CosFace margin `m` must be >= 0. Received: m={m!r}")
        self.m = m

    def margin_logits(self, cos_theta, onehot):
        return margins.cosface_logits(cos_theta, onehot, self.s, self.m)

    def get_config(self):
        config = super().get_config()
        config["m"] = self.m
        return config


@keras.saving.register_keras_serializable(package="mfn_tf")
class CombinedMargin(_CosineHead):
    """Combined margin head (insightface loss type 5).

    The target logit is s * (cos(m1 * theta + m2) - m3): m1 is SphereFace's
    multiplicative angular margin, m2 ArcFace's additive angular margin and
    m3 CosFace's additive cosine margin. The defaults (1.0, 0.3, 0.2) are
    the margins commonly used with insightface. `combined_margin_target`
    gives the angles where the target logit stops being monotonic.
    """

    def __init__(
        self,
        num_classes,
        s=margins.DEFAULT_SCALE,
        m1=margins.COMBINED_MARGINS[0],
        m2=margins.COMBINED_MARGINS[1],
        m3=margins.COMBINED_MARGINS[2],
        **kwargs,
    ):
        super().__init__(num_classes, s=s, **kwargs)
        if not m1 > 0 or not m2 >= 0 or not m3 >= 0:
            raise ValueError(
                "The combined margin needs m1 > 0, m2 >= 0 and m3 >= 0. "
                f"Received: m1={m1!r}, m2={m2!r}, m3={m3!r}"
            )
        self.m1 = m1
        self.m2 = m2
        self.m3 = m3

    def margin_logits(self, cos_theta, onehot):
        return margins.combined_margin_logits(
            cos_theta, onehot, self.s, self.m1, self.m2, self.m3
        )

    def get_config(self):
        config = super().get_config()
        config.update({"m1": self.m1, "m2": self.m2, "m3": self.m3})
        return config
