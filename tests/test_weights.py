"""Self-describing safetensors weights: round trip, integrity checks, the registry of names (case-insensitive, with
suggestions), training output folders, no unpickling, and a schema check of every registered weights file."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shlex
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import contrimix_aug
from contrimix_aug import (
    ContriMix,
    ContriMixModel,
    ContriMixWeights,
    WeightsError,
    WeightsMeta,
    available_weights,
    load_model,
    load_weights,
    save_weights,
    weights_path,
)
from contrimix_aug._paths import weights_dir
from contrimix_aug.model_config import ModelConfig, authors_config
from contrimix_aug.weights import REGISTRY, RegisteredWeights, resolve_weights

REPO = Path(__file__).resolve().parents[1]
BUNDLED_DIR = REPO / "contrimix_aug" / "assets" / "weights"


def meta_for(name: str = "mine", **kw) -> WeightsMeta:
    return WeightsMeta(name=name, modality="he", library_version="0.0.0", num_params=0, **kw)


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
    meta = meta_for(training_data="unit test", quality={"psnr": 30.5}, bank_source="the real test tiles")
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


def test_metadata_present(saved: Path, model_and_bank) -> None:
    model, _ = model_and_bank
    meta = load_weights(saved).meta
    assert isinstance(meta, WeightsMeta)
    # save_weights sets the version and the parameter count from what it writes
    assert meta.library_version == contrimix_aug.__version__ and meta.num_params == model.num_params
    assert meta.value_range == (0.0, 1.0) and meta.min_size == 8 and meta.modality == "he"
    assert meta.name == "mine" and meta.quality == {"psnr": 30.5} and meta.training_data == "unit test"
    with safe_open(str(saved), framework="pt") as f:
        raw = f.metadata()
    assert raw["format"] == "contrimix_aug.weights/1"
    assert ModelConfig.from_dict(json.loads(raw["config"])) == authors_config(4)
    assert WeightsMeta.from_dict(json.loads(raw["meta"])) == meta  # stored under the schema (strict)
    assert len(raw["tensor_sha256"]) == 64
    # the architecture lives in the config only, never twice
    assert not {"channels", "num_attributes", "channel_order"} & set(json.loads(raw["meta"]))
    assert load_model(saved).meta.name == "mine"


def test_from_model_round_trip(tmp_path: Path, tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config)
    w = ContriMixWeights.from_model(model, meta=meta_for("tiny"))
    assert w.bank is None and w.meta.name == "tiny"
    fresh = ContriMixWeights.from_model(model)  # a model without metadata gets a valid default
    assert fresh.meta.name == "unnamed" and fresh.meta.num_params == model.num_params
    path = save_weights(w, tmp_path / "tiny.safetensors")
    assert load_weights(path).bank is None
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left behind
    with pytest.raises(TypeError, match="meta must be a WeightsMeta"):
        save_weights(w, tmp_path / "bad.safetensors", meta={"name": "tiny"})


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
    with pytest.raises(WeightsError, match="a PyTorch checkpoint .*`contrimix-aug import-checkpoint"):
        load_weights(pth)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "absent.safetensors")


def test_mismatched_tensors(tiny_config: ModelConfig) -> None:
    sd = ContriMixModel(tiny_config).state_dict()
    other = ModelConfig(num_attributes=4, content_hidden=4, attr_widths=(4, 8, 8))
    with pytest.raises(WeightsError, match="do not match"):
        ContriMixWeights(other, sd, None, meta_for()).build()


def test_metadata_parameter_count_checked(tmp_path: Path, saved: Path) -> None:
    """A file whose metadata claims another parameter count than its tensors hold is refused."""
    tensors = load_file(str(saved))
    with safe_open(str(saved), framework="pt") as f:
        raw = dict(f.metadata())
    meta = json.loads(raw["meta"])
    meta["num_params"] += 1
    raw["meta"] = json.dumps(meta)
    bad = tmp_path / "count.safetensors"
    save_file(tensors, str(bad), metadata=raw)
    with pytest.raises(WeightsError, match="metadata says .* parameters, the tensors hold"):
        load_weights(bad)


def test_unknown_name_lists_available(isolated_home: Path, tiny_config: ModelConfig) -> None:
    save_weights(ContriMixModel(tiny_config), weights_dir() / "cached_one.safetensors")
    with pytest.raises(WeightsError, match="unknown weights name 'nope'") as err:
        load_model("nope")
    msg = str(err.value)
    assert "cached_one" in msg and "camelyon" in msg and "tcga" in msg and "Did you mean" not in msg


@pytest.mark.parametrize(
    "typed, suggested",
    [("camelyon17", "camelyon"), ("flourescence", "fluorescence"), ("camelyon_authors", "camelyon-authors"),
     ("tcgaa", "tcga")],
)
def test_unknown_name_suggests_close_ones(isolated_home: Path, typed: str, suggested: str) -> None:
    with pytest.raises(WeightsError, match=f"unknown weights name '{typed}'. Did you mean .*'{suggested}'"):
        load_model(typed)


@pytest.mark.parametrize("name", ["camelyon-authors", "tcga"])
def test_known_but_missing_says_how_to_get_it(isolated_home: Path, name: str) -> None:
    entry = REGISTRY[name]
    assert not entry.bundled and entry.how_to_get
    assert weights_path(name) is None and name not in available_weights()
    with pytest.raises(WeightsError, match="not installed") as err:
        load_model(name)
    msg = str(err.value)
    assert f"contrimix-aug import-checkpoint FILE.pth --name {name}" in msg
    assert str(weights_dir() / f"{name}.safetensors") in msg


def test_bundled_file_missing_says_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             isolated_home: Path) -> None:
    import contrimix_aug.weights_registry as R

    monkeypatch.setattr(R, "bundled_path", lambda name: tmp_path / f"{name}.safetensors")
    assert weights_path("he") is None
    with pytest.raises(WeightsError, match="bundled weights 'he' are missing .* reinstall contrimix_aug"):
        load_model("he")


def test_registry() -> None:
    assert all(isinstance(e, RegisteredWeights) and e.name == n for n, e in REGISTRY.items())
    assert {n for n, e in REGISTRY.items() if e.bundled} == {"he", "camelyon", "fluorescence"}
    assert {n for n, e in REGISTRY.items() if not e.bundled} == {"camelyon-authors", "tcga"}
    assert all(e.modality in ("he", "fluorescence") and e.description for e in REGISTRY.values())
    assert all(e.card for e in REGISTRY.values() if e.bundled)
    assert contrimix_aug.weights.DEFAULT_WEIGHTS == "he"


def test_weights_path_is_public_and_points_into_the_package() -> None:
    path = contrimix_aug.weights_path("he")
    assert path is not None and path.is_file() and path == BUNDLED_DIR / "he.safetensors"
    assert contrimix_aug.weights_path("fluorescence") == BUNDLED_DIR / "fluorescence.safetensors"
    assert contrimix_aug.weights_path("no-such-weights") is None
    assert load_model().meta.name == "he"  # None = the bundled default


@pytest.mark.parametrize("typed", ["HE", "He", "FLUORESCENCE", "Fluorescence"])
def test_names_match_case_insensitively(typed: str) -> None:
    canonical = typed.lower()
    assert weights_path(typed) == weights_path(canonical)
    assert load_model(typed).meta.name == canonical
    assert ContriMix(weights=typed).model.meta.name == canonical


def test_cached_names_match_case_insensitively(isolated_home: Path, tiny_config: ModelConfig) -> None:
    save_weights(ContriMixModel(tiny_config), weights_dir() / "MyNet.safetensors")
    assert weights_path("mynet") == weights_dir() / "MyNet.safetensors"
    assert load_model("MYNET").config == tiny_config


def test_cache_names_in_available(isolated_home: Path, tiny_config: ModelConfig) -> None:
    assert "mycache" not in available_weights()
    model = ContriMixModel(tiny_config)
    save_weights(model, weights_dir() / "mycache.safetensors")
    save_weights(model, weights_dir() / "tcga.safetensors")  # a registry name, now installed
    names = available_weights()
    assert "mycache" in names and "tcga" in names and "he" in names and len(names) == len(set(names))
    assert str(weights_dir()).startswith(str(isolated_home))
    loaded = load_model("mycache")
    assert loaded.config == tiny_config
    assert resolve_weights("mycache").source == str(weights_dir() / "mycache.safetensors")
    assert weights_path("tcga") == weights_dir() / "tcga.safetensors"


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


def test_load_model_copy(tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config)
    assert load_model(model, copy=False) is model and model.training  # returned as is, not frozen
    frozen = load_model(model, copy=True)
    assert frozen is not model and not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), frozen.state_dict().values()))


# ---------------------------------------------------------------------------------------------------------------
# training output folders as weights=
# ---------------------------------------------------------------------------------------------------------------
def _training_folder(root: Path, model: ContriMixModel) -> Path:
    """What `contrimix-aug train --out root` leaves: weights, a resume checkpoint and metrics."""
    from contrimix_aug.training.resume import save_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    save_weights(model, root / "weights.safetensors", meta=meta_for(root.name))
    save_checkpoint(root / "checkpoint.safetensors", {f"model/{k}": v for k, v in model.state_dict().items()},
                    {"step": 1})
    (root / "metrics.json").write_text("{}")
    return root


def test_training_output_folder(tmp_path: Path, model_and_bank, real_tiles: torch.Tensor) -> None:
    model, _ = model_and_bank
    folder = _training_folder(tmp_path / "run1", model)
    for form in (folder, str(folder)):
        w = resolve_weights(form)
        assert w.source == str(folder / "weights.safetensors") and w.meta.name == "run1"
    x = real_tiles[:3, :, :64, :64]
    out = ContriMix(weights=str(folder), p=1.0, seed=0)(x)
    assert torch.equal(out, ContriMix(weights=model, p=1.0, seed=0)(x))


def test_folder_without_weights_names_its_files(tmp_path: Path, model_and_bank) -> None:
    model, _ = model_and_bank
    folder = _training_folder(tmp_path / "run2", model)
    (folder / "weights.safetensors").unlink()
    save_weights(model, folder / "other.safetensors")
    with pytest.raises(WeightsError) as err:
        ContriMix(weights=folder)
    msg = str(err.value)
    assert "without weights.safetensors" in msg and "'checkpoint.safetensors'" in msg and "'other.safetensors'" in msg
    assert "resume state" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="folder without weights.safetensors.*pass the path of a .safetensors"):
        load_model(empty)
    # the checkpoint itself is not weights, and the message says what to pass instead
    with pytest.raises(WeightsError, match="training checkpoint \\(resume state\\): pass the folder"):
        load_weights(folder / "checkpoint.safetensors")


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


# ---------------------------------------------------------------------------------------------------------------
# schema of every registered weights file that exists (bundled ones always)
# ---------------------------------------------------------------------------------------------------------------
def _registered_files() -> list[str]:
    bundled = [n for n, e in REGISTRY.items() if e.bundled]
    installed = [n for n, e in REGISTRY.items() if not e.bundled and weights_path(n) is not None]
    return bundled + installed


def test_every_bundled_file_is_registered() -> None:
    on_disk = sorted(p.stem for p in BUNDLED_DIR.glob("*.safetensors"))
    assert on_disk, f"no bundled weights in {BUNDLED_DIR}"
    unregistered = [n for n in on_disk if n not in REGISTRY or not REGISTRY[n].bundled]
    assert not unregistered, f"bundled files without a bundled registry entry: {unregistered}"


@pytest.mark.parametrize("name", _registered_files())
def test_registered_weights_schema(name: str) -> None:
    entry = REGISTRY[name]
    path = weights_path(name)
    assert path is not None and path.is_file(), f"registered weights {name!r} have no file"
    if entry.bundled:
        assert path == BUNDLED_DIR / f"{name}.safetensors"
    w = load_weights(path)  # format, tensor checksum, metadata schema
    meta, cfg = w.meta, w.config

    # the parameter count, recomputed from the tensors in the file
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
        counted = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys() if k != "__bank__")
    assert meta.num_params == counted == sum(t.numel() for t in w.state_dict.values()) > 0
    model = w.build()
    assert model.num_params == counted

    # the attribute bank: (N, C, K), N > 0, finite
    if entry.bundled:
        assert w.bank is not None, f"{name}: bundled weights carry no attribute bank"
    if w.bank is not None:
        assert w.bank.ndim == 3 and w.bank.shape[0] > 0
        assert tuple(w.bank.shape[1:]) == (cfg.in_channels, cfg.num_attributes)
        assert bool(torch.isfinite(w.bank).all()) and w.bank.dtype == torch.float32

    # mandatory fields, and agreement with the registry and the architecture
    mandatory = ["name", "modality", "library_version", "licence", "training_data", "bank_source"]
    if entry.bundled:
        mandatory.append("card")
    empty = [f for f in mandatory if not str(getattr(meta, f)).strip()]
    assert not empty, f"{name}: empty metadata fields {empty}"
    assert meta.name == name and meta.modality == entry.modality
    assert cfg.mode == ("absorbance" if meta.modality == "he" else "linear")
    assert cfg.in_channels == (3 if meta.modality == "he" else cfg.in_channels)
    if entry.bundled:
        assert meta.card == entry.card
    assert meta.value_range == (0.0, 1.0) and meta.min_size >= 1

    # the stored metadata follows the schema exactly (strict: no unknown keys); a file written before the schema
    # (library 0.1) is mapped, and its copies of the architecture must agree with the stored config
    stored = json.loads(raw["meta"])
    if "modality" in stored:
        assert WeightsMeta.from_dict(stored, strict=True) == meta
    else:
        assert WeightsMeta.from_dict(stored, strict=False) == meta
        legacy_arch = {"channels": cfg.in_channels, "num_attributes": cfg.num_attributes,
                       "channel_order": cfg.channel_order}
        for key, value in legacy_arch.items():
            assert stored.get(key, value) == value, f"{name}: legacy metadata {key}={stored[key]!r}, config {value!r}"
        if isinstance(stored.get("bank"), dict) and w.bank is not None and "size" in stored["bank"]:
            assert stored["bank"]["size"] == w.bank.shape[0]
    assert WeightsMeta.from_dict(meta.to_dict()) == meta
    assert ModelConfig.from_dict(json.loads(raw["config"])) == cfg == ModelConfig.from_dict(cfg.to_dict())


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.bundled])
def test_bundled_weights_reconstruct_real_tiles(name: str) -> None:
    """Each bundled model reconstructs the bundled real tiles of its modality (a smoke test of the tensors)."""
    from contrimix_aug.data.readers import load_demo_tiles
    from contrimix_aug.quality import psnr

    model = load_model(name)
    tiles, _ = load_demo_tiles(modality="he" if model.config.in_channels == 3 else "fluorescence")
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        rec = model(x)
    assert float(psnr(rec, x).mean()) > 25.0
    assert ContriMix(weights=name, p=1.0, seed=0)(x[:1]).shape == x[:1].shape  # a single image: bank donors


def test_min_size_and_value_range_of_a_file_rule_every_front_door(tmp_path) -> None:
    """A weights file's min_size / value_range are what ContriMix and the albumentations adapter accept."""
    import dataclasses

    import numpy as np

    from contrimix_aug import ContriMix, load_model, save_weights
    from contrimix_aug.albumentations import AlbumentationsContriMix

    model = load_model("he")
    path = tmp_path / "strict.safetensors"
    save_weights(model, path, meta=dataclasses.replace(model.meta, min_size=32, value_range=(0.0, 0.5)))
    aug = ContriMix(weights=str(path), p=1.0, seed=0)
    assert aug(torch.full((2, 3, 32, 32), 0.4)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="32"):
        aug(torch.full((2, 3, 16, 16), 0.4))
    with pytest.raises(ValueError):
        aug(torch.full((2, 3, 32, 32), 0.8))  # inside [0, 1] but outside this file's value_range
    alb = AlbumentationsContriMix(weights=str(path), p=1.0)
    with pytest.raises(ValueError, match="at least 32×32 px"):
        alb(image=np.full((16, 16, 3), 100, np.uint8))
    with pytest.raises(ValueError):
        alb(image=np.full((32, 32, 3), 0.8, np.float32))
    assert ContriMix(weights="he", p=1.0, seed=0)(torch.full((2, 3, 16, 16), 0.8)).shape[-1] == 16  # default: 8 px


# ---------------------------------------------------------------------------------------------------------------
# a PyTorch .pth passed as weights=: the message names import-checkpoint, and that command works (issue 19, item 6)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pth_as_weights_names_import_checkpoint_and_the_command_works(
    tmp_path: Path, isolated_home: Path, real_tiles: torch.Tensor, monkeypatch: pytest.MonkeyPatch, zip_format: bool
) -> None:
    from test_encoders import authors_algorithm_state_dict, authors_tensors

    from contrimix_aug.cli import main

    src = tmp_path / "camelyon_seed0_model.pth"  # an authors' checkpoint, in their layout
    algorithm = authors_algorithm_state_dict(*authors_tensors(4, seed=41, dtype=torch.float32))
    torch.save({"algorithm": algorithm, "epoch": 19}, src, _use_new_zipfile_serialization=zip_format)
    monkeypatch.chdir(tmp_path)
    for given in (src, str(src), src.name):  # a Path, a path string, a bare file name in the working folder
        with pytest.raises(WeightsError) as err:
            ContriMix(weights=given)
        msg = str(err.value)
        assert "a PyTorch checkpoint" in msg and "truncated" not in msg and "unknown weights name" not in msg, msg
    command = re.search(r"`(contrimix-aug import-checkpoint [^`]+)`", msg).group(1)
    argv = shlex.split(command.replace("NAME", "c17-authors"))
    assert argv[:2] == ["contrimix-aug", "import-checkpoint"] and os.path.samefile(argv[2], src)
    assert main(argv[1:]) == 0  # the suggested command, as typed
    assert 'then pass weights="NAME"' in msg
    aug = ContriMix(weights="c17-authors", p=1.0, seed=0)
    out = aug(real_tiles[:2])
    assert out.shape == real_tiles[:2].shape and not torch.equal(out, real_tiles[:2])


# ---------------------------------------------------------------------------------------------------------------
# the many-lab attribute banks of the bundled H&E weights (issue 18, item 1)
# ---------------------------------------------------------------------------------------------------------------
def _monuseg_sites(split: str) -> set[str]:
    from contrimix_aug.data.registry import get_collection

    return {f.meta["site"] for f in get_collection("monuseg").files if f.meta.get("split") == split}


@pytest.mark.parametrize("name", ["camelyon", "he"])
def test_bundled_bank_spans_the_training_labs_and_never_a_held_out_one(name: str) -> None:
    """Every entry's lab is recorded; the same number of entries per lab; every lab we may train on (18 MoNuSeg
    training sites, CAMELYON17 hospitals 0, 3, 4, the H&E sources) and never a benchmark's held-out lab (the MoNuSeg
    test sites, CAMELYON16, CAMELYON17 hospitals 1 and 2)."""
    from contrimix_aug.data import HE_SOURCES

    w = load_weights(weights_path(name))
    labs = w.meta.bank_entry_labs()
    assert len(labs) == w.bank.shape[0] > 0  # one lab per entry
    counts = dict(w.meta.bank_labs)
    assert len(counts) == len(w.meta.bank_labs) and len(set(counts.values())) == 1  # one run per lab, equal counts
    train_sites, test_sites = _monuseg_sites("train"), _monuseg_sites("test")
    assert len(train_sites) == 18 and len(test_sites) == 14 and not train_sites & test_sites
    sources = {"hgsc" if s.startswith("hgsc") else s for s in HE_SOURCES}
    expected = ({f"monuseg:{s}" for s in train_sites} | {f"camelyon17:{h}" for h in (0, 3, 4)}
                | {f"source:{s}" for s in sources})
    assert set(counts) == expected
    held_out = ({f"monuseg:{s}" for s in test_sites} | {"camelyon17:1", "camelyon17:2"})
    assert not set(labs) & held_out
    assert not any(lab.startswith("camelyon16") for lab in labs)
    never = w.meta.never_seen
    assert set(never) == {"monuseg", "camelyon16", "camelyon17"}
    assert all(s in never["monuseg"] for s in test_sites) and "UMCU" in never["camelyon16"]
    assert "1 and 2" in never["camelyon17"]
    assert str(len(counts)) in w.meta.bank_source and "MoNuSeg" in w.meta.bank_source
    card = (REPO / "docs" / "weights" / f"{name}.md").read_text()
    assert "## Attribute bank: labs and counts" in card and "### What these weights never saw" in card
    assert all(f"(`{lab}`) | {n} |" in card for lab, n in w.meta.bank_labs)


def test_bank_labs_metadata_is_validated() -> None:
    from contrimix_aug.weights_meta import WeightsMetaError

    m = meta_for(bank_labs=[["monuseg:G9", 2], ("camelyon17:0", 1)], never_seen={"camelyon17": "hospitals 1 and 2"})
    assert m.bank_labs == (("monuseg:G9", 2), ("camelyon17:0", 1))
    assert m.bank_entry_labs() == ["monuseg:G9", "monuseg:G9", "camelyon17:0"]
    assert WeightsMeta.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert meta_for().bank_labs == () and meta_for().bank_entry_labs() == [] and meta_for().never_seen == {}
    for bad in ([("lab", 0)], [("", 1)], [("lab", 1.5)], [("lab", True)], "ab", [("lab",)]):
        with pytest.raises(WeightsMetaError, match="weights metadata: bank_labs: "):
            meta_for(bank_labs=bad)
    with pytest.raises(WeightsMetaError, match="weights metadata: never_seen: "):
        meta_for(never_seen={"camelyon17": 1})


# ---------------------------------------------------------------------------------------------------------------
# the default donor policy: the one chosen on development data and written down (issue 18, item 2)
# ---------------------------------------------------------------------------------------------------------------
def _documented_default() -> dict:
    return json.loads((REPO / "docs" / "weights" / "default_policy.json").read_text())["chosen"]


def test_default_donor_policy_is_the_documented_one() -> None:
    import inspect

    from contrimix_aug.mixing import DEFAULT_DONORS, DEFAULT_SPREAD

    chosen = _documented_default()
    assert DEFAULT_DONORS == chosen["donors"] and DEFAULT_SPREAD == chosen.get("spread", DEFAULT_SPREAD)
    aug = ContriMix(weights="camelyon", seed=0)  # no donor argument: the documented policy
    assert aug.donors == chosen["donors"] and aug.spread == chosen.get("spread", aug.spread)
    assert ContriMix(weights="he", seed=0).donors == chosen["donors"]
    doc = (REPO / "docs" / "weights.md").read_text()
    section = doc.split("## The default donor policy: how it was chosen", 1)[1]
    assert f"`{chosen['label']}`" in section
    readme = (REPO / "README.md").read_text()
    assert f"`{chosen['label']}`" in readme.split("Options:", 1)[1].split("\n\n", 1)[0]
    pytest.importorskip("albumentations")
    from contrimix_aug.albumentations import AlbumentationsContriMix

    one = "sampled" if chosen["donors"] == "sampled" else "bank"  # one image: no batch to draw from
    assert inspect.signature(AlbumentationsContriMix.__init__).parameters["donors"].default == one
    assert AlbumentationsContriMix(weights="camelyon").spread == chosen.get("spread", None)


def test_default_policy_on_one_labs_batch_draws_as_documented(data_root) -> None:
    """A default ContriMix on a batch of real tiles of ONE lab (CAMELYON17 hospital 0): with a bank-drawing default
    every donor attribute comes from outside the batch; with batch donors all come from inside it, and a single
    image (a batch of one) takes a bank donor either way."""
    from contrimix_aug.data import load_camelyon17_tiles
    from contrimix_aug.mixing import MixParams

    tiles = load_camelyon17_tiles((0,), progress=False)
    x = torch.from_numpy(tiles.images[:, :96, :96].copy()).permute(0, 3, 1, 2).float() / 255
    chosen = _documented_default()
    aug = ContriMix(weights="camelyon", p=1.0, seed=0)
    aug(x)
    p = MixParams.from_dict(aug.params)
    outside = p.from_bank | (p.donors < 0)
    if chosen["donors"] == "batch":
        assert not bool(outside.any())
    else:
        assert bool(outside.all()) if chosen["donors"] in ("bank", "sampled") else bool(outside.any())
    aug(x[0])
    one = MixParams.from_dict(aug.params)
    assert bool((one.from_bank | (one.donors < 0)).all())
