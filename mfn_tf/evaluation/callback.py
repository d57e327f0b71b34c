"""Keras callback that runs insightface's verification during training."""

import logging
import time

import keras

from mfn_tf.evaluation.embedding import DEFAULT_BATCH_SIZE, ImageEmbedder
from mfn_tf.evaluation.evaluate import (
    evaluate_set,
    format_result_lines,
    load_verification_set,
)
from mfn_tf.model.loading import get_backbone

logger = logging.getLogger(__name__)

# Figures written into the epoch logs, as `{target}_{figure}`.
LOG_FIGURES = ("accuracy", "accuracy_std", "xnorm", "tar_at_far")


class VerificationCallback(keras.callbacks.Callback):
    """Evaluate the backbone on verification sets and put the figures in `logs`.

    The callback evaluates at the end of every Keras epoch, and also every
    `every_n_steps` optimizer steps if that is set. It embeds each target
    with the nested backbone (`get_backbone(model)`) and logs insightface's
    lines, such as `[lfw][2000]Accuracy-Flip: 0.99517+-0.00450`, with the
    global step (`optimizer.iterations`). At the epoch end it writes
    `{target}_accuracy`, `{target}_accuracy_std`, `{target}_xnorm` and
    `{target}_tar_at_far` into the logs.

    Keras hands one `logs` dict to the callbacks in list order, so only
    callbacks after this one see these keys: the trainer puts it first, before
    the CSV logger, TensorBoard, the LR plateau schedule and the checkpoint
    that keeps the best `agedb_30_accuracy`. The trainer makes one Keras
    epoch one verification interval, so every interval reaches those
    callbacks.

    Args:
        targets: mapping from target name (`lfw`, `cfp_fp`, `agedb_30`) to a
            `.bin` path. The files are decoded once, here, so a bad path
            fails before training starts.
        every_n_steps: also evaluate when the global step is a multiple of
            this; these results are logged but reach `logs` only if they fall
            on an epoch end.
        batch_size: images per forward pass (twice that with `flip`).
        flip: add each image's mirrored embedding (Accuracy-Flip).
        prefix_logs: name the log keys `{target}_{figure}`. With False the
            keys are bare (`accuracy`, `xnorm`, ...), which needs exactly one
            target and must not collide with a training metric.
        image_size: `(height, width)` of the images in the `.bin` files and
            of the backbone input.
        verbose: 0 logs nothing, 1 logs insightface's lines.
    """

    def __init__(
        self,
        targets,
        every_n_steps=None,
        batch_size=DEFAULT_BATCH_SIZE,
        flip=True,
        prefix_logs=True,
        image_size=(112, 112),
        verbose=1,
    ):
        super().__init__()
        if not targets:
            raise ValueError("VerificationCallback needs at least one target")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive or None, got {every_n_steps}")
        if not prefix_logs and len(targets) != 1:
            raise ValueError(
                f"prefix_logs=False needs exactly one target, got {len(targets)} "
                f"({', '.join(targets)}); bare log keys of several targets "
                "would overwrite each other"
            )
        self.targets = {name: str(path) for name, path in targets.items()}
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.flip = flip
        self.prefix_logs = prefix_logs
        self.image_size = tuple(image_size)
        self.verbose = verbose
        # Without a batch-end hook Keras may run batch callbacks on a thread.
        # The hook does nothing unless every_n_steps is set.
        self.async_safe = every_n_steps is None

        self.sets = {}
        for name, path in self.targets.items():
            try:
                self.sets[name] = load_verification_set(
                    path, name=name, image_size=self.image_size
                )
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"verification set {name!r} not found: {path} does not exist"
                ) from error
        self.results = {}
        self.highest_accuracy = {}
        self.history = []
        self._embedder = None
        self._last_step = None

    def get_config(self):
        return {
            "targets": dict(self.targets),
            "every_n_steps": self.every_n_steps,
            "batch_size": self.batch_size,
            "flip": self.flip,
            "prefix_logs": self.prefix_logs,
            "image_size": list(self.image_size),
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def log_key(self, name, figure):
        return f"{name}_{figure}" if self.prefix_logs else figure

    def on_train_begin(self, logs=None):
        backbone = get_backbone(self.model)
        input_size = tuple(backbone.input_shape[1:3])
        if input_size != self.image_size:
            raise ValueError(
                f"the backbone takes {input_size} images but the verification "
                f"sets were decoded at {self.image_size}; pass image_size="
                f"{input_size} to VerificationCallback"
            )
        self._embedder = ImageEmbedder(backbone, self.batch_size)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_n_steps is None:
            return
        step = self._global_step()
        if step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(step)

    def on_epoch_end(self, epoch, logs=None):
        step = self._global_step()
        if step != self._last_step:
            self.evaluate(step)
        if logs is None:
            return
        for name, result in self.results.items():
            for figure in LOG_FIGURES:
                key = self.log_key(name, figure)
                if not self.prefix_logs and key in logs:
                    raise ValueError(
                        f"verification log key {key!r} would overwrite the "
                        "training metric of that name; use prefix_logs=True"
                    )
                logs[key] = float(getattr(result, figure))

    def evaluate(self, step):
        """Evaluate every target now and log the results under `step`."""
        if self._embedder is None:
            self.on_train_begin()
        started = time.perf_counter()
        record = {"step": step}
        for name, verification_set in self.sets.items():
            result = evaluate_set(self._embedder, verification_set, flip=self.flip)
            self.results[name] = result
            self.highest_accuracy[name] = max(
                self.highest_accuracy.get(name, 0.0), result.accuracy
            )
            for figure in LOG_FIGURES:
                record[self.log_key(name, figure)] = float(getattr(result, figure))
            if self.verbose:
                for line in format_result_lines(result, step):
                    logger.info("%s", line)
                logger.info(
                    "[%s][%d]Accuracy-Highest: %1.5f", name, step, self.highest_accuracy[name]
                )
        self.history.append(record)
        self._last_step = step
        logger.debug("verification at step %d took %.1f s", step, time.perf_counter() - started)

    def _global_step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
