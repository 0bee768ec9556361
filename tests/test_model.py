"""ContriMixModel: shapes for any tile size and channel count, small-tile attributes, BGR weights, freezing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrimix_aug.model_config import ModelConfig, authors_config
from contrimix_aug.model import ContriMixModel
from contrimix_aug.optical_density import rgb_to_od


@pytest.fixture(scope="module")
def mosaic(real_tile_list: list[torch.Tensor]) -> list[torch.Tensor]:
    """The real tiles that are at least 200 px on each side (the 256 px crops of the fixtures)."""
    big = [t for t in real_tile_list if min(t.shape[-2:]) >= 200]
    assert big, "tests/fixtures needs at least one real tile of 200 px or more"
    return big


def crops(tiles: list[torch.Tensor], b: int, h: int, w: int) -> torch.Tensor:
    """b different (h, w) crops of real tissue, cycling through the large tiles."""
    out = []
    for i in range(b):
        t = tiles[i % len(tiles)]
        H, W = t.shape[-2:]
        top = (i * 37) % (H - h + 1)
        left = (i * 53) % (W - w + 1)
        out.append(t[:, top : top + h, left : left + w])
    return torch.stack(out).contiguous()


@pytest.fixture(scope="module")
def he_model() -> ContriMixModel:
    return ContriMixModel(authors_config(4)).eval()


SIZES = [(8, 8), (17, 11), (31, 64), (63, 63), (64, 64), (97, 131), (200, 200)]


@pytest.mark.parametrize("h, w", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_shapes_he(he_model: ContriMixModel, mosaic: list[torch.Tensor], h: int, w: int) -> None:
    x = crops(mosaic, 2, h, w)
    with torch.no_grad():
        z_c, z_a = he_model.encode(x)
        out = he_model.decode(z_c, z_a)
    assert z_c.shape == (2, 4, h, w) and z_a.shape == (2, 3, 4)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("h, w", [(8, 8), (33, 21), (120, 96)])
def test_shapes_fluorescence_like(mosaic: list[torch.Tensor], channels: int, h: int, w: int) -> None:
    """Linear mode with C = 1 (nuclei) or C = 4 channels built from real tissue (haematoxylin-like OD etc.)."""
    rgb = crops(mosaic, 3, h, w)
    od = rgb_to_od(rgb)
    nuclei = (od[:, :1] / od[:, :1].amax()).clamp(0, 1)  # bright where the red channel absorbs
    x = nuclei if channels == 1 else torch.cat([nuclei, 1 - rgb], dim=1)
    cfg = ModelConfig(in_channels=channels, num_attributes=5, mode="linear", attr_widths=(8, 16, 16, 32))
    model = ContriMixModel(cfg).eval()
    with torch.no_grad():
        z_c, z_a = model.encode(x)
        out = model(x)
    assert z_c.shape == (3, 5, h, w) and z_a.shape == (3, channels, 5)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_fluorescence_rejects_bgr() -> None:
    with pytest.raises(ValueError, match="bgr"):
        ModelConfig(in_channels=4, mode="linear", channel_order="bgr")


@pytest.mark.parametrize("h, w", [(17, 40), (63, 9), (40, 100)])
def test_small_inputs_use_resized_copy_for_attributes(
    he_model: ContriMixModel, mosaic: list[torch.Tensor], h: int, w: int
) -> None:
    x = crops(mosaic, 2, h, w)
    od = rgb_to_od(x)
    target = (max(h, 64), max(w, 64))
    resized = F.interpolate(od, size=target, mode="bilinear", align_corners=False)
    with torch.no_grad():
        got = he_model.encode_attributes(x)
        want = he_model.attribute_encoder(resized)  # already >= 64: passed through unchanged
        content, attrs = he_model.encode(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(attrs, want)
    assert content.shape[-2:] == (h, w)  # content stays at native resolution


def test_attr_input_size_resizes_every_input(mosaic: list[torch.Tensor]) -> None:
    model = ContriMixModel(ModelConfig(attr_input_size=64)).eval()
    x = crops(mosaic, 2, 150, 130)
    resized = F.interpolate(rgb_to_od(x), size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_attributes(x), model.attribute_encoder(resized))
        assert model.encode(x)[0].shape[-2:] == (150, 130)


def test_bgr_flip_equivalence(mosaic: list[torch.Tensor]) -> None:
    rgb_model = ContriMixModel(authors_config(4)).eval()
    bgr_model = ContriMixModel(authors_config(4, channel_order="bgr")).eval()
    bgr_model.load_state_dict(rgb_model.state_dict())
    x = crops(mosaic, 3, 64, 72)
    with torch.no_grad():
        c_b, a_b = bgr_model.encode(x)
        c_r, a_r = rgb_model.encode(x.flip(-3))
        torch.testing.assert_close(c_b, c_r)
        torch.testing.assert_close(a_b, a_r)
        torch.testing.assert_close(bgr_model.decode(c_b, a_b), rgb_model.decode(c_r, a_r).flip(-3))
        torch.testing.assert_close(bgr_model(x), rgb_model(x.flip(-3)).flip(-3))
        torch.testing.assert_close(bgr_model.encode_attributes(x), a_r)
        # and the flip matters: RGB and BGR readings of the same weights differ
        assert not torch.allclose(rgb_model.encode_attributes(x), a_b)


def test_forward_is_self_reconstruction(he_model: ContriMixModel, mosaic: list[torch.Tensor]) -> None:
    x = crops(mosaic, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(he_model(x), he_model.decode(*he_model.encode(x)))
        z_c, z_a = he_model.encode(x)
        assert not torch.allclose(he_model.decode(z_c, z_a.flip(0)), he_model.decode(z_c, z_a))


def test_decode_signal_is_generator(he_model: ContriMixModel) -> None:
    z_c = torch.rand(2, 4, 5, 6)
    z_a = torch.rand(2, 3, 4)
    sig = he_model.decode_signal(z_c, z_a)
    torch.testing.assert_close(sig, torch.einsum("bck,bkhw->bchw", z_a, z_c))
    torch.testing.assert_close(he_model.decode(z_c, z_a), (10 ** -sig.clamp(-0.2, 6)).clamp(0, 1))


def test_freeze(mosaic: list[torch.Tensor]) -> None:
    model = ContriMixModel(authors_config(4))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.freeze() is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = crops(mosaic, 2, 64, 64).requires_grad_(False)
    assert model(x).grad_fn is None


def test_trainable_gradients(mosaic: list[torch.Tensor], tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config)
    x = crops(mosaic, 2, 24, 20)
    (model(x) - x).abs().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.content_encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.attribute_encoder.stem.weight.grad.abs().sum() > 0


def test_float64(mosaic: list[torch.Tensor], tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config).double().eval()
    x = crops(mosaic, 2, 16, 16).double()
    with torch.no_grad():
        assert model(x).dtype == torch.float64


def test_bank_buffer(tiny_config: ModelConfig) -> None:
    bank = torch.rand(5, 3, 3)
    model = ContriMixModel(tiny_config, bank=bank)
    assert torch.equal(model.bank, bank) and model.bank.data_ptr() != bank.data_ptr()
    assert "bank" not in model.state_dict()  # stored by the weights file, not the state dict
    assert ContriMixModel(tiny_config).bank.shape == (0, 3, 3)
    with pytest.raises(ValueError, match="bank"):
        ContriMixModel(tiny_config, bank=torch.rand(5, 3, 4))


def test_extra_repr(he_model: ContriMixModel) -> None:
    r = repr(he_model)
    assert "K=4" in r and "order=rgb" in r and f"params={he_model.num_params:,}" in r


@pytest.mark.parametrize(
    "x, err, match",
    [
        (torch.rand(2, 1, 32, 32), ValueError, "channel"),
        (torch.rand(2, 3, 7, 32), ValueError, "8"),
        (torch.rand(3, 32, 32), ValueError, "unsqueeze"),
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), TypeError, "255"),
        (torch.rand(1, 32, 32, 3), ValueError, "permute"),
    ],
    ids=["channels", "too-small", "3d", "uint8", "channels-last"],
)
def test_input_checks(he_model: ContriMixModel, x: torch.Tensor, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        he_model.encode(x)


# ---------------------------------------------------------------------------------------------------------------
# the public stages: order, image_to_signal, signal_to_image
# ---------------------------------------------------------------------------------------------------------------
def test_stages_rgb(he_model: ContriMixModel, mosaic: list[torch.Tensor]) -> None:
    x = crops(mosaic, 2, 40, 48)
    assert torch.equal(he_model.order(x), x)  # RGB weights: the identity
    sig = he_model.image_to_signal(x)
    torch.testing.assert_close(sig, -torch.log10(x.clamp_min(1e-6)))
    torch.testing.assert_close(he_model.signal_to_image(sig), x, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        z_c, z_a = he_model.encode(x)
        torch.testing.assert_close(he_model.decode(z_c, z_a), he_model.signal_to_image(he_model.decode_signal(z_c, z_a)))
        torch.testing.assert_close(he_model.encode_signal(sig)[1], z_a)


def test_stages_bgr_flip_once(mosaic: list[torch.Tensor]) -> None:
    bgr = ContriMixModel(authors_config(4, channel_order="bgr")).eval()
    x = crops(mosaic, 2, 40, 48)
    assert torch.equal(bgr.order(x), x.flip(-3)) and torch.equal(bgr.order(bgr.order(x)), x)
    sig = bgr.image_to_signal(x)  # the signal is in the weights' (BGR) order ...
    torch.testing.assert_close(sig, -torch.log10(x.flip(-3).clamp_min(1e-6)))
    torch.testing.assert_close(bgr.signal_to_image(sig), x, rtol=1e-5, atol=1e-6)  # ... the image in RGB again


def test_linear_mode_stages(mosaic: list[torch.Tensor]) -> None:
    model = ContriMixModel(ModelConfig(in_channels=1, mode="linear", attr_widths=(4, 8)))
    x = crops(mosaic, 2, 24, 24)[:, 1:2]  # the green channel of real tissue
    assert torch.equal(model.image_to_signal(x), x)
    assert torch.equal(model.signal_to_image(x * 3 - 1), (x * 3 - 1).clamp(0, 1))


def test_meta_min_size_and_value_range(mosaic: list[torch.Tensor]) -> None:
    from contrimix_aug.weights_meta import WeightsMeta

    fresh = ContriMixModel(authors_config(4))
    assert fresh.meta is None and fresh.min_size == 8 and fresh.value_range == (0.0, 1.0)
    meta = WeightsMeta(name="strict", modality="he", library_version="0", num_params=fresh.num_params, min_size=32,
                       value_range=(0.0, 1.0))
    model = ContriMixModel(authors_config(4), meta=meta).eval()
    assert model.meta is meta and model.min_size == 32 and "'strict'" in repr(model)
    x = crops(mosaic, 1, 31, 40)
    with pytest.raises(ValueError, match="at least 32×32 px for these weights, got 31×40"):
        model.encode(x)
    with pytest.raises(ValueError, match="32×32"):
        model.encode_attributes(x)
    with torch.no_grad():
        assert model.encode(crops(mosaic, 1, 32, 40))[0].shape[-2:] == (32, 40)


def test_frozen_copy_is_independent(mosaic: list[torch.Tensor], tiny_config: ModelConfig) -> None:
    model = ContriMixModel(tiny_config, bank=torch.zeros(2, 3, 3))
    assert model.training
    copy_ = model.frozen_copy()
    assert copy_ is not model and not copy_.training and not any(p.requires_grad for p in copy_.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())  # the original is untouched
    copy_.bank = torch.ones(5, 3, 3)
    with torch.no_grad():
        copy_.content_encoder.conv_in.weight.add_(1.0)
    assert model.bank.shape[0] == 2
    assert not torch.equal(model.content_encoder.conv_in.weight, copy_.content_encoder.conv_in.weight)
    x = crops(mosaic, 2, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x), copy_(x))
