"""Per-interval training log: a fixed-format line and `metrics.csv`."""

import csv
import logging
import math
import time
from pathlib import Path

import keras

logger = logging.getLogger(__name__)

TRAIN_COLUMNS = ("step", "loss", "acc", "lr", "images_per_sec")


def start_csv_logs(paths, resumed_step):
    """Prepare the run's CSV logs for a run that starts at `resumed_step`.

    A fresh run (`resumed_step` None) removes logs that a run which crashed
    before its first checkpoint left behind. A resumed run keeps the rows up
    to its checkpoint's step and drops those after it, which the resumed
    run writes again.
    """
    for path in map(Path, paths):
        if not path.is_file():
            continue
        if resumed_step is None:
            logger.warning("removing %s of an earlier run that saved no checkpoint", path)
            path.unlink()
            continue
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        header, *body = rows
        earlier = [row for row in body if row and int(float(row[0])) <= resumed_step]
        if len(earlier) < len(body):
            with open(path, "w", newline="") as f:
                csv.writer(f).writerows([header, *earlier])


class IntervalLogger(keras.callbacks.Callback):
    """Log mean loss, accuracy, LR and speed every `log_every` iterations.

    Keras' batch logs hold running means since the start of the epoch, so
    the mean over the iterations `(a, b]` of an epoch is recovered as
    `(b * mean_b - a * mean_a) / (b - a)`.

    Rows are appended to `csv_path` (so a resumed run continues the file),
    and with `print_lines` one line per interval goes to the log:
    `[softmax][step 120/300] loss=7.5123 acc=0.0312 lr=0.100000 speed=41.2 img/s`.
    """

    def __init__(self, csv_path, stage, max_steps, global_batch, log_every=100, print_lines=True):
        super().__init__()
        self.csv_path = Path(csv_path)
        self.stage = stage
        self.max_steps = max_steps
        self.global_batch = global_batch
        self.log_every = log_every
        self.print_lines = print_lines
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._batches_in_epoch = 0
        self._previous = {"batches": 0, "loss": 0.0, "acc": 0.0}
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._batches_in_epoch = batch + 1
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.log_every and step != self.max_steps:
            return
        done = self._batches_in_epoch - self._previous["batches"]
        if done <= 0:
            return
        learning_rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        row = {"step": step, "lr": float(learning_rate)}
        for key in ("loss", "acc"):
            if key not in logs:
                row[key] = math.nan
                continue
            current = float(logs[key])
            previous_sum = self._previous[key] * self._previous["batches"]
            row[key] = (current * self._batches_in_epoch - previous_sum) / done
            self._previous[key] = current
        elapsed = time.perf_counter() - self._start
        row["images_per_sec"] = done * self.global_batch / elapsed if elapsed > 0 else math.nan
        self._previous["batches"] = self._batches_in_epoch
        self._start = time.perf_counter()
        self._write(row)
        if self.print_lines:
            logger.info(
                "[%s][step %d/%d] loss=%.4f acc=%.4f lr=%.6f speed=%.1f img/s",
                self.stage,
                step,
                self.max_steps,
                row["loss"],
                row["acc"],
                row["lr"],
                row["images_per_sec"],
            )

    def _write(self, row):
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=TRAIN_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow({key: row[key] for key in TRAIN_COLUMNS})


class VerificationLog(keras.callbacks.Callback):
    """Append the verification figures of each evaluation to a CSV.

    Reads the `{target}_accuracy`-style keys that `VerificationCallback`
    puts into the epoch logs; it must come after that callback.
    """

    def __init__(self, csv_path, targets):
        super().__init__()
        self.csv_path = Path(csv_path)
        self.targets = list(targets)

    def columns(self):
        columns = ["step"]
        for target in self.targets:
            columns += [f"{target}_accuracy", f"{target}_accuracy_std", f"{target}_xnorm"]
        return columns

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not any(f"{target}_accuracy" in logs for target in self.targets):
            return
        row = {"step": int(self.model.optimizer.iterations.numpy())}
        for column in self.columns()[1:]:
            row[column] = float(logs[column]) if column in logs else math.nan
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns())
            if new_file:
                writer.writeheader()
            writer.writerow(row)
