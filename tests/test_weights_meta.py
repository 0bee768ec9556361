"""WeightsMeta, the declared schema of a weights file's metadata: validation (errors name the field), round trips,
strict refusal of unknown keys, and the mapping of files written before the schema (library 0.1)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from contrimix_aug import ContriMixModel, WeightsMeta, load_weights, save_weights
from contrimix_aug.weights_meta import MODALITIES, WeightsMetaError

BASE = {"name": "he", "modality": "he", "library_version": "0.2.0", "num_params": 10}


def test_defaults_and_fields():
    m = WeightsMeta(**BASE)
    assert m.value_range == (0.0, 1.0) and m.min_size == 8 and m.um_per_px is None
    assert m.training == {} and m.quality == {} and m.extra == {}
    assert WeightsMeta.field_names() == [f.name for f in dataclasses.fields(WeightsMeta)]
    assert MODALITIES == ("he", "fluorescence", "other")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "../evil"),
        ("name", ""),
        ("name", 3),
        ("modality", "brightfield"),
        ("num_params", -1),
        ("num_params", 1.5),
        ("num_params", True),
        ("value_range", (1.0, 0.0)),
        ("value_range", "0-1"),
        ("min_size", 0),
        ("min_size", 8.0),
        ("um_per_px", (0.5, 0.25)),
        ("um_per_px", (0.0, 1.0)),
        ("um_per_px", "0.5"),
        ("library_version", 2),
        ("licence", None),
        ("training_data", ["he-sources"]),
        ("bank_source", 1),
        ("card", 0),
        ("training", "steps=3"),
        ("quality", [1]),
        ("extra", None),
    ],
)
def test_validation_errors_name_the_field(field, value):
    with pytest.raises(WeightsMetaError, match=f"weights metadata: {field}: ") as err:
        WeightsMeta(**{**BASE, field: value})
    assert isinstance(err.value, ValueError)


def test_normalisation_of_ranges():
    m = WeightsMeta(**BASE, value_range=[0, 1], um_per_px=[0.25, 1])
    assert m.value_range == (0.0, 1.0) and m.um_per_px == (0.25, 1.0)
    assert all(isinstance(v, float) for v in m.value_range + m.um_per_px)


def test_round_trip_and_json():
    m = WeightsMeta(**BASE, um_per_px=(0.25, 1.0), training_data="camelyon17-tiles:0,3,4", licence="MIT",
                    bank_source="central patches", card="docs/weights/he.md", training={"steps": 5},
                    quality={"psnr": 31.0}, extra={"source_sha256": "ab" * 32})
    d = m.to_dict()
    assert d["value_range"] == [0.0, 1.0] and d["um_per_px"] == [0.25, 1.0]
    assert WeightsMeta.from_dict(json.loads(json.dumps(d))) == m


def test_strict_refuses_unknown_keys_and_replace_validates():
    with pytest.raises(WeightsMetaError, match=r"unknown fields \['epochs'\]; valid: \[.*'name'"):
        WeightsMeta.from_dict({**BASE, "epochs": 3})
    m = WeightsMeta(**BASE)
    assert m.replace(num_params=5).num_params == 5 and m.num_params == 10
    with pytest.raises(WeightsMetaError, match=r"unknown fields \['nmae'\]"):
        m.replace(nmae="x")
    with pytest.raises(WeightsMetaError, match="modality"):
        m.replace(modality="ihc")


LEGACY = {  # the metadata a library 0.1 weights file holds
    "name": "fluo-old",
    "library_version": "0.1.0",
    "channels": 1,
    "num_attributes": 4,
    "channel_order": "rgb",
    "value_range": [0.0, 1.0],
    "min_size": 8,
    "num_params": 0,
    "training_data": "fluo-sources",
    "licence": "MIT",
    "card": "docs/weights/fluorescence.md",
    "command": "contrimix-aug train fluo-sources --out runs/x",
    "seed": 0,
    "steps": 1200,
    "metrics": {"val": {"psnr": 54.1}},
    "bank": {"size": 512, "source": "central patches of training images"},
    "quality": {"dsb": {"psnr_db": 56.5}},
    "epoch": 19,
    "source_sha256": "cd" * 32,
}


def test_legacy_mapping():
    with pytest.raises(WeightsMetaError, match="unknown fields"):
        WeightsMeta.from_dict(LEGACY)  # strict by default
    m = WeightsMeta.from_dict(LEGACY, strict=False)
    assert m.name == "fluo-old" and m.library_version == "0.1.0" and m.licence == "MIT"
    assert m.modality == "fluorescence"  # from the training data
    assert m.training == {"command": LEGACY["command"], "seed": 0, "steps": 1200, "metrics": LEGACY["metrics"]}
    assert m.bank_source == "central patches of training images"
    assert m.quality == LEGACY["quality"] and m.card == LEGACY["card"]
    assert m.extra == {"epoch": 19, "source_sha256": "cd" * 32}  # anything unmapped is kept
    # the architecture copies are dropped (the config holds them)
    assert not {"channels", "num_attributes", "channel_order"} & (set(m.training) | set(m.extra))
    he = WeightsMeta.from_dict({"name": "x", "training_data": "he-sources"}, strict=False)
    assert he.modality == "he" and he.library_version == "0.1.0" and he.num_params == 0


def test_legacy_file_loads_through_the_mapping(tmp_path: Path, tiny_config, real_tiles: torch.Tensor):
    """A weights file written before the schema (no ``modality`` key) still loads, mapped."""
    model = ContriMixModel(tiny_config).freeze()
    new = save_weights(model, tmp_path / "new.safetensors")
    with safe_open(str(new), framework="pt") as f:
        raw = dict(f.metadata())
    legacy = {**{k: v for k, v in LEGACY.items() if k not in ("channels", "training_data", "card")},
              "name": "old-he", "channels": 3, "num_attributes": 3, "training_data": "he-sources",
              "num_params": model.num_params}
    raw["meta"] = json.dumps(legacy)
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(new)), str(old), metadata=raw)
    w = load_weights(old)
    assert w.meta.name == "old-he" and w.meta.modality == "he" and w.meta.training["steps"] == 1200
    assert w.meta.extra["epoch"] == 19
    x = real_tiles[:2, :, :32, :32]
    with torch.no_grad():
        assert torch.equal(w.build()(x), model(x))
    # a file claiming the schema (it has "modality") is held to it: unknown keys are corruption
    raw["meta"] = json.dumps({**BASE, "num_params": model.num_params, "epochs": 3})
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(new)), str(bad), metadata=raw)
    from contrimix_aug import WeightsError

    with pytest.raises(WeightsError, match=r"unreadable metadata .*unknown fields \['epochs'\]"):
        load_weights(bad)
