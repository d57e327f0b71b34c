"""MXNet checkpoint import without MXNet: the NDArray parser, the symbol walk
on insightface's model-y1-test2, rejections, `load_backbone` and the CLI.

Parity with MXNet's own forward pass is in test_mxnet_import_parity.py.
"""

import json
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mfn_tf.importers import (
    MXNetImportError,
    NDArrayFileError,
    SymbolError,
    import_mxnet_checkpoint,
    load_ndarrays,
    parse_checkpoint_spec,
    save_ndarrays,
)
from mfn_tf.importers.mxnet_ndarray import LIST_MAGIC, NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC
from mfn_tf.model.loading import ModelLoadError, load_backbone

REAL_ARRAY_COUNT = 284


def lfw_faces(lfw_images, count):
    """The first `count` LFW faces in name order, as uint8 (N, 112, 112, 3)."""
    paths = sorted(lfw_images.glob("*/*.jpg"))[:count]
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])


def copy_checkpoint(prefix, directory, name="model"):
    """Copy checkpoint `prefix` (epoch 0) to `directory`; return the new prefix."""
    target = directory / name
    shutil.copy(f"{prefix}-symbol.json", f"{target}-symbol.json")
    shutil.copy(f"{prefix}-0000.params", f"{target}-0000.params")
    return target


def edit_symbol(prefix, edit):
    """Apply `edit(nodes)` to the symbol JSON of checkpoint `prefix`."""
    path = f"{prefix}-symbol.json"
    with open(path) as handle:
        graph = json.load(handle)
    edit(graph["nodes"])
    with open(path, "w") as handle:
        json.dump(graph, handle)


def find_node(nodes, name):
    return next(node for node in nodes if node["name"] == name)


@pytest.fixture(scope="module")
def imported(insightface_model):
    return import_mxnet_checkpoint(insightface_model, 0)


# Checkpoint names.


def test_checkpoint_spec_parses():
    assert parse_checkpoint_spec("models/model-y1,0") == ("models/model-y1", 0)
    assert parse_checkpoint_spec("a,b/model,12") == ("a,b/model", 12)


@pytest.mark.parametrize("spec", ["models/model-y1", "models/model-y1,", ",3", "model,x"])
def test_checkpoint_spec_rejects_malformed(spec):
    with pytest.raises(ValueError, match="PREFIX,EPOCH|non-negative integer"):
        parse_checkpoint_spec(spec)


# The NDArray file format.


def test_ndarray_round_trip(tmp_path):
    arrays = {
        "arg:weight": np.random.RandomState(0).normal(size=(4, 3, 3, 3)).astype(np.float32),
        "aux:moving_var": np.arange(5, dtype=np.float16),
        "arg:count": np.array([1, -2, 3], dtype=np.int32),
        "bytes": np.array([0, 255], dtype=np.uint8),
        "double": np.eye(2),
    }
    path = tmp_path / "round.params"
    save_ndarrays(path, arrays)
    loaded = load_ndarrays(path)
    assert list(loaded) == list(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype, name
        np.testing.assert_array_equal(loaded[name], value)


def test_ndarray_older_layouts(tmp_path):
    """V1 (int64 dims) and the oldest layout (no magic, uint32 dims), unnamed."""
    v1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    legacy = np.array([1.5, -2.0], dtype=np.float32)
    data = struct.pack("<QQQ", LIST_MAGIC, 0, 2)
    data += struct.pack("<Ii2q", NDARRAY_V1_MAGIC, 2, 2, 3) + struct.pack("<iii", 1, 0, 0)
    data += v1.tobytes()
    data += struct.pack("<II", 1, 2) + struct.pack("<iii", 1, 0, 0) + legacy.tobytes()
    data += struct.pack("<Q", 0)
    path = tmp_path / "old.params"
    path.write_bytes(data)
    loaded = load_ndarrays(path)
    assert list(loaded) == ["0", "1"]
    np.testing.assert_array_equal(loaded["0"], v1)
    np.testing.assert_array_equal(loaded["1"], legacy)


def test_ndarray_rejects_sparse(tmp_path):
    data = struct.pack("<QQQ", LIST_MAGIC, 0, 1) + struct.pack("<Ii", NDARRAY_V2_MAGIC, 1)
    data += bytes(64)
    path = tmp_path / "sparse.params"
    path.write_bytes(data)
    with pytest.raises(NDArrayFileError, match="row_sparse"):
        load_ndarrays(path)


def test_ndarray_rejects_other_file(tmp_path):
    path = tmp_path / "model-0000.params"
    path.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(NDArrayFileError, match="not an MXNet `.params` file"):
        load_ndarrays(path)


@pytest.mark.shared_data
def test_real_params_arrays(insightface_model):
    arrays = load_ndarrays(f"{insightface_model}-0000.params")
    assert len(arrays) == REAL_ARRAY_COUNT
    assert arrays["arg:fc1_weight"].shape == (128, 512)
    assert arrays["arg:conv_1_conv2d_weight"].shape == (64, 3, 3, 3)
    assert arrays["aux:fc1_moving_var"].dtype == np.float32
    assert sum(name.startswith("aux:") for name in arrays) == 2 * 50


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "keep", [8, 20, 100, 5000, -9], ids=["header", "count", "array-header", "data", "names"]
)
def test_truncated_params_rejected(insightface_model, tmp_path, keep):
    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    data = params.read_bytes()
    params.write_bytes(data[:keep])
    with pytest.raises(NDArrayFileError, match="truncated"):
        load_ndarrays(params)
    with pytest.raises(NDArrayFileError, match="truncated"):
        import_mxnet_checkpoint(prefix, 0)


# The structural mapping of insightface's model-y1-test2.


@pytest.mark.shared_data
def test_import_batch_norm_settings(imported):
    backbone, _, info = imported
    assert backbone.get_layer("embedding_bn").epsilon == pytest.approx(2e-5)
    assert backbone.get_layer("stem_bn").epsilon == pytest.approx(1e-3)
    assert backbone.get_layer("gdc_bn").momentum == pytest.approx(0.9)
    assert len(info.batch_norm_settings) == 50
    assert info.batch_norm_settings["embedding_bn"] == (2e-5, 0.9, True)


@pytest.mark.shared_data
def test_import_weights_land_in_place(imported, insightface_model):
    backbone, _, _ = imported
    arrays = load_ndarrays(f"{insightface_model}-0000.params")
    np.testing.assert_array_equal(
        backbone.get_layer("embedding_dense").kernel, arrays["arg:fc1_weight"].T
    )
    np.testing.assert_array_equal(
        backbone.get_layer("embedding_dense").bias, arrays["arg:pre_fc1_bias"]
    )
    np.testing.assert_array_equal(
        np.asarray(backbone.get_layer("stem_prelu").alpha).ravel(),
        arrays["arg:conv_1_relu_gamma"],
    )
    # Depthwise (C, 1, kh, kw) -> (kh, kw, C, 1).
    np.testing.assert_array_equal(
        backbone.get_layer("stage1_block0_dw_conv").kernel,
        arrays["arg:dconv_23_conv_dw_conv2d_weight"].transpose(2, 3, 0, 1),
    )
    np.testing.assert_array_equal(
        backbone.get_layer("last_bn").moving_variance,
        arrays["aux:conv_6sep_batchnorm_moving_var"],
    )


@pytest.mark.shared_data
def test_import_info(imported):
    _, fc7_kernel, info = imported
    assert fc7_kernel is None
    assert info.num_classes is None
    assert info.input_scale == pytest.approx(1 / 128)
    assert info.input_offset == pytest.approx(-127.5 / 128)
    assert info.activations == ["prelu"]
    assert info.embedding_layer == "dense"
    assert info.unused_arrays == []


@pytest.mark.shared_data
def test_imported_model_survives_save(imported, lfw_images, tmp_path):
    backbone, _, _ = imported
    path = tmp_path / "y1.keras"
    backbone.save(path)
    reloaded = load_backbone(path)
    assert reloaded.get_layer("embedding_bn").epsilon == pytest.approx(2e-5)
    faces = lfw_faces(lfw_images, 4).astype(np.float32)
    np.testing.assert_allclose(
        reloaded.predict(faces, verbose=0), backbone.predict(faces, verbose=0), atol=1e-5
    )


@pytest.mark.shared_data
def test_load_backbone_imports_spec(insightface_model, imported, lfw_images):
    backbone = load_backbone(f"{insightface_model},0")
    faces = lfw_faces(lfw_images, 2).astype(np.float32)
    np.testing.assert_allclose(
        backbone.predict(faces, verbose=0), imported[0].predict(faces, verbose=0), atol=1e-6
    )


@pytest.mark.shared_data
def test_import_classifier_fc7(insightface_model, tmp_path):
    """A training checkpoint's fc7_weight (classes x 128) becomes a (128, classes) kernel."""
    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    arrays = load_ndarrays(params)
    fc7_weight = np.random.RandomState(0).normal(size=(10, 128)).astype(np.float32)
    arrays["arg:fc7_weight"] = fc7_weight
    save_ndarrays(params, arrays)

    _, fc7_kernel, info = import_mxnet_checkpoint(prefix, 0)
    np.testing.assert_array_equal(fc7_kernel, fc7_weight.T)
    assert info.num_classes == 10
    assert info.fc7_bias is None
    assert info.unused_arrays == []


@pytest.mark.shared_data
def test_rejects_classifier_of_other_width(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    arrays = load_ndarrays(params)
    arrays["arg:fc7_weight"] = np.zeros((10, 256), np.float32)
    save_ndarrays(params, arrays)
    with pytest.raises(MXNetImportError, match=r"'fc7_weight' has shape \(10, 256\)"):
        import_mxnet_checkpoint(prefix, 0)


# Rejections name the first node or array that differs.


@pytest.mark.shared_data
def test_rejects_changed_stride(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)

    def edit(nodes):
        find_node(nodes, "res_3_block0_conv_dw_conv2d")["attrs"]["stride"] = "(2, 2)"

    edit_symbol(prefix, edit)
    with pytest.raises(MXNetImportError, match=r"'res_3_block0_conv_dw_conv2d'.*stride"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_unknown_op(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)

    def edit(nodes):
        find_node(nodes, "res_4_block2_conv_sep_relu")["op"] = "Pooling"

    edit_symbol(prefix, edit)
    with pytest.raises(MXNetImportError, match=r"'res_4_block2_conv_sep_relu' \(Pooling"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_rewired_residual(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)

    def edit(nodes):
        # _plus1 adds res_3_block1's output to the previous block's; point
        # its shortcut at the block's own expansion instead.
        plus = find_node(nodes, "_plus1")
        sep = find_node(nodes, "res_3_block1_conv_sep_relu")
        plus["inputs"][1] = [nodes.index(sep), 0, 0]

    edit_symbol(prefix, edit)
    with pytest.raises(MXNetImportError, match=r"'_plus1'.*adds"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_malformed_attribute(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)

    def edit(nodes):
        find_node(nodes, "conv_2_dw_batchnorm")["attrs"]["eps"] = "tiny"

    edit_symbol(prefix, edit)
    with pytest.raises(SymbolError, match=r"model-symbol.json: node 'conv_2_dw_batchnorm'.*eps='tiny'"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_missing_array(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    arrays = load_ndarrays(params)
    del arrays["aux:res_5_block1_conv_dw_batchnorm_moving_var"]
    save_ndarrays(params, arrays)
    with pytest.raises(MXNetImportError, match="no array 'res_5_block1_conv_dw_batchnorm_moving_var'"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_array_of_wrong_shape(insightface_model, tmp_path):
    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    arrays = load_ndarrays(params)
    arrays["arg:conv_6sep_conv2d_weight"] = arrays["arg:conv_6sep_conv2d_weight"][:256]
    save_ndarrays(params, arrays)
    with pytest.raises(MXNetImportError, match=r"'conv_6sep_conv2d_weight' has shape \(256,"):
        import_mxnet_checkpoint(prefix, 0)


@pytest.mark.shared_data
def test_rejects_other_embedding_size(insightface_model, tmp_path):
    with pytest.raises(MXNetImportError, match="128 dimensions, but 256 were requested"):
        import_mxnet_checkpoint(insightface_model, 0, embedding_size=256)


def test_rejects_resnet_symbol(tmp_path):
    """The start of insightface's ResNet (stride-1 3x3 stem) is not MobileFaceNet."""
    nodes = [
        {"op": "null", "name": "data", "inputs": []},
        {"op": "null", "name": "conv0_weight", "inputs": []},
        {
            "op": "Convolution",
            "name": "conv0",
            "attrs": {"kernel": "(3, 3)", "num_filter": "64", "pad": "(1, 1)",
                      "stride": "(1, 1)", "no_bias": "True"},
            "inputs": [[0, 0, 0], [1, 0, 0]],
        },
    ]
    symbol = {"nodes": nodes, "arg_nodes": [0, 1], "heads": [[2, 0, 0]], "attrs": {}}
    (tmp_path / "r50-symbol.json").write_text(json.dumps(symbol))
    save_ndarrays(tmp_path / "r50-0000.params", {"arg:conv0_weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(MXNetImportError, match=r"node 'conv0'.*'stem_conv'.*stride is \(1, 1\)"):
        import_mxnet_checkpoint(tmp_path / "r50", 0)


def test_missing_checkpoint_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model-0003.params"):
        import_mxnet_checkpoint(tmp_path / "model", 3)
    save_ndarrays(tmp_path / "model-0003.params", {})
    with pytest.raises(FileNotFoundError, match="model-symbol.json"):
        import_mxnet_checkpoint(tmp_path / "model", 3)


# The command line.


@pytest.mark.shared_data
def test_cli_writes_backbone(insightface_model, tmp_path):
    from cli import main

    out = tmp_path / "y1.keras"
    result = CliRunner().invoke(main, ["import-mxnet", f"{insightface_model},0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote backbone" in result.output
    assert load_backbone(out).output_shape == (None, 128)


@pytest.mark.shared_data
def test_cli_writes_training_model(insightface_model, tmp_path):
    from cli import main
    from mfn_tf.training.model_builder import load_pretrained

    prefix = copy_checkpoint(insightface_model, tmp_path)
    params = tmp_path / "model-0000.params"
    arrays = load_ndarrays(params)
    fc7_weight = np.random.RandomState(1).normal(size=(12, 128)).astype(np.float32)
    arrays["arg:fc7_weight"] = fc7_weight
    save_ndarrays(params, arrays)

    out = tmp_path / "trained.keras"
    result = CliRunner().invoke(main, ["import-mxnet", f"{prefix},0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "backbone + fc7" in result.output
    backbone, fc7_kernel = load_pretrained(out)
    np.testing.assert_allclose(fc7_kernel, fc7_weight.T)
    assert backbone.get_layer("embedding_bn").epsilon == pytest.approx(2e-5)


def test_cli_rejects_bad_arguments(tmp_path):
    from cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["import-mxnet", "model", "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 2
    assert "PREFIX,EPOCH" in result.output
    result = runner.invoke(main, ["import-mxnet", "model,0", "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2
    assert "must end in .keras" in result.output
    result = runner.invoke(main, ["import-mxnet", f"{tmp_path}/none,0", "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 1
    assert "params file not found" in result.output
    assert not (tmp_path / "m.keras").exists()


def test_cli_keeps_existing_out(tmp_path):
    from cli import main

    out = tmp_path / "m.keras"
    out.write_text("an earlier model")
    result = CliRunner().invoke(main, ["import-mxnet", f"{tmp_path}/none,0", "--out", str(out)])
    assert result.exit_code == 1
    assert "pass --overwrite" in result.output
    assert out.read_text() == "an earlier model"


def test_wrong_epoch_lists_saved_epochs(insightface_model):
    with pytest.raises(FileNotFoundError, match="model-0007.params.*Epochs found for this prefix: 0"):
        import_mxnet_checkpoint(str(insightface_model), 7)
