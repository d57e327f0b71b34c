"""Training stages end to end on a tiny synthetic dataset."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mfn_tf.training.recipe import load_recipe
from mfn_tf.training.trainer import RunDirectoryError, train_stage

REPO_ROOT = Path(__file__).resolve().parents[1]

# A quarter-width network and a handful of steps: plumbing, not accuracy.
TINY = {
    "width_multiplier": "0.25",
    "per_device_batch": "8",
    "max_steps": "4",
    "verbose": "2",
    "log_every": "1",
    "lr_steps": "3",
    "targets": "synth",
    "best_target": "synth",
    "progress": "line",
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    config = SyntheticConfig(
        classes=8,
        images_per_class=6,
        verification_classes=6,
        verification_images_per_class=4,
        pairs=40,
        seed=3,
    )
    write_synthetic_dataset(out, config, progress=False)
    return out


def _recipe(stage, **settings):
    return load_recipe(stage, settings={**TINY, **settings})


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def softmax_run(tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("softmax")
    summary = train_stage(_recipe("softmax"), tiny_data, run_dir)
    return run_dir, summary


def test_stage_writes_run_files(softmax_run):
    run_dir, summary = softmax_run
    assert summary["step"] == 4
    for name in [
        "recipe.json",
        "metrics.csv",
        "verification.csv",
        "state.json",
        "model.keras",
        "best.keras",
        "ckpt-0000004.keras",
        "training.png",
        "loss.png",
        "accuracy.png",
        "lr.png",
        "verification.png",
        "summary.json",
    ]:
        assert (run_dir / name).exists(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_metrics_csv_rows(softmax_run):
    run_dir, _ = softmax_run
    rows = _rows(run_dir / "metrics.csv")
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]
    lrs = [float(row["lr"]) for row in rows]
    # lr_steps=3: the drop applies from the step-3 update on.
    assert lrs[:2] == pytest.approx([0.1, 0.1])
    assert lrs[3] == pytest.approx(0.01)
    assert all(np.isfinite(float(row["loss"])) for row in rows)


def test_verification_csv_every_interval(softmax_run):
    run_dir, _ = softmax_run
    rows = _rows(run_dir / "verification.csv")
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert all(0.0 <= float(row["synth_accuracy"]) <= 1.0 for row in rows)


def test_saved_recipe_matches(softmax_run):
    run_dir, _ = softmax_run
    saved = json.loads((run_dir / "recipe.json").read_text())
    assert saved["stage"] == "softmax"
    assert saved["width_multiplier"] == 0.25


def test_existing_run_not_overwritten(tiny_data, softmax_run):
    run_dir, _ = softmax_run
    before = (run_dir / "model.keras").stat().st_mtime_ns
    with pytest.raises(RunDirectoryError, match="--resume"):
        train_stage(_recipe("softmax"), tiny_data, run_dir)
    assert (run_dir / "model.keras").stat().st_mtime_ns == before


def test_resume_without_run_rejected(tiny_data, tmp_path):
    with pytest.raises(RunDirectoryError, match="no state.json"):
        train_stage(_recipe("softmax"), tiny_data, tmp_path, resume=True)


def test_missing_best_target_rejected(tiny_data, tmp_path):
    recipe = _recipe("finetune", targets="lfw,agedb_30", best_target="agedb_30")
    with pytest.raises(FileNotFoundError, match="agedb_30.bin"):
        train_stage(recipe, tiny_data, tmp_path)


def test_resume_continues_step_and_optimizer(tiny_data, softmax_run, tmp_path):
    run_dir, _ = softmax_run
    resumed = tmp_path / "resumed"
    # Copy the finished 4-step run and continue it to 6 steps.
    subprocess.run(["cp", "-r", str(run_dir), str(resumed)], check=True)
    summary = train_stage(_recipe("softmax", max_steps="6"), tiny_data, resumed, resume=True)
    assert summary["step"] == 6
    steps = [int(row["step"]) for row in _rows(resumed / "metrics.csv")]
    assert steps == [1, 2, 3, 4, 5, 6]
    lrs = [float(row["lr"]) for row in _rows(resumed / "metrics.csv")]
    assert lrs[4:] == pytest.approx([0.01, 0.01])  # the LR step survives the resume


def test_arcface_starts_from_softmax_classifier(tiny_data, softmax_run, tmp_path):
    run_dir, _ = softmax_run
    softmax_model = keras.models.load_model(run_dir / "model.keras", compile=False)
    softmax_kernel = np.asarray(softmax_model.get_layer("fc7").kernel)
    recipe = _recipe("arcface", max_steps="1", verbose="1", lr_steps="")
    # lr 0 keeps the weights where they started, so they can be compared.
    recipe.lr = 1e-12
    train_stage(recipe, tiny_data, tmp_path, pretrained=run_dir / "model.keras")
    arcface_model = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert type(arcface_model.get_layer("fc7")).__name__ == "ArcFace"
    np.testing.assert_allclose(
        np.asarray(arcface_model.get_layer("fc7").kernel), softmax_kernel, atol=1e-6
    )


@pytest.mark.slow
def test_mixed_bfloat16_trains(tiny_data, tmp_path):
    recipe = _recipe("arcface", precision="mixed_bfloat16", max_steps="2", lr_steps="")
    summary = train_stage(recipe, tiny_data, tmp_path)
    assert summary["step"] == 2
    assert keras.mixed_precision.global_policy().name == "float32"
    rows = _rows(tmp_path / "metrics.csv")
    assert all(np.isfinite(float(row["loss"])) for row in rows)


DISTRIBUTED_SCRIPT = """
import json, logging, sys
import tensorflow as tf
logging.basicConfig(level=logging.INFO)
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from mfn_tf.training.recipe import load_recipe
from mfn_tf.training.trainer import train_stage
settings = json.loads(sys.argv[3])
recipe = load_recipe("softmax", settings=settings)
summary = train_stage(recipe, sys.argv[1], sys.argv[2])
print("SUMMARY", json.dumps(summary))
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpu_devices(tiny_data, tmp_path):
    settings = {**TINY, "distribute": "mirrored", "per_device_batch": "4", "max_steps": "2"}
    result = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED_SCRIPT, str(tiny_data), str(tmp_path), json.dumps(settings)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy with 2 replica(s)" in result.stderr
    # insightface's per-device batch: 4 per replica, 8 in all.
    assert "global batch 8 (4 per replica)" in result.stderr
    assert (tmp_path / "model.keras").exists()


def test_corrupt_record_stops_with_message(tiny_data, tmp_path):
    import shutil

    from click.testing import CliRunner

    from mfn_tf.commands.train import train

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    # Record 3's image starts after the 8-byte RecordIO header and the
    # 24-byte IRHeader; zeroing its first bytes breaks the JPEG marker.
    lines = (data / "train.idx").read_text().splitlines()
    offsets = dict(line.split("\t") for line in lines)
    start = int(offsets["3"]) + 8 + 24
    with open(data / "train.rec", "r+b") as f:
        f.seek(start)
        f.write(bytes(16))
    args = ["--stage", "softmax", "--data-dir", str(data), "--prefix", str(tmp_path / "run")]
    for key, value in {**TINY, "max_steps": "8", "verbose": "8"}.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 1, result.output
    assert "training stopped" in result.output
    assert "record 3" in result.output
    assert "--resume" in result.output


def test_resume_rejects_other_stage(tiny_data, softmax_run):
    run_dir, _ = softmax_run
    with pytest.raises(RunDirectoryError, match="is a softmax run, not arcface"):
        train_stage(_recipe("arcface"), tiny_data, run_dir, resume=True)


def test_resume_rejects_other_class_count(softmax_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(softmax_run[0], run_dir)
    other = tmp_path / "other"
    config = SyntheticConfig(classes=5, images_per_class=6, verification_classes=6,
                             verification_images_per_class=4, pairs=40, seed=4)
    write_synthetic_dataset(other, config, progress=False)
    with pytest.raises(RunDirectoryError, match="trained on 8 classes, but .* has 5"):
        train_stage(_recipe("softmax"), other, run_dir, resume=True)


def test_csv_logs_trimmed_to_resumed_step(tmp_path):
    from mfn_tf.training.progress import start_csv_logs

    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n20,5.0\n40,4.0\n60,3.5\n")
    start_csv_logs([path, tmp_path / "absent.csv"], resumed_step=40)
    assert path.read_text().splitlines() == ["step,loss", "20,5.0", "40,4.0"]


def test_csv_logs_of_crashed_run_removed(tmp_path):
    from mfn_tf.training.progress import start_csv_logs

    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n20,5.0\n")
    start_csv_logs([path], resumed_step=None)
    assert not path.exists()


def test_interrupt_names_resume_step(tiny_data, softmax_run, monkeypatch):
    from click.testing import CliRunner

    import mfn_tf.training.trainer as trainer
    from mfn_tf.commands.train import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_stage", interrupted)
    run_dir, _ = softmax_run
    args = ["--stage", "softmax", "--data-dir", str(tiny_data), "--prefix", str(run_dir), "--resume"]
    result = CliRunner().invoke(train, args)
    assert result.exit_code == 130
    assert "at step 4" in result.output
    assert "--resume" in result.output
