"""TrainConfig (every field validated, JSON/TOML files) and the recipes shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrimix_aug.training import RECIPES, TrainConfig, default_recipe, load_config, load_recipe
from contrimix_aug.training.restain import RestainConfig


def test_config_files(tmp_path):
    (tmp_path / "c.toml").write_text(
        'data = "he-sources"\nsteps = 7\n[model]\ncontent_kernel = 1\nattr_widths = [8, 16]\n'
        '[loss]\npreset = "rxrx1"\nattr_cons = 0.2\n'
    )
    cfg = TrainConfig.from_dict({**load_config(tmp_path / "c.toml"), "out": str(tmp_path)}).validate()
    mc = cfg.model_config(in_channels=3)
    assert cfg.steps == 7 and mc.content_kernel == 1 and mc.attr_widths == (8, 16) and mc.num_attributes == 4
    assert cfg.loss_weights().attr_cons == 0.2 and cfg.loss_weights().self_recon == 0.9
    (tmp_path / "c.json").write_text(json.dumps({"data": "x", "out": "y", "arch": "fast", "num_attributes": 6}))
    mc = TrainConfig.from_dict(load_config(tmp_path / "c.json")).validate().model_config(in_channels=1)
    assert mc.attr_input_size == 64 and mc.num_attributes == 6 and mc.in_channels == 1
    assert mc.mode == "linear"  # one channel: fluorescence, additive mixing


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="top level"):
        load_config(tmp_path / "list.json")
    (tmp_path / "c.yaml").write_text("steps: 3")
    with pytest.raises(ValueError, match=".json or .toml"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"stepz": 3}, "unknown keys \\['stepz'\\]"),
        ({"model": {"kernel": 3}}, "unknown ModelConfig fields \\['kernel'\\]"),
        ({"model": {"mode": "log"}}, "mode must be"),
        ({"loss": "camelyon-joint"}, "ce must be 0"),
        ({"loss": "tcga2"}, "unknown loss preset"),
        ({"amp": "fp8"}, "amp: expected one of"),
        ({"batch_size": 1}, "must be >= 2 when num_mixes > 0"),
        ({"steps": 0}, "steps: expected an integer >= 1"),
        ({"lr": 0}, "lr: must be > 0"),
        ({"out": ""}, "out: missing"),
        ({"channels": 2}, "channels: expected 1, 3 or None, got 2"),
        ({"patch_scale": (2.0, 1.0)}, "patch_scale: expected \\(low, high\\) with 0 < low <= high"),
        ({"patch_scale": (0.0, 1.0)}, "patch_scale"),
        ({"restain": {"p_lab": 1.5}}, "RestainConfig.p_lab: expected a probability"),
        ({"restain": {"hue": 0.1}}, "restain: unknown keys \\['hue'\\]"),
        ({"loss": {"pair_recon": -1}}, ">= 0"),
    ],
)
def test_config_errors(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({"data": "x", "out": "y", **settings}).validate()


def test_new_fields_round_trip(tmp_path):
    cfg = TrainConfig(data="x", out="y", channels=1, data_root=str(tmp_path), patch_scale=(1.0, 4.0),
                      restain={"od_scale": 0.2}, loss={"preset": "tcga", "pair_recon": 0.6, "pair_content": 0.2})
    cfg.validate()
    d = cfg.to_dict()
    assert d["patch_scale"] == [1.0, 4.0] and d["channels"] == 1 and d["data_root"] == str(tmp_path)
    again = TrainConfig.from_dict(json.loads(json.dumps(d)))
    assert again.patch_scale == (1.0, 4.0) and again.restain_config() == RestainConfig(od_scale=0.2)
    lw = again.loss_weights()
    assert (lw.pair_recon, lw.pair_content, lw.self_recon) == (0.6, 0.2, 0.6)
    defaults = TrainConfig()
    assert defaults.channels == 3 and defaults.data_root == "" and defaults.patch_scale == (1.0, 1.0)
    assert defaults.restain_config() == RestainConfig() and defaults.loss_weights().pair_recon == 0.0


# ---------------------------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------------------------
def test_recipes_ship_in_the_package():
    import contrimix_aug

    folder = Path(contrimix_aug.__file__).parent / "recipes"
    assert set(RECIPES) == {"he-lite", "fluorescence-lite", "fluorescence-ls", "camelyon", "authors"}
    assert {p.stem for p in folder.glob("*.json")} == set(RECIPES)
    assert not (Path(contrimix_aug.__file__).parents[1] / "configs").exists()  # the old top-level folder is gone


@pytest.mark.parametrize("name", ["he-lite", "fluorescence-lite", "fluorescence-ls", "camelyon", "authors"])
def test_every_recipe_validates(name):
    settings = load_recipe(name)
    cfg = TrainConfig.from_dict({**settings, "data": "he-sources", "out": "o"}).validate()
    channels = 1 if name.startswith("fluorescence") else 3
    mc = cfg.model_config(in_channels=channels)
    assert mc.in_channels == channels


def test_recipes_match_the_bundled_weights():
    """he-lite / fluorescence-lite are the recipes of the bundled weights: same architecture, except the redundant
    biases before InstanceNorm (content_bias_before_norm=False in the recipes)."""
    import contrimix_aug as ca

    for recipe, weights, channels in (("he-lite", "he", 3), ("camelyon", "camelyon", 3),
                                      ("fluorescence-lite", "fluorescence", 1)):
        cfg = TrainConfig.from_dict({**load_recipe(recipe), "data": "x", "out": "o"}).validate()
        mc = cfg.model_config(in_channels=channels)
        shipped = ca.load_model(weights).config
        assert mc.content_bias_before_norm is False
        diff = {k for k, v in mc.to_dict().items() if shipped.to_dict()[k] != v}
        assert diff <= {"content_bias_before_norm"}, diff
    cam = TrainConfig.from_dict({**load_recipe("camelyon"), "data": "camelyon17-tiles", "out": "o"}).validate()
    assert cam.patch_scale[1] > cam.patch_scale[0] >= 1.0
    assert cam.loss_weights().pair_recon > 0 and cam.loss_weights().pair_content > 0


def test_default_recipe():
    assert default_recipe("he-sources") == "he-lite"
    assert default_recipe("/some/folder") == "he-lite"
    assert default_recipe("/some/folder", 1) == "fluorescence-lite"
    assert default_recipe("fluo-sources") == "fluorescence-lite"
    assert default_recipe("rxrx1:/data") == "fluorescence-lite"
    assert default_recipe("camelyon17-tiles:0,3,4") == "he-lite"


def test_load_recipe_files_and_errors(tmp_path):
    (tmp_path / "mine.toml").write_text("steps = 12\n")
    assert load_recipe(tmp_path / "mine.toml") == {"steps": 12}
    assert load_recipe(str(tmp_path / "mine.toml")) == {"steps": 12}
    with pytest.raises(ValueError, match="neither a shipped recipe \\(he-lite, camelyon, fluorescence-lite, fluorescence-ls, authors\\)"):
        load_recipe("he-heavy")
    with pytest.raises(FileNotFoundError):
        load_recipe(str(tmp_path / "missing.json"))
