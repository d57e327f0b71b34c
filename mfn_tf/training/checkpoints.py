"""Checkpoints of a training run, and the state that `--resume` restores.

A run's folder holds:

- `ckpt-0001000.keras`: the training model (backbone, fc7 and the
  optimizer's momentum and iteration count) every `every_n_steps`
  iterations, the newest `keep` of them;
- `best.keras`: the model at the best value of `best_monitor` so far;
- `model.keras`: the model at the end of the run;
- `state.json`: the newest checkpoint, the best value, and the learning
  rate schedule's state, written after every checkpoint.

Every file is written under a temporary name and renamed, so an
interrupted run never leaves a partial checkpoint that looks complete.
"""

import json
import logging
import math
import os
from pathlib import Path

import keras

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"


def save_model_atomically(model, path):
    path = Path(path)
    partial = path.with_name(f".partial-{path.name}")
    model.save(partial)
    os.replace(partial, path)


def read_state(run_dir):
    """Return the saved state of the run in `run_dir`, or None."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); it is rewritten at every "
            "checkpoint, so the run was probably interrupted while writing it. "
            "Delete it to start the stage from scratch."
        ) from error


class TrainingCheckpoints(keras.callbacks.Callback):
    """Save periodic, best and final checkpoints and the resume state.

    Args:
        run_dir: the run's folder.
        every_n_steps: iterations between periodic checkpoints.
        keep: number of periodic checkpoints kept (0 keeps all).
        best_monitor: a key of the epoch logs, such as "agedb_30_accuracy";
            higher is better. None disables `best.keras`.
        lr_schedule: an object with `get_state()` whose result is stored, so
            that a resumed run continues the learning rate schedule.
        best_value: the best value so far when resuming.
    """

    def __init__(self, run_dir, every_n_steps, keep=5, best_monitor=None, lr_schedule=None, best_value=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.best_monitor = best_monitor
        self.lr_schedule = lr_schedule
        self.best_value = best_value
        self.best_step = None
        self._last_checkpoint = None

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every_n_steps == 0:
            self._save_periodic(step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not self.best_monitor or self.best_monitor not in logs:
            return
        value = float(logs[self.best_monitor])
        if math.isnan(value):
            return
        if self.best_value is None or value > self.best_value:
            self.best_value = value
            self.best_step = self._step()
            save_model_atomically(self.model, self.run_dir / "best.keras")
            logger.info(
                "New best %s=%.5f at step %d: saved %s",
                self.best_monitor,
                value,
                self.best_step,
                self.run_dir / "best.keras",
            )
            self._write_state()

    def on_train_end(self, logs=None):
        step = self._step()
        if self._last_checkpoint is None or not self._last_checkpoint.endswith(f"{step:07d}.keras"):
            self._save_periodic(step)
        save_model_atomically(self.model, self.run_dir / "model.keras")
        logger.info("Saved the final model to %s", self.run_dir / "model.keras")

    def _save_periodic(self, step):
        name = f"ckpt-{step:07d}.keras"
        save_model_atomically(self.model, self.run_dir / name)
        self._last_checkpoint = name
        self._write_state()
        if self.keep:
            periodic = sorted(self.run_dir.glob("ckpt-*.keras"))
            for old in periodic[: -self.keep]:
                old.unlink()

    def _write_state(self):
        state = {
            "step": self._step(),
            "checkpoint": self._last_checkpoint,
            "best_monitor": self.best_monitor,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "lr_schedule": self.lr_schedule.get_state() if self.lr_schedule else None,
        }
        path = self.run_dir / STATE_FILE
        partial = path.with_name(f".partial-{STATE_FILE}")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(partial, path)
