"""Step learning rate of insightface's recipe, with warmup and plateau drops.

The learning rate is a function of two counts: the global step (the
optimizer's `iterations`, the number of updates already applied) and the
plateau drops so far. A resumed run therefore gets the same rate back from
the restored step and `StepLearningRate.get_state()`.
"""

import logging
import math
import numbers

import keras
from keras import ops

from mfn_tf.training.optimizer import unwrap_optimizer

logger = logging.getLogger(__name__)

DROP_FACTOR = 0.1  # insightface multiplies the rate by 0.1 at each lr_step
PLATEAU_MODES = ("max", "min")


def _check_schedule(base_lr, lr_steps, warmup_steps, factor):
    if not base_lr > 0:
        raise ValueError(f"`base_lr` must be positive. Received: base_lr={base_lr!r}")
    lr_steps = list(lr_steps)
    if any(not _is_count(s) or s < 1 for s in lr_steps) or any(
        later <= earlier for earlier, later in zip(lr_steps, lr_steps[1:])
    ):
        raise ValueError(
            "`lr_steps` must be increasing positive integers (iterations). "
            f"Received: lr_steps={lr_steps!r}"
        )
    if not _is_count(warmup_steps) or warmup_steps < 0:
        raise ValueError(
            "`warmup_steps` must be an integer >= 0. "
            f"Received: warmup_steps={warmup_steps!r}"
        )
    if not 0 < factor <= 1:
        raise ValueError(f"`factor` must be in (0, 1]. Received: factor={factor!r}")
    return [int(s) for s in lr_steps]


def _is_count(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def step_learning_rate(
    step, base_lr, lr_steps, warmup_steps=0, drops=0, factor=DROP_FACTOR
):
    """Compute the learning rate of training step `step`.

    `step` counts the updates applied before this one (0 for the first
    batch). The rate is `base_lr * factor ** n`, where `n` is `drops` plus
    the number of `lr_steps` that are <= `step`. So at `step == lr_step`
    the new rate applies, as in insightface, which multiplies the rate by
    0.1 after its `lr_step`-th batch.

    During warmup (`step < warmup_steps`) the rate is also multiplied by
    `(step + 1) / warmup_steps`: it rises linearly from
    `base_lr / warmup_steps` at step 0 and reaches `base_lr` at step
    `warmup_steps - 1`, so no step runs with a zero rate.
    """
    lr_steps = _check_schedule(base_lr, lr_steps, warmup_steps, factor)
    if not _is_count(step) or step < 0:
        raise ValueError(f"`step` must be an integer >= 0. Received: step={step!r}")
    if not _is_count(drops) or drops < 0:
        raise ValueError(f"`drops` must be an integer >= 0. Received: drops={drops!r}")

    # 1. Drops: the lr_steps already reached plus the plateau drops.
    passed = sum(1 for lr_step in lr_steps if lr_step <= step)
    lr = base_lr * factor ** (passed + drops)
    # 2. Linear warmup on top.
    if step < warmup_steps:
        lr *= (step + 1) / warmup_steps
    return lr


class StepLearningRate(keras.callbacks.Callback):
    """Set the optimizer's learning rate from the global step before each batch.

    The rate follows `step_learning_rate`. With `plateau_monitor`, the rate
    also drops by `factor` when `logs[plateau_monitor]` (a verification
    accuracy such as "agedb_30_accuracy", written by a callback earlier in
    the list) has not improved by more than `plateau_min_delta` for
    `plateau_patience` evaluations in a row. Epochs whose logs lack the
    key are not evaluations, and the first such epoch logs a warning.
    The rate goes into the batch and epoch logs as "lr".

    Args:
        base_lr: rate after warmup and before any drop (0.1 in insightface).
        lr_steps: global steps (iterations, not epochs) at which the rate
            is multiplied by `factor`.
        warmup_steps: length of the linear warmup in steps; 0 for none.
        factor: multiplier of each drop.
        plateau_monitor: key in the epoch logs to watch; None turns plateau
            drops off.
        plateau_patience: evaluations without improvement before a drop.
            3 is this project's choice, not insightface's.
        plateau_min_delta: minimum change that counts as an improvement.
        plateau_mode: "max" for accuracies, "min" for losses.
        verbose: 1 logs the rate at the start and at every drop, 0 logs
            nothing but warnings.
    """

    def __init__(
        self,
        base_lr,
        lr_steps,
        warmup_steps=0,
        factor=DROP_FACTOR,
        plateau_monitor=None,
        plateau_patience=3,
        plateau_min_delta=0.0,
        plateau_mode="max",
        verbose=1,
    ):
        super().__init__()
        lr_steps = _check_schedule(base_lr, lr_steps, warmup_steps, factor)
        if not _is_count(plateau_patience) or plateau_patience < 1:
            raise ValueError(
                "`plateau_patience` must be an integer >= 1. "
                f"Received: plateau_patience={plateau_patience!r}"
            )
        if not plateau_min_delta >= 0:
            raise ValueError(
                "`plateau_min_delta` must be >= 0. "
                f"Received: plateau_min_delta={plateau_min_delta!r}"
            )
        if plateau_mode not in PLATEAU_MODES:
            raise ValueError(
                f"`plateau_mode` must be one of {PLATEAU_MODES}. "
                f"Received: plateau_mode={plateau_mode!r}"
            )
        self.base_lr = base_lr
        self.lr_steps = lr_steps
        self.warmup_steps = int(warmup_steps)
        self.factor = factor
        self.plateau_monitor = plateau_monitor
        self.plateau_patience = plateau_patience
        self.plateau_min_delta = plateau_min_delta
        self.plateau_mode = plateau_mode
        self.verbose = verbose

        self.drops = 0  # plateau drops so far
        self.best = None  # best monitored value so far
        self.wait = 0  # evaluations since `best` improved
        self.lr = None  # rate last set on the optimizer
        self._warned_missing = False

    # State that a resumed run needs besides the optimizer's step counter.

    def get_state(self):
        """Return the plateau state as a JSON-serialisable dict."""
        return {"drops": self.drops, "best": self.best, "wait": self.wait}

    def set_state(self, state):
        """Restore the plateau state saved by `get_state`."""
        unknown = sorted(set(state) - {"drops", "best", "wait"})
        if unknown:
            raise ValueError(
                f"unknown StepLearningRate state key(s) {unknown}. Expected "
                "drops, best and wait as written by get_state()."
            )
        drops = state.get("drops", 0)
        wait = state.get("wait", 0)
        if not (_is_count(drops) and drops >= 0 and _is_count(wait) and wait >= 0):
            raise ValueError(
                "StepLearningRate state needs integer drops >= 0 and wait >= 0. "
                f"Received: {state!r}"
            )
        best = state.get("best")
        self.drops = int(drops)
        self.wait = int(wait)
        self.best = None if best is None else float(best)

    # Keras hooks.

    def on_train_begin(self, logs=None):
        step = self._global_step()
        self._set_learning_rate(self._schedule(step))
        if self.verbose:
            logger.info(
                "learning rate %g at step %d (lr_steps %s, %d plateau drops)",
                self.lr,
                step,
                self.lr_steps,
                self.drops,
            )

    def on_train_batch_begin(self, batch, logs=None):
        step = self._global_step()
        lr = self._schedule(step)
        if lr == self.lr:
            return
        previous = self.lr
        self._set_learning_rate(lr)
        if self.verbose and step in self.lr_steps:
            logger.info(
                "step %d: learning rate %g -> %g (lr_steps)", step, previous, lr
            )
        elif self.verbose and step == self.warmup_steps:
            logger.info("step %d: warmup done, learning rate %g", step, lr)

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None:
            logs["lr"] = self.lr

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["lr"] = self.lr
        if self.plateau_monitor is None:
            return
        value = logs.get(self.plateau_monitor)
        if value is None:
            if not self._warned_missing:
                logger.warning(
                    "plateau_monitor %r is not in the logs of epoch %d, so this "
                    "epoch is not an evaluation. Logged keys: %s. Put the "
                    "verification callback before StepLearningRate.",
                    self.plateau_monitor,
                    epoch,
                    ", ".join(sorted(logs)),
                )
                self._warned_missing = True
            return
        self._update_plateau(epoch, float(value))

    # Helpers.

    def _update_plateau(self, epoch, value):
        if self.best is None or self._improved(value):
            self.best = value
            self.wait = 0
            return
        self.wait += 1
        if self.wait < self.plateau_patience:
            return
        self.drops += 1
        self.wait = 0
        previous = self.lr
        self._set_learning_rate(self._schedule(self._global_step()))
        if self.verbose:
            logger.info(
                "epoch %d: %s has not improved on %.5f for %d evaluations, so "
                "the learning rate drops %g -> %g (plateau drop %d)",
                epoch,
                self.plateau_monitor,
                self.best,
                self.plateau_patience,
                previous,
                self.lr,
                self.drops,
            )

    def _improved(self, value):
        if math.isnan(value):
            return False
        if self.plateau_mode == "max":
            return value > self.best + self.plateau_min_delta
        return value < self.best - self.plateau_min_delta

    def _schedule(self, step):
        return step_learning_rate(
            step,
            self.base_lr,
            self.lr_steps,
            warmup_steps=self.warmup_steps,
            drops=self.drops,
            factor=self.factor,
        )

    def _global_step(self):
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _set_learning_rate(self, lr):
        optimizer = self.model.optimizer
        try:
            optimizer.learning_rate = lr
        except TypeError as error:
            raise TypeError(
                "StepLearningRate sets the learning rate itself, but optimizer "
                f"{type(unwrap_optimizer(optimizer)).__name__} was created with a "
                "LearningRateSchedule. Create it with a float learning_rate."
            ) from error
        self.lr = lr

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "lr_steps": list(self.lr_steps),
            "warmup_steps": self.warmup_steps,
            "factor": self.factor,
            "plateau_monitor": self.plateau_monitor,
            "plateau_patience": self.plateau_patience,
            "plateau_min_delta": self.plateau_min_delta,
            "plateau_mode": self.plateau_mode,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
