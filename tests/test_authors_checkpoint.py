"""Importing the authors' checkpoints: a file in exactly their layout, converted, must reproduce the
independent reference forward pass of ``test_encoders.py`` on real tissue, and carries an attribute bank computed
from real tiles. (The ``import-checkpoint`` command line is tested in ``test_cli.py``.)"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_encoders import (
    ATTR_PREFIX,
    CONTENT_PREFIX,
    authors_algorithm_state_dict,
    authors_shapes,
    authors_tensors,
    reference_decode,
    reference_encode,
)

import contrimix_aug
from contrimix_aug import ContriMix, WeightsError, WeightsMeta, available_weights, load_model, load_weights
from contrimix_aug._paths import weights_dir
from contrimix_aug.authors_checkpoint import (
    KNOWN_TRAINING_RESOLUTION,
    convert_authors_state_dict,
    import_authors_checkpoint,
)
from contrimix_aug.bank import compute_bank
from contrimix_aug.data.readers import load_demo_tiles


def write_checkpoint(path: Path, algorithm: dict, **top) -> Path:
    """``torch.save`` in the authors' top-level layout."""
    torch.save({"algorithm": algorithm, "epoch": 19, "best_val_metric": None, **top}, path)
    return path


@pytest.fixture(scope="module")
def tensors_k4() -> tuple[dict, dict]:
    return authors_tensors(4, seed=41, dtype=torch.float32)


@pytest.fixture(scope="module")
def tensors_k16() -> tuple[dict, dict]:
    return authors_tensors(16, seed=161, dtype=torch.float32)


def as_double(d: dict) -> dict:
    return {k: v.double() for k, v in d.items()}


def check_against_reference(model, content: dict, attr: dict, x: torch.Tensor, flip: bool = False) -> None:
    """float32 model vs float64 reference (loose) and float64 model vs reference (tight)."""
    c64, a64 = as_double(content), as_double(attr)
    x_ref = x.flip(-3) if flip else x
    r_c, r_a = reference_encode(c64, a64, x_ref.double())
    r_img = reference_decode(r_c, r_a)
    r_mix = reference_decode(r_c, r_a.roll(1, 0))
    if flip:
        r_img, r_mix = r_img.flip(-3), r_mix.flip(-3)
    with torch.no_grad():
        z_c, z_a = model.encode(x)
        torch.testing.assert_close(z_c.double(), r_c, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(z_a.double(), r_a, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.decode(z_c, z_a).double(), r_img, rtol=1e-3, atol=1e-4)
        m64 = model.double()
        z_c, z_a = m64.encode(x.double())
        torch.testing.assert_close(z_c, r_c, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(z_a, r_a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m64.decode(z_c, z_a), r_img, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(m64.decode(z_c, z_a.roll(1, 0)), r_mix, rtol=1e-10, atol=1e-10)


def demo_tiles(modality: str = "he") -> torch.Tensor:
    tiles, _ = load_demo_tiles(modality=modality)
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("k, name, resolution", [(4, "camelyon-authors", 96), (16, "tcga", 572)])
def test_round_trip_reproduces_reference(
    k: int, name: str, resolution: int, request, tmp_path: Path, isolated_home: Path, real_tiles: torch.Tensor
) -> None:
    content, attr = request.getfixturevalue(f"tensors_k{k}")
    src = write_checkpoint(tmp_path / f"{name}_seed:0_epoch:19_model.pth", authors_algorithm_state_dict(content, attr))
    assert name in contrimix_aug.weights.REGISTRY and not contrimix_aug.weights.REGISTRY[name].bundled
    assert KNOWN_TRAINING_RESOLUTION[name] == resolution
    path = import_authors_checkpoint(src, name)
    assert path == weights_dir() / f"{name}.safetensors" and path.is_file()
    assert str(path).startswith(str(isolated_home))
    assert name in available_weights() and contrimix_aug.weights_path(name) == path

    w = load_weights(path)
    assert w.config.num_attributes == k and w.config.channel_order == "rgb" and w.config.mode == "absorbance"
    meta = w.meta
    assert isinstance(meta, WeightsMeta)
    assert meta.name == name and meta.modality == "he" and meta.training_data == "authors' checkpoint"
    assert meta.licence and meta.library_version == contrimix_aug.__version__
    assert meta.extra["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta.extra["source_file"] == src.name
    assert meta.extra["training_resolution"] == resolution
    assert meta.extra["epoch"] == 19
    assert meta.num_params == sum(t.numel() for t in content.values()) + sum(t.numel() for t in attr.values())

    model = load_model(name)  # the registry name now resolves to the imported file
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = real_tiles[:2, :, :64, :72]
    check_against_reference(model, content, attr, x)


def test_bank_from_the_bundled_real_tiles(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    """The import stores an attribute bank: the attributes of the real tiles bundled with the package, so single
    images get donors and ContriMixNormalize has a default target."""
    content, attr = tensors_k4
    src = write_checkpoint(tmp_path / "c.pth", authors_algorithm_state_dict(content, attr))
    w = load_weights(import_authors_checkpoint(src, "camelyon-authors"))
    tiles = demo_tiles()
    assert w.bank is not None and w.bank.shape == (tiles.shape[0], 3, 4)
    torch.testing.assert_close(w.bank, compute_bank(w.build(), tiles), rtol=1e-5, atol=1e-5)
    assert "16 real tiles bundled with contrimix_aug (cmu1, skin)" in w.meta.bank_source
    aug = ContriMix(weights="camelyon-authors", p=1.0, seed=0, donors="batch")
    out = aug(tiles[0])  # a single image with batch donors: its donor comes from the bank
    assert out.shape == tiles[0].shape and bool(aug.params["from_bank"][0])
    assert not torch.equal(out, tiles[0])
    sampled = ContriMix(weights="camelyon-authors", p=1.0, seed=0)  # the default: a stain sampled around the bank
    assert sampled.donors == "sampled" and not torch.equal(sampled(tiles[0]), tiles[0])


def test_bank_from_a_folder(tmp_path: Path, isolated_home: Path, tensors_k4, tile_folder: Path) -> None:
    src = write_checkpoint(tmp_path / "c.pth", authors_algorithm_state_dict(*tensors_k4))
    n = len(list(tile_folder.glob("*.png")))
    w = load_weights(import_authors_checkpoint(src, "folderbank", bank_images=tile_folder))
    assert w.bank.shape == (n, 3, 4) and w.meta.bank_source == f"{n} reference images of {tile_folder.name}/"
    with pytest.raises(FileNotFoundError, match="bank_images"):
        import_authors_checkpoint(src, "nobank", bank_images=tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="bank_images: no images"):
        import_authors_checkpoint(src, "nobank", bank_images=empty)
    assert not (weights_dir() / "nobank.safetensors").exists()


def test_single_channel_linear_checkpoint_gets_a_fluorescence_bank(tmp_path: Path, isolated_home: Path) -> None:
    """A 1-channel (fluorescence) checkpoint: C read from the tensors, linear mode, bank from the bundled real
    fluorescence tiles."""
    g = torch.Generator().manual_seed(5)
    content_shapes, attr_shapes = authors_shapes(4, c=1)
    content = {n: 0.1 * torch.randn(s, generator=g) for n, s in content_shapes.items()}
    attr = {n: 0.1 * torch.randn(s, generator=g) + (1.0 if n == "_model.8.weight" else 0.0)
            for n, s in attr_shapes.items()}
    src = write_checkpoint(tmp_path / "fluo.pth", authors_algorithm_state_dict(content, attr))
    w = load_weights(import_authors_checkpoint(src, "rxrx1-like", mode="linear"))
    assert w.config.in_channels == 1 and w.config.mode == "linear" and w.meta.modality == "fluorescence"
    fluo = demo_tiles("fluorescence")
    assert w.bank.shape == (fluo.shape[0], 1, 4) and "dsb" in w.meta.bank_source
    torch.testing.assert_close(w.bank, compute_bank(w.build(), fluo), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["he", "HE", "Camelyon", "camelyon", "FLUORESCENCE"])
def test_bundled_names_refused_in_any_case(tmp_path: Path, isolated_home: Path, tensors_k4, name: str) -> None:
    src = write_checkpoint(tmp_path / "c.pth", authors_algorithm_state_dict(*tensors_k4))
    with pytest.raises(ValueError, match="bundled with contrimix_aug; choose another name .*camelyon-authors"):
        import_authors_checkpoint(src, name)
    assert not list(weights_dir().glob("*.safetensors")) if weights_dir().is_dir() else True


def test_bgr_channel_order(tmp_path: Path, isolated_home: Path, tensors_k4, real_tiles: torch.Tensor) -> None:
    content, attr = tensors_k4
    src = write_checkpoint(tmp_path / "bgr.pth", authors_algorithm_state_dict(content, attr))
    import_authors_checkpoint(src, "bgrnet", channel_order="bgr")
    model = load_model("bgrnet")
    assert model.config.channel_order == "bgr"
    # inputs stay RGB: the model flips to BGR for the encoders and back for the output
    check_against_reference(model, content, attr, real_tiles[:2, :, :64, :64], flip=True)


def test_convert_in_memory(tensors_k4) -> None:
    content, attr = tensors_k4
    sd = authors_algorithm_state_dict(content, attr)
    w = convert_authors_state_dict(sd)
    assert w.config == contrimix_aug.authors_config(4)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in w.state_dict.values())
    assert torch.equal(w.state_dict["attribute_encoder.norm.weight"], attr["_model.8.weight"])
    assert torch.equal(w.state_dict["content_encoder.blocks.1.conv2.bias"], content["_model.3._model.3.bias"])
    assert torch.equal(w.state_dict["attribute_encoder.blocks.2.skip.weight"], attr["_model.3._skip_block.1.weight"])
    w.build()  # strict load


def test_half_precision_and_no_module_infix(tensors_k4) -> None:
    content, attr = tensors_k4
    sd = {k.replace(".module.", "."): v.half() for k, v in authors_algorithm_state_dict(content, attr).items()}
    w = convert_authors_state_dict(sd)
    assert w.state_dict["content_encoder.conv_in.weight"].dtype == torch.float32
    torch.testing.assert_close(
        w.state_dict["content_encoder.conv_in.weight"], content["_model.0._model.0.weight"], rtol=1e-3, atol=1e-3
    )


def test_k_mismatch(tmp_path: Path, isolated_home: Path) -> None:
    content, _ = authors_tensors(4, seed=1, dtype=torch.float32)
    _, attr = authors_tensors(5, seed=2, dtype=torch.float32)
    src = write_checkpoint(tmp_path / "mix.pth", authors_algorithm_state_dict(content, attr))
    with pytest.raises(WeightsError, match=r"K mismatch.*K=4.*K=5"):
        import_authors_checkpoint(src, "mixed")
    assert not (weights_dir() / "mixed.safetensors").exists()


def test_missing_key(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    key = ATTR_PREFIX + "_model.3._skip_block.1.bias"
    del sd[key]
    src = write_checkpoint(tmp_path / "missing.pth", sd)
    with pytest.raises(WeightsError, match="missing keys") as err:
        import_authors_checkpoint(src, "missing")
    assert key in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        CONTENT_PREFIX + "_model.4._model.0.weight",  # an extra layer (the k = 2/4 variants have more blocks)
        ATTR_PREFIX + "_model.1._forward_block.0.weight_orig",  # spectral norm
    ],
)
def test_extra_key(tmp_path: Path, isolated_home: Path, tensors_k4, key: str) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    sd[key] = torch.zeros(4, 4, 3, 3)
    src = write_checkpoint(tmp_path / "extra.pth", sd)
    with pytest.raises(WeightsError, match="unexpected keys") as err:
        import_authors_checkpoint(src, "extra")
    assert key in str(err.value)


def test_unknown_network_key(tensors_k4) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    sd["_models_by_names.discriminator.module.conv.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="discriminator"):
        convert_authors_state_dict(sd)


def test_misshaped_key(tensors_k4) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    key = ATTR_PREFIX + "_model.2._forward_block.2.weight"
    sd[key] = sd[key].transpose(0, 1).contiguous()  # (64, 32, 3, 3) -> (32, 64, 3, 3)
    with pytest.raises(WeightsError, match="wrong shape") as err:
        convert_authors_state_dict(sd)
    assert key in str(err.value) and "(64, 32, 3, 3)" in str(err.value)


def test_generator_parameters_rejected(tensors_k4) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    sd["_models_by_names.im_gen.module._model.1._model.0.weight"] = torch.zeros(3, 3, 7, 7)
    with pytest.raises(WeightsError, match="k > 1"):
        convert_authors_state_dict(sd)


def test_non_finite_rejected(tensors_k4) -> None:
    sd = authors_algorithm_state_dict(*tensors_k4)
    key = CONTENT_PREFIX + "_model.1._model.0.bias"
    sd[key] = sd[key].clone()
    sd[key][0] = float("nan")
    with pytest.raises(WeightsError, match="NaN") as err:
        convert_authors_state_dict(sd)
    assert key in str(err.value)


_TRIPPED: list[str] = []


def _trip() -> object:  # pragma: no cover - must never run
    _TRIPPED.append("unpickled")
    return None


class _Payload:
    def __reduce__(self):
        return (_trip, ())


def test_pickled_object_refused(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    src = write_checkpoint(tmp_path / "pickled.pth", authors_algorithm_state_dict(*tensors_k4), config=_Payload())
    with pytest.raises(WeightsError, match="will not unpickle"):
        import_authors_checkpoint(src, "pickled")
    assert _TRIPPED == []
    assert not (weights_dir() / "pickled.safetensors").exists()


def test_numpy_scalar_metric_accepted(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    algorithm = authors_algorithm_state_dict(*tensors_k4)
    src = tmp_path / "np.pth"
    torch.save({"algorithm": algorithm, "epoch": 3, "best_val_metric": np.float64(0.918)}, src)
    path = import_authors_checkpoint(src, "npmetric")
    assert load_weights(path).meta.extra["epoch"] == 3


def _relocate_to_cuda(src: Path, dst: Path) -> None:
    """Rewrite the storage location tags of a torch.save zip from 'cpu' to 'cuda:0', as a CUDA run writes them."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info.filename, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks loading CUDA-saved tensors on a CPU-only machine")
def test_cuda_saved_checkpoint_loads_on_cpu(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    plain = write_checkpoint(tmp_path / "plain.pth", authors_algorithm_state_dict(*tensors_k4))
    src = tmp_path / "cuda.pth"
    _relocate_to_cuda(plain, src)
    with pytest.raises(RuntimeError, match="CUDA"):  # what the authors' loader does on a CPU-only machine
        torch.load(src, weights_only=True)
    path = import_authors_checkpoint(src, "fromcuda")
    assert torch.equal(
        load_weights(path).state_dict["content_encoder.conv_in.weight"], tensors_k4[0]["_model.0._model.0.weight"]
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_checkpoint(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    sd = {k: v.cuda() for k, v in authors_algorithm_state_dict(*tensors_k4).items()}
    src = write_checkpoint(tmp_path / "cuda.pth", sd)
    path = import_authors_checkpoint(src, "fromcuda")
    w = load_weights(path)
    assert all(t.device.type == "cpu" for t in w.state_dict.values())
    assert torch.equal(w.state_dict["attribute_encoder.head.bias"], tensors_k4[1]["_model.7.bias"])


def test_bare_algorithm_state_dict(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    src = tmp_path / "bare.pth"
    torch.save(authors_algorithm_state_dict(*tensors_k4), src)
    path = import_authors_checkpoint(src, "bare")
    assert "epoch" not in load_weights(path).meta.extra


@pytest.mark.parametrize(
    "payload, match",
    [({"model": {"a": torch.zeros(1)}}, "'algorithm'"), ([torch.zeros(1)], "'algorithm'")],
    ids=["no-algorithm-key", "a-list"],
)
def test_not_an_authors_checkpoint(tmp_path: Path, isolated_home: Path, payload, match: str) -> None:
    src = tmp_path / "other.pth"
    torch.save(payload, src)
    with pytest.raises(WeightsError, match=match):
        import_authors_checkpoint(src, "other")


def test_unreadable_files(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        import_authors_checkpoint(junk, "junk")
    good = write_checkpoint(tmp_path / "good.pth", authors_algorithm_state_dict(*tensors_k4))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        import_authors_checkpoint(cut, "cut")
    with pytest.raises(FileNotFoundError):
        import_authors_checkpoint(tmp_path / "absent.pth", "absent")


def test_overwrite_and_dest_dir(tmp_path: Path, isolated_home: Path, tensors_k4) -> None:
    src = write_checkpoint(tmp_path / "a.pth", authors_algorithm_state_dict(*tensors_k4))
    import_authors_checkpoint(src, "again")
    with pytest.raises(FileExistsError, match="overwrite=True \\(CLI: --force\\)"):
        import_authors_checkpoint(src, "again")
    import_authors_checkpoint(src, "again", overwrite=True)
    out = import_authors_checkpoint(src, "elsewhere", dest_dir=tmp_path / "out", training_resolution=128)
    assert out == tmp_path / "out" / "elsewhere.safetensors"
    assert load_weights(out).meta.extra["training_resolution"] == 128


@pytest.mark.parametrize("name", ["../evil", "a/b", "x.safetensors", "", "he"])
def test_bad_names(tmp_path: Path, isolated_home: Path, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        import_authors_checkpoint(tmp_path / "whatever.pth", name)
