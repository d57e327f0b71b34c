"""Recipes: the stage values, overrides, --set and rejected keys."""

import json

import pytest

from mfn_tf.training.recipe import Recipe, RecipeError, load_recipe, parse_set_options


def test_softmax_stage_values():
    recipe = load_recipe("softmax")
    assert recipe.loss == "softmax"
    assert recipe.lr == 0.1
    assert recipe.lr_steps == [120000, 140000]
    assert recipe.wd == pytest.approx(4e-5)
    assert recipe.fc7_wd_mult == 10.0
    assert recipe.per_device_batch == 512
    assert recipe.embedding_size == 128
    assert recipe.momentum == 0.9


def test_arcface_stage_values():
    recipe = load_recipe("arcface")
    assert recipe.loss == "arcface"
    assert (recipe.margin_s, recipe.margin_m) == (64.0, 0.5)
    assert recipe.lr == 0.1
    assert recipe.lr_steps == [120000, 160000, 180000, 200000]


def test_finetune_stage_values():
    recipe = load_recipe("finetune")
    assert recipe.margin_s == 128.0
    assert recipe.lr == 0.001
    assert recipe.lr_steps == [20000, 30000, 40000]
    assert recipe.best_target == "agedb_30"


def test_cpu_override_and_set_order():
    recipe = load_recipe("arcface", ["cpu"], {"max_steps": "400", "lr_steps": "100,300"})
    assert recipe.per_device_batch == 64  # from cpu.toml
    assert recipe.max_steps == 400  # --set wins over cpu.toml
    assert recipe.lr_steps == [100, 300]
    assert recipe.margin_s == 64.0  # from the stage


def test_override_from_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("per_device_batch = 16\ntargets = ['lfw']\n")
    recipe = load_recipe("softmax", [str(path)], {"best_target": "lfw"})
    assert recipe.per_device_batch == 16
    assert recipe.targets == ["lfw"]


def test_bare_override_ignores_same_named_folder(tmp_path, monkeypatch):
    # The demo writes into ./demo and then loads the override named demo.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu").mkdir()
    recipe = load_recipe("softmax", ["cpu"])
    assert recipe.per_device_batch == 64


def test_override_folder_path_rejected(tmp_path):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(RecipeError, match="is a folder"):
        load_recipe("softmax", [str(folder)])


def test_unknown_key_in_set_is_named():
    with pytest.raises(RecipeError, match="unknown recipe key.*learning_rate"):
        load_recipe("softmax", settings={"learning_rate": "0.1"})


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("lr = 0.1\nbatchsize = 32\n")
    with pytest.raises(RecipeError, match="bad.toml.*batchsize"):
        load_recipe("softmax", [str(path)])


def test_unknown_stage():
    with pytest.raises(RecipeError, match="unknown stage 'cosface'"):
        load_recipe("cosface")


def test_unknown_override_lists_available():
    with pytest.raises(RecipeError, match="Available: cpu"):
        load_recipe("softmax", ["gpu8"])


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"max_steps": "many"}, "invalid value 'many' for 'max_steps'"),
        ({"max_steps": "0"}, "max_steps must be at least 1"),
        ({"loss": "triplet"}, "invalid loss 'triplet'"),
        ({"lr_steps": "300,200"}, "strictly increasing"),
        ({"precision": "fp8"}, "invalid precision"),
        ({"easy_margin": "maybe"}, "invalid value 'maybe' for 'easy_margin'"),
        ({"best_target": "ijbc"}, "best_target 'ijbc' is not among targets"),
        ({"verbose": "50", "checkpoint_every": "75"}, "multiple of verbose"),
    ],
)
def test_invalid_values_rejected(settings, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("softmax", settings=settings)


def test_set_parsing():
    assert parse_set_options(["a=1", " b = x,y "]) == {"a": "1", "b": "x,y"}
    with pytest.raises(RecipeError, match="key=value"):
        parse_set_options(["lr"])


def test_bool_and_list_coercion():
    recipe = load_recipe("arcface", settings={"easy_margin": "true", "targets": "lfw,agedb_30", "best_target": "lfw"})
    assert recipe.easy_margin is True
    assert recipe.targets == ["lfw", "agedb_30"]


def test_saved_recipe_is_json(tmp_path):
    recipe = load_recipe("finetune", ["cpu"])
    recipe.save(tmp_path / "recipe.json")
    saved = json.loads((tmp_path / "recipe.json").read_text())
    assert Recipe(**saved) == recipe
