"""A short softmax stage on real faces, verified on held-out identities.

The training set keeps the LFW people with at least 4 images who appear in
no pair of folds 6-10; the verification set is the 600 pairs of fold 6,
whose people are therefore all unseen. Both are made with the project's
own `data pack-rec` and `data pack-bin` commands.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from mfn_tf.evaluation.evaluate import evaluate_bin
from mfn_tf.model.mobilefacenet import MobileFaceNet
from mfn_tf.training.recipe import load_recipe
from mfn_tf.training.trainer import train_stage

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def _cli(*args):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "cli.py"), *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def lfw_split(lfw_images, lfw_pairs, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("lfw_split")
    _cli("data", "pack-rec", lfw_images, "--out", data_dir,
         "--exclude-pairs", lfw_pairs, "--exclude-folds", "6-10",
         "--min-images", "4", "--shift-x", "8")
    _cli("data", "pack-bin", lfw_pairs, lfw_images, "--folds", "6",
         "--shift-x", "8", "--out", data_dir / "lfw_fold6.bin")
    return data_dir


def test_softmax_on_lfw_learns_unseen_identities(lfw_split, tmp_path):
    untrained = evaluate_bin(MobileFaceNet(), lfw_split / "lfw_fold6.bin")
    recipe = load_recipe(
        "softmax",
        ["cpu"],
        {
            "per_device_batch": "32",
            "max_steps": "150",
            "lr_steps": "120",
            "verbose": "150",
            "log_every": "25",
            "checkpoint_every": "0",
            "targets": "lfw_fold6",
            "best_target": "lfw_fold6",
        },
    )
    summary = train_stage(recipe, lfw_split, tmp_path)

    with open(tmp_path / "metrics.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[-1] < losses[0] - 0.5, losses
    accuracy = summary["best_value"]
    print(f"fold-6 Accuracy-Flip: untrained {untrained.accuracy:.4f}, trained {accuracy:.4f}")
    # Chance is 0.5 (300 same, 300 different pairs).
    assert accuracy > 0.6
    assert accuracy > untrained.accuracy + 0.03
