"""The input guards (contrimix_aug._checks): each message says what most likely happened and how to fix it, on real
H&E tiles scaled the ways users get them wrong."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from contrimix_aug import ContriMix, ContriMixNormalize, load_model
from contrimix_aug._checks import (
    VALUE_TOLERANCE,
    check_image,
    check_image_values,
    check_probability,
    check_strength,
    weights_for_channels,
)
from contrimix_aug.data import load_demo_tiles


@pytest.fixture(scope="module")
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    return real_tiles[:4, :, :40, :48].contiguous()


# how users get the value range wrong -> what the message must say
WRONG_RANGES = [
    # mean/std-normalised (transforms.Normalize) before ContriMix: values in about [-2, 2]
    (lambda t: (t - 0.5) / 0.25, ["mean/std-normalised", "apply ContriMix first", "Normalize after it"]),
    # an earlier float step (brightness/contrast jitter, interpolation) pushed values a little past 1
    (lambda t: t * 1.5, ["an earlier float step", "clamp", "x.clamp(0, 1)"]),
    # 8-bit intensities as floats
    (lambda t: t * 200, ["8-bit", "divide by 255"]),
    # 16-bit intensities as floats
    (lambda t: t * 4000, ["16-bit", "divide by 65535"]),
]
IDS = ["normalised", "max-1.5", "max-200", "max-4000"]


@pytest.mark.parametrize("make, phrases", WRONG_RANGES, ids=IDS)
def test_check_image_values_messages(tiles, make, phrases):
    x = make(tiles)
    with pytest.raises(ValueError) as err:
        check_image_values(x, name="image")
    msg = str(err.value)
    lo, hi = float(x.min()), float(x.max())
    assert msg.startswith("image: expected values in [0, 1], got values in ["), msg
    assert f"{lo:.4g}" in msg and f"{hi:.4g}" in msg  # the range that came in
    for phrase in phrases:
        assert phrase in msg, (phrase, msg)
    # exactly one diagnosis per message
    assert [d for d in ("mean/std-normalised", "an earlier float step", "divide by 255", "divide by 65535")
            if d in msg] == [phrases[-1] if phrases[0] == "8-bit" or phrases[0] == "16-bit" else phrases[0]], msg


@pytest.mark.parametrize("make, phrases", WRONG_RANGES, ids=IDS)
def test_contrimix_reports_the_same_message(tiny, tiles, make, phrases):
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    with pytest.raises(ValueError, match="ContriMix input: expected values in") as err:
        aug(make(tiles))
    assert all(p in str(err.value) for p in phrases)
    # check_values=False switches the value check off (the caller takes responsibility)
    out = ContriMix(weights=tiny, p=1.0, seed=0, check_values=False)(make(tiles).clamp(0, 1))
    assert out.shape == tiles.shape


def test_in_range_values_pass(tiles):
    assert check_image_values(tiles) is False  # in range: nothing to clamp
    assert check_image_values(tiles * 4000, value_range=(0.0, 65535.0)) is False  # weights declaring another range
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_image_values(torch.where(tiles > 0.5, float("nan"), tiles))


# --------------------------------------------------------------------------------------------------------------
# small excursions outside [0, 1] are clamped, not refused (issue 19, item 5)
# --------------------------------------------------------------------------------------------------------------
def _overshoot(t: torch.Tensor, hi: float, lo: float = 0.0) -> torch.Tensor:
    """The real tiles with their brightest pixel pushed to ``hi`` and their darkest to ``lo`` (what bilinear
    resizing or a brightness jitter does to a tile)."""
    x = t.clone()
    flat = x.view(-1)
    flat[flat.argmax()] = hi
    flat[flat.argmin()] = lo
    return x


@pytest.mark.parametrize("hi, lo", [(1.001, 0.0), (1.0 + VALUE_TOLERANCE, 0.0), (1.0, -0.004), (1.006, -0.009)])
def test_small_excursions_are_clamped(tiny, tiles, hi, lo):
    x = _overshoot(tiles, hi, lo)
    assert check_image_values(x) is True  # the caller is told to clamp
    for p in (1.0, 0.5):
        aug = ContriMix(weights=tiny, p=p, seed=0)
        out = aug(x)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # exactly what the clamped image gives with the same draw
        assert torch.equal(out, ContriMix(weights=tiny, p=p, seed=0)(x.clamp(0, 1), params=aug.params))
        if p == 1.0:
            assert float((out - x.clamp(0, 1)).abs().amax()) > 1e-3  # and it was re-rendered


def test_a_bicubic_resize_of_real_tiles_is_taken(real_tiles):
    """Bicubic resizing rings past [0, 1] at sharp edges (a step: 0.11; these real tiles: more than 0.01, the
    tolerance of 0.3): the bundled default takes it, clamped, as a torchvision Resize(BICUBIC) pipeline hands it."""
    import torch.nn.functional as F

    x = F.interpolate(real_tiles[:8], scale_factor=2.3, mode="bicubic", align_corners=False)
    assert float(x.min()) < -0.01 or float(x.max()) > 1.01
    assert max(-float(x.min()), float(x.max()) - 1) <= VALUE_TOLERANCE
    aug = ContriMix(weights="camelyon", p=1.0, seed=0)
    out = aug(x)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out, ContriMix(weights="camelyon", p=1.0, seed=0)(x.clamp(0, 1), params=aug.params))


@pytest.mark.parametrize("make, match", [
    (lambda t: _overshoot(t, 1.0 + 2 * VALUE_TOLERANCE), "an earlier float step"),
    (lambda t: _overshoot(t, 1.0, -2 * VALUE_TOLERANCE), "Not mean/std-normalised data.*an earlier float step"),
    (lambda t: (t - 0.485) / 0.229, "most likely mean/std-normalised"),
    (lambda t: t * 255, "divide by 255"),
    (lambda t: torch.where(t > 0.5, float("nan"), t), "NaN or Inf"),
    (lambda t: torch.where(t > 0.5, float("inf"), t), "NaN or Inf"),
], ids=["above-tolerance", "below-tolerance", "normalised", "0-255", "nan", "inf"])
def test_beyond_the_tolerance_still_refused(tiny, tiles, make, match):
    with pytest.raises(ValueError, match=match):
        ContriMix(weights=tiny, p=1.0, seed=0)(make(tiles))


def test_check_image(tiles):
    check_image(tiles, 3)
    with pytest.raises(ValueError, match="at least 16×16 px for these weights, got 12×48"):
        check_image(tiles[:, :, :12], 3, min_size=16)
    with pytest.raises(ValueError, match=r"channels-last \(B, H, W, C\): use x.permute\(0, 3, 1, 2\)"):
        check_image(tiles.permute(0, 2, 3, 1), 3)
    with pytest.raises(ValueError, match=r"channels-last \(H, W, C\): use x.permute\(2, 0, 1\)\.$"):
        check_image(tiles[0].permute(1, 2, 0), 3, allow_chw=True)  # one image: no batch dim to permute
    with pytest.raises(ValueError, match="unsqueeze"):
        check_image(tiles[0], 3)
    check_image(tiles[0], 3, allow_chw=True)
    with pytest.raises(TypeError, match="x.float\\(\\) / 255"):
        check_image((tiles * 255).to(torch.uint8), 3)


def test_probability_and_strength():
    assert check_probability(1) == 1.0
    with pytest.raises(ValueError, match="probability"):
        check_probability(1.2)
    with pytest.raises(TypeError, match="p:"):
        check_probability(True)
    assert check_strength(0.3) == (0.3, 0.3) and check_strength([0.1, 0.4]) == (0.1, 0.4)
    with pytest.raises(ValueError, match="low <= high"):
        check_strength((0.9, 0.1))


# --------------------------------------------------------------------------------------------------------------
# every hint works: apply the fix the message suggests, verbatim, and the call succeeds (issue 19, item 6)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grey() -> torch.Tensor:
    """A real fluorescence tile (bundled dsb nuclei), (96, 96) float in [0, 1]: a greyscale image with no channel
    dim."""
    tiles, _ = load_demo_tiles(modality="fluorescence")
    return torch.from_numpy(tiles[0, ..., 0].copy()).float() / 255


def _rgba(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, torch.ones_like(t[..., :1, :, :])], dim=-3)


def _u8_hwc(t: torch.Tensor) -> np.ndarray:
    return (t.permute(*range(t.ndim - 3), -2, -1, -3) * 255).round().to(torch.uint8).numpy()


# (id, bad input from the real tiles / grey tile, exception, the fix as it appears in the message, which
# weights the call needs: "tiny" or a registry name the message names)
HINTS = [
    ("channels-last image", lambda t, g: t[0].permute(1, 2, 0), ValueError, "x.permute(2, 0, 1)", "tiny"),
    ("channels-last batch", lambda t, g: t.permute(0, 2, 3, 1), ValueError, "x.permute(0, 3, 1, 2)", "tiny"),
    ("numpy uint8 image", lambda t, g: _u8_hwc(t[0]), TypeError,
     "torch.from_numpy(arr).permute(2, 0, 1).float() / 255", "tiny"),
    ("numpy uint8 batch", lambda t, g: _u8_hwc(t), TypeError,
     "torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255", "tiny"),
    ("numpy float32 BCHW", lambda t, g: t.numpy(), TypeError, "torch.from_numpy(arr).", "tiny"),
    ("PIL image", lambda t, g: Image.fromarray(_u8_hwc(t[0])), TypeError,
     "torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255", "tiny"),
    ("uint8 tensor", lambda t, g: (t * 255).round().to(torch.uint8), TypeError, "x.float() / 255", "tiny"),
    ("int64 tensor", lambda t, g: (t * 255).round().long(), TypeError, "x.float() / 255", "tiny"),
    ("bool tensor", lambda t, g: t > 0.5, TypeError, "x.float()", "tiny"),
    ("5-D", lambda t, g: t[None], ValueError, "x.flatten(0, -4)", "tiny"),
    ("greyscale (H, W)", lambda t, g: g, ValueError, "x.unsqueeze(0)", "fluorescence"),
    ("1 channel, RGB weights", lambda t, g: g[None], ValueError, "'fluorescence'", "fluorescence"),
    ("RGBA", lambda t, g: _rgba(t), ValueError, "x[..., :3, :, :]", "tiny"),
    ("too small batch", lambda t, g: t[..., :5, :6], ValueError,
     "torch.nn.functional.interpolate(x, size=(8, 8), mode='bilinear')", "tiny"),
    ("too small image", lambda t, g: t[0, :, :5, :30], ValueError,
     "torch.nn.functional.interpolate(x[None], size=(8, 30), mode='bilinear')[0]", "tiny"),
    ("NaN", lambda t, g: torch.where(t > 0.6, float("nan"), t), ValueError,
     "torch.nan_to_num(x, nan=0, posinf=1, neginf=0)", "tiny"),
    ("Inf", lambda t, g: torch.where(t > 0.6, float("inf"), t), ValueError,
     "torch.nan_to_num(x, nan=0, posinf=1, neginf=0)", "tiny"),
    ("8-bit floats", lambda t, g: (t * 255).round(), ValueError, "x.float() / 255", "tiny"),
    ("16-bit floats", lambda t, g: (t * 65535).round(), ValueError, "x.float() / 65535", "tiny"),
    ("jitter past 1", lambda t, g: t * 1.5, ValueError, "x.clamp(0, 1)", "tiny"),
]


@pytest.mark.parametrize("make, exc, fix, weights", [h[1:] for h in HINTS], ids=[h[0] for h in HINTS])
def test_the_suggested_fix_works(tiny, tiles, grey, make, exc, fix, weights):
    bad = make(tiles, grey)
    aug = ContriMix(weights=tiny, p=1.0, bank=tiles, seed=0)  # a bank: single images work too
    with pytest.raises(exc) as err:
        aug(bad)
    msg = str(err.value)
    assert fix in msg, (fix, msg)
    code = fix.strip("'")
    if weights != "tiny":  # the fix is other weights, named in the message; the layout fix (if any) is applied too
        assert f"'{weights}'" in msg
        aug = ContriMix(weights=weights, p=1.0, seed=0)
        code = code if code.startswith("x.") else "x"
    elif code.endswith("."):
        code = code[:-1]
    fixed = eval(code, {"x": bad, "arr": bad, "img": bad, "torch": torch, "np": np})  # noqa: S307 - our own message
    out = aug(fixed)
    assert out.shape == fixed.shape and out.dtype == fixed.dtype
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_functional_path_batch_dim_hint(tiny, tiles):
    """Model calls take batches only: a (C, H, W) image is told x.unsqueeze(0), which works."""
    with pytest.raises(ValueError, match=r"x\.unsqueeze\(0\)") as err:
        tiny.encode(tiles[0])
    assert "x.unsqueeze(0)" in str(err.value)
    content, attrs = tiny.encode(tiles[0].unsqueeze(0))
    assert content.shape[0] == attrs.shape[0] == 1


def test_normalised_input_hint(tiny, tiles):
    """Mean/std-normalised input: the message says to apply ContriMix first and Normalize after it; that order works."""
    mean, std = tiles.mean((0, 2, 3), keepdim=True), tiles.std((0, 2, 3), keepdim=True)
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    with pytest.raises(ValueError, match="apply ContriMix first, right after ToTensor, and Normalize after it"):
        aug((tiles - mean) / std)
    out = (aug(tiles) - mean) / std  # the suggested order
    assert out.shape == tiles.shape and float(out.min()) < 0  # normalised, as the pipeline wants


def test_empty_batch_hint(tiny, tiles):
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    with pytest.raises(ValueError, match="pass at least one image"):
        aug(tiles[:0])
    assert aug(tiles[:2]).shape == tiles[:2].shape


def test_device_hint(tiny, tiles):
    """An input on another device than the model: the message names both moves; moving the image works here."""
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    with pytest.raises(ValueError, match=r"aug\.to\('meta'\), or the image with x\.to\('cpu'\)") as err:
        aug(tiles.to("meta"))
    assert "x.to('cpu')" in str(err.value)
    # a meta tensor holds no data to move; the image on the model's device works (TestCuda applies both moves)
    assert aug(tiles.to("cpu")).shape == tiles.shape


def test_sample_without_torchvision_hint(tiny, tiles, monkeypatch):
    """(image, mask) or a dict without torchvision installed: a TypeError naming both fixes; the image alone works."""
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` now fails, as when not installed
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    mask = (tiles.mean(1, keepdim=True) < 0.6).float()
    for call in (lambda: aug(tiles, mask), lambda: aug({"image": tiles, "mask": mask}), lambda: aug([tiles])):
        with pytest.raises(TypeError, match="pip install torchvision") as err:
            call()
        assert "call the transform on the image tensor alone" in str(err.value)
    assert aug(tiles).shape == tiles.shape


def test_weights_for_channels():
    assert "fluorescence" in weights_for_channels(1) and "fluorescence" not in weights_for_channels(3)
    assert {"he", "camelyon"} <= set(weights_for_channels(3))
    assert weights_for_channels(2) == []
    assert load_model(weights_for_channels(1)[0]).config.in_channels == 1


def test_two_channels_hint_names_training(tiny, tiles):
    """No weights take 2 channels: the message says how to train some (the training command itself is tested in
    test_cli.py)."""
    with pytest.raises(ValueError, match=r"No available weights take 2 channel\(s\): train some with "
                                         r"`contrimix-aug train DATA --channels 2 --out DIR`"):
        ContriMix(weights=tiny, p=1.0, seed=0)(tiles[:, :2])


def test_constructor_hints(tiny, tiles):
    with pytest.raises(TypeError, match="pass e.g. p=0.5"):
        ContriMix(weights=tiny, p="0.5")
    assert ContriMix(weights=tiny, p=0.5).p == 0.5
    with pytest.raises(ValueError, match="no attribute bank; pass target=reference image"):
        ContriMixNormalize(weights=tiny)
    assert ContriMixNormalize(weights=tiny, target=tiles)(tiles).shape == tiles.shape
