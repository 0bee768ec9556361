"""ContriMix (kornia intensity augmentation) and ContriMixNormalize, on real H&E tiles.

Two models are used:

- ``tiny``: a small random-init network (fast; checks plumbing: shapes, dtypes, RNG, replay, errors);
- ``handset``: weights set by hand so that re-rendering provably transfers colour. The content encoder is
  ``±IN(OD)`` per channel plus a constant channel, the attribute encoder returns per-image mean optical
  density ``μ`` (constant column) and ``±κ·μ`` (contrast columns). Re-rendered with donor attributes, an image
  keeps its own standardised OD pattern (its structure) and gets the donor's mean OD exactly; mixing with
  strength α gives mean OD ``(1 - α)·μ_own + α·μ_donor``.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle

import kornia
import kornia.augmentation as K
import pytest
import torch
from torch.utils.data import DataLoader

import contrimix_aug as ca
from contrimix_aug import ContriMix, ContriMixNormalize
from contrimix_aug.bank import compute_bank
from contrimix_aug.functional import apply_contrimix
from contrimix_aug.mixing import MixParams
from contrimix_aug.optical_density import rgb_to_od
from helpers import AugmentedTiles, count_calls as _count_calls, make_tiny_model

H, W = 40, 48  # odd-ish, non-square crops of the real tiles so H/W mix-ups fail


# --------------------------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------------------------
def mean_od(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) image -> (B, C) mean optical density."""
    return rgb_to_od(x.float()).mean((-2, -1))


def od_luminance_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of the standardised OD luminance (structure, insensitive to the stain colour)."""

    def lum(img: torch.Tensor) -> torch.Tensor:
        lum_ = rgb_to_od(img.float()).mean(-3, keepdim=True)
        return (lum_ - lum_.mean((-2, -1), keepdim=True)) / lum_.std((-2, -1), keepdim=True)

    la, lb = lum(a), lum(b)
    rng = float(torch.cat([la, lb]).amax() - torch.cat([la, lb]).amin())
    return kornia.metrics.ssim(la, lb, 7, max_val=rng).mean((1, 2, 3))


def _fixed_params(b: int, device: str = "cpu") -> MixParams:
    """Every image re-rendered with the previous image's attributes at α = 0.7."""
    return MixParams(torch.ones(b, dtype=torch.bool, device=device), torch.roll(torch.arange(b, device=device), 1),
                     torch.zeros(b, dtype=torch.bool, device=device), torch.full((b,), 0.7, device=device))


@pytest.fixture(scope="module")
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    """Real H&E tiles, (N, 3, 40, 48) float32 in [0, 1] (cropped from the shared fixture)."""
    assert real_tiles.shape[0] >= 4, "need at least 4 real tiles"
    t = real_tiles[..., :H, :W].contiguous()
    assert t.shape[-2:] == (H, W), f"real tiles too small: {tuple(real_tiles.shape)}"
    return t


@pytest.fixture(scope="module")
def far_pair(tiles: torch.Tensor) -> torch.Tensor:
    """The two real tiles whose mean optical densities (stain colours) differ most: (2, 3, H, W)."""
    mu = mean_od(tiles)
    d = torch.cdist(mu, mu)
    i, j = divmod(int(d.argmax()), tiles.shape[0])
    return tiles[[i, j]].clone()


@pytest.fixture(scope="module")
def bank_images(tiles: torch.Tensor) -> torch.Tensor:
    """Reference images for the attribute bank (the last tiles)."""
    return tiles[-3:].clone()


# --------------------------------------------------------------------------------------------------------------
# the hand-set model itself (so the colour-transfer checks below rest on something verified)
# --------------------------------------------------------------------------------------------------------------
class TestHandsetModel:
    def test_attributes_are_mean_od(self, handset, tiles):
        attrs = handset.encode_attributes(tiles)
        torch.testing.assert_close(attrs[:, :, -1], mean_od(tiles), atol=2e-3, rtol=1e-2)

    def test_self_reconstruction_keeps_structure_and_colour(self, handset, tiles):
        rec = handset(tiles)
        torch.testing.assert_close(mean_od(rec), mean_od(tiles), atol=3e-3, rtol=1e-2)
        assert bool((od_luminance_ssim(tiles, rec) > 0.95).all())


# --------------------------------------------------------------------------------------------------------------
# shape / dtype / device / memory format
# --------------------------------------------------------------------------------------------------------------
class TestSmoke:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
    def test_shape_dtype_device(self, tiny, tiles, dtype):
        x = tiles[:4].to(dtype)
        x0 = x.clone()
        version = x._version
        out = ContriMix(weights=tiny, p=1.0, seed=0)(x)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(x, x0) and x._version == version, "input modified in place"
        ref = ContriMix(weights=tiny, p=1.0, seed=0)(tiles[:4])
        # low-precision inputs are quantised before the log: compare the mean error
        tol = {torch.float32: 1e-7, torch.float64: 1e-7, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
        assert float((out.float() - ref).abs().mean()) <= tol

    def test_channels_last_preserved(self, tiny, tiles):
        x = tiles[:4].contiguous(memory_format=torch.channels_last)
        for p in (1.0, 0.5):
            aug = ContriMix(weights=tiny, p=p, seed=3)
            out = aug(x)
            assert out.is_contiguous(memory_format=torch.channels_last)
            # same values as the contiguous input (conv kernels differ per layout: not bitwise)
            torch.testing.assert_close(out, aug(tiles[:4], params=aug.params), atol=1e-5, rtol=1e-5)

    def test_chw_keepdim(self, tiny, tiles, bank_images):
        aug = ContriMix(weights=tiny, p=1.0, bank=bank_images, seed=0)
        assert aug(tiles[0]).shape == (3, H, W)
        aug = ContriMix(weights=tiny, p=1.0, bank=bank_images, seed=0, keepdim=False)
        assert aug(tiles[0]).shape == (1, 3, H, W)

    def test_repr_and_flags(self, tiny, bank_images, tmp_path):
        aug = ContriMix(weights=tiny, p=0.3, strength=(0.2, 0.7), seed=0)
        r = repr(aug)
        assert r.startswith("ContriMix(weights=<ContriMixModel>, p=0.3, donors='batch', strength=(0.2, 0.7), ")
        assert aug.flags == {"strength": (0.2, 0.7), "donors": "batch"}
        named = ContriMix(weights="Camelyon", p=0.5, donors="both", strength=0.8, same_on_batch=True)
        assert repr(named).startswith(
            "ContriMix(weights='Camelyon', p=0.5, donors='both', strength=0.8, same_on_batch=True, C=3, K=8, ")
        path = ca.save_weights(tiny, tmp_path / "tiny.safetensors")
        assert repr(ContriMix(weights=path)).startswith(f"ContriMix(weights={str(path)!r}, p=0.5, donors='batch'")
        assert repr(ContriMix()).startswith("ContriMix(weights='he', ")
        from_file = ContriMix(weights=ca.load_weights(path))
        assert repr(from_file).startswith("ContriMix(weights=<ContriMixWeights 'unnamed'>")

    def test_normalize_repr_names_weights_and_target(self, tiny, bank_images):
        attrs = compute_bank(tiny, bank_images).mean(0)
        norm = ContriMixNormalize(weights="camelyon")
        n = norm.model.bank.shape[0]
        assert n > 0 and repr(norm) == (
            f"ContriMixNormalize(weights='camelyon', target=<bank centre ({n})>, C=3, K=8, keepdim=True)")
        assert repr(ContriMixNormalize(weights=tiny, target=bank_images)).startswith(
            "ContriMixNormalize(weights=<ContriMixModel>, target=<reference images (3)>, C=3, K=3")
        assert "target=<reference images (1)>" in repr(ContriMixNormalize(weights=tiny, target=bank_images[0]))
        assert "target=<attributes (3, 3)>" in repr(ContriMixNormalize(weights=tiny, target=attrs))

    def test_eval_mode_still_augments_and_model_stays_frozen(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0).eval()
        assert not torch.equal(aug(tiles[:4]), tiles[:4])
        aug.train()
        assert not aug.model.training
        assert not any(p.requires_grad for p in aug.model.parameters())

    def test_caller_model_not_modified(self, tiles, bank_images):
        m = make_tiny_model(seed=5)
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)
        before = {k: v.clone() for k, v in m.state_dict().items()}
        aug = ContriMix(weights=m, p=1.0, bank=bank_images, seed=0)
        aug(tiles[:2])
        assert m.bank.shape[0] == 0, "the transform replaced the caller's bank"
        assert m.training and all(p.requires_grad for p in m.parameters()), "the caller's model was frozen"
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
        assert aug.model.bank.shape[0] == bank_images.shape[0]

    @pytest.mark.parametrize("weights_kind", ["weights_object", "file"])
    def test_weights_object_and_file(self, tiny, tiles, tmp_path, weights_kind):
        w = ca.ContriMixWeights.from_model(tiny)
        if weights_kind == "file":
            w = ca.save_weights(w, tmp_path / "tiny.safetensors")
        out = ContriMix(weights=w, p=1.0, seed=0)(tiles[:3])
        ref = ContriMix(weights=tiny, p=1.0, seed=0)(tiles[:3])
        assert torch.equal(out, ref)


# --------------------------------------------------------------------------------------------------------------
# probability
# --------------------------------------------------------------------------------------------------------------
class TestProbability:
    def test_p0_identity(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=0.0, seed=0)
        out = aug(tiles)
        assert torch.equal(out, tiles)
        assert not bool(aug.params["batch_prob"].any())

    def test_p1_changes_every_image(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        out = aug(tiles)
        assert bool(aug.params["batch_prob"].all())
        assert bool((out - tiles).flatten(1).abs().amax(1).gt(1e-3).all())

    def test_partial_p_changes_exactly_the_selected_images(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=0.5, seed=1)
        for _ in range(3):
            out = aug(tiles)
            sel = aug.params["batch_prob"] > 0.5
            changed = (out != tiles).flatten(1).any(1)
            assert torch.equal(changed, sel)

    def test_selection_rate(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=0.3, seed=0)
        picks = torch.cat([aug.forward_parameters((64, 3, H, W))["batch_prob"] for _ in range(20)])
        assert 0.25 < float(picks.mean()) < 0.35


# --------------------------------------------------------------------------------------------------------------
# donors and colour transfer (hand-set model on real tiles)
# --------------------------------------------------------------------------------------------------------------
class TestColourTransfer:
    def test_batch_of_two_swaps_attributes(self, handset, far_pair):
        aug = ContriMix(weights=handset, p=1.0, seed=0, render_guard=False)
        out = aug(far_pair)
        assert aug.params["donors"].tolist() == [1, 0]
        mu_in, mu_out = mean_od(far_pair), mean_od(out)
        # each image takes the other's colour: its mean OD is the donor's, far from its own
        torch.testing.assert_close(mu_out, mu_in.flip(0), atol=5e-3, rtol=2e-2)
        for i in range(2):
            assert (mu_out[i] - mu_in[1 - i]).norm() < 0.2 * (mu_out[i] - mu_in[i]).norm()
        # also in plain RGB: the output's mean colour is closer to the donor's than to its own
        rgb_in, rgb_out = far_pair.mean((-2, -1)), out.mean((-2, -1))
        for i in range(2):
            assert (rgb_out[i] - rgb_in[1 - i]).norm() < (rgb_out[i] - rgb_in[i]).norm()
        # and the content (structure) is kept: SSIM of standardised OD luminance stays high, unlike the donor's
        assert bool((od_luminance_ssim(far_pair, out) > 0.9).all())
        assert bool((od_luminance_ssim(far_pair, far_pair.flip(0)) < 0.5).all())

    def test_batch_donors_are_other_images(self, handset, tiles):
        aug = ContriMix(weights=handset, p=1.0, seed=0, render_guard=False)
        out = aug(tiles)
        donors = aug.params["donors"]
        assert bool((donors != torch.arange(tiles.shape[0])).all())
        torch.testing.assert_close(mean_od(out), mean_od(tiles)[donors], atol=5e-3, rtol=2e-2)
        assert bool((od_luminance_ssim(tiles, out) > 0.9).all())

    def test_donor_can_be_an_unselected_image(self, handset, tiles):
        """Donors are drawn from the whole batch, not only from the p-selected images."""
        aug = ContriMix(weights=handset, p=0.4, seed=0, render_guard=False)
        found = 0
        for _ in range(10):
            out = aug(tiles)
            sel = aug.params["batch_prob"] > 0.5
            donors = aug.params["donors"]
            for i in torch.nonzero(sel).flatten().tolist():
                d = int(donors[i])
                if not sel[d]:
                    found += 1
                    torch.testing.assert_close(mean_od(out[i : i + 1])[0], mean_od(tiles[d : d + 1])[0],
                                               atol=5e-3, rtol=2e-2)
                    assert torch.equal(out[d], tiles[d])  # the donor itself is not re-rendered
        assert found > 0

    @pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
    def test_strength_interpolates_colour(self, handset, far_pair, alpha):
        out = ContriMix(weights=handset, p=1.0, strength=alpha, seed=0, render_guard=False)(far_pair)
        mu = mean_od(far_pair)
        expected = (1 - alpha) * mu + alpha * mu.flip(0)
        torch.testing.assert_close(mean_od(out), expected, atol=5e-3, rtol=2e-2)

    def test_strength_zero_is_self_reconstruction(self, tiny, handset, tiles):
        for model in (tiny, handset):
            out = ContriMix(weights=model, p=1.0, strength=0.0, seed=0, render_guard=False)(tiles)
            assert torch.equal(out, model(tiles))

    def test_strength_range(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, strength=(0.2, 0.6), seed=0)
        out = aug(tiles)
        s = aug.params["strength"]
        assert bool(((s >= 0.2) & (s <= 0.6)).all()) and float(s.std()) > 0
        ref = apply_contrimix(aug.model, tiles, MixParams.from_dict(aug.params))
        assert torch.equal(out, ref)


class TestBankDonors:
    def test_batch_of_one_falls_back_to_bank(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, bank=bank_images, seed=0, render_guard=False, donors="batch")
        out = aug(tiles[:1])
        assert aug.params["from_bank"].tolist() == [True]
        d = int(aug.params["donors"][0])
        assert 0 <= d < bank_images.shape[0]
        torch.testing.assert_close(mean_od(out), mean_od(bank_images[d : d + 1]), atol=5e-3, rtol=2e-2)

    def test_single_chw_image_uses_bank(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, bank=bank_images, seed=0, render_guard=False, donors="batch")
        out = aug(tiles[0])
        assert out.shape == tiles[0].shape
        d = int(aug.params["donors"][0])
        torch.testing.assert_close(mean_od(out[None]), mean_od(bank_images[d : d + 1]), atol=5e-3, rtol=2e-2)

    def test_batch_of_one_without_bank_errors(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        with pytest.raises(ValueError, match="bank"):
            aug(tiles[:1])
        with pytest.raises(ValueError, match="bank"):
            aug(tiles[0])

    def test_donors_bank(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, donors="bank", bank=bank_images, seed=0, render_guard=False)
        out = aug(tiles)
        assert bool(aug.params["from_bank"].all())
        d = aug.params["donors"]
        assert bool(((d >= 0) & (d < bank_images.shape[0])).all())
        torch.testing.assert_close(mean_od(out), mean_od(bank_images)[d], atol=5e-3, rtol=2e-2)

    def test_donors_both(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, donors="both", bank=bank_images, seed=0, render_guard=False)
        n = tiles.shape[0]
        seen_bank = seen_batch = False
        for _ in range(5):
            out = aug(tiles)
            fb, d = aug.params["from_bank"], aug.params["donors"]
            seen_bank |= bool(fb.any())
            seen_batch |= bool((~fb).any())
            assert bool((d[fb] < bank_images.shape[0]).all())
            assert bool((d[~fb] != torch.arange(n)[~fb]).all()), "a batch donor was the image itself"
            want = torch.where(fb[:, None], mean_od(bank_images)[d.clamp(max=bank_images.shape[0] - 1)],
                               mean_od(tiles)[d.clamp(max=n - 1)])
            torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)
        assert seen_bank and seen_batch

    def test_bank_as_attributes_equals_bank_as_images(self, tiny, tiles, bank_images):
        attrs = compute_bank(tiny, bank_images)
        a = ContriMix(weights=tiny, p=1.0, donors="bank", bank=bank_images, seed=0)(tiles)
        b = ContriMix(weights=tiny, p=1.0, donors="bank", bank=attrs, seed=0)(tiles)
        assert torch.equal(a, b)

    def test_bank_from_weights(self, tiles, bank_images):
        base = make_tiny_model()
        model = ca.ContriMixModel(base.config, bank=compute_bank(base, bank_images))
        model.load_state_dict(base.state_dict())
        aug = ContriMix(weights=ca.ContriMixWeights.from_model(model), p=1.0, donors="bank", seed=0)
        assert aug.model.bank.shape[0] == bank_images.shape[0]
        aug(tiles[:2])
        assert bool(aug.params["from_bank"].all())


# --------------------------------------------------------------------------------------------------------------
# randomness: replay, seeds, the global RNG
# --------------------------------------------------------------------------------------------------------------
class TestRandomness:
    def test_replay_bitwise(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=0.5, strength=(0.3, 1.0), seed=0)
        out = aug(tiles)
        params = aug.params
        aug(tiles)  # another draw in between
        assert torch.equal(aug(tiles, params=params), out)

    def test_replay_with_params_passed_positionally(self, tiny, tiles):
        """kornia's forward(input, params) spelling keeps working next to torchvision-style samples."""
        aug = ContriMix(weights=tiny, p=0.5, strength=(0.3, 1.0), seed=0)
        out = aug(tiles)
        params = aug.params
        aug(tiles)
        assert torch.equal(aug(tiles, params), out)
        assert aug(tiles, None).shape == tiles.shape and aug.params["donors"].shape == (tiles.shape[0],)  # a new draw

    def test_replay_params_for_another_batch_size(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        aug(tiles[:4])
        with pytest.raises(ValueError, match="another batch size"):
            aug(tiles[:3], params=aug.params)

    def test_seed_reproducible(self, tiny, tiles):
        a = ContriMix(weights=tiny, p=0.5, strength=(0.0, 1.0), seed=123)
        b = ContriMix(weights=tiny, p=0.5, strength=(0.0, 1.0), seed=123)
        c = ContriMix(weights=tiny, p=0.5, strength=(0.0, 1.0), seed=124)
        outs_a = [a(tiles) for _ in range(3)]
        outs_b = [b(tiles) for _ in range(3)]
        assert all(torch.equal(x, y) for x, y in zip(outs_a, outs_b))
        assert not torch.equal(c(tiles), outs_a[0])
        assert not torch.equal(outs_a[0], outs_a[1])

    def test_generator_argument(self, tiny, tiles):
        a = ContriMix(weights=tiny, p=1.0, generator=torch.Generator().manual_seed(7))
        b = ContriMix(weights=tiny, p=1.0, seed=7)
        assert torch.equal(a(tiles), b(tiles))

    def test_global_rng_untouched(self, tiny, tiles, bank_images):
        state = torch.get_rng_state()
        for aug in (
            ContriMix(weights=tiny, p=0.5, strength=(0.1, 0.9), bank=bank_images, seed=0),
            ContriMix(weights=tiny, p=1.0, donors="both", bank=bank_images),
            ContriMixNormalize(weights=tiny, target=bank_images[0]),
        ):
            aug(tiles)
            aug(tiles[0])
        assert torch.equal(state, torch.get_rng_state())

    def test_global_rng_untouched_in_sequential(self, tiny, tiles):
        seq = K.AugmentationSequential(ContriMix(weights=tiny, p=0.5, seed=0), data_keys=["input"])
        state = torch.get_rng_state()
        seq(tiles)
        assert torch.equal(state, torch.get_rng_state())

    def test_global_seed_does_not_drive_draws(self, tiny):
        """Draws depend on the instance seed only: torch.manual_seed neither fixes nor changes them."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            a = ContriMix(weights=tiny, p=0.5, seed=1).forward_parameters((8, 3, H, W))
            torch.manual_seed(99)
            b = ContriMix(weights=tiny, p=0.5, seed=1).forward_parameters((8, 3, H, W))
            torch.manual_seed(0)
            c = ContriMix(weights=tiny, p=0.5, seed=2).forward_parameters((8, 3, H, W))
        assert all(torch.equal(a[k], b[k]) for k in ("batch_prob", "donors", "strength"))
        assert not (torch.equal(a["donors"], c["donors"]) and torch.equal(a["batch_prob"], c["batch_prob"]))


# --------------------------------------------------------------------------------------------------------------
# same_on_batch (kornia's flag): one draw for the whole batch
# --------------------------------------------------------------------------------------------------------------
class TestSameOnBatch:
    def test_one_bank_donor_and_strength_for_every_image(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, donors="bank", bank=bank_images, strength=(0.3, 1.0),
                        same_on_batch=True, seed=0, render_guard=False)
        seen = set()
        for _ in range(6):
            out = aug(tiles)
            d, a = aug.params["donors"], aug.params["strength"]
            assert d.shape == (tiles.shape[0],) and len(set(d.tolist())) == 1 and len(set(a.tolist())) == 1
            seen.add(int(d[0]))
            # every image: its own structure, moved by the same α towards the same donor's colour
            alpha = float(a[0])
            want = (1 - alpha) * mean_od(tiles) + alpha * mean_od(bank_images[d[:1]])
            torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)
            assert bool((od_luminance_ssim(tiles, out) > 0.9).all())
        assert len(seen) > 1  # a new draw per call

    def test_batch_donor_shared(self, handset, tiles):
        aug = ContriMix(weights=handset, p=1.0, same_on_batch=True, seed=3, render_guard=False)
        out = aug(tiles)
        d = aug.params["donors"]
        j = int(d[0])
        assert bool((d == j).all()) and not bool(aug.params["from_bank"].any())
        torch.testing.assert_close(mean_od(out), mean_od(tiles[j : j + 1]).expand(tiles.shape[0], -1),
                                   atol=5e-3, rtol=2e-2)
        torch.testing.assert_close(out[j], handset(tiles[j : j + 1])[0], atol=1e-5, rtol=1e-5)  # reconstructed

    def test_all_or_none_selected(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=0.5, same_on_batch=True, seed=0)
        kinds = set()
        for _ in range(12):
            out = aug(tiles)
            sel = aug.params["batch_prob"] > 0.5
            assert bool(sel.all()) or not bool(sel.any())
            kinds.add(bool(sel.all()))
            assert torch.equal(out, tiles) != bool(sel.all())
        assert kinds == {True, False}

    def test_default_draws_per_image(self, tiny, tiles, bank_images):
        aug = ContriMix(weights=tiny, p=1.0, donors="bank", bank=bank_images, strength=(0.0, 1.0), seed=0)
        aug(tiles)
        assert len(set(aug.params["strength"].tolist())) == tiles.shape[0]
        assert not aug.same_on_batch and "same_on_batch" not in repr(aug)


# --------------------------------------------------------------------------------------------------------------
# donors="sampled": new attribute matrices drawn around the bank (stains nobody saw), with the camelyon weights
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def camelyon_bank() -> torch.Tensor:
    return ca.load_model("camelyon").bank.float()


def _in_scaled_hull(z: torch.Tensor, bank: torch.Tensor, scale: float) -> torch.Tensor:
    """(n,) bool: z in c + scale·(hull(bank) − c), by the support function on the axes, random directions and each
    sample's own direction (tests/test_mixing.py has the same check)."""
    c = bank.mean(0).flatten().double()
    b, d = bank.flatten(1).double() - c, z.flatten(1).double() - c
    eye = torch.eye(b.shape[1], dtype=torch.float64)
    rand = torch.randn(128, b.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.cat([eye, -eye, rand / rand.norm(dim=1, keepdim=True), d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)])
    support = (u @ b.T).amax(1)
    return ((d @ u.T) <= scale * support + 1e-5 * (1 + support.abs())).all(1)


class TestSampledDonors:
    def test_repr_flags_and_params(self, tiles, camelyon_bank):
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=1.25, seed=0)
        assert repr(aug).startswith("ContriMix(weights='camelyon', p=1.0, donors='sampled', spread=1.25, strength=1.0")
        assert aug.flags == {"strength": (1.0, 1.0), "donors": "sampled", "spread": 1.25}
        assert "spread" not in repr(ContriMix(weights="camelyon", donors="bank"))
        out = aug(tiles)
        p = aug.params
        assert set(p) == {"batch_prob", "donors", "from_bank", "strength", "donor_attributes", "forward_input_shape"}
        assert p["donor_attributes"].shape == (tiles.shape[0], 3, 8) and p["donor_attributes"].device.type == "cpu"
        assert bool((p["donors"] == -1).all()) and not bool(p["from_bank"].any())
        assert out.shape == tiles.shape and bool((out != tiles).flatten(1).any(1).all())

    def test_stains_nobody_saw_inside_the_spread_scaled_region(self, tiles, camelyon_bank):
        from contrimix_aug.mixing import sampled_reach

        kappa = sampled_reach(camelyon_bank.shape[0])
        for spread in (0.5, 1.0, 1.5):
            aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=spread, seed=1)
            z = torch.cat([(aug(tiles), aug.params["donor_attributes"])[1] for _ in range(4)])
            assert float(torch.cdist(z.flatten(1), camelyon_bank.flatten(1)).min()) > 1e-4  # no bank entry
            assert bool(_in_scaled_hull(z, camelyon_bank, spread * kappa).all())
        # spread 1/κ: every sampled stain is a blend of real stains, inside the bank's hull
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=1 / kappa, seed=2)
        aug(tiles)
        assert bool(_in_scaled_hull(aug.params["donor_attributes"], camelyon_bank, 1.0).all())

    def test_spread_zero_is_the_bank_centre(self, tiles, camelyon_bank):
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=0.0, seed=3)
        out = aug(tiles)
        assert torch.equal(aug.params["donor_attributes"], camelyon_bank.mean(0).expand(tiles.shape[0], -1, -1))
        # the same rendering as the learned normaliser, whose default target is the bank centre
        torch.testing.assert_close(out, ContriMixNormalize(weights="camelyon")(tiles), atol=1e-6, rtol=0)

    def test_seed_replay_and_other_seeds(self, tiles):
        def make(seed):
            return ContriMix(weights="camelyon", p=0.7, strength=(0.5, 1.0), donors="sampled", spread=1.2, seed=seed)

        a, b, c = make(5), make(5), make(6)
        out_a = a(tiles)
        assert torch.equal(out_a, b(tiles))
        assert not torch.equal(out_a, c(tiles))
        params = a.params
        second = a(tiles)  # another draw in between: other stains
        assert not torch.equal(second, out_a)
        assert torch.equal(a(tiles, params=params), out_a)
        assert torch.equal(a(tiles, params), out_a)  # kornia's positional spelling
        assert torch.equal(c(tiles, params=params), out_a)  # the params alone decide (same weights)
        sel = params["batch_prob"] > 0.5
        assert torch.equal(out_a[~sel], tiles[~sel])

    def test_single_chw_image(self, tiles):
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", seed=4)
        out = aug(tiles[0])
        assert out.shape == tiles[0].shape and float((out - tiles[0]).abs().mean()) > 1e-3
        assert aug.params["donor_attributes"].shape == (1, 3, 8)
        assert torch.equal(aug(tiles[0], params=aug.params), out)
        assert aug(tiles[:1]).shape == tiles[:1].shape

    def test_same_on_batch_one_matrix(self, tiles):
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", same_on_batch=True, seed=5)
        out = aug(tiles)
        z = aug.params["donor_attributes"]
        assert bool((z == z[:1]).all()) and len(set(aug.params["strength"].tolist())) == 1
        params = aug.params
        assert torch.equal(aug(tiles, params=params), out)
        for i in (0, 2):  # each image alone with that one matrix gives the same rendering
            one = {k: (v[i : i + 1] if k != "forward_input_shape" else torch.tensor([1, *tiles.shape[1:]]))
                   for k, v in params.items()}
            torch.testing.assert_close(aug(tiles[i : i + 1], params=one)[0], out[i], atol=1e-5, rtol=1e-5)

    def test_global_rng_untouched_and_pickle(self, tiles):
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=0.8, seed=6)
        state = torch.get_rng_state()
        aug(tiles)
        aug(tiles[0])
        assert torch.equal(state, torch.get_rng_state())
        clone = pickle.loads(pickle.dumps(aug))
        assert clone.spread == 0.8 and torch.equal(clone(tiles), aug(tiles))

    def test_in_augmentation_sequential(self, tiles):
        mask = (rgb_to_od(tiles).mean(1, keepdim=True) > 0.3).float()
        seq = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0),
                                       ContriMix(weights="camelyon", p=1.0, donors="sampled", seed=7),
                                       data_keys=["input", "mask"])
        img, m_out = seq(tiles, mask)
        assert torch.equal(m_out, mask.flip(-1))
        cm = seq[1]
        assert "donor_attributes" in cm.params
        assert torch.equal(img, cm(tiles.flip(-1), params=cm.params))
        img2, m2 = seq(tiles, mask, params=seq._params)
        assert torch.equal(img2, img) and torch.equal(m2, m_out)


# --------------------------------------------------------------------------------------------------------------
# gradients flow to the input (kornia augmentations are differentiable); the model stays frozen
# --------------------------------------------------------------------------------------------------------------
class TestGradients:
    @pytest.mark.parametrize("p", [1.0, 0.5])
    def test_input_gradient(self, tiny, tiles, p):
        aug = ContriMix(weights=tiny, p=p, seed=0)
        ref = aug(tiles)
        x = tiles.clone().requires_grad_(True)
        out = aug(x, params=aug.params)
        assert out.requires_grad and torch.equal(out.detach(), ref)  # the same values as without grad
        out.sum().backward()
        g = x.grad
        assert g is not None and bool(torch.isfinite(g).all())
        sel = aug.params["batch_prob"] > 0.5
        assert bool(sel.any())
        assert bool((g[sel].flatten(1).abs().sum(1) > 0).all())  # every re-rendered image passes gradient
        # an image that comes back unchanged and gives no attributes passes the gradient through as the identity
        donor_of_selected = torch.zeros_like(sel)
        donor_of_selected[aug.params["donors"][sel & ~aug.params["from_bank"]]] = True
        plain = ~sel & ~donor_of_selected
        if p < 1:
            assert bool(plain.any())
        torch.testing.assert_close(g[plain], torch.ones_like(g[plain]))
        assert all(q.grad is None and not q.requires_grad for q in aug.model.parameters())

    def test_directional_derivative_matches_finite_differences(self, handset, far_pair):
        """d/dε of a loss of the rendered image along a direction equals the autograd gradient. The real pair is
        compressed into [0.1, 0.9]: at 0 the optical density's log floor is a kink that no derivative sees."""
        aug = ContriMix(weights=handset, p=1.0, strength=0.7, seed=0, render_guard=False)
        x0 = (0.1 + 0.8 * far_pair).double()
        x = x0.clone().requires_grad_(True)
        out = aug(x)
        w = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).view_as(out)  # a fixed loss weighting
        (out * w).sum().backward()
        v = 0.1 * (far_pair - far_pair.mean()).double()  # the image's own pattern as the direction
        eps = 1e-2
        with torch.no_grad():
            fd = ((aug(x0 + eps * v, params=aug.params) * w).sum()
                  - (aug(x0 - eps * v, params=aug.params) * w).sum()) / (2 * eps)
        assert abs(float(fd)) > 1.0  # the direction moves the output
        torch.testing.assert_close((x.grad * v).sum(), fd, rtol=1e-2, atol=1e-3)

    def test_normalize_gradient(self, tiny, tiles, bank_images):
        norm = ContriMixNormalize(weights=tiny, target=bank_images)
        x = tiles.clone().requires_grad_(True)
        norm(x).square().mean().backward()
        assert bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0

    def test_no_graph_without_requires_grad(self, tiny, tiles):
        out = ContriMix(weights=tiny, p=1.0, seed=0)(tiles)
        assert not out.requires_grad and out.grad_fn is None


# --------------------------------------------------------------------------------------------------------------
# kornia AugmentationSequential
# --------------------------------------------------------------------------------------------------------------
class TestKorniaSequential:
    def test_masks_and_boxes_pass_through_and_replay(self, tiny, tiles):
        b = tiles.shape[0]
        mask = (rgb_to_od(tiles).mean(1, keepdim=True) > 0.3).float()  # a real nuclei-ish mask
        boxes = torch.tensor([[[2.0, 3.0, 20.0, 30.0], [10.0, 5.0, 40.0, 35.0]]]).repeat(b, 1, 1)
        seq = K.AugmentationSequential(ContriMix(weights=tiny, p=0.5, seed=0),
                                       data_keys=["input", "mask", "bbox_xyxy"])
        img, m_out, b_out = seq(tiles, mask, boxes)
        assert img.shape == tiles.shape
        assert torch.equal(m_out, mask)
        torch.testing.assert_close(b_out, boxes)
        sel = seq._params[0].data["batch_prob"] > 0.5
        assert torch.equal((img != tiles).flatten(1).any(1), sel)
        img2, m2, b2 = seq(tiles, mask, boxes, params=seq._params)
        assert torch.equal(img2, img) and torch.equal(m2, mask)
        torch.testing.assert_close(b2, boxes)

    def test_with_a_geometric_augmentation(self, tiny, tiles):
        mask = (rgb_to_od(tiles).mean(1, keepdim=True) > 0.3).float()
        seq = K.AugmentationSequential(
            K.RandomHorizontalFlip(p=1.0), ContriMix(weights=tiny, p=1.0, seed=0), data_keys=["input", "mask"]
        )
        img, m_out = seq(tiles, mask)
        assert torch.equal(m_out, mask.flip(-1))
        cm = seq[1]
        assert torch.equal(img, ContriMix(weights=tiny, p=1.0)(tiles.flip(-1), params=cm.params))


# --------------------------------------------------------------------------------------------------------------
# torchvision-style pipelines (single (C, H, W) images)
# --------------------------------------------------------------------------------------------------------------
class _Compose:
    """Minimal equivalent of torchvision.transforms.Compose: call each transform on the previous output."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def _to_chw_float(img_hwc_uint8):
    return torch.as_tensor(img_hwc_uint8).permute(2, 0, 1).float().div(255.0)


class TestTorchvisionStyle:
    def test_compose_single_image_with_bank(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, bank=bank_images, seed=0, render_guard=False, donors="batch")
        pipe = _Compose([_to_chw_float, aug, lambda t: (t - 0.5) / 0.5])
        img = (tiles[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        out = pipe(img)
        assert out.shape == (3, H, W) and out.dtype == torch.float32
        d = int(aug.params["donors"][0])
        assert bool(aug.params["from_bank"][0])
        rendered = out * 0.5 + 0.5
        torch.testing.assert_close(mean_od(rendered[None]), mean_od(bank_images[d : d + 1]), atol=5e-3, rtol=2e-2)

    def test_real_torchvision_compose(self, handset, tiles, bank_images):
        v2 = pytest.importorskip("torchvision.transforms.v2")
        aug = ContriMix(weights=handset, p=1.0, bank=bank_images, seed=0, donors="batch")
        pipe = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), aug])
        img = (tiles[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        out = pipe(img)
        assert tuple(out.shape) == (3, H, W)
        assert bool(aug.params["from_bank"][0])


# --------------------------------------------------------------------------------------------------------------
# DataLoader workers
# --------------------------------------------------------------------------------------------------------------
def _run_loader(tiles, bank_images, loader_seed):
    """One epoch through 2 workers; ``loader_seed`` seeds the DataLoader's generator (None: no generator, the
    workers' seeds then come from torch's global RNG)."""
    aug = ContriMix(weights=make_tiny_model(), p=1.0, strength=(0.0, 1.0), bank=bank_images, seed=0, donors="batch")
    gen = None if loader_seed is None else torch.Generator().manual_seed(loader_seed)
    dl = DataLoader(AugmentedTiles(tiles, aug), batch_size=2, num_workers=2, generator=gen)
    outs, donors, strengths, workers, _ = zip(*dl)
    return torch.cat(outs), torch.cat(donors), torch.cat(strengths), torch.cat(workers)


class TestDataLoader:
    def test_workers_differ_and_runs_reproduce(self, tiles, bank_images):
        out1, d1, s1, w1 = _run_loader(tiles, bank_images, 0)
        out2, d2, s2, w2 = _run_loader(tiles, bank_images, 0)
        _, _, s3, _ = _run_loader(tiles, bank_images, 1)
        assert set(w1.tolist()) == {0, 1}
        # each worker has its own stream: their draw sequences differ
        s_w0, s_w1 = s1[w1 == 0], s1[w1 == 1]
        assert not torch.equal(s_w0, s_w1)
        # the whole run is reproducible with the same seed and DataLoader generator seed
        assert torch.equal(out1, out2) and torch.equal(d1, d2) and torch.equal(s1, s2) and torch.equal(w1, w2)
        # ... and another loader seed gives another run
        out3 = _run_loader(tiles, bank_images, 1)[0]
        assert not torch.equal(s1, s3) and not torch.equal(out1, out3)
        assert bool(((d1 >= 0) & (d1 < bank_images.shape[0])).all())

    def test_torch_manual_seed_reproduces_without_a_loader_generator(self, tiles, bank_images):
        """The README's other recipe: seed= plus torch.manual_seed before iterating (no DataLoader generator)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            a = _run_loader(tiles, bank_images, None)
            torch.manual_seed(5)
            b = _run_loader(tiles, bank_images, None)
            torch.manual_seed(6)
            c = _run_loader(tiles, bank_images, None)
        assert all(torch.equal(u, v) for u, v in zip(a, b))  # identical batches
        assert not torch.equal(a[0], c[0]) and not torch.equal(a[2], c[2])  # another global seed: other draws


def _he_loader_run(tile: torch.Tensor, start_method: str):
    """ContriMix(weights="he") applied per sample in 2 DataLoader workers started with ``start_method``; the same
    real tile for every item, so any difference between items comes from the donor draws."""
    aug = ContriMix(weights="he", p=1.0, seed=0, donors="batch")
    dl = DataLoader(AugmentedTiles(tile[None], aug, length=8, same_input=True), batch_size=2, num_workers=2,
                    multiprocessing_context=multiprocessing.get_context(start_method),
                    generator=torch.Generator().manual_seed(0))
    outs, donors, _, workers, threads = zip(*dl)
    return torch.cat(outs), torch.cat(donors), torch.cat(workers), torch.cat(threads)


@pytest.fixture(scope="module")
def he_loader_reference(real_tiles):
    """One fork run, the reference every start method must reproduce."""
    return _he_loader_run(real_tiles[0, :, :64, :64], "fork")


class TestDataLoaderStartMethods:
    """The bundled weights in DataLoader workers under every start method: the transform crosses into the workers
    (its generator travels as bytes), each worker draws its own donors, runs reproduce, one thread per worker."""

    @pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
    def test_start_method(self, real_tiles, he_loader_reference, start_method):
        tile = real_tiles[0, :, :64, :64]
        out, donors, workers, threads = _he_loader_run(tile, start_method)
        assert out.shape == (8, 3, 64, 64) and set(workers.tolist()) == {0, 1}
        assert threads.tolist() == [1] * 8, "a DataLoader worker must run torch with one thread"
        bank = ContriMix(weights="he").model.bank.shape[0]
        assert bool(((donors >= 0) & (donors < bank)).all())
        # identical inputs, different workers: different donors, so different outputs
        w0, w1 = workers == 0, workers == 1
        assert not torch.equal(donors[w0], donors[w1])
        assert not torch.equal(out[w0], out[w1])
        assert not torch.equal(out[0], tile)
        # two runs (here: this start method and a fork run) give identical batches
        ref_out, ref_donors, ref_workers, _ = he_loader_reference
        assert torch.equal(workers, ref_workers) and torch.equal(donors, ref_donors) and torch.equal(out, ref_out)
        if start_method == "fork":
            again = _he_loader_run(tile, "fork")
            assert torch.equal(again[0], out) and torch.equal(again[1], donors)


# --------------------------------------------------------------------------------------------------------------
# params (public spelling) and state dicts of pipelines holding the transform
# --------------------------------------------------------------------------------------------------------------
class TestParamsAndStateDict:
    def test_params_is_the_public_spelling_and_replays(self, tiny, tiles, bank_images):
        aug = ContriMix(weights=tiny, p=0.7, strength=(0.2, 1.0), donors="both", bank=bank_images, seed=4)
        out = aug(tiles)
        params = aug.params
        assert params is aug._params  # kornia's attribute, under its public name
        assert set(params) >= {"batch_prob", "donors", "from_bank", "strength"}
        aug(tiles)  # a new draw in between
        assert not torch.equal(aug.params["donors"], params["donors"]) or not torch.equal(
            aug.params["strength"], params["strength"])
        assert torch.equal(aug(tiles, params=params), out)
        other = ContriMix(weights=tiny, p=0.1, bank=bank_images, seed=99)  # its own settings do not matter
        assert torch.equal(other(tiles, params=params), out)

    def test_sequential_state_dict_holds_only_the_net(self, tiny, tiles):
        net = torch.nn.Conv2d(3, 2, 3)
        pipe = torch.nn.Sequential(ContriMix(weights=tiny, p=0.5, seed=0), net)
        sd = pipe.state_dict()
        assert set(sd) == {"1.weight", "1.bias"}, sorted(sd)
        # loads strictly into a fresh pipeline, model keys filled in from its own frozen weights
        fresh_net = torch.nn.Conv2d(3, 2, 3)
        fresh = torch.nn.Sequential(ContriMix(weights=tiny, p=0.5, seed=1), fresh_net)
        result = fresh.load_state_dict(sd, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(fresh_net.weight, net.weight) and torch.equal(fresh_net.bias, net.bias)
        assert all(torch.equal(a, b) for a, b in zip(fresh[0].model.state_dict().values(), tiny.state_dict().values()))
        # strictness is kept: a really unknown key is still refused
        with pytest.raises(RuntimeError, match="Unexpected key"):
            fresh.load_state_dict({**sd, "1.extra": torch.zeros(1)}, strict=True)
        # the augmentation still works after loading
        assert fresh(tiles).shape == (tiles.shape[0], 2, H - 2, W - 2)

    def test_state_dict_weights_true_includes_the_model(self, tiny):
        aug = ContriMix(weights=tiny, seed=0, state_dict_weights=True)
        pipe = torch.nn.Sequential(aug, torch.nn.Conv2d(3, 2, 3))
        sd = pipe.state_dict()
        model_keys = {f"0.model.{k}" for k in tiny.state_dict()}
        assert model_keys and model_keys <= set(sd) and {"1.weight", "1.bias"} <= set(sd)
        for k, v in tiny.state_dict().items():
            assert torch.equal(sd[f"0.model.{k}"], v)
        # and round-trips: changed weights in the dict are loaded into the transform's model
        changed = {k: (v + 1 if k == "0.model.content_encoder.conv_in.weight" else v) for k, v in sd.items()}
        other = torch.nn.Sequential(ContriMix(weights=tiny, seed=0, state_dict_weights=True), torch.nn.Conv2d(3, 2, 3))
        other.load_state_dict(changed, strict=True)
        torch.testing.assert_close(other[0].model.content_encoder.conv_in.weight, tiny.content_encoder.conv_in.weight + 1)
        # a full state dict (saved with state_dict_weights=True) still loads strictly into a lean pipeline
        lean = torch.nn.Sequential(ContriMix(weights=tiny, seed=0), torch.nn.Conv2d(3, 2, 3))
        lean.load_state_dict(changed, strict=True)
        torch.testing.assert_close(lean[0].model.content_encoder.conv_in.weight, tiny.content_encoder.conv_in.weight + 1)

    def test_normalize_state_dict(self, tiny, bank_images):
        pipe = torch.nn.Sequential(ContriMixNormalize(weights=tiny, target=bank_images), torch.nn.Identity())
        assert pipe.state_dict() == {}
        full = ContriMixNormalize(weights=tiny, target=bank_images, state_dict_weights=True).state_dict()
        assert set(full) == {f"model.{k}" for k in tiny.state_dict()}


# --------------------------------------------------------------------------------------------------------------
# pickling, grad modes, compile
# --------------------------------------------------------------------------------------------------------------
class TestModes:
    def test_pickle_roundtrip(self, tiny, tiles, bank_images):
        aug = ContriMix(weights=tiny, p=0.5, strength=(0.2, 0.9), donors="both", bank=bank_images, seed=0)
        aug(tiles)
        clone = pickle.loads(pickle.dumps(aug))
        deep = copy.deepcopy(aug)
        for _ in range(2):
            want = aug(tiles)
            assert torch.equal(clone(tiles), want)
            assert torch.equal(deep(tiles), want)
        norm = ContriMixNormalize(weights=tiny, target=bank_images[:1])
        assert torch.equal(pickle.loads(pickle.dumps(norm))(tiles), norm(tiles))

    @pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode, torch.enable_grad])
    def test_grad_modes(self, tiny, tiles, mode):
        aug = ContriMix(weights=tiny, p=0.5, seed=0)
        ref = aug(tiles)
        x = tiles.clone().requires_grad_(mode is torch.enable_grad)
        with mode():
            out = aug(x, params=aug.params)
        assert torch.equal(out.detach(), ref)

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.11's dynamo touches torch.jit internals
    @pytest.mark.parametrize("render_guard", [True, False])
    def test_compile_model_path(self, tiny, tiles, render_guard):
        torch._dynamo.reset()
        params = _fixed_params(4)
        fn = torch.compile(lambda x, p: apply_contrimix(tiny, x, p, render_guard=render_guard), backend="aot_eager",
                           fullgraph=True)
        torch.testing.assert_close(fn(tiles[:4], params),
                                   apply_contrimix(tiny, tiles[:4], params, render_guard=render_guard))

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_compile_model_path_with_bank_donors(self, tiny, tiles, bank_images):
        """Bank donors under torch.compile(fullgraph=True): no host sync on the from_bank mask."""
        torch._dynamo.reset()
        bank = compute_bank(tiny, bank_images)
        fb = torch.tensor([True, False, True, False])
        params = MixParams(torch.ones(4, dtype=torch.bool), torch.tensor([2, 0, 1, 2]), fb, torch.full((4,), 0.7))
        fn = torch.compile(lambda x, p: apply_contrimix(tiny, x, p, bank=bank), backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(fn(tiles[:4], params), apply_contrimix(tiny, tiles[:4], params, bank=bank))

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    def test_compile_model_path_with_sampled_donors(self, tiles):
        """Sampled donors (explicit donor_attributes) under torch.compile(fullgraph=True), camelyon weights."""
        torch._dynamo.reset()
        aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", strength=(0.5, 1.0), seed=0)
        want = aug(tiles[:4])
        params = MixParams.from_dict(aug.params)
        fn = torch.compile(lambda x, p: apply_contrimix(aug.model, x, p), backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(fn(tiles[:4], params), want, atol=1e-5, rtol=1e-5)

    @pytest.mark.slow
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inductor internals on torch 2.13
    def test_compile_model_path_inductor(self, tiny, tiles):  # ~2 min on 2 CPU cores
        torch._dynamo.reset()
        params = _fixed_params(4)
        fn = torch.compile(lambda x, p: apply_contrimix(tiny, x, p), fullgraph=True)
        torch.testing.assert_close(fn(tiles[:4], params), apply_contrimix(tiny, tiles[:4], params), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# one model call per batch (no per-image Python loop)
# --------------------------------------------------------------------------------------------------------------
class TestBatched:
    @pytest.mark.parametrize("p", [1.0, 0.5])
    def test_one_encode_per_batch(self, tiles, p):
        aug = ContriMix(weights=make_tiny_model(), p=p, seed=0)
        calls = _count_calls(aug.model)
        aug(tiles)
        n_sel = int((aug.params["batch_prob"] > 0.5).sum())
        assert len(calls["content"]) == 1 and len(calls["attributes"]) == 1
        assert calls["content"][0] == (tiles.shape[0] if p == 1.0 else n_sel)

    def test_normalize_one_encode_per_batch(self, tiles):
        norm = ContriMixNormalize(weights=make_tiny_model(), target=tiles[:1])
        calls = _count_calls(norm.model)
        norm(tiles)
        # one content pass; no attribute pass at all (the target was encoded once, at construction)
        assert calls["content"] == [tiles.shape[0]] and calls["attributes"] == []


# --------------------------------------------------------------------------------------------------------------
# ContriMixNormalize
# --------------------------------------------------------------------------------------------------------------
class TestNormalize:
    def test_deterministic(self, tiny, tiles, bank_images):
        a = ContriMixNormalize(weights=tiny, target=bank_images)
        b = ContriMixNormalize(weights=tiny, target=bank_images)
        assert torch.equal(a(tiles), a(tiles))
        assert torch.equal(a(tiles), b(tiles))
        torch.testing.assert_close(a(tiles[2]), a(tiles)[2], atol=1e-4, rtol=1e-4)  # batch-size independent

    def test_target_from_reference_image(self, handset, tiles, far_pair):
        ref = far_pair[0]
        out = ContriMixNormalize(weights=handset, target=ref, render_guard=False)(tiles)
        want = mean_od(ref[None]).expand(tiles.shape[0], -1)
        torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)
        assert bool((od_luminance_ssim(tiles, out) > 0.9).all())
        # normalising reduces the spread of stain colours across the real sources
        assert float(mean_od(out).std(0).sum()) < 0.1 * float(mean_od(tiles).std(0).sum())

    def test_target_forms_agree(self, tiny, tiles, bank_images):
        attrs = compute_bank(tiny, bank_images).mean(0)
        a = ContriMixNormalize(weights=tiny, target=bank_images)(tiles)
        b = ContriMixNormalize(weights=tiny, target=attrs)(tiles)
        assert torch.equal(a, b)

    def test_target_default_is_bank_centre(self, tiles, bank_images):
        base = make_tiny_model()
        bank = compute_bank(base, bank_images)
        model = ca.ContriMixModel(base.config, bank=bank)
        model.load_state_dict(base.state_dict())
        a = ContriMixNormalize(weights=model)(tiles)
        b = ContriMixNormalize(weights=model, target=bank.mean(0))(tiles)
        assert torch.equal(a, b)

    def test_matches_functional(self, tiny, tiles, bank_images):
        norm = ContriMixNormalize(weights=tiny, target=bank_images[0])
        assert torch.equal(norm(tiles), ca.functional.normalize(norm.model, tiles, norm.target))

    def test_errors(self, tiny):
        with pytest.raises(ValueError, match="no attribute bank"):
            ContriMixNormalize(weights=tiny)
        with pytest.raises(ValueError, match="target"):
            ContriMixNormalize(weights=tiny, target=torch.zeros(5, 5))
        with pytest.raises(TypeError, match="target"):
            ContriMixNormalize(weights=tiny, target=[[0.1, 0.2]])


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------
class TestErrors:
    @pytest.mark.parametrize(
        "make_input, exc, match",
        [
            (lambda t: t[:, :2], ValueError, "expect 3 channel"),
            (lambda t: t.permute(0, 2, 3, 1), ValueError, "channels-last"),
            (lambda t: t * 255, ValueError, "divide by 255"),
            (lambda t: torch.where(t > 0.5, float("nan"), t), ValueError, "NaN"),
            (lambda t: torch.where(t > 0.5, float("inf"), t), ValueError, "NaN or Inf"),
            (lambda t: t - 0.5, ValueError, "mean/std-normalised"),
            (lambda t: t[:0], ValueError, "empty"),
            (lambda t: t[0, 0], ValueError, "2-D"),
            (lambda t: t[None], ValueError, "5-D"),
            (lambda t: (t * 255).to(torch.uint8), TypeError, "uint8"),
            (lambda t: (t * 255).long(), TypeError, "int64"),
            (lambda t: t > 0.5, TypeError, "bool"),
            (lambda t: t.numpy(), TypeError, "torch.Tensor"),
            (lambda t: t[..., :4, :4], ValueError, "8×8"),
        ],
    )
    def test_bad_input(self, tiny, tiles, make_input, exc, match):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        with pytest.raises(exc, match=match):
            aug(make_input(tiles[:4]))

    @pytest.mark.parametrize(
        "kwargs, exc, match",
        [
            ({"p": 1.5}, ValueError, "probability"),
            ({"p": -0.1}, ValueError, "probability"),
            ({"p": "0.5"}, TypeError, "p"),
            ({"strength": 1.5}, ValueError, "strength"),
            ({"strength": -0.1}, ValueError, "strength"),
            ({"strength": (0.8, 0.2)}, ValueError, "low <= high"),
            ({"strength": (0.1, 0.2, 0.3)}, TypeError, "strength"),
            ({"donors": "others"}, ValueError, "donors"),
            ({"donors": "bank"}, ValueError, "bank"),
            ({"donors": "sampled"}, ValueError, "donors='sampled' needs an attribute bank.*pass bank="),
            ({"donors": "sampled", "spread": -0.5}, ValueError, "spread.*>= 0"),
            ({"donors": "sampled", "spread": float("nan")}, ValueError, "spread.*finite"),
            ({"donors": "sampled", "spread": "wide"}, TypeError, "spread"),
            ({"spread": 1.5, "donors": "batch"}, ValueError, "spread=1.5 applies to donors='sampled' only"),
            ({"seed": 1.5}, TypeError, "seed"),
            ({"seed": 1, "generator": torch.Generator()}, ValueError, "either"),
            ({"generator": 3}, TypeError, "generator"),
            ({"bank": torch.zeros(4, 5)}, ValueError, "bank"),
            ({"bank": [1, 2]}, TypeError, "bank"),
        ],
    )
    def test_bad_arguments(self, tiny, kwargs, exc, match):
        with pytest.raises(exc, match=match):
            ContriMix(weights=tiny, **kwargs)

    def test_constructor_hints_work(self, tiny, tiles, bank_images):
        """Each constructor message names the fix; applying it verbatim gives a working transform."""
        with pytest.raises(ValueError, match=r"expected one of \('batch', 'bank', 'both', 'sampled'\)"):
            ContriMix(weights=tiny, donors="others")
        for mode in ("batch", "bank", "both", "sampled"):
            assert ContriMix(weights=tiny, donors=mode, bank=bank_images, seed=0)(tiles).shape == tiles.shape
        with pytest.raises(ValueError, match=r"seed=3 is generator=torch.Generator\(\).manual_seed\(3\)"):
            ContriMix(weights=tiny, seed=3, generator=torch.Generator())
        assert torch.equal(ContriMix(weights=tiny, seed=3)(tiles),
                           ContriMix(weights=tiny, generator=torch.Generator().manual_seed(3))(tiles))
        with pytest.raises(TypeError, match=r"generator=torch.Generator\(\).manual_seed\(0\), or seed=0"):
            ContriMix(weights=tiny, generator=3)
        with pytest.raises(TypeError, match="pass e.g. seed=0"):
            ContriMix(weights=tiny, seed=1.5)
        assert ContriMix(weights=tiny, seed=0)(tiles).shape == tiles.shape
        with pytest.raises(ValueError, match=r"pass bank=reference images \(N, C, H, W\)"):
            ContriMix(weights=tiny, donors="bank")
        assert ContriMix(weights=tiny, donors="bank", bank=bank_images, seed=0)(tiles[0]).shape == tiles[0].shape
        with pytest.raises(ValueError, match=r"donors='sampled' needs an attribute bank.*pass bank=reference images"):
            ContriMix(weights=tiny, donors="sampled")
        assert ContriMix(weights=tiny, donors="sampled", bank=bank_images, seed=0)(tiles[0]).shape == tiles[0].shape
        with pytest.raises(ValueError, match="pass donors='sampled', or leave spread out"):
            ContriMix(weights=tiny, donors="batch", spread=0.5)
        with pytest.raises(ValueError, match="donors='sampled' needs an attribute bank"):
            ContriMix(weights=tiny, spread=0.5)  # the default policy with a spread asked for: no silent fallback
        assert ContriMix(weights=tiny, seed=0).donors == "batch"  # the default, on weights without a bank
        fixed = ContriMix(weights=tiny, donors="sampled", spread=0.5, bank=bank_images, seed=0)
        assert fixed(tiles).shape == tiles.shape
        with pytest.raises(ca.WeightsError, match="Did you mean 'camelyon'"):
            ContriMix(weights="camelyon17")
        assert ContriMix(weights="camelyon", p=1.0, seed=0)(tiles).shape == tiles.shape
        with pytest.raises(TypeError, match="same_on_batch: expected True or False"):
            ContriMix(weights=tiny, same_on_batch="yes")
        assert ContriMix(weights=tiny, same_on_batch=True, seed=0)(tiles).shape == tiles.shape

    def test_unknown_weights_name(self):
        with pytest.raises(ca.WeightsError, match="unknown weights name 'not-a-model'") as err:
            ContriMix(weights="not-a-model")
        assert isinstance(err.value, ValueError)
        with pytest.raises(TypeError, match="weights"):
            ContriMix(weights=42)

    def test_input_on_another_device_than_the_model(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        with pytest.raises(ValueError, match=r"model is on cpu; move the transform with aug.to\('meta'\)"):
            aug(tiles[:2].to("meta"))

    def test_bank_images_checked(self, tiny, bank_images):
        with pytest.raises(ValueError, match="divide by 255"):
            ContriMix(weights=tiny, bank=bank_images * 255)
        with pytest.raises(ValueError, match="channel"):
            ContriMix(weights=tiny, bank=bank_images[:, :2])


# --------------------------------------------------------------------------------------------------------------
# CUDA (run where a GPU exists: pytest -m cuda)
# --------------------------------------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
class TestCuda:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("p", [1.0, 0.5])
    def test_cuda_matches_cpu(self, tiny, tiles, dtype, p):
        cpu = ContriMix(weights=tiny, p=p, strength=(0.2, 1.0), seed=0)
        gpu = ContriMix(weights=tiny, p=p, strength=(0.2, 1.0), seed=0).to("cuda")
        ref = cpu(tiles)
        x = tiles.to("cuda", dtype).contiguous(memory_format=torch.channels_last)
        out = gpu(x)
        assert out.device == x.device and out.dtype == dtype
        assert out.is_contiguous(memory_format=torch.channels_last)
        for k in ("batch_prob", "donors", "strength"):  # same draws: the generator lives on the CPU
            assert torch.equal(gpu.params[k].cpu(), cpu.params[k])
        tol = {torch.float32: 3e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]  # fp32: cuDNN may use TF32
        assert float((out.float().cpu() - ref).abs().mean()) <= tol
        assert torch.equal(gpu(x, params=gpu.params), out)

    def test_cuda_colour_transfer_and_bank(self, handset, tiles, bank_images):
        aug = ContriMix(weights=handset, p=1.0, donors="both", bank=bank_images, seed=0, render_guard=False).to("cuda")
        out = aug(tiles.cuda())
        fb, d = aug.params["from_bank"], aug.params["donors"]
        n = tiles.shape[0]
        want = torch.where(fb[:, None], mean_od(bank_images)[d.clamp(max=bank_images.shape[0] - 1)],
                           mean_od(tiles)[d.clamp(max=n - 1)])
        torch.testing.assert_close(mean_od(out).cpu(), want, atol=5e-3, rtol=2e-2)
        single = aug(tiles[0].cuda())
        assert single.shape == tiles[0].shape and single.is_cuda

    def test_cuda_sampled_donors_match_cpu(self, tiles):
        cpu = ContriMix(weights="camelyon", p=0.7, donors="sampled", spread=1.2, seed=0)
        gpu = ContriMix(weights="camelyon", p=0.7, donors="sampled", spread=1.2, seed=0).to("cuda")
        ref = cpu(tiles)
        out = gpu(tiles.cuda())
        assert out.is_cuda and gpu.params["donor_attributes"].device.type == "cpu"
        for k in ("batch_prob", "strength", "donor_attributes"):  # the same draws: the generator lives on the CPU
            assert torch.equal(gpu.params[k].cpu(), cpu.params[k])
        assert float((out.cpu() - ref).abs().mean()) <= 3e-4  # cuDNN may use TF32
        assert torch.equal(gpu(tiles.cuda(), params=gpu.params), out)
        single = gpu(tiles[0].cuda())
        assert single.shape == tiles[0].shape and single.is_cuda

    def test_cuda_sequential_masks_boxes(self, tiny, tiles):
        x = tiles.cuda()
        mask = (rgb_to_od(x).mean(1, keepdim=True) > 0.3).float()
        boxes = torch.tensor([[[2.0, 3.0, 20.0, 30.0]]], device="cuda").repeat(x.shape[0], 1, 1)
        seq = K.AugmentationSequential(ContriMix(weights=tiny, p=0.5, seed=0),
                                       data_keys=["input", "mask", "bbox_xyxy"]).to("cuda")
        img, m_out, b_out = seq(x, mask, boxes)
        assert img.is_cuda and torch.equal(m_out, mask)
        torch.testing.assert_close(b_out, boxes)
        assert torch.equal(seq(x, mask, boxes, params=seq._params)[0], img)

    def test_cuda_normalize_and_mix(self, tiny, tiles, bank_images):
        norm = ContriMixNormalize(weights=tiny, target=bank_images)
        ref = norm(tiles)
        torch.testing.assert_close(norm.to("cuda")(tiles.cuda()).cpu(), ref, atol=1e-4, rtol=1e-4)
        model = copy.deepcopy(tiny).cuda()
        out = ca.functional.mix(model, tiles.cuda(), num_mixes=2, generator=torch.Generator("cuda").manual_seed(0))
        assert out.shape == (3 * tiles.shape[0], 3, H, W) and out.is_cuda

    def test_cuda_input_cpu_model_clear_error(self, tiny, tiles):
        aug = ContriMix(weights=tiny, p=1.0, seed=0)
        x = tiles.cuda()
        with pytest.raises(ValueError, match=r"aug\.to\('cuda:0'\), or the image with x\.to\('cpu'\)"):
            aug(x)
        ref = aug(x.to("cpu"))  # the second suggested fix
        assert ref.device.type == "cpu"
        out = aug.to("cuda:0")(x, params=aug.params)  # the first
        assert out.is_cuda and float((out.cpu() - ref).abs().mean()) < 3e-4

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")
    @pytest.mark.filterwarnings("ignore:TensorFloat32:UserWarning")
    def test_cuda_compile_inductor(self, tiny, tiles):
        torch._dynamo.reset()
        model = copy.deepcopy(tiny).cuda()
        x = tiles[:4].cuda()
        params = _fixed_params(4, "cuda")
        fn = torch.compile(lambda x, p: apply_contrimix(model, x, p), fullgraph=True)
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare true fp32
        try:
            torch.testing.assert_close(fn(x, params), apply_contrimix(model, x, params),
                                       atol=1e-4, rtol=1e-4)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def test_bf16_model_on_cpu(real_tiles):
    """aug.to(torch.bfloat16) runs the model in bf16 on the CPU (antialiased resize included) and returns the
    input's dtype; the result stays close to the fp32 one."""
    x = real_tiles[:4]
    m = ca.load_model("he")  # trained weights with the shipped architecture (resize + statistics path)
    ref = ContriMix(m, p=1.0, seed=3)(x)
    out = ContriMix(m, p=1.0, seed=3).to(torch.bfloat16)(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert (out - ref).abs().mean() < 0.02


# --------------------------------------------------------------------------------------------------------------
# the render guard (optical_density.limit_render), on by default, on real tiles with the bundled weights
# --------------------------------------------------------------------------------------------------------------
def _lab(x: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_lab(x.float().clamp(0, 1))


def _tissue_shift(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean CIELAB distance between input and render over the input's tissue pixels (how far the stain moved)."""
    from contrimix_aug.tissue import tissue_mask_tensor

    return float((_lab(y) - _lab(x)).norm(dim=1)[tissue_mask_tensor(x)].mean())


def _near_white(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) mask of glass the guard keeps exactly: summed optical density below the band's lower edge."""
    from contrimix_aug.optical_density import RENDER_BACKGROUND_OD

    return (rgb_to_od(x).sum(1, keepdim=True) < RENDER_BACKGROUND_OD[0]).expand_as(x)


@pytest.fixture(scope="module")
def demo() -> torch.Tensor:
    """The 16 bundled real H&E tiles (two labs), (16, 3, 96, 96) float32 in [0, 1]."""
    from contrimix_aug.data import load_demo_tiles

    t, _ = load_demo_tiles()
    return torch.from_numpy(t).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def slide_edge(cmu1_edge) -> torch.Tensor:
    """The real CMU-1 crop across the tissue border (55 % near-white glass), four times: (4, 3, 256, 256)."""
    x = torch.from_numpy(cmu1_edge).permute(2, 0, 1).float() / 255
    return x.expand(4, -1, -1, -1).contiguous()


class TestRenderGuard:
    """``render_guard=True`` (the default): glass keeps the source and no pixel is darker than real tissue
    (:func:`~contrimix_aug.optical_density.limit_render`), while tissue still takes the donor's stain."""

    @pytest.mark.parametrize("weights", ["camelyon", "he"])
    def test_glass_stays_glass_and_no_pixel_darker_than_tissue(self, demo, weights):
        from contrimix_aug.optical_density import RENDER_OD_MAX
        from contrimix_aug.quality import render_artefacts

        raw_aug = ContriMix(weights=weights, p=1.0, donors="batch", seed=1, render_guard=False)
        aug = ContriMix(weights=weights, p=1.0, donors="batch", seed=1)
        raw, out = raw_aug(demo), aug(demo)
        assert all(torch.equal(raw_aug.params[k], aug.params[k]) for k in raw_aug.params)  # the same draw
        # glass: the unguarded render colours it (a donor's OD offset), the guarded one keeps it
        bg_raw = float(render_artefacts(demo, raw)["background_coloured"].mean())
        bg = float(render_artefacts(demo, out)["background_coloured"].mean())
        assert bg_raw > 0.01 and bg < 0.005 and bg < bg_raw / 5
        white = _near_white(demo)
        assert bool(white.any())
        assert float((raw - demo).abs()[white].max()) > 0.05
        assert float((out - demo).abs()[white].max()) < 1e-4  # near-white glass is the input itself
        # no rendered pixel darker than real tissue (the unguarded render reaches the OD floor, 6)
        assert float(rgb_to_od(raw).amax()) > RENDER_OD_MAX + 0.5
        assert float(rgb_to_od(out).amax()) <= RENDER_OD_MAX + 1e-4
        # still a change of stain on tissue, about as large as the unguarded one
        shift, shift_raw = _tissue_shift(demo, out), _tissue_shift(demo, raw)
        assert shift > 10 and shift > 0.85 * shift_raw

    @pytest.mark.parametrize("weights", ["camelyon", "he"])
    def test_slide_edge_glass_with_bank_donors(self, slide_edge, weights):
        """A real slide edge, half glass, re-rendered with four bank donors: the guard removes the coloured glass."""
        from contrimix_aug.quality import render_artefacts

        raw = ContriMix(weights=weights, p=1.0, donors="bank", seed=2, render_guard=False)(slide_edge)
        out = ContriMix(weights=weights, p=1.0, donors="bank", seed=2)(slide_edge)
        bg_raw = render_artefacts(slide_edge, raw)["background_coloured"]
        bg = render_artefacts(slide_edge, out)["background_coloured"]
        assert float(bg_raw.max()) > 0.02 and float(bg.max()) < 0.01
        assert float((out - slide_edge).abs()[_near_white(slide_edge)].max()) < 1e-4
        assert _tissue_shift(slide_edge, out) > 0.75 * _tissue_shift(slide_edge, raw)

    @pytest.mark.parametrize("weights", ["camelyon", "he"])
    def test_strength_zero_is_the_reconstruction_on_tissue(self, demo, weights):
        """α = 0: tissue comes back as model(x) (the unguarded α = 0 render, to float rounding, away from the glass
        band and the cap), glass as the input."""
        from contrimix_aug.optical_density import RENDER_BACKGROUND_OD, RENDER_OD_MAX
        from contrimix_aug.tissue import tissue_mask_tensor

        aug = ContriMix(weights=weights, p=1.0, strength=0.0, seed=0)
        out = aug(demo)
        raw = ContriMix(weights=weights, p=1.0, strength=0.0, seed=0, render_guard=False)(demo)
        with torch.no_grad():
            rec = aug.model(demo)
        torch.testing.assert_close(raw, rec, atol=1e-3, rtol=0)  # the authors' α = 0 is model(x) (chunked here)
        tissue = tissue_mask_tensor(demo)
        d_lab = (_lab(out) - _lab(rec)).norm(dim=1)
        assert float(d_lab[tissue].mean()) < 0.75  # CIELAB units; 2.3 is a just noticeable difference
        assert float((out - rec).abs()[tissue[:, None].expand_as(demo)].mean()) < 0.005
        plain = ((rgb_to_od(demo).sum(1, keepdim=True) >= RENDER_BACKGROUND_OD[1])
                 & (rgb_to_od(raw).amax(1, keepdim=True) < RENDER_OD_MAX)).expand_as(demo)
        assert float(plain.float().mean()) > 0.6  # most pixels: the comparison below covers most of the tiles
        torch.testing.assert_close(out[plain], raw[plain], atol=1e-6, rtol=0)
        glass = ~tissue
        assert float((_lab(out) - _lab(demo)).norm(dim=1)[glass].mean()) < \
            float((_lab(rec) - _lab(demo)).norm(dim=1)[glass].mean())

    def test_unselected_images_bit_identical(self, demo):
        aug = ContriMix(weights="camelyon", p=0.5, seed=4)
        out = aug(demo)
        sel = aug.params["batch_prob"] > 0.5
        assert bool(sel.any()) and not bool(sel.all())
        assert torch.equal(out[~sel], demo[~sel])
        assert torch.equal(aug(demo, params=aug.params), out)  # replay is exact with the guard too

    @pytest.mark.parametrize("render_guard", [True, False])
    @pytest.mark.parametrize("weights", ["camelyon", "least_squares"])
    def test_chunked_path_equals_dense_path(self, tiles, bank_images, weights, render_guard):
        """The CPU path (chunks, only what is needed encoded) and the dense one (parameters on the device, or
        under torch.compile) render the same, with the guard on and off."""
        from contrimix_aug.functional import _render_dense

        if weights == "least_squares":  # the chunked path reuses the content of the rows it solved
            model = ca.ContriMixModel(ca.ModelConfig(num_attributes=3, content_hidden=4, attributes="least_squares"))
            model = model.freeze()
        else:
            model = ca.load_model(weights)
        bank = compute_bank(model, bank_images)
        b = tiles.shape[0]
        sel = torch.arange(b) % 3 != 1
        fb = torch.arange(b) % 2 == 0
        donors = torch.where(fb, torch.arange(b) % bank.shape[0], torch.roll(torch.arange(b), 1))
        strength = torch.linspace(0.3, 1.0, b)
        p = MixParams(sel, donors, fb, strength)
        chunked = apply_contrimix(model, tiles, p, bank=bank, render_guard=render_guard)
        guard = render_guard and model.config.mode == "absorbance"
        dense = _render_dense(model, tiles, donors, strength, sel, fb, bank, None, guard)
        torch.testing.assert_close(chunked, dense, atol=1e-5, rtol=1e-5)
        assert torch.equal(chunked[~sel], tiles[~sel])
        other = apply_contrimix(model, tiles, p, bank=bank, render_guard=not render_guard)
        assert not torch.equal(other[sel], chunked[sel])  # the guard changes the render of these real tiles

    def test_directional_derivative_with_the_guard(self, handset, far_pair):
        """Gradients flow through the guard (to the render and to the source's optical density it reads)."""
        aug = ContriMix(weights=handset, p=1.0, strength=0.7, seed=0).to(torch.float64)  # fp64: a small step
        x0 = (0.1 + 0.8 * far_pair).double()
        x = x0.clone().requires_grad_(True)
        out = aug(x)
        raw = ContriMix(weights=handset, p=1.0, strength=0.7, seed=0, render_guard=False).to(torch.float64)(x0)
        assert float((out.detach() - raw).abs().max()) > 0.01  # the guard changes this render
        w = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).view_as(out)
        (out * w).sum().backward()
        assert bool(torch.isfinite(x.grad).all())
        v = 0.1 * (far_pair - far_pair.mean()).double()
        eps = 1e-6  # the guard has kinks (the cap, the edges of the glass band): a small step stays off them
        with torch.no_grad():
            fd = ((aug(x0 + eps * v, params=aug.params) * w).sum()
                  - (aug(x0 - eps * v, params=aug.params) * w).sum()) / (2 * eps)
        assert abs(float(fd)) > 1.0
        torch.testing.assert_close((x.grad * v).sum(), fd, rtol=1e-4, atol=1e-4)

    def test_linear_mode_is_unaffected(self):
        """Fluorescence (linear-mode) weights render the same with and without the guard."""
        from contrimix_aug.data import load_demo_tiles

        t, _ = load_demo_tiles(modality="fluorescence")
        x = torch.from_numpy(t).permute(0, 3, 1, 2).float() / 255
        aug = ContriMix(weights="fluorescence", p=1.0, seed=0)
        assert aug.model.config.mode == "linear"
        out = aug(x)
        assert torch.equal(out, ContriMix(weights="fluorescence", p=1.0, seed=0, render_guard=False)(x))
        assert torch.equal(ContriMixNormalize(weights="fluorescence")(x),
                           ContriMixNormalize(weights="fluorescence", render_guard=False)(x))

    def test_normalize_applies_it(self, demo):
        from contrimix_aug.functional import normalize
        from contrimix_aug.optical_density import RENDER_OD_MAX

        norm = ContriMixNormalize(weights="camelyon")
        raw_norm = ContriMixNormalize(weights="camelyon", render_guard=False)
        out, raw = norm(demo), raw_norm(demo)
        assert torch.equal(out, normalize(norm.model, demo, norm.target, render_guard=True))
        assert torch.equal(raw, normalize(norm.model, demo, norm.target, render_guard=False))
        white = _near_white(demo)
        assert float((out - demo).abs()[white].max()) < 1e-4 < float((raw - demo).abs()[white].max())
        assert float(rgb_to_od(out).amax()) <= RENDER_OD_MAX + 1e-4 < float(rgb_to_od(raw).amax())
        assert _tissue_shift(demo, out) > 0.85 * _tissue_shift(demo, raw)
        # normalised tissue: the spread of mean colours over the two labs' tiles shrinks, as without the guard
        assert float(mean_od(out).std(0).sum()) < 0.5 * float(mean_od(demo).std(0).sum())

    def test_kornia_sequential_applies_it(self, demo):
        from contrimix_aug.optical_density import RENDER_OD_MAX

        masks = (rgb_to_od(demo).mean(1, keepdim=True) > 0.3).float()
        seq = K.AugmentationSequential(K.RandomHorizontalFlip(p=1.0), ContriMix(weights="camelyon", p=1.0, seed=0),
                                       data_keys=["input", "mask"])
        img, m_out = seq(demo, masks)
        assert torch.equal(m_out, masks.flip(-1))
        cm = seq[1]
        assert cm.render_guard is True
        flipped = demo.flip(-1)
        params = MixParams.from_dict(cm.params)
        assert torch.equal(img, apply_contrimix(cm.model, flipped, params, render_guard=True))
        raw = apply_contrimix(cm.model, flipped, params, render_guard=False)
        assert float(rgb_to_od(img).amax()) <= RENDER_OD_MAX + 1e-4 < float(rgb_to_od(raw).amax())
        white = _near_white(flipped)
        assert float((img - flipped).abs()[white].max()) < 1e-4

    def test_flag_checked_and_shown(self, tiny):
        with pytest.raises(TypeError, match="render_guard"):
            ContriMix(weights=tiny, render_guard="yes")
        with pytest.raises(TypeError, match="render_guard"):
            ContriMixNormalize(weights="camelyon", render_guard=1)
        assert "render_guard" not in repr(ContriMix(weights=tiny))
        assert ", render_guard=False" in repr(ContriMix(weights=tiny, render_guard=False))
        assert ", render_guard=False" in repr(ContriMixNormalize(weights="camelyon", render_guard=False))
        with pytest.raises(TypeError, match="render_guard"):
            apply_contrimix(tiny, torch.rand(2, 3, 16, 16), _fixed_params(2), render_guard=None)


def test_padding_moves_the_colours_of_the_tissue_next_to_it_mirroring_least():
    """README: a tile is re-rendered as a whole, so padding changes the tissue's colours; on the bundled tiles (right
    half replaced, same draws) black padding moves the left part most (0.19), white 0.11, mirrored tissue 0.03."""
    from contrimix_aug.data import load_demo_tiles

    tiles, _ = load_demo_tiles()
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    aug = ContriMix(weights="camelyon", p=1.0, seed=0)
    y0 = aug(x)
    moved = {}
    for name, fill in (("black", 0.0), ("white", 1.0), ("mirror", x[..., :48].flip(-1))):
        xp = x.clone()
        xp[..., 48:] = fill
        y = ContriMix(weights="camelyon", p=1.0, seed=0)(xp, params=aug.params)
        moved[name] = round(float((y[..., :40] - y0[..., :40]).abs().mean()), 2)
    assert moved == {"black": 0.19, "white": 0.11, "mirror": 0.03}
