"""Step learning rate: both sides of every boundary, plateau drops and resume."""

import logging

import keras
import numpy as np
import pytest

from mfn_tf.training.lr_schedule import StepLearningRate, step_learning_rate
from mfn_tf.training.optimizer import MXNetSGD

BASE = 0.1


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),
        (9, 0.1),  # last step before lr_steps[0]
        (10, 0.01),  # at lr_step the new rate applies
        (11, 0.01),
        (19, 0.01),
        (20, 0.001),
        (10_000, 0.001),
    ],
)
def test_step_boundaries(step, expected):
    assert step_learning_rate(step, BASE, [10, 20]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1 * 1 / 4),
        (1, 0.1 * 2 / 4),
        (3, 0.1),  # last warmup step reaches base_lr
        (4, 0.1),  # first step after warmup
        (5, 0.1),
        (6, 0.01),
    ],
)
def test_warmup_boundaries(step, expected):
    assert step_learning_rate(step, BASE, [6], warmup_steps=4) == pytest.approx(
        expected
    )


def test_step_inside_warmup_also_drops():
    assert step_learning_rate(2, BASE, [2], warmup_steps=4) == pytest.approx(
        0.1 * 0.1 * 3 / 4
    )


def test_plateau_drops_add_to_steps():
    assert step_learning_rate(0, BASE, [10], drops=1) == pytest.approx(0.01)
    assert step_learning_rate(10, BASE, [10], drops=2) == pytest.approx(1e-4)
    assert step_learning_rate(10, BASE, [10], drops=1, factor=0.5) == pytest.approx(
        0.025
    )


def test_no_steps_is_constant():
    assert step_learning_rate(123, BASE, []) == BASE


def test_numpy_integers_accepted():
    lr_steps = np.array([10, 20])
    assert step_learning_rate(np.int64(15), BASE, list(lr_steps)) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"step": -1}, "`step`"),
        ({"step": 1.5}, "`step`"),
        ({"base_lr": 0.0}, "`base_lr`"),
        ({"lr_steps": [20, 10]}, "increasing"),
        ({"lr_steps": [10, 10]}, "increasing"),
        ({"lr_steps": [0]}, "positive"),
        ({"warmup_steps": -1}, "`warmup_steps`"),
        ({"drops": -1}, "`drops`"),
        ({"factor": 0.0}, "`factor`"),
        ({"factor": 2.0}, "`factor`"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    arguments = {"step": 0, "base_lr": BASE, "lr_steps": [10]} | kwargs
    with pytest.raises(ValueError, match=message):
        step_learning_rate(**arguments)


class RecordLearningRate(keras.callbacks.Callback):
    """Record the rate each batch runs with (after StepLearningRate set it)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(
            float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        )


def compiled_model(optimizer=None):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=optimizer or MXNetSGD(learning_rate=1.0), loss="mse")
    return model


def data(batches):
    return np.ones((batches, 2), np.float32), np.zeros((batches, 1), np.float32)


def test_callback_sets_rate_per_step_and_logs_it():
    model = compiled_model()
    schedule = StepLearningRate(BASE, [2, 4], warmup_steps=1, verbose=0)
    recorder = RecordLearningRate()
    x, y = data(3)
    history = model.fit(
        x, y, batch_size=1, epochs=2, verbose=0, callbacks=[schedule, recorder]
    )
    np.testing.assert_allclose(
        recorder.rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6
    )
    # The epoch's "lr" is the rate of its last batch.
    np.testing.assert_allclose(history.history["lr"], [0.01, 0.001], rtol=1e-6)


def test_callback_puts_lr_into_batch_logs():
    class BatchLogs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.lrs = []

        def on_train_batch_end(self, batch, logs=None):
            self.lrs.append(logs["lr"])

    model = compiled_model()
    batch_logs = BatchLogs()
    x, y = data(2)
    model.fit(
        x,
        y,
        batch_size=1,
        verbose=0,
        callbacks=[StepLearningRate(BASE, [1], verbose=0), batch_logs],
    )
    np.testing.assert_allclose(batch_logs.lrs, [0.1, 0.01])


def test_resume_restores_rate_from_step_and_state():
    model = compiled_model()
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(15)  # as restored from a checkpoint
    schedule = StepLearningRate(BASE, [10, 20], verbose=0)
    schedule.set_state({"drops": 1, "best": 0.9, "wait": 2})
    schedule.set_model(model)
    schedule.on_train_begin()
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(
        BASE * 0.1 * 0.1
    )
    assert schedule.get_state() == {"drops": 1, "best": 0.9, "wait": 2}


def plateau_schedule(**kwargs):
    model = compiled_model()
    model.optimizer.build(model.trainable_variables)
    arguments = {
        "plateau_monitor": "agedb_30_accuracy",
        "plateau_patience": 2,
        "verbose": 0,
    }
    schedule = StepLearningRate(BASE, [1000], **(arguments | kwargs))
    schedule.set_model(model)
    schedule.on_train_begin()
    return schedule


def feed(schedule, values, key="agedb_30_accuracy"):
    for epoch, value in enumerate(values):
        schedule.on_epoch_end(epoch, {key: value})


def test_plateau_drop_needs_patience_evaluations():
    schedule = plateau_schedule()
    feed(schedule, [0.90, 0.95, 0.95])  # one evaluation without improvement
    assert schedule.drops == 0
    assert schedule.lr == pytest.approx(BASE)
    feed(schedule, [0.94])  # the second one
    assert schedule.drops == 1
    assert schedule.lr == pytest.approx(BASE * 0.1)
    assert float(schedule.model.optimizer.learning_rate.numpy()) == pytest.approx(
        BASE * 0.1
    )


def test_plateau_improvement_resets_wait():
    schedule = plateau_schedule()
    feed(schedule, [0.90, 0.90, 0.91, 0.91])
    assert schedule.drops == 0
    assert schedule.get_state() == {"drops": 0, "best": 0.91, "wait": 1}


def test_plateau_min_delta_both_sides():
    schedule = plateau_schedule(plateau_min_delta=0.01)
    feed(schedule, [0.90, 0.911])  # improves by more than min_delta
    assert schedule.best == pytest.approx(0.911)
    feed(schedule, [0.92, 0.915])  # improves by less: not an improvement
    assert schedule.drops == 1


def test_plateau_min_mode():
    schedule = plateau_schedule(plateau_monitor="val_loss", plateau_mode="min")
    feed(schedule, [1.0, 0.9, 0.95, 0.9], key="val_loss")
    assert schedule.drops == 1


def test_plateau_nan_is_no_improvement():
    schedule = plateau_schedule()
    feed(schedule, [0.9, float("nan"), float("nan")])
    assert schedule.drops == 1


def test_plateau_skips_epochs_without_key(caplog):
    schedule = plateau_schedule()
    with caplog.at_level(logging.WARNING, logger="mfn_tf.training.lr_schedule"):
        feed(schedule, [0.9, 0.8], key="loss")
    assert schedule.get_state() == {"drops": 0, "best": None, "wait": 0}
    warnings = [r for r in caplog.records if "agedb_30_accuracy" in r.getMessage()]
    assert len(warnings) == 1


def test_plateau_drop_is_logged(caplog):
    schedule = plateau_schedule(verbose=1)
    with caplog.at_level(logging.INFO, logger="mfn_tf.training.lr_schedule"):
        feed(schedule, [0.9, 0.9, 0.9])
    assert any("plateau drop 1" in r.getMessage() for r in caplog.records)


def test_state_round_trip_and_validation():
    schedule = StepLearningRate(BASE, [10])
    schedule.set_state({"drops": 2, "best": 0.97, "wait": 1})
    clone = StepLearningRate(BASE, [10])
    clone.set_state(schedule.get_state())
    assert clone.get_state() == {"drops": 2, "best": 0.97, "wait": 1}
    with pytest.raises(ValueError, match="unknown StepLearningRate state"):
        clone.set_state({"drops": 1, "patience": 3})
    with pytest.raises(ValueError, match="integer drops"):
        clone.set_state({"drops": -1})


def test_callback_config_round_trip():
    schedule = StepLearningRate(
        0.05,
        [100, 200],
        warmup_steps=10,
        factor=0.2,
        plateau_monitor="lfw_accuracy",
        plateau_patience=4,
        plateau_min_delta=1e-3,
        plateau_mode="max",
        verbose=0,
    )
    config = schedule.get_config()
    assert StepLearningRate.from_config(config).get_config() == config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"plateau_patience": 0}, "plateau_patience"),
        ({"plateau_min_delta": -0.1}, "plateau_min_delta"),
        ({"plateau_mode": "auto"}, "plateau_mode"),
        ({"lr_steps": [5, 3]}, "increasing"),
    ],
)
def test_callback_rejects_invalid_argument(kwargs, message):
    arguments = {"base_lr": BASE, "lr_steps": [10]} | kwargs
    with pytest.raises(ValueError, match=message):
        StepLearningRate(**arguments)


def test_callback_rejects_schedule_optimizer():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = compiled_model(keras.optimizers.SGD(learning_rate=schedule))
    x, y = data(1)
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        model.fit(x, y, verbose=0, callbacks=[StepLearningRate(BASE, [10], verbose=0)])
