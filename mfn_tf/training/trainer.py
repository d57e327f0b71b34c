"""One stage of insightface's recipe on `model.fit`.

Training is counted in iterations, as in insightface: one Keras epoch is
`recipe.verbose` iterations, the verification interval, so that the
epoch-end logs carry the verification figures to every callback (CSV,
TensorBoard, the LR plateau rule and the best checkpoint).
"""

import json
import logging
import math
import time
from pathlib import Path

import keras

from mfn_tf.training.checkpoints import TrainingCheckpoints, read_state
from mfn_tf.training.distribute import make_strategy
from mfn_tf.training.model_builder import (
    HEAD_NAME,
    build_backbone,
    build_head,
    build_training_model,
    start_from_pretrained,
)
from mfn_tf.training.plots import plot_training
from mfn_tf.training.progress import IntervalLogger, VerificationLog, start_csv_logs

logger = logging.getLogger(__name__)


class RunDirectoryError(ValueError):
    """A run folder that would be overwritten, or cannot be resumed."""


def resolve_targets(data_dir, recipe):
    """Map each verification target to `data_dir/<target>.bin`.

    Missing targets are skipped with a warning, as insightface does, except
    `best_target`, without which the stage cannot pick its checkpoint.
    """
    targets = {}
    for name in recipe.targets:
        path = Path(data_dir) / f"{name}.bin"
        if path.exists():
            targets[name] = path
        else:
            logger.warning("Verification target %s skipped: %s not found", name, path)
    if recipe.best_target and recipe.best_target not in targets:
        present = sorted(p.name for p in Path(data_dir).glob("*.bin"))
        raise FileNotFoundError(
            f"best_target {recipe.best_target!r} needs {Path(data_dir) / (recipe.best_target + '.bin')}, "
            f"which does not exist (present: {', '.join(present) or 'no .bin files'}). "
            "Add the file, or pass --set best_target=NAME with one that exists "
            "(or --set best_target= to keep only the final model)."
        )
    return targets


class _StopAtMaxSteps(keras.callbacks.Callback):
    def __init__(self, max_steps):
        super().__init__()
        self.max_steps = max_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.max_steps:
            self.model.stop_training = True


class _PlotEachEvaluation(keras.callbacks.Callback):
    def __init__(self, run_dir, title):
        super().__init__()
        self.run_dir = run_dir
        self.title = title

    def on_epoch_end(self, epoch, logs=None):
        plot_training(self.run_dir, title=self.title)


def _compile(model, recipe):
    from mfn_tf.training.optimizer import MXNetSGD

    model.compile(
        optimizer=MXNetSGD(learning_rate=recipe.lr, momentum=recipe.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        # XLA was 8-10x slower than the default graph on CPU here.
        jit_compile=False,
    )


def _check_run_dir(run_dir, resume):
    state = read_state(run_dir)
    if resume:
        if state is None or not state.get("checkpoint"):
            raise RunDirectoryError(
                f"--resume: {run_dir} has no {'state.json' if state is None else 'checkpoint'} "
                "to resume from. Start the stage without --resume."
            )
        checkpoint = Path(run_dir) / state["checkpoint"]
        if not checkpoint.exists():
            raise RunDirectoryError(f"--resume: {checkpoint} named in state.json is missing")
        return state, checkpoint
    if state is not None or any(Path(run_dir).glob("*.keras")):
        raise RunDirectoryError(
            f"{run_dir} already contains a training run. Pass --resume to continue "
            "it, or choose another --prefix; nothing was overwritten."
        )
    return None, None


def _check_resumed_stage(run_dir, recipe):
    saved = Path(run_dir) / "recipe.json"
    if not saved.is_file():
        return
    stage = json.loads(saved.read_text()).get("stage")
    if stage != recipe.stage:
        raise RunDirectoryError(
            f"--resume: {run_dir} is a {stage} run, not {recipe.stage}; resume it with "
            f"--stage {stage}, or start {recipe.stage} in another --prefix with --pretrained"
        )


def _check_resumed_classes(model, checkpoint, num_classes, data_dir):
    head = model.get_layer(HEAD_NAME)
    if head.num_classes != num_classes:
        raise RunDirectoryError(
            f"--resume: {checkpoint} was trained on {head.num_classes} classes, but "
            f"{data_dir} has {num_classes}; resume with the run's own --data-dir"
        )


def train_stage(recipe, data_dir, run_dir, pretrained=None, resume=False):
    """Train one stage and write its checkpoints, logs and plots.

    Args:
        recipe: a resolved `Recipe`.
        data_dir: an insightface dataset folder (`train.rec`, `train.idx`,
            `property`, target `.bin` files), or a folder of identity
            folders.
        run_dir: the output folder (`--prefix`).
        pretrained: the checkpoint the stage starts from, a `.keras` file or
            an MXNet `PREFIX,EPOCH`; ignored with `resume`.
        resume: continue the run in `run_dir` from its newest checkpoint.

    Returns:
        A dict summary, also written to `run_dir/summary.json`.
    """
    from mfn_tf.data.pipeline import make_dataset, open_training_data
    from mfn_tf.evaluation import VerificationCallback
    from mfn_tf.training.lr_schedule import StepLearningRate
    from mfn_tf.training.weight_decay import WeightDecayMultipliers

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state, checkpoint = _check_run_dir(run_dir, resume)
    if resume:
        _check_resumed_stage(run_dir, recipe)
    targets = resolve_targets(data_dir, recipe)
    recipe.save(run_dir / "recipe.json")
    logger.info("Recipe for stage %s:\n%s", recipe.stage, json.dumps(recipe.to_dict(), indent=2))

    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(recipe.precision)
    try:
        strategy = make_strategy(recipe.distribute)
        global_batch = recipe.per_device_batch * strategy.num_replicas_in_sync
        data = open_training_data(data_dir)
        # A resumed run gets a new seed, so it does not replay the order of
        # the images that it has already trained on.
        dataset = make_dataset(
            data,
            global_batch,
            mirror=recipe.mirror,
            seed=recipe.seed + (state["step"] if state else 0),
        )
        logger.info(
            "Training data: %d images of %d identities; global batch %d (%d per replica)",
            data.num_images,
            data.num_classes,
            global_batch,
            recipe.per_device_batch,
        )

        with strategy.scope():
            head = build_head(recipe, data.num_classes)
            if checkpoint is not None:
                model = keras.models.load_model(checkpoint, compile=False)
                _check_resumed_classes(model, checkpoint, data.num_classes, data_dir)
            elif pretrained:
                model = start_from_pretrained(pretrained, head, recipe.embedding_size)
            else:
                model = build_training_model(build_backbone(recipe), head)
            _compile(model, recipe)
            if checkpoint is not None:
                # Restores momentum, the iteration count and the weights.
                model.optimizer.build(model.trainable_variables)
                model.load_weights(checkpoint)

        start_step = int(model.optimizer.iterations.numpy())
        start_csv_logs(
            [run_dir / "metrics.csv", run_dir / "verification.csv"],
            start_step if checkpoint is not None else None,
        )
        if start_step >= recipe.max_steps:
            logger.info("Nothing to do: step %d >= max_steps %d", start_step, recipe.max_steps)
            return _summarize(run_dir, recipe, start_step, 0.0)

        lr_schedule = StepLearningRate(
            base_lr=recipe.lr,
            lr_steps=recipe.lr_steps,
            warmup_steps=recipe.warmup_steps,
            plateau_monitor=recipe.plateau_monitor or None,
            plateau_patience=recipe.plateau_patience,
        )
        if state and state.get("lr_schedule"):
            lr_schedule.set_state(state["lr_schedule"])
        checkpoint_every = recipe.checkpoint_every or recipe.verbose
        callbacks = [
            # First: the others read the verification figures from the logs.
            VerificationCallback(targets, batch_size=min(global_batch, 256)),
        ] if targets else []
        callbacks += [
            lr_schedule,
            WeightDecayMultipliers(
                wd=recipe.wd,
                fc7_mult=recipe.fc7_wd_mult,
                after_gdc_mult=recipe.after_gdc_wd_mult,
            ),
            IntervalLogger(
                run_dir / "metrics.csv",
                stage=recipe.stage,
                max_steps=recipe.max_steps,
                global_batch=global_batch,
                log_every=recipe.log_every,
                print_lines=recipe.progress == "line",
            ),
            VerificationLog(run_dir / "verification.csv", list(targets)),
            TrainingCheckpoints(
                run_dir,
                every_n_steps=checkpoint_every,
                keep=recipe.keep_checkpoints,
                best_monitor=f"{recipe.best_target}_accuracy" if recipe.best_target else None,
                lr_schedule=lr_schedule,
                best_value=state.get("best_value") if state else None,
            ),
            keras.callbacks.TensorBoard(run_dir / "tensorboard", update_freq=recipe.log_every),
            _PlotEachEvaluation(run_dir, title=f"{recipe.stage} ({run_dir.name})"),
            _StopAtMaxSteps(recipe.max_steps),
        ]

        started = time.perf_counter()
        model.fit(
            dataset,
            epochs=math.ceil(recipe.max_steps / recipe.verbose),
            initial_epoch=start_step // recipe.verbose,
            steps_per_epoch=recipe.verbose,
            shuffle=False,  # the dataset shuffles itself
            callbacks=callbacks,
            verbose=1 if recipe.progress == "bar" else 0,
        )
        elapsed = time.perf_counter() - started
        plot_training(run_dir, title=f"{recipe.stage} ({run_dir.name})")
        return _summarize(run_dir, recipe, int(model.optimizer.iterations.numpy()), elapsed)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _summarize(run_dir, recipe, step, seconds):
    state = read_state(run_dir) or {}
    summary = {
        "stage": recipe.stage,
        "step": step,
        "seconds": round(seconds, 1),
        "final_model": str(run_dir / "model.keras"),
        "best_model": str(run_dir / "best.keras") if (run_dir / "best.keras").exists() else None,
        "best_monitor": state.get("best_monitor"),
        "best_value": state.get("best_value"),
        "best_step": state.get("best_step"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
