"""The runnable examples in docs/ keep working."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mfn_tf.data.synthetic import SyntheticConfig, write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fit_arcface_example_runs(tmp_path):
    config = SyntheticConfig(
        classes=6, images_per_class=4, verification_classes=4,
        verification_images_per_class=3, pairs=20, seed=5,
    )
    write_synthetic_dataset(tmp_path, config, progress=False)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "docs" / "examples" / "fit_arcface.py"),
            "--data-dir", str(tmp_path),
            "--steps", "4",
            "--batch-size", "8",
            "--width-multiplier", "0.25",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[synth][4]Accuracy-Flip:" in result.stderr
    assert "'lr': [0.1, 0.1, 0.1, 0.01]" in result.stdout
