"""MXNet-style weight decay: the variable rule, MXNetSGD's update and the callback."""

import json
import logging
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from mfn_tf.heads import SoftmaxHead
from mfn_tf.model.mobilefacenet import MobileFaceNet
from mfn_tf.training.optimizer import MXNetSGD
from mfn_tf.training.weight_decay import (
    WeightDecayMultipliers,
    decay_coefficients,
    format_weight_decay_table,
    resolve_weight_decay,
)

WD = 4e-5


@pytest.fixture(scope="module")
def training_model():
    backbone = MobileFaceNet(
        embedding_size=16, width_multiplier=0.25, name="mobilefacenet"
    )
    image = keras.Input((112, 112, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    logits = SoftmaxHead(10, name="fc7")([backbone(image), label])
    return keras.Model([image, label], logits, name="mobilefacenet_train")


@pytest.fixture
def restore_policy():
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def by_path(entries):
    return {entry.path: entry for entry in entries}


def small_model(num_classes=3):
    """Dense body (kernel decays, bias does not) and a softmax fc7."""
    features = keras.Input((3,), name="features")
    label = keras.Input((), dtype="int32", name="label")
    hidden = keras.layers.Dense(2, bias_initializer="ones", name="body_dense")(features)
    logits = SoftmaxHead(num_classes, name="fc7")([hidden, label])
    return keras.Model([features, label], logits)


def test_rule_decays_weights_gammas_and_prelu(training_model):
    entries = by_path(resolve_weight_decay(training_model, WD, {"fc7": 10}))
    expected = {
        "stem_conv/kernel": ("kernel", WD),
        "stem_bn/gamma": ("BatchNorm gamma", WD),
        "stem_bn/beta": ("BatchNorm beta", 0.0),
        "stem_prelu/alpha": ("PReLU alpha", WD),
        "stem_dw_conv/kernel": ("kernel", WD),
        "gdc_conv/kernel": ("kernel", WD),
        "embedding_dense/kernel": ("kernel", WD),
        "embedding_dense/bias": ("bias", 0.0),
        "embedding_bn/beta": ("BatchNorm beta", 0.0),
        "fc7/kernel": ("kernel", 10 * WD),
    }
    for path, (role, coefficient) in expected.items():
        assert entries[path].role == role, path
        assert entries[path].coefficient == pytest.approx(coefficient), path
    # insightface's fc1 BatchNorm has a fixed gamma, so nothing to decay.
    assert "embedding_bn/gamma" not in entries


def test_rule_lists_every_trainable_variable_once(training_model):
    entries = resolve_weight_decay(training_model, WD)
    assert sorted(e.path for e in entries) == sorted(
        v.path for v in training_model.trainable_variables
    )
    assert not any(e.path.endswith(("moving_mean", "moving_variance")) for e in entries)


def test_after_gdc_multiplier_covers_embedding_layers(training_model):
    entries = by_path(
        resolve_weight_decay(training_model, WD, {"fc7": 10, "embedding_": 10})
    )
    assert entries["embedding_dense/kernel"].coefficient == pytest.approx(10 * WD)
    assert entries["embedding_dense/kernel"].scope == "embedding_"
    assert entries["embedding_dense/bias"].coefficient == 0.0
    assert entries["gdc_conv/kernel"].coefficient == pytest.approx(WD)
    assert entries["gdc_bn/gamma"].coefficient == pytest.approx(WD)


def test_longest_prefix_wins(training_model):
    entries = by_path(
        resolve_weight_decay(training_model, WD, {"stem": 2, "stem_dw": 3})
    )
    assert entries["stem_conv/kernel"].multiplier == 2
    assert entries["stem_dw_conv/kernel"].multiplier == 3


@pytest.mark.parametrize(
    "wd, multipliers, message",
    [
        (-1e-4, {}, "`wd` must be >= 0"),
        (WD, {"fc7": -1}, "must be >= 0"),
        (WD, {"fc8": 10}, r"\['fc8'\] match no layer"),
    ],
)
def test_rule_rejects_invalid_settings(training_model, wd, multipliers, message):
    with pytest.raises(ValueError, match=message):
        resolve_weight_decay(training_model, wd, multipliers)


def test_rule_rejects_unknown_variable_name():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(name="scale", shape=(1,))

        def call(self, x):
            return x * self.scale

    inputs = keras.Input((2,))
    model = keras.Model(inputs, Scale(name="scale_layer")(inputs))
    with pytest.raises(ValueError, match="scale_layer/scale"):
        resolve_weight_decay(model, WD)


def test_table_groups_by_scope_and_role(training_model):
    table = format_weight_decay_table(
        resolve_weight_decay(training_model, WD, {"fc7": 10})
    )
    rows = {line[:28].strip(): line.split() for line in table.splitlines()[1:]}
    assert rows["fc7* kernel"][-3:] == ["1", "160", "0.0004"]
    assert rows["body PReLU alpha"][-1] == "4e-05"
    assert rows["body bias"][-1] == "0"
    assert table.splitlines()[0].split() == [
        "group",
        "tensors",
        "values",
        "coefficient",
    ]


def test_mxnet_sgd_two_steps_by_hand():
    decayed = keras.Variable(np.array([1.0, -2.0], np.float32), name="kernel")
    not_decayed = keras.Variable(np.array([0.5], np.float32), name="bias")
    optimizer = MXNetSGD(learning_rate=0.1, momentum=0.9)
    optimizer.build([decayed, not_decayed])
    optimizer.set_weight_decay({decayed.path: 0.01})
    gradient = [np.array([0.5, 0.5], np.float32), np.array([0.2], np.float32)]

    optimizer.apply_gradients(zip(gradient, [decayed, not_decayed]))
    # v = 0.9 * 0 - 0.1 * (0.5 + 0.01 * w); w += v
    np.testing.assert_allclose(decayed.numpy(), [1.0 - 0.051, -2.0 - 0.048], rtol=1e-6)
    np.testing.assert_allclose(not_decayed.numpy(), [0.5 - 0.02], rtol=1e-6)

    optimizer.apply_gradients(zip(gradient, [decayed, not_decayed]))
    # v = 0.9 * v - 0.1 * (0.5 + 0.01 * w)
    v1 = -0.9 * 0.051 - 0.1 * (0.5 + 0.01 * 0.949)
    v2 = -0.9 * 0.048 - 0.1 * (0.5 + 0.01 * -2.048)
    np.testing.assert_allclose(decayed.numpy(), [0.949 + v1, -2.048 + v2], rtol=1e-6)
    np.testing.assert_allclose(
        not_decayed.numpy(), [0.48 - 0.9 * 0.02 - 0.02], rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [({"weight_decay": 4e-5}, "decoupled"), ({"nesterov": True}, "Nesterov")],
)
def test_mxnet_sgd_rejects_keras_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MXNetSGD(**kwargs)


def test_mxnet_sgd_rejects_unknown_path():
    variable = keras.Variable(np.zeros(2, np.float32), name="kernel")
    optimizer = MXNetSGD(weight_decay_coefficients={"fc8/kernel": 1e-4})
    with pytest.raises(ValueError, match="fc8/kernel"):
        optimizer.build([variable])


def test_mxnet_sgd_config_round_trip():
    optimizer = MXNetSGD(
        0.05, momentum=0.8, weight_decay_coefficients={"fc7/kernel": 4e-4}
    )
    config = optimizer.get_config()
    clone = MXNetSGD.from_config(config)
    assert clone.get_config() == config
    assert clone.weight_decay_coefficients == {"fc7/kernel": 4e-4}
    assert (
        keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).momentum
        == 0.8
    )


def test_callback_fit_step_matches_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1], np.int32)
    model = small_model()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=MXNetSGD(learning_rate=0.1), loss=loss_fn)

    before = {v.path: v.numpy() for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model([x, y], training=True))
    gradients = {
        v.path: g.numpy()
        for v, g in zip(
            model.trainable_variables, tape.gradient(loss, model.trainable_variables)
        )
    }

    callback = WeightDecayMultipliers(wd=0.05, fc7_mult=10)
    model.fit(
        [x, y],
        y,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )

    coefficients = {
        "body_dense/kernel": 0.05,
        "body_dense/bias": 0.0,
        "fc7/kernel": 0.5,
    }
    for variable in model.trainable_variables:
        w = before[variable.path]
        decay = coefficients[variable.path] * w
        expected = w - 0.1 * (gradients[variable.path] + decay)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-7)
        if coefficients[variable.path]:
            # The decay term is large enough to tell the two rules apart.
            assert not np.allclose(
                variable.numpy(), w - 0.1 * gradients[variable.path], atol=1e-4
            )


def test_callback_logs_groups_once(caplog):
    model = small_model()
    model.compile(
        optimizer=MXNetSGD(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2,), np.int32)
    callback = WeightDecayMultipliers(wd=WD)
    with caplog.at_level(logging.INFO, logger="mfn_tf.training.weight_decay"):
        model.fit([x, y], y, epochs=2, verbose=0, callbacks=[callback])
        model.fit([x, y], y, epochs=1, verbose=0, callbacks=[callback])
    messages = [
        r.getMessage() for r in caplog.records if "weight decay" in r.getMessage()
    ]
    assert len(messages) == 1
    assert "fc7* kernel" in messages[0]
    assert model.optimizer.weight_decay_coefficients == {
        "body_dense/kernel": WD,
        "fc7/kernel": 10 * WD,
    }


def test_callback_rejects_other_optimizer():
    model = small_model()
    model.compile(
        optimizer=keras.optimizers.SGD(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2,), np.int32)
    with pytest.raises(TypeError, match="MXNetSGD"):
        model.fit([x, y], y, verbose=0, callbacks=[WeightDecayMultipliers(wd=WD)])


def test_coefficients_frozen_after_trace():
    model = small_model()
    model.compile(
        optimizer=MXNetSGD(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.zeros((2, 3), np.float32)
    y = np.zeros((2,), np.int32)
    model.fit([x, y], y, verbose=0, callbacks=[WeightDecayMultipliers(wd=WD)])

    installed = model.optimizer.weight_decay_coefficients
    model.optimizer.set_weight_decay(installed)  # unchanged: accepted
    with pytest.raises(RuntimeError, match="already traced"):
        model.optimizer.set_weight_decay({"fc7/kernel": 1.0})


def test_callback_unwraps_loss_scale_optimizer(restore_policy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = small_model()
    model.compile(
        optimizer=MXNetSGD(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.ones((2, 3), np.float32)
    y = np.zeros((2,), np.int32)
    model.fit([x, y], y, verbose=0, callbacks=[WeightDecayMultipliers(wd=WD)])
    assert (
        model.optimizer.inner_optimizer.weight_decay_coefficients["fc7/kernel"]
        == 10 * WD
    )
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)


def test_callback_config_round_trip():
    callback = WeightDecayMultipliers(wd=WD, fc7_mult=5.0, after_gdc_mult=10.0)
    config = callback.get_config()
    assert WeightDecayMultipliers.from_config(config).get_config() == config
    assert callback.multipliers() == {"fc7": 5.0, "embedding_": 10.0}


def test_decay_coefficients_skip_zero():
    model = small_model()
    entries = resolve_weight_decay(model, WD, {"fc7": 10})
    assert decay_coefficients(entries) == {
        "body_dense/kernel": WD,
        "fc7/kernel": 10 * WD,
    }


# MXNet 1.9.1's SGD with the parameter names insightface's symbols use. Its
# default wd_mult rule (only *_weight and *_gamma decay) is under test too.
MXNET_SGD_SCRIPT = """
import json, sys
import mxnet as mx
import numpy as np
request = json.load(sys.stdin)
names = request["names"]
optimizer = mx.optimizer.SGD(
    learning_rate=request["lr"], momentum=0.9, wd=request["wd"], rescale_grad=1.0,
    param_idx2name=dict(enumerate(names)),
)
optimizer.set_wd_mult({"fc7_weight": request["fc7_mult"]})
updater = mx.optimizer.get_updater(optimizer)
weights = [mx.nd.array(np.array(w, np.float32)) for w in request["weights"]]
for step_gradients in request["gradients"]:
    for index, gradient in enumerate(step_gradients):
        updater(index, mx.nd.array(np.array(gradient, np.float32)), weights[index])
json.dump([w.asnumpy().tolist() for w in weights], sys.stdout)
"""

# Keras variable path: the name of the same parameter in insightface's MXNet symbol.
MXNET_NAMES = {
    "conv/kernel": "conv_weight",
    "conv_bn/gamma": "conv_bn_gamma",
    "conv_bn/beta": "conv_bn_beta",
    "conv_prelu/alpha": "conv_relu_gamma",
    "dense/kernel": "pre_fc1_weight",
    "dense/bias": "pre_fc1_bias",
    "fc7/kernel": "fc7_weight",
}


@pytest.mark.mxnet
def test_mxnet_sgd_matches_mxnet(mxnet_python):
    image = keras.Input((4, 4, 2))
    label = keras.Input((), dtype="int32")
    x = keras.layers.Conv2D(3, 3, use_bias=False, name="conv")(image)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="conv_prelu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="dense")(x)
    model = keras.Model([image, label], SoftmaxHead(7, name="fc7")([x, label]))

    variables = model.trainable_variables
    entries = resolve_weight_decay(model, 0.01, {"fc7": 10})
    optimizer = MXNetSGD(
        learning_rate=0.1, weight_decay_coefficients=decay_coefficients(entries)
    )
    rng = np.random.default_rng(0)
    for variable in variables:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    weights = [v.numpy().ravel().tolist() for v in variables]
    gradients = [
        [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        for _ in range(3)
    ]
    for step_gradients in gradients:
        optimizer.apply_gradients(zip(step_gradients, variables))

    request = {
        "names": [MXNET_NAMES[v.path] for v in variables],
        "lr": 0.1,
        "wd": 0.01,
        "fc7_mult": 10.0,
        "weights": weights,
        "gradients": [[g.ravel().tolist() for g in step] for step in gradients],
    }
    result = subprocess.run(
        [mxnet_python, "-c", MXNET_SGD_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for variable, expected in zip(variables, json.loads(result.stdout)):
        np.testing.assert_allclose(
            variable.numpy().ravel(),
            expected,
            rtol=1e-5,
            atol=1e-6,
            err_msg=variable.path,
        )
