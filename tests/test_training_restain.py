"""Random re-staining (training.restain) of real H&E tiles: the same tissue in another stain."""

from __future__ import annotations

import pytest
import torch

from contrimix_aug.data.readers import load_demo_tiles
from contrimix_aug.optical_density import T_MIN_UINT8, rgb_to_od
from contrimix_aug.quality import structure_ssim
from contrimix_aug.tissue import tissue_mask_tensor
from contrimix_aug.training.restain import RestainConfig, restain


@pytest.fixture(scope="module")
def demo() -> torch.Tensor:
    tiles, _ = load_demo_tiles()
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_range_and_determinism(demo):
    out = restain(demo, generator=gen(0))
    assert out.shape == demo.shape and out.dtype == demo.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, restain(demo, generator=gen(0)))
    assert not torch.equal(out, restain(demo, generator=gen(1)))
    assert restain(demo.double(), generator=gen(0)).dtype == torch.float64


def test_every_image_changes_colour_but_keeps_its_tissue(demo):
    out = restain(demo, generator=gen(2))
    mean_od = lambda x: rgb_to_od(x, T_MIN_UINT8).mean((2, 3))  # noqa: E731
    moved = (mean_od(out) - mean_od(demo)).norm(dim=1)
    assert bool((moved > 0.01).all()), moved  # no image is left as it was
    # the structure (OD luminance) is kept far better than between different tissue
    same = structure_ssim(demo, out)
    other = structure_ssim(demo, demo.roll(1, 0))
    assert float(same.min()) > float(other.max()) and float(same.mean()) > 0.7
    # glass stays glass: background pixels stay bright
    glass = ~tissue_mask_tensor(demo)
    if bool(glass.any()):
        assert float(out.mean(1)[glass].mean()) > 0.75


def test_generator_and_global_rng(demo):
    state = torch.get_rng_state()
    restain(demo[:4], generator=gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # draws only from the generator given


def test_families(demo):
    """Beer–Lambert only, CIELAB only, or neither requested (then Beer–Lambert): all change the image."""
    x = demo[:6]
    bl = restain(x, RestainConfig(p_beer_lambert=1.0, p_lab=0.0), generator=gen(4))
    lab = restain(x, RestainConfig(p_beer_lambert=0.0, p_lab=1.0), generator=gen(4))
    none = restain(x, RestainConfig(p_beer_lambert=0.0, p_lab=0.0), generator=gen(4))
    for out in (bl, lab, none):
        assert bool(((out - x).flatten(1).abs().mean(1) > 1e-3).all())
    assert not torch.allclose(bl, lab)
    torch.testing.assert_close(none, bl)  # an image drawn for neither family gets the Beer–Lambert change
    # zero spreads: Beer–Lambert with an unperturbed basis and no scale/shift is the identity up to the 8-bit floor
    still = restain(x, RestainConfig(p_beer_lambert=1.0, p_lab=0.0, od_scale=0.0, od_shift=0.0, basis_jitter=0.0),
                    generator=gen(4))
    torch.testing.assert_close(still, x.clamp_min(T_MIN_UINT8), rtol=1e-4, atol=1e-4)


def test_config_validation():
    assert RestainConfig.from_dict(None) == RestainConfig() == RestainConfig.from_dict({})
    cfg = RestainConfig(od_scale=0.5)
    assert RestainConfig.from_dict(cfg.to_dict()) == cfg and isinstance(cfg.od_scale, float)
    with pytest.raises(ValueError, match="RestainConfig.od_scale: expected a finite number >= 0"):
        RestainConfig(od_scale=-0.1)
    with pytest.raises(ValueError, match="RestainConfig.p_lab: expected a probability"):
        RestainConfig(p_lab=1.5)
    with pytest.raises(ValueError, match="RestainConfig.lab_gamma"):
        RestainConfig(lab_gamma=float("inf"))
    with pytest.raises(ValueError, match="unknown keys \\['hue'\\]"):
        RestainConfig.from_dict({"hue": 0.1})
    with pytest.raises(ValueError, match="\\(B, 3, H, W\\) RGB"):
        restain(torch.zeros(2, 1, 8, 8))
