"""Imported checkpoints against MXNet 1.9.1 itself, on real LFW faces.

Runs `bench/mxnet_reference.py` in the MXNet environment (`make mxnet-env`,
found through MFN_TF_MXNET_PYTHON): MXNet's loader reads the params files,
`mx.mod.Module` embeds the faces, and MXNet writes the MobileFaceNet-family
variants that the importer accepts or must reject.
"""

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from mfn_tf.importers import (
    MXNetImportError,
    import_mxnet_checkpoint,
    load_ndarrays,
    save_ndarrays,
)
from test_mxnet_import import lfw_faces

pytestmark = [pytest.mark.mxnet, pytest.mark.shared_data]

REFERENCE_SCRIPT = REPO_ROOT / "bench" / "mxnet_reference.py"
MIN_COSINE = 0.99999
FACE_COUNT = 16


def run_reference(mxnet_python, *args):
    result = subprocess.run(
        [mxnet_python, str(REFERENCE_SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"mxnet_reference.py {' '.join(map(str, args))} failed:\n{result.stderr}"
    )


def cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def faces(lfw_images, tmp_path_factory):
    """Real LFW faces as uint8 (N, 112, 112, 3) and the .npy MXNet reads."""
    faces = lfw_faces(lfw_images, FACE_COUNT)
    path = tmp_path_factory.mktemp("faces") / "faces.npy"
    np.save(path, faces)
    return faces, path


def mxnet_embeddings(mxnet_python, prefix, faces_path, tmp_path, flip=False):
    out = tmp_path / "mxnet_embeddings.npy"
    options = ["--batch-size", 8] + (["--flip"] if flip else [])
    run_reference(mxnet_python, "embed", prefix, 0, faces_path, out, *options)
    return np.load(out)


def keras_embeddings(backbone, faces, flip=False):
    images = faces.astype(np.float32)
    embeddings = backbone.predict(images, batch_size=8, verbose=0)
    if flip:
        embeddings = embeddings + backbone.predict(images[:, :, ::-1], batch_size=8, verbose=0)
    return embeddings


def test_parser_matches_mxnet_loader(mxnet_python, insightface_model, tmp_path):
    params = f"{insightface_model}-0000.params"
    run_reference(mxnet_python, "load-params", params, tmp_path / "mxnet.npz")
    expected = np.load(tmp_path / "mxnet.npz")
    loaded = load_ndarrays(params)
    assert sorted(loaded) == sorted(expected.files)
    for name in expected.files:
        assert loaded[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)


def test_mxnet_reads_saved_ndarrays(mxnet_python, tmp_path):
    arrays = {
        "arg:weight": np.random.RandomState(1).normal(size=(8, 1, 3, 3)).astype(np.float32),
        "aux:moving_mean": np.linspace(-1, 1, 8).astype(np.float16),
        "arg:index": np.arange(3, dtype=np.int64),
    }
    save_ndarrays(tmp_path / "ours.params", arrays)
    run_reference(mxnet_python, "load-params", tmp_path / "ours.params", tmp_path / "back.npz")
    loaded = np.load(tmp_path / "back.npz")
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_parser_reads_numpy_mode_files(mxnet_python, tmp_path):
    """`npx.save` writes NDArray V3 (numpy-shape mode), scalars included."""
    path = tmp_path / "v3.params"
    code = (
        "import mxnet as mx, numpy as np; mx.npx.set_np(); "
        "mx.npx.save(r'%s', {'x': mx.np.array(np.arange(6.0).reshape(2, 3)), "
        "'s': mx.np.array(2.5)})" % path
    )
    result = subprocess.run([mxnet_python, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = load_ndarrays(path)
    np.testing.assert_array_equal(loaded["x"], np.arange(6.0).reshape(2, 3))
    assert loaded["s"].shape == ()
    assert loaded["s"] == 2.5


@pytest.mark.parametrize("flip", [False, True], ids=["plain", "flip"])
def test_real_checkpoint_matches_mxnet(
    mxnet_python, insightface_model, faces, tmp_path, flip, record_property
):
    images, faces_path = faces
    expected = mxnet_embeddings(mxnet_python, insightface_model, faces_path, tmp_path, flip)
    backbone, _, _ = import_mxnet_checkpoint(insightface_model, 0)
    actual = keras_embeddings(backbone, images, flip)
    similarity = cosine(actual, expected)
    largest_difference = float(np.max(np.abs(actual - expected)))
    print(
        f"model-y1-test2 vs MXNet on {len(images)} LFW faces (flip={flip}): min cosine "
        f"{similarity.min():.8f}, max |difference| {largest_difference:.3g}, "
        f"max |embedding| {np.abs(expected).max():.3g}"
    )
    record_property("min_cosine", float(similarity.min()))
    record_property("max_abs_difference", largest_difference)
    assert similarity.min() >= MIN_COSINE
    assert largest_difference <= 1e-3 * np.abs(expected).max()


VARIANTS = {
    "relu": ["--act", "relu"],
    "conv-embedding": ["--embedding", "conv"],
    "training-checkpoint": ["--classes", "10", "--dropout", "--identity", "--fc1-gamma"],
    "eps-256d": ["--body-eps", "1e-5", "--embedding-size", "256", "--width", "0.5"],
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_matches_mxnet(mxnet_python, faces, tmp_path, variant):
    images, faces_path = faces
    options = VARIANTS[variant]
    if "--width" not in options:
        options = options + ["--width", "0.25"]
    prefix = tmp_path / variant
    run_reference(mxnet_python, "make-checkpoint", prefix, *options)
    expected = mxnet_embeddings(mxnet_python, prefix, faces_path, tmp_path)

    backbone, fc7_kernel, info = import_mxnet_checkpoint(prefix, 0)
    similarity = cosine(keras_embeddings(backbone, images), expected)
    assert similarity.min() >= MIN_COSINE, similarity

    if variant == "training-checkpoint":
        arrays = load_ndarrays(f"{prefix}-0000.params")
        np.testing.assert_array_equal(fc7_kernel, arrays["arg:fc7_weight"].T)
        assert info.num_classes == 10
        assert "dropout0 (Dropout)" in info.skipped_nodes
        assert any(node.startswith("fc7 ") for node in info.head_nodes)
    else:
        assert fc7_kernel is None
    if variant == "eps-256d":
        assert backbone.output_shape == (None, 256)
        assert backbone.get_layer("stage3_block2_dw_bn").epsilon == pytest.approx(1e-5)
    if variant == "relu":
        assert info.activations == ["relu"]


@pytest.mark.parametrize(
    "blocks, first_difference",
    [
        ("5,1,6,1,3", "'row4_block2_conv_sep_conv2d'"),  # one too many in the last row
        ("5,1,5,1,2", "'row3_block0_conv_sep_conv2d'"),  # one too few in row 3
    ],
)
def test_other_block_layout_rejected(mxnet_python, tmp_path, blocks, first_difference):
    prefix = tmp_path / "other"
    run_reference(
        mxnet_python, "make-checkpoint", prefix, "--width", "0.25", "--blocks", blocks
    )
    with pytest.raises(MXNetImportError, match=first_difference):
        import_mxnet_checkpoint(prefix, 0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
