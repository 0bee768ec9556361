"""Self-describing safetensors weights: round trip, integrity checks, registry names, no unpickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from contrimix_aug import (
    ContriMixModel,
    ContriMixWeights,
    WeightsError,
    available_weights,
    load_model,
    load_weights,
    save_weights,
)
from contrimix_aug._paths import weights_dir
from contrimix_aug.config import ModelConfig, authors_config
from contrimix_aug.weights import known_weights, resolve_weights


@pytest.fixture(scope="module")
def model_and_bank(real_tiles: torch.Tensor) -> tuple[ContriMixModel, torch.Tensor]:
    """A random-init K=4 model whose attribute bank holds the attributes of the real tiles."""
    plain = ContriMixModel(authors_config(4)).eval()
    with torch.no_grad():
        bank = plain.encode_attributes(real_tiles[..., :64, :64])
    model = ContriMixModel(authors_config(4), bank=bank)
    model.load_state_dict(plain.state_dict())
    return model.freeze(), bank


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, model_and_bank) -> Path:
    model, _ = model_and_bank
    path = tmp_path_factory.mktemp("weights") / "mine.safetensors"
    meta = {"name": "mine", "training_data": "unit test", "metrics": {"psnr": 30.5}}
    return save_weights(model, path, meta=meta)


def test_round_trip_identical_outputs(saved: Path, model_and_bank, real_tiles: torch.Tensor) -> None:
    model, bank = model_and_bank
    w = load_weights(saved)
    assert w.config == model.config
    assert w.state_dict.keys() == model.state_dict().keys()
    assert all(torch.equal(w.state_dict[k], v) for k, v in model.state_dict().items())
    assert torch.equal(w.bank, bank)  # the bank is stored
    loaded = w.build()
    assert torch.equal(loaded.bank, bank)
    x = real_tiles[:3, :, :64, :80]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        for a, b in zip(loaded.encode(x), model.encode(x)):
            assert torch.equal(a, b)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_metadata_present(saved: Path) -> None:
    meta = load_weights(saved).meta
    for key in ("library_version", "channels", "num_attributes", "channel_order", "value_range", "min_size"):
        assert key in meta, key
    assert meta["channels"] == 3 and meta["num_attributes"] == 4 and meta["channel_order"] == "rgb"
    assert meta["value_range"] == [0.0, 1.0]
    assert meta["name"] == "mine" and meta["metrics"] == {"psnr": 30.5}
    with safe_open(str(saved), framework="pt") as f:
        raw = f.metadata()
    assert raw["format"] == "contrimix_aug.weights/1"
    assert ModelConfig.from_dict(json.loads(raw["config"])) == authors_config(4)
    assert len(raw["tensor_sha256"]) == 64
    assert load_model(saved).meta["name"] == "mine"


def test_from_model_round_trip(tmp_path: Path, tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config)
    w = ContriMixWeights.from_model(model, meta={"name": "tiny"})
    assert w.bank is None and w.meta == {"name": "tiny"}
    path = save_weights(w, tmp_path / "tiny.safetensors")
    assert load_weights(path).bank is None
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left behind


def test_truncated_file(tmp_path: Path, saved: Path) -> None:
    data = saved.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated or corrupted|corrupted"):
            load_weights(bad)


def test_flipped_byte_in_tensor_data(tmp_path: Path, saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    data_start = 8 + header_len
    for offset in (data_start + 5, (data_start + len(data)) // 2, len(data) - 3):
        bad = tmp_path / "flipped.safetensors"
        corrupt = bytearray(data)
        corrupt[offset] ^= 0x40
        bad.write_bytes(bytes(corrupt))
        with pytest.raises(WeightsError, match="checksum"):
            load_weights(bad)


def test_wrong_format(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="not a contrimix_aug weights file.*import-checkpoint"):
        load_weights(plain)
    pth = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(pth)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "absent.safetensors")


def test_mismatched_tensors(tiny_config: ModelConfig) -> None:
    sd = ContriMixModel(tiny_config).state_dict()
    other = ModelConfig(num_attributes=4, content_hidden=4, attr_widths=(4, 8, 8))
    with pytest.raises(WeightsError, match="do not match"):
        ContriMixWeights(other, sd).build()


def test_unknown_name_lists_available(isolated_home: Path, tiny_config: ModelConfig) -> None:
    save_weights(ContriMixModel(tiny_config), weights_dir() / "cached_one.safetensors")
    with pytest.raises(WeightsError, match="unknown weights name 'nope'") as err:
        load_model("nope")
    msg = str(err.value)
    assert "cached_one" in msg and "camelyon" in msg and "tcga" in msg


@pytest.mark.parametrize("name", ["camelyon", "tcga"])
def test_known_but_missing_says_how_to_get_it(isolated_home: Path, name: str) -> None:
    assert name in known_weights()
    with pytest.raises(WeightsError, match="not installed") as err:
        load_model(name)
    msg = str(err.value)
    assert f"contrimix-aug import-checkpoint PATH --name {name}" in msg
    assert str(weights_dir() / f"{name}.safetensors") in msg


def test_cache_names_in_available(isolated_home: Path, tiny_config: ModelConfig) -> None:
    assert "mycache" not in available_weights()
    model = ContriMixModel(tiny_config)
    save_weights(model, weights_dir() / "mycache.safetensors")
    save_weights(model, weights_dir() / "camelyon.safetensors")  # a registry name, now installed
    names = available_weights()
    assert "mycache" in names and "camelyon" in names and len(names) == len(set(names))
    assert str(weights_dir()).startswith(str(isolated_home))
    loaded = load_model("mycache")
    assert loaded.config == tiny_config
    assert resolve_weights("mycache").source == str(weights_dir() / "mycache.safetensors")


def test_resolve_accepts_objects(tiny_config: ModelConfig, tmp_path: Path) -> None:
    model = ContriMixModel(tiny_config)
    assert load_model(model) is model
    w = ContriMixWeights.from_model(model)
    assert resolve_weights(w) is w
    assert resolve_weights(model).config == tiny_config
    path = save_weights(model, tmp_path / "p.safetensors")
    assert resolve_weights(path).config == tiny_config and resolve_weights(str(path)).config == tiny_config
    with pytest.raises(TypeError, match="weights"):
        resolve_weights(3)


_TRIPPED: list[str] = []


def _trip() -> None:  # pragma: no cover - must never run
    _TRIPPED.append("unpickled")


class _Payload:
    def __reduce__(self):
        return (_trip, ())


def test_never_unpickles(tmp_path: Path, saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a pickle disguised as a weights file is rejected without being executed
    bomb = tmp_path / "bomb.safetensors"
    bomb.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(WeightsError):
        load_weights(bomb)
    bomb_pth = tmp_path / "bomb2.safetensors"
    torch.save({"x": _Payload()}, bomb_pth)
    with pytest.raises(WeightsError):
        load_weights(bomb_pth)
    assert _TRIPPED == []

    # and a valid file loads with every unpickling entry point disabled
    def forbidden(*args, **kwargs):
        raise AssertionError("weights loading must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    w = load_weights(saved)
    assert w.build().num_params == ContriMixModel(authors_config(4)).num_params
