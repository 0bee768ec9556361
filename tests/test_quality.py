"""Quality measures (contrimix_aug.quality) on real tissue: PSNR/SSIM against independent float64 oracles, the
optical-density luminance and colour statistics by their definitions, the sliced Wasserstein distance, the colour
gap closed by a re-staining, nucleus Dice, the model-level reports with the bundled ``he`` weights, and the stain
plausibility measures (CIELAB features, the leave-one-lab-out reference, pixel artefacts)."""

from __future__ import annotations

import json

import kornia
import numpy as np
import pytest
import torch

import contrimix_aug as ca
from contrimix_aug.data.readers import load_demo_tiles
from contrimix_aug.optical_density import T_MIN_UINT8, rgb_to_od
from contrimix_aug.quality import (
    ARTEFACT_THRESHOLDS,
    PlausibilityReference,
    SwapReport,
    colour_stats,
    gap_closed,
    load_plausibility_reference,
    nucleus_dice,
    od_luminance,
    plausible,
    psnr,
    reconstruction,
    render_artefacts,
    sliced_wasserstein,
    ssim,
    stain_features,
    stain_transfer,
    structure_ssim,
    swap_report,
)
from contrimix_aug.tissue import tissue_mask_tensor
from contrimix_aug.training.restain import restain


# ---------------------------------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------------------------------
def _ssim_oracle(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """SSIM (Wang et al. 2004) of two (C, H, W) float64 images, written out in numpy: Gaussian-weighted local
    moments over every window that lies fully inside the image, averaged over channels and windows."""
    r = np.arange(win) - (win - 1) / 2
    g1 = np.exp(-(r**2) / (2 * sigma**2))
    g = np.outer(g1, g1)
    g /= g.sum()

    def local_mean(a: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(a, (win, win), axis=(-2, -1))  # (C, H', W', win, win)
        return (windows * g).sum(axis=(-2, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def _w1_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """1-D Wasserstein-1 distance of two equal-size samples: the mean gap between their sorted values."""
    return float(np.abs(np.sort(a) - np.sort(b)).mean())


@pytest.fixture(scope="module")
def demo() -> torch.Tensor:
    """The 16 bundled real H&E tiles, (16, 3, 96, 96) float32 in [0, 1]."""
    tiles, _ = load_demo_tiles()
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def restained(demo: torch.Tensor) -> torch.Tensor:
    """The same tissue in other stains (training.restain, seeded)."""
    return restain(demo, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def small(demo: torch.Tensor, restained: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8 of the tiles (both sources), 64 px crops, and their re-stainings: the sliced Wasserstein distances sort
    every pixel's projections, so the gap tests use fewer pixels."""
    return demo[::2, :, 16:80, 16:80].contiguous(), restained[::2, :, 16:80, 16:80].contiguous()


@pytest.fixture
def pair(real_tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = real_tiles[:4, :, :40, :37].contiguous()  # non-square on purpose
    g = torch.Generator().manual_seed(1)
    y = (x * 0.9 + 0.05 + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


# ---------------------------------------------------------------------------------------------------------------
# PSNR and SSIM
# ---------------------------------------------------------------------------------------------------------------
def test_ssim_matches_numpy_oracle(pair):
    x, y = pair
    got = ssim(x, y)
    expected = [_ssim_oracle(x[i].double().numpy(), y[i].double().numpy()) for i in range(len(x))]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert (got < 1).all() and (got > 0.3).all()


def test_ssim_matches_kornia_on_the_valid_interior(pair, restained, demo):
    """A second, independent implementation: kornia's SSIM map with padding='valid' (windows fully inside)."""
    for x, y in (pair, (demo, restained)):
        want = kornia.metrics.ssim(x, y, 11, max_val=1.0, padding="valid").mean((1, 2, 3))
        torch.testing.assert_close(ssim(x, y), want, rtol=1e-4, atol=1e-5)


def test_ssim_data_range(pair):
    x, y = pair
    np.testing.assert_allclose(ssim(x * 255, y * 255, data_range=255.0).numpy(), ssim(x, y).numpy(), rtol=1e-4)
    expected = _ssim_oracle(x[0].double().numpy() * 4, y[0].double().numpy() * 4, data_range=4.0)
    assert float(ssim(x[:1] * 4, y[:1] * 4, data_range=4.0)) == pytest.approx(expected, rel=1e-4)


def test_ssim_identity_and_symmetry(pair):
    x, y = pair
    torch.testing.assert_close(ssim(x, x), torch.ones(len(x)))
    torch.testing.assert_close(ssim(x, y), ssim(y, x))


def test_psnr_matches_numpy(pair):
    x, y = pair
    mse = ((x.double().numpy() - y.double().numpy()) ** 2).reshape(len(x), -1).mean(1)
    np.testing.assert_allclose(psnr(x, y).numpy(), 10 * np.log10(1 / mse), rtol=1e-5)
    np.testing.assert_allclose(psnr(x * 255, y * 255, data_range=255.0).numpy(), 10 * np.log10(1 / mse), rtol=1e-4)
    assert float(psnr(x, x).min()) == pytest.approx(100.0)  # MSE floored at 1e-10


def test_exception(pair):
    x, _ = pair
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:2])
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, x[:2])


def test_metrics_left_training():
    import contrimix_aug.training as T

    assert not hasattr(T, "psnr") and not hasattr(T, "ssim")


# ---------------------------------------------------------------------------------------------------------------
# luminance, structure, colour statistics (by their definitions)
# ---------------------------------------------------------------------------------------------------------------
def test_od_luminance_definition(demo):
    x = demo[:4]
    lum = od_luminance(x)
    assert lum.shape == (4, 1, 96, 96) and float(lum.min()) >= 0 and float(lum.max()) <= 1
    od = -np.log10(np.maximum(x.double().numpy(), 1 / 255)).mean(1)  # mean OD over the channels, 8-bit floor
    for i in range(4):
        lo, hi = np.quantile(od[i], [0.01, 0.99])
        want = np.clip((od[i] - lo) / max(hi - lo, 1e-3), 0, 1)
        np.testing.assert_allclose(lum[i, 0].numpy(), want, atol=1e-5)
    # linear mode (fluorescence): the intensity, rescaled the same way
    fluo, _ = load_demo_tiles(modality="fluorescence")
    f = torch.from_numpy(fluo[:2]).permute(0, 3, 1, 2).float() / 255
    lin = od_luminance(f, mode="linear")
    lo, hi = np.quantile(f[0, 0].numpy(), [0.01, 0.99])
    np.testing.assert_allclose(lin[0, 0].numpy(), np.clip((f[0, 0].numpy() - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_structure_ssim_definition_and_stain_invariance(demo, restained):
    s = structure_ssim(demo, restained)
    torch.testing.assert_close(s, ssim(od_luminance(demo), od_luminance(restained)))
    torch.testing.assert_close(structure_ssim(demo, demo), torch.ones(len(demo)))
    # the same tissue in another stain keeps its structure far better than another tissue in the same stain
    other = structure_ssim(demo, demo.roll(1, 0))
    assert float(s.mean()) > 0.6 and float(other.mean()) < 0.3 and bool((s > other).float().mean() > 0.9)


def test_colour_stats_definition(demo):
    x = demo[:3]
    cs = colour_stats(x)
    assert cs.shape == (3, 6)
    od = rgb_to_od(x.double(), T_MIN_UINT8).flatten(2).numpy()
    np.testing.assert_allclose(cs[:, :3].numpy(), od.mean(2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cs[:, 3:].numpy(), od.std(2, ddof=1), rtol=1e-4, atol=1e-6)
    lin = colour_stats(x, mode="linear")
    np.testing.assert_allclose(lin[:, :3].numpy(), x.flatten(2).mean(2).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# sliced Wasserstein and the colour gap closed
# ---------------------------------------------------------------------------------------------------------------
def _od_pixels(img: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """(3, H, W) image -> (N, 3) optical densities of its pixels (every k-th pixel when n is given)."""
    p = rgb_to_od(img.double(), T_MIN_UINT8).flatten(1).T
    return p if n is None else p[:: p.shape[0] // n][:n]


def test_sliced_wasserstein_identity_and_symmetry(demo):
    a, b = _od_pixels(demo[0], 2000), _od_pixels(demo[9], 1500)  # two sources, different sizes
    assert float(sliced_wasserstein(a, a)) == 0.0
    assert float(sliced_wasserstein(a, a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))])) == 0.0
    d = sliced_wasserstein(a, b)
    assert d.dtype == torch.float64 and d.ndim == 0 and float(d) > 0.01
    torch.testing.assert_close(sliced_wasserstein(b, a), d, rtol=1e-12, atol=1e-12)


def test_sliced_wasserstein_is_w1_in_one_dimension(demo):
    """1-D data: every direction is ±1, and 256 quantile levels of 256 points are the sorted points, so the distance
    is exactly the 1-D W1 distance computed by sorting."""
    a = _od_pixels(demo[0], 256)[:, 1:2]  # green optical density of a cmu1 tile
    b = _od_pixels(demo[12], 256)[:, 1:2]  # ... and of a skin tile
    want = _w1_sorted(a.numpy()[:, 0], b.numpy()[:, 0])
    assert want > 0.01
    assert float(sliced_wasserstein(a, b)) == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert float(sliced_wasserstein(a, a + 0.3)) == pytest.approx(0.3, rel=1e-9)  # a shift moves it by the shift
    # unequal sizes: still the W1 distance up to the 256-level quantile approximation
    c = _od_pixels(demo[12], 4096)[:, 1:2]
    exact = float(np.mean(np.abs(np.quantile(a.numpy()[:, 0], np.linspace(0, 1, 4096)) - np.sort(c.numpy()[:, 0]))))
    assert float(sliced_wasserstein(a, c)) == pytest.approx(exact, rel=0.05)


def test_sliced_wasserstein_of_a_shift(demo):
    a = _od_pixels(demo[3], 1000)
    shift = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)  # the function's own fixed directions (seed 0, 64 directions)
    d = torch.randn(3, 64, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    want = float((shift @ d).abs().mean())
    assert float(sliced_wasserstein(a, a + shift)) == pytest.approx(want, rel=1e-9)
    assert float(sliced_wasserstein(a, a + shift, seed=1)) != pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="point sets"):
        sliced_wasserstein(a, a[:, :2])
    with pytest.raises(ValueError, match="point sets"):
        sliced_wasserstein(a[:0], a)


def test_gap_closed_endpoints_on_restained_tiles(small):
    """Output = reference: the whole gap closed (1); output = source: nothing closed (0)."""
    src, ref = small
    n = src.shape[0]
    torch.testing.assert_close(gap_closed(src, ref, ref), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(gap_closed(src, ref, src), torch.zeros(n, dtype=torch.float64))
    # halfway in optical density: part of the gap, neither end
    od_s, od_r = rgb_to_od(src, T_MIN_UINT8), rgb_to_od(ref, T_MIN_UINT8)
    half = torch.exp(-0.5 * (od_s + od_r) * np.log(10))
    mid = gap_closed(src, ref, half.float())
    assert bool(((mid > 0.2) & (mid < 0.8)).all()), mid
    # further away than the source: negative
    worse = torch.exp(-(2 * od_s - od_r).clamp_min(0) * np.log(10))
    assert float(gap_closed(src, ref, worse.float()).mean()) < 0


def test_gap_closed_mask(small):
    src, ref = small
    out = src.flip(0)
    mask = tissue_mask_tensor(src)
    default = gap_closed(src, ref, out)
    torch.testing.assert_close(default, gap_closed(src, ref, out, mask))  # the default: the source's tissue
    everything = torch.ones_like(mask)
    assert not torch.allclose(gap_closed(src, ref, out, everything), default)
    with pytest.raises(ValueError, match="three"):
        gap_closed(src, ref[:2], src)


# ---------------------------------------------------------------------------------------------------------------
# nucleus Dice
# ---------------------------------------------------------------------------------------------------------------
def test_nucleus_dice(demo, restained):
    torch.testing.assert_close(nucleus_dice(demo, demo), torch.ones(16))
    d = nucleus_dice(demo, restained)
    torch.testing.assert_close(d, nucleus_dice(restained, demo))  # symmetric
    other = nucleus_dice(demo, demo.roll(1, 0))
    assert d.shape == (16,) and float(d.min()) >= 0 and float(d.max()) <= 1
    # the same nuclei in another stain overlap far better than the nuclei of another tile
    assert float(d.median()) > 0.85 and float(other.median()) < 0.4
    shifted = nucleus_dice(demo, demo.roll(7, -1))  # the same tile moved by 7 px: the nuclei no longer overlap
    assert float(shifted.mean()) < 0.8


# ---------------------------------------------------------------------------------------------------------------
# model-level reports with the bundled weights
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def he() -> ca.ContriMixModel:
    return ca.load_model("he")


def test_stain_transfer_with_the_bundled_he_model(he, small):
    demo, restained = small
    out = stain_transfer(he, demo, restained, batch_size=3)  # several batches
    assert set(out) == {"gap_closed", "content_agreement"}
    g, c = out["gap_closed"], out["content_agreement"]
    assert g.shape == c.shape == (8,) and g.dtype == torch.float64
    assert bool(torch.isfinite(g).all()) and float(g.max()) <= 1.0
    assert float(c.min()) >= -1 - 1e-6 and float(c.max()) <= 1 + 1e-6
    # the trained model moves the colour towards the same tissue's other stain, and its content ignores the stain
    assert float(g.mean()) > 0.2 and float(c.mean()) > 0.8
    # by definition: the gap closed by decode(content(source), attributes(reference))
    with torch.no_grad():
        swapped = he.decode(he.encode(demo)[0], he.encode_attributes(restained))
    torch.testing.assert_close(g, gap_closed(demo, restained, swapped), rtol=1e-4, atol=1e-4)
    # a reference equal to the source: the content agrees exactly
    same = stain_transfer(he, demo[:4], demo[:4])
    torch.testing.assert_close(same["content_agreement"], torch.ones(4), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="same tissue"):
        stain_transfer(he, demo, restained[:, :, :48])


def test_reconstruction(he, demo):
    rec = reconstruction(he, demo, batch_size=6)
    with torch.no_grad():
        out = he(demo)
    torch.testing.assert_close(rec["psnr"], psnr(out, demo), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(rec["ssim"], ssim(out, demo), rtol=1e-5, atol=1e-5)
    assert float(rec["psnr"].mean()) > 25 and float(rec["ssim"].mean()) > 0.8


def test_swap_report(he, demo):
    donors = demo.roll(8, 0)  # every cmu1 tile gets a skin donor and the other way round
    rep = swap_report(he, demo, donors, batch_size=7)
    assert isinstance(rep, SwapReport) and rep.structure.shape == rep.closer_to_donor.shape == (16,)
    assert rep.closer_to_donor.dtype == torch.bool
    torch.testing.assert_close(rep.closer_to_donor, rep.donor_distance < rep.source_distance)
    s = rep.summary()
    assert set(s) == {"structure_ssim_mean", "structure_ssim_min", "closer_to_donor", "n"} and s["n"] == 16
    assert s["closer_to_donor"] > 0.9 and s["structure_ssim_mean"] > 0.9
    self_swap = swap_report(he, demo, demo)
    assert float(self_swap.source_distance.max()) < float(rep.source_distance.min())
    with pytest.raises(ValueError, match="as many donors as sources"):
        swap_report(he, demo, demo[:3])


# ---------------------------------------------------------------------------------------------------------------
# stain plausibility: features, the leave-one-lab-out reference, pixel artefacts
# ---------------------------------------------------------------------------------------------------------------
def _u8_batch(arr: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    arr = arr if arr.ndim == 4 else arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255


def _crops_at_half_micron(images, mpp: float, per_image: int) -> np.ndarray:
    from contrimix_aug.data.patches import sample_patches_from_images

    out = []
    for i, im in enumerate(images):
        try:
            out.append(sample_patches_from_images({f"i{i}": (im, mpp)}, 96, per_image, target_mpp=0.5, seed=3).images)
        except ValueError:  # no position with enough tissue in this tile
            continue
    return np.concatenate(out)


def test_stain_features_definition(demo, cmu1_edge):
    x = torch.cat([demo[:3], _u8_batch(cmu1_edge)[:, :, :96, :96]])  # the last crop is mostly glass and ink
    f = stain_features(x)
    assert f.shape == (4, 6) and f.dtype == torch.float32
    lab = kornia.color.rgb_to_lab(x).double().numpy()
    tissue = tissue_mask_tensor(x).numpy()
    for i in range(4):
        v = lab[i][:, tissue[i]]  # (3, n) tissue pixels only
        assert 0 < v.shape[1] < 96 * 96 or i < 3
        np.testing.assert_allclose(f[i, :3].numpy(), v.mean(1), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(f[i, 3:].numpy(), v.std(1), rtol=1e-3, atol=1e-3)
    # an explicit mask replaces the tissue mask; no tissue at all: every pixel counts
    full = torch.ones(4, 96, 96, dtype=torch.bool)
    np.testing.assert_allclose(stain_features(x, full)[:, :3].numpy(), lab.mean((2, 3)), rtol=1e-4, atol=1e-3)
    white = torch.ones(1, 3, 16, 16)
    torch.testing.assert_close(stain_features(white), torch.tensor([[100.0, 0, 0, 0, 0, 0]]), atol=1e-2, rtol=0)
    # other channel counts: mean/std of log intensity
    fl = torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    lg = torch.log(fl + 1e-3).flatten(2)
    torch.testing.assert_close(stain_features(fl), torch.cat([lg.mean(2), lg.std(2, unbiased=False)], 1))


def test_stain_features_is_the_benchmarks_colour_feature(demo):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from dg.diagnostics import colour_features

    np.testing.assert_array_equal(colour_features(demo[:4]), stain_features(demo[:4]).numpy())


def test_stain_features_errors(demo):
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        stain_features(demo[0])
    with pytest.raises(ValueError, match="float"):
        stain_features((demo[:2] * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        stain_features(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="mask"):
        stain_features(demo[:2], torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch tensor"):
        stain_features(np.zeros((1, 3, 8, 8), np.float32))


def test_reference_threshold_is_the_leave_one_lab_out_quantile(demo):
    """By construction: the threshold is the 95th percentile of each crop's distance to its nearest crop of another
    lab, so 95 % of the crops pass when their own lab is left out."""
    labs = [f"lab{i % 4}" for i in range(16)]  # four "labs" of 4 real tiles each
    ref = PlausibilityReference.from_crops(demo, labs)
    f = stain_features(demo).double()
    z = f / f.std(0)
    d = torch.cdist(z, z)
    lab_ids = torch.tensor([i % 4 for i in range(16)])
    d[lab_ids[:, None] == lab_ids[None, :]] = float("inf")
    loo = d.min(1).values
    torch.testing.assert_close(ref.loo_distances(), loo)
    assert ref.threshold == pytest.approx(float(torch.quantile(loo, 0.95)))
    passed = torch.stack([ref.distance(f[i:i + 1], [labs[i]])[0] for i in range(16)]) <= ref.threshold
    # 95th percentile of 16 distances (interpolated between the 15th and 16th): all but the farthest crop pass
    assert int(passed.sum()) == 15 and not bool(passed[loo.argmax()])
    # a crop of a lab in the reference is at distance 0 from itself
    assert bool((ref.distance(f) < 1e-6).all()) and bool(plausible(demo, ref).all())
    # round trip through JSON
    back = PlausibilityReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back.labs == ref.labs and back.threshold == ref.threshold
    torch.testing.assert_close(back.features, ref.features, atol=1e-4, rtol=0)


def test_reference_errors(demo):
    with pytest.raises(ValueError, match="at least two labs"):
        PlausibilityReference.from_crops(demo[:4], ["a"] * 4)
    with pytest.raises(ValueError, match="4 crops but 3 lab names"):
        PlausibilityReference.from_crops(demo[:4], ["a", "b", "a"])
    with pytest.raises(ValueError, match="quantile"):
        PlausibilityReference.from_crops(demo[:4], ["a", "b"] * 2, quantile=1.0)
    ref = PlausibilityReference.from_crops(demo[:4], ["a", "b"] * 2)
    with pytest.raises(ValueError, match=r"\(B, 6\) features"):
        ref.distance(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        plausible(demo[:, :2], ref)
    with pytest.raises(ValueError, match="unknown format"):
        PlausibilityReference.from_dict({"format": "other"})


def test_shipped_reference_has_no_held_out_lab():
    from contrimix_aug.data.registry import get_collection

    ref = load_plausibility_reference()
    test_sites = {f.meta["site"] for f in get_collection("monuseg").files if f.meta.get("split") == "test"}
    assert len(test_sites) == 14
    forbidden = {f"monuseg:{s}" for s in test_sites} | {"camelyon17:1", "camelyon17:2", "camelyon16:RUMC",
                                                         "camelyon16:UMCU"}
    labs = set(ref.labs)
    assert not labs & forbidden and not any(lab.startswith("camelyon16") for lab in labs)
    assert {"camelyon17:0", "camelyon17:3", "camelyon17:4", "source:cmu1", "source:hgsc"} <= labs
    assert sum(lab.startswith("monuseg:") for lab in labs) == 18 and len(labs) == 26
    counts = {lab: ref.labs.count(lab) for lab in labs}
    assert len(set(counts.values())) == 1  # a fixed number of crops per lab
    assert ref.features.shape == (len(ref.labs), 6) and ref.quantile == 0.95
    # the stored threshold is the leave-one-lab-out 95th percentile of the stored features
    assert float(torch.quantile(ref.loo_distances(), 0.95)) == pytest.approx(ref.threshold, rel=1e-3)
    assert 0.5 < ref.threshold < 5
    # a lab left out by name: one name is a name (not its letters), an unknown name is an error
    own = ref.features[[i for i, lab in enumerate(ref.labs) if lab == "monuseg:18"][:4]]
    assert (ref.distance(own) < 1e-6).all() and (ref.distance(own, exclude_labs="monuseg:18") > 0.1).all()
    assert torch.equal(ref.distance(own, "monuseg:18"), ref.distance(own, ["monuseg:18"]))
    with pytest.raises(ValueError, match="does not hold.*monuseg:EJ"):
        ref.distance(own, ["monuseg:EJ"])


def test_real_crops_of_unseen_labs_pass(data_root):
    """Real crops of labs the shipped reference never saw (MoNuSeg test sites, CAMELYON16, CAMELYON17 hospitals 1
    and 2) pass about as often as the calibration promises (95 %)."""
    from contrimix_aug.data import load_camelyon16_patches, load_camelyon17_tiles, load_monuseg

    ref = load_plausibility_reference()
    mo = load_monuseg("test", progress=False)
    c16 = load_camelyon16_patches(progress=False)
    c17 = load_camelyon17_tiles((1, 2), progress=False)
    crops = np.concatenate([_crops_at_half_micron(mo.images, mo.um_per_px, 2),
                            _crops_at_half_micron(c16.images[::2], c16.um_per_px, 1),
                            _crops_at_half_micron(c17.images, c17.um_per_px, 2)])
    ok = plausible(_u8_batch(crops), ref)
    assert len(ok) > 60 and 0.9 <= float(ok.float().mean()) <= 1.0


def test_obviously_implausible_renders_are_flagged(demo):
    ref = load_plausibility_reference()
    assert float(plausible(demo, ref).float().mean()) >= 0.9
    green = demo[:, [1, 0, 2]]  # red and green swapped: green tissue
    inverted = 1 - demo
    grey = demo.mean(1, keepdim=True).expand_as(demo)  # no stain colour at all
    dark = demo * 0.5  # near-black tiles
    for bad in (green, inverted, grey, dark):
        assert not bool(plausible(bad, ref).any())
    # red and blue swapped: H&E absorbs red and blue alike, so the tissue stays purple, and plausible
    assert float(plausible(demo[:, [2, 1, 0]], ref).float().mean()) >= 0.9
    # a mild brightness change of real tissue stays plausible more often than not
    assert float(plausible((demo * 1.05).clamp(0, 1), ref).float().mean()) >= 0.75


def test_render_artefacts_on_constructed_cases(cmu1_edge):
    x = _u8_batch(cmu1_edge)
    glass = ~tissue_mask_tensor(x)[0]
    assert 0.1 < float(glass.float().mean()) < 0.9
    none = render_artefacts(x, x)
    assert set(none) == {"background_coloured", "near_black", "clipped"}
    assert all(float(v) == 0.0 for v in none.values())
    # the glass comes out cyan (red absorbed): every glass pixel is a coloured background pixel
    cyan = x.clone()
    cyan[0, 0][glass] *= 0.6
    got = render_artefacts(x, cyan)
    assert float(got["background_coloured"][0]) == pytest.approx(float(glass.float().mean()), abs=1e-3)
    assert float(got["near_black"][0]) == 0 and float(got["clipped"][0]) == 0
    # a faint tint that stays within what glass can be is not an artefact
    faint = x.clone()
    faint[0, 0][glass] *= 0.97
    assert float(render_artefacts(x, faint)["background_coloured"][0]) < 0.01
    # a black square of 32 x 32 px on tissue, and a saturated magenta one (green channel at 0)
    black, magenta = x.clone(), x.clone()
    black[..., 100:132, 100:132] = 0.02
    magenta[:, 1, 100:132, 100:132] = 0.0
    n = 32 * 32 / (x.shape[-1] * x.shape[-2])
    assert float(render_artefacts(x, black)["near_black"][0]) == pytest.approx(n, rel=0.05)
    assert float(render_artefacts(black, black)["near_black"][0]) == 0  # black already in the input: not new
    assert float(render_artefacts(x, magenta)["clipped"][0]) == pytest.approx(n, rel=0.05)
    # thresholds can be overridden; errors
    assert float(render_artefacts(x, cyan, {"background_chroma": 200.0})["background_coloured"][0]) == 0
    assert ARTEFACT_THRESHOLDS["background_chroma"] > 15.7  # the largest chroma a glass pixel can have
    with pytest.raises(ValueError, match="one shape"):
        render_artefacts(x, x[..., :64])
    with pytest.raises(ValueError, match="unknown thresholds"):
        render_artefacts(x, x, {"chroma": 1.0})


def test_limit_render_keeps_glass_glass_and_caps_optical_density(cmu1_edge):
    from contrimix_aug.optical_density import RENDER_BACKGROUND_OD, RENDER_OD_MAX, limit_render, od_to_rgb

    x = _u8_batch(cmu1_edge)
    src = rgb_to_od(x)
    # a re-rendering that adds a donor's OD offset everywhere (the glass turns pink) and overshoots in the dark
    offset = torch.tensor([0.10, 0.30, 0.15]).view(1, 3, 1, 1)
    render = src * 1.8 + offset
    raw = od_to_rgb(render)
    lim = od_to_rgb(limit_render(render, src))
    raw_art, lim_art = render_artefacts(x, raw), render_artefacts(x, lim)
    assert float(raw_art["background_coloured"][0]) > 0.1 and float(lim_art["background_coloured"][0]) < 0.01
    out = limit_render(render, src, background=None)
    assert float(out.amax(1).max()) <= RENDER_OD_MAX + 1e-5
    # the cap keeps each pixel's hue (the ratio of its channels) and leaves pixels below it untouched
    ratio = (out / render.clamp_min(1e-9))[:, :, render.amax(1)[0] > RENDER_OD_MAX]
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    below = render.amax(1, keepdim=True).expand_as(render) <= RENDER_OD_MAX
    assert torch.equal(out[below], render[below])
    # tissue (summed source OD above the background band) is fully re-rendered
    tissue = (src.sum(1, keepdim=True) > RENDER_BACKGROUND_OD[1]).expand_as(src)
    torch.testing.assert_close(limit_render(render, src, od_max=None)[tissue], render[tissue])
    with pytest.raises(ValueError, match="background"):
        limit_render(render, src, background=(0.5, 0.1))
    with pytest.raises(ValueError, match="shape"):
        limit_render(render, src[..., :8])


@pytest.fixture(scope="module")
def real_collection_crops(data_root) -> dict[str, torch.Tensor]:
    """96 px crops at 0.5 µm/px of three labelled real collections: CAMELYON16 RUMC (every 4th patch), CAMELYON17
    hospitals 0, 3, 4 (every tile) and MoNuSeg training tiles (every 2nd), one crop each."""
    from contrimix_aug.data import load_camelyon16_patches, load_camelyon17_tiles, load_monuseg

    c16 = load_camelyon16_patches(("RUMC",), progress=False)
    c17 = load_camelyon17_tiles((0, 3, 4), progress=False)
    mo = load_monuseg("train", progress=False)
    return {"camelyon16_rumc": _u8_batch(_crops_at_half_micron(c16.images[::4], c16.um_per_px, 1)),
            "camelyon17_h034": _u8_batch(_crops_at_half_micron(c17.images, c17.um_per_px, 1)),
            "monuseg_train": _u8_batch(_crops_at_half_micron(mo.images[::2], mo.um_per_px, 1))}


@pytest.mark.parametrize("weights", ["camelyon", "he"])
def test_render_guard_on_real_collections(real_collection_crops, weights):
    """ContriMix's default render guard on real crops of 3 collections, batch and bank donors, the same draws with
    and without it: the glass the unguarded render colours (a few % of all pixels) stays glass, no pixel is darker
    than real tissue, and tissue still changes stain about as much."""
    from contrimix_aug.optical_density import RENDER_BACKGROUND_OD, RENDER_OD_MAX

    def shift_on_tissue(x, y):
        d = (kornia.color.rgb_to_lab(y) - kornia.color.rgb_to_lab(x)).norm(dim=1)
        return float(d[tissue_mask_tensor(x)].mean())

    pooled_raw, pooled = [], []
    for name, x in real_collection_crops.items():
        assert x.shape[0] >= 10, name
        white = (rgb_to_od(x).sum(1, keepdim=True) < RENDER_BACKGROUND_OD[0]).expand_as(x)
        for donors in ("batch", "bank"):
            raw = ca.ContriMix(weights=weights, p=1.0, donors=donors, seed=1, render_guard=False)(x)
            out = ca.ContriMix(weights=weights, p=1.0, donors=donors, seed=1)(x)
            bg_raw = render_artefacts(x, raw)["background_coloured"]
            bg = render_artefacts(x, out)["background_coloured"]
            pooled_raw.append(bg_raw)
            pooled.append(bg)
            assert float(bg.mean()) < 0.01, (name, donors)
            if bool(white.any()):
                assert float((out - x).abs()[white].max()) < 1e-4, (name, donors)
            assert float(rgb_to_od(out).amax()) <= RENDER_OD_MAX + 1e-4, (name, donors)
            s, s_raw = shift_on_tissue(x, out), shift_on_tissue(x, raw)
            # pale tissue (summed OD under RENDER_BACKGROUND_OD[1] = 0.45) is re-rendered in part: on CAMELYON16
            # RUMC's pale pink the guarded shift is about 0.75 of the unguarded one
            assert s > 5 and s > 0.7 * s_raw, (name, donors, s, s_raw)
    bg_raw, bg = float(torch.cat(pooled_raw).mean()), float(torch.cat(pooled).mean())
    assert bg_raw > 0.01 and bg < bg_raw / 10, (bg_raw, bg)
