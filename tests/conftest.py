"""Shared fixtures: paths to real data and to the MXNet environment."""

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("MFN_TF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data():
    """`../shared/data` (real faces, research licences); skips where absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real face data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lfw_images(shared_data):
    path = shared_data / "lfw_112x112" / "images"
    if not path.is_dir():
        pytest.skip(f"aligned LFW images not found at {path}")
    return path


@pytest.fixture(scope="session")
def lfw_pairs(shared_data):
    path = shared_data / "lfw_protocol" / "pairs.txt"
    if not path.is_file():
        pytest.skip(f"LFW pairs.txt not found at {path}")
    return path


@pytest.fixture(scope="session")
def insightface_model(shared_data):
    """Prefix of insightface's model-y1-test2 checkpoint (epoch 0)."""
    prefix = shared_data / "models" / "insightface_model-y1-test2" / "model"
    if not Path(f"{prefix}-symbol.json").is_file():
        pytest.skip(f"insightface checkpoint not found at {prefix}")
    return prefix


@pytest.fixture(scope="session")
def mxnet_python():
    """Python of the MXNet 1.9.1 environment (`make mxnet-env`).

    Skips where MFN_TF_MXNET_PYTHON is unset. `make test`, and so CI, sets
    it, and there a broken environment fails the tests instead of skipping.
    """
    python = os.environ.get("MFN_TF_MXNET_PYTHON")
    if not python:
        pytest.skip("MFN_TF_MXNET_PYTHON is not set; run `make test` or `make mxnet-env`")
    result = subprocess.run(
        [python, "-c", "import mxnet; print(mxnet.__version__)"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"MXNet environment at {python} is broken:\n{result.stderr}"
    return python
