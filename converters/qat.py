"""Quantization-aware training (QAT) through tf-keras and tfmot.

tensorflow-model-optimization (tfmot 0.8) wraps only tf-keras (Keras 2)
models and has no quantization rule for PReLU. This module is the bridge:

1. `to_tf_keras` rebuilds a Keras 3 functional model layer by layer in
   tf-keras and copies the weights; before quantization the two compute
   the same embeddings.
2. `quantize_model` annotates every layer for tfmot's default 8-bit scheme
   and gives PReLU and Rescaling a `QuantizeConfig` that fake-quantizes
   their output. PReLU's slope is quantized by the TFLite converter, which
   fuses the layer into one PRELU op only while the slope is a constant.
   DepthwiseConv2D gets a per-channel kernel quantizer, as TFLite uses.
   `initialize_ranges` then sets every activation range from real faces.
3. `distill` fine-tunes the fake-quantized model to reproduce the float
   model's embeddings (loss: 1 - cosine similarity) on aligned faces. No
   labels are needed, so the calibration faces serve as training data.
4. `convert_qat_model` writes a full-integer TFLite model, calibrating the
   few tensors that QAT leaves unobserved on the same faces.

Importing tfmot sets TF_USE_LEGACY_KERAS=1 in the process environment.
`import_tfmot` restores the previous value, so `tf.keras` elsewhere in the
process keeps meaning Keras 3.
"""

import logging
import os
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

QAT_STEPS = 300
QAT_BATCH_SIZE = 32
# Faces to distil on: more than the calibration set, because 300 steps of
# 32 would otherwise revisit each of 100 faces about 100 times.
QAT_FACE_COUNT = 1000
# Adam on an already trained model: large steps would undo the training
# instead of adapting it to the quantization grid.
QAT_LEARNING_RATE = 1e-5


class QATError(RuntimeError):
    """A model that the tf-keras bridge cannot rebuild or quantize."""


def import_tfmot():
    """Import tfmot and tf_keras without leaving TF_USE_LEGACY_KERAS set."""
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot, tf_keras


def _tf_keras_layer(layer, tf_keras):
    """Return the tf-keras twin of a Keras 3 layer (without weights)."""
    import keras

    layers = tf_keras.layers
    config = layer.get_config()
    name = layer.name
    kind = type(layer)

    def activation():
        value = config.get("activation", "linear")
        if not isinstance(value, str):
            raise QATError(f"layer {name}: activation {value!r} cannot be rebuilt in tf-keras")
        return value

    if kind is keras.layers.Conv2D:
        return layers.Conv2D(
            config["filters"],
            config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            dilation_rate=config["dilation_rate"],
            groups=config["groups"],
            activation=activation(),
            use_bias=config["use_bias"],
            name=name,
        )
    if kind is keras.layers.DepthwiseConv2D:
        return layers.DepthwiseConv2D(
            config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            depth_multiplier=config["depth_multiplier"],
            dilation_rate=config["dilation_rate"],
            activation=activation(),
            use_bias=config["use_bias"],
            name=name,
        )
    if kind is keras.layers.Dense:
        return layers.Dense(
            config["units"], activation=activation(), use_bias=config["use_bias"], name=name
        )
    if isinstance(layer, keras.layers.BatchNormalization):
        return layers.BatchNormalization(
            axis=config["axis"],
            momentum=config["momentum"],
            epsilon=config["epsilon"],
            center=config["center"],
            scale=config["scale"],
            name=name,
        )
    if kind is keras.layers.PReLU:
        return layers.PReLU(shared_axes=config["shared_axes"], name=name)
    if kind is keras.layers.Rescaling:
        return layers.Rescaling(config["scale"], offset=config["offset"], name=name)
    if kind is keras.layers.ZeroPadding2D:
        return layers.ZeroPadding2D(config["padding"], name=name)
    if kind is keras.layers.Add:
        return layers.Add(name=name)
    if kind is keras.layers.Flatten:
        return layers.Flatten(name=name)
    raise QATError(
        f"layer {name} ({kind.__name__}) has no tf-keras rebuild; the QAT bridge "
        "covers the layers of MobileFaceNet (Conv2D, DepthwiseConv2D, Dense, "
        "BatchNormalization, PReLU, Rescaling, ZeroPadding2D, Add, Flatten)"
    )


def to_tf_keras(model):
    """Rebuild a Keras 3 functional model in tf-keras with the same weights.

    Layer names are kept. BatchNorm moving statistics are copied, so the
    rebuilt model computes the same function in inference mode.
    """
    _, tf_keras = import_tfmot()
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise QATError(f"model {model.name!r} must have one input and one output")
    tensors = {}
    model_input = model.inputs[0]
    new_input = tf_keras.Input(
        shape=tuple(model_input.shape[1:]),
        name=model_input._keras_history.operation.name,
    )
    tensors[id(model_input)] = new_input
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = node.operation
            new_layer = _tf_keras_layer(layer, tf_keras)
            inputs = [tensors[id(tensor)] for tensor in node.input_tensors]
            outputs = new_layer(inputs if len(inputs) > 1 else inputs[0])
            new_layer.set_weights(layer.get_weights())
            tensors[id(node.outputs[0])] = outputs
    return tf_keras.Model(new_input, tensors[id(model.outputs[0])], name=model.name)


def _quantize_configs():
    """Return the QuantizeConfig classes this bridge adds to tfmot's scheme."""
    import tensorflow as tf

    tfmot, _ = import_tfmot()
    quantize = tfmot.quantization.keras

    def activation_quantizer():
        return quantize.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False
        )

    class DepthwiseKernelQuantizer(quantize.quantizers.LastValueQuantizer):
        """Per-channel symmetric int8 for a `(kh, kw, in, multiplier)` kernel.

        tfmot's default quantizes the last axis, the depth multiplier (1
        here), so the whole depthwise kernel shared one scale, while TFLite
        quantizes depthwise kernels per output channel. Equalized models
        depend on that: their depthwise channels differ in range by 10x.
        """

        def __init__(self):
            super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

        def build(self, tensor_shape, name, layer):
            channels = tensor_shape[-2] * tensor_shape[-1]
            return {
                "min_var": layer.add_weight(
                    name + "_min", shape=(channels,), initializer="zeros", trainable=False
                ),
                "max_var": layer.add_weight(
                    name + "_max", shape=(channels,), initializer="zeros", trainable=False
                ),
            }

        def __call__(self, inputs, training, weights, **kwargs):
            shape = tf.shape(inputs)
            channels_last = tf.reshape(inputs, [shape[0], shape[1], 1, -1])
            outputs = super().__call__(channels_last, training, weights, **kwargs)
            return tf.reshape(outputs, shape)

    class DepthwiseQuantizeConfig(quantize.QuantizeConfig):
        """DepthwiseConv2D with a per-channel kernel and quantized output."""

        def get_weights_and_quantizers(self, layer):
            return [(layer.depthwise_kernel, DepthwiseKernelQuantizer())]

        def get_activations_and_quantizers(self, layer):
            return [(layer.activation, activation_quantizer())]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.depthwise_kernel = quantize_weights[0]

        def set_quantize_activations(self, layer, quantize_activations):
            layer.activation = quantize_activations[0]

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    class OutputQuantizeConfig(quantize.QuantizeConfig):
        """Fake-quantize the layer output to 8 bits; weights stay float.

        Used for PReLU: the TFLite converter recognises PReLU's
        `relu(x) - alpha * relu(-x)` pattern only with a constant slope,
        and quantizes that slope itself. Used for Rescaling, which has no
        weights.
        """

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [activation_quantizer()]

        def get_config(self):
            return {}

    return {
        "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer,
        "DepthwiseQuantizeConfig": DepthwiseQuantizeConfig,
        "OutputQuantizeConfig": OutputQuantizeConfig,
    }


def quantize_model(tf_keras_model):
    """Wrap a tf-keras model for QAT with tfmot's default 8-bit scheme."""
    tfmot, tf_keras = import_tfmot()
    quantize = tfmot.quantization.keras
    configs = _quantize_configs()

    def annotate(layer):
        if isinstance(layer, (tf_keras.layers.PReLU, tf_keras.layers.Rescaling)):
            return quantize.quantize_annotate_layer(layer, configs["OutputQuantizeConfig"]())
        if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
            return quantize.quantize_annotate_layer(layer, configs["DepthwiseQuantizeConfig"]())
        return quantize.quantize_annotate_layer(layer)

    annotated = tf_keras.models.clone_model(tf_keras_model, clone_function=annotate)
    with quantize.quantize_scope(configs):
        return quantize.quantize_apply(annotated)


# tfmot's activation quantizers start at [-6, 6] and follow the batch
# ranges by an exponential moving average with decay 0.999. MobileFaceNet's
# activations reach 20 to 80, so a few hundred steps would train with
# clipped activations. The ranges are set from the calibration faces instead.
_RANGE_VARIABLE_SUFFIXES = ("post_activation", "output")


def initialize_ranges(qat_model, float_model, images, batch_size=32):
    """Set every activation quantizer's range from calibration faces.

    `float_model` is the tf-keras model that `qat_model` wraps. Each range
    is the minimum and maximum, widened to include 0, of the layer's float
    output over `images`; the input quantizer gets the pixel range.

    Weight quantizers store their ranges at the first training-mode call,
    so one such call on a single face comes first.

    Returns:
        The number of layers whose ranges were set.
    """
    import tf_keras

    qat_model(np.asarray(images[:1]), training=True)
    layers = [layer for layer in float_model.layers if layer.name != float_model.input_names[0]]
    probe = tf_keras.Model(float_model.inputs, [layer.output for layer in layers])
    minimums = {layer.name: 0.0 for layer in layers}
    maximums = {layer.name: 0.0 for layer in layers}
    for start in range(0, len(images), batch_size):
        outputs = probe(np.asarray(images[start : start + batch_size]), training=False)
        for layer, output in zip(layers, outputs):
            output = output.numpy()
            minimums[layer.name] = min(minimums[layer.name], float(output.min()))
            maximums[layer.name] = max(maximums[layer.name], float(output.max()))

    input_min = min(0.0, float(np.min(images)))
    input_max = max(0.0, float(np.max(images)))
    initialized = set()
    for variable in qat_model.non_trainable_variables:
        scope, _, leaf = variable.name.partition("/")
        leaf = leaf.split(":")[0]
        if scope == "quantize_layer":
            if leaf.endswith("_min"):
                variable.assign(input_min)
            elif leaf.endswith("_max"):
                variable.assign(input_max)
            continue
        layer_name = scope.removeprefix("quant_")
        for suffix in _RANGE_VARIABLE_SUFFIXES:
            if layer_name in minimums and leaf == f"{suffix}_min":
                variable.assign(minimums[layer_name])
                initialized.add(layer_name)
            elif layer_name in maximums and leaf == f"{suffix}_max":
                variable.assign(maximums[layer_name])
    return len(initialized)


def cosine_distance_loss(teacher, student):
    """Mean of `1 - cos(teacher, student)` over the batch (a Keras loss)."""
    import tensorflow as tf

    teacher = tf.math.l2_normalize(teacher, axis=-1)
    student = tf.math.l2_normalize(student, axis=-1)
    return 1.0 - tf.reduce_mean(tf.reduce_sum(teacher * student, axis=-1))


def distill(qat_model, images, teacher_embeddings, steps=QAT_STEPS,
            batch_size=QAT_BATCH_SIZE, learning_rate=QAT_LEARNING_RATE, seed=0,
            progress=True):
    """Fine-tune a QAT model to reproduce the float model's embeddings.

    Each step draws a random batch of faces and flips half of them
    horizontally. `teacher_embeddings` contains the float model's embedding
    of every face and of its mirror image, shape `(2, N, D)`.

    Returns:
        The loss of every step, a list of floats.
    """
    import tensorflow as tf
    from tqdm import tqdm

    _, tf_keras = import_tfmot()
    images = np.asarray(images, dtype=np.float32)
    teacher_embeddings = np.asarray(teacher_embeddings, dtype=np.float32)
    optimizer = tf_keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng(seed)

    @tf.function
    def train_step(batch, targets):
        with tf.GradientTape() as tape:
            loss = cosine_distance_loss(targets, qat_model(batch, training=True))
        gradients = tape.gradient(loss, qat_model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, qat_model.trainable_variables))
        return loss

    losses = []
    bar = tqdm(range(steps), desc="QAT distillation", unit="step", disable=not progress)
    for _ in bar:
        indices = rng.choice(len(images), size=min(batch_size, len(images)), replace=False)
        flips = rng.random(len(indices)) < 0.5
        batch = images[indices]
        batch[flips] = batch[flips, :, ::-1]
        targets = teacher_embeddings[flips.astype(int), indices]
        loss = float(train_step(tf.constant(batch), tf.constant(targets)))
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.5f}")
    return losses


def convert_qat_model(qat_model, representative_images, input_size=112):
    """Convert a QAT model to full-integer TFLite bytes (float32 I/O).

    The fake-quant ranges learned in training set most scales. The
    representative faces calibrate what QAT does not observe, chiefly the
    PReLU slopes, and `TFLITE_BUILTINS_INT8` makes the converter fail
    instead of leaving any op in float.
    """
    import tensorflow as tf

    from converters.tflite_export import INPUT_NAME, OUTPUT_NAME, SIGNATURE_KEY, run_converter

    images = np.asarray(representative_images, dtype=np.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec((1, input_size, input_size, 3), tf.float32, name=INPUT_NAME)
        ]
    )
    def serve(image):
        return {OUTPUT_NAME: qat_model(image, training=False)}

    with tempfile.TemporaryDirectory(prefix="qat-saved-model-") as folder:
        module = tf.Module()
        module.variables_to_save = list(qat_model.variables)
        module.serve = serve
        tf.saved_model.save(module, folder, signatures={SIGNATURE_KEY: serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative_dataset():
            for image in images:
                yield {INPUT_NAME: image[None]}

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return run_converter(converter)


def teacher_embeddings_with_flips(model, images, batch_size=64):
    """Return the float model's embeddings of `images` and their mirrors."""
    images = np.asarray(images, dtype=np.float32)
    outputs = []
    for batch in (images, images[:, :, ::-1]):
        outputs.append(
            np.concatenate(
                [
                    np.asarray(model(batch[start : start + batch_size], training=False))
                    for start in range(0, len(batch), batch_size)
                ]
            )
        )
    return np.stack(outputs)


def train_qat_tflite(model, images, calibration_images=None, steps=QAT_STEPS,
                     batch_size=QAT_BATCH_SIZE, learning_rate=QAT_LEARNING_RATE,
                     input_size=112, progress=True):
    """Run the whole QAT path on a Keras 3 model and return TFLite bytes.

    Args:
        images: the faces to distil on.
        calibration_images: the faces that set the activation ranges and
            calibrate the PReLU slopes; `images` when None.

    Returns:
        `(tflite_bytes, losses)`.
    """
    if calibration_images is None:
        calibration_images = images
    teacher = teacher_embeddings_with_flips(model, images)
    float_model = to_tf_keras(model)
    qat_model = quantize_model(float_model)
    initialize_ranges(qat_model, float_model, calibration_images)
    losses = distill(
        qat_model,
        images,
        teacher,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        progress=progress,
    )
    return convert_qat_model(qat_model, calibration_images, input_size=input_size), losses
