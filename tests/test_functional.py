"""The functional core (contrimix, apply_contrimix, normalize, mix, render_views) on real H&E tiles.

``handset`` is a model with hand-set weights whose re-rendering provably transfers colour: content is the
per-channel standardised optical density (plus a constant channel) and the attributes are the per-image mean
OD μ and ±κ·μ, so an image rendered with donor attributes gets the donor's mean OD exactly and keeps its own
OD pattern. (Same construction as in test_transform.py, kept local so each file stands alone.)
"""

from __future__ import annotations

import pytest
import torch

import contrimix_aug as ca
from contrimix_aug import functional as F
from contrimix_aug.bank import compute_bank
from contrimix_aug.mixing import MixParams, sample_mix_params
from contrimix_aug.optical_density import rgb_to_od
from helpers import count_calls as _count_calls, make_tiny_model

H, W = 40, 48


def mean_od(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_od(x.float()).mean((-2, -1))


@pytest.fixture(scope="module")
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    t = real_tiles[..., :H, :W].contiguous()
    assert t.shape[0] >= 4 and t.shape[-2:] == (H, W), f"need >= 4 real tiles of >= {H}x{W} px"
    return t


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def params(donors: torch.Tensor, strength: torch.Tensor, selected: torch.Tensor | None = None,
           from_bank: torch.Tensor | None = None) -> MixParams:
    """A MixParams record from explicit (B,) tensors (every image selected, batch donors by default)."""
    b = donors.shape[0]
    return MixParams(torch.ones(b, dtype=torch.bool) if selected is None else selected, donors,
                     torch.zeros(b, dtype=torch.bool) if from_bank is None else from_bank, strength)


class TestMix:
    @pytest.mark.parametrize("num_mixes", [0, 1, 3])
    def test_shape_and_self_reconstruction_first(self, tiny, tiles, num_mixes):
        b = tiles.shape[0]
        out = F.mix(tiny, tiles, num_mixes=num_mixes, generator=gen())
        assert out.shape == ((num_mixes + 1) * b, 3, H, W) and out.dtype == tiles.dtype
        torch.testing.assert_close(out[:b], tiny(tiles), atol=1e-6, rtol=1e-6)

    def test_mixes_take_other_images_colours(self, handset, tiles):
        b, m = tiles.shape[0], 3
        out = F.mix(handset, tiles, num_mixes=m, generator=gen())
        mu = mean_od(tiles)
        torch.testing.assert_close(mean_od(out[:b]), mu, atol=5e-3, rtol=2e-2)
        for j in range(1, m + 1):
            mu_mix = mean_od(out[j * b : (j + 1) * b])
            dist = torch.cdist(mu_mix, mu)  # (B, B): row i = distance of mix i to every source colour
            donor = dist.argmin(1)
            assert bool((donor != torch.arange(b)).all()), "a mix kept its own colour"
            assert bool((dist.gather(1, donor[:, None]) < 5e-3 + 2e-2 * mu.norm(dim=1, keepdim=True)).all())

    def test_strength_half(self, handset, tiles):
        b = tiles.shape[0]
        full = F.mix(handset, tiles, num_mixes=1, generator=gen(3))
        half = F.mix(handset, tiles, num_mixes=1, generator=gen(3), strength=0.5)
        mu = mean_od(tiles)
        torch.testing.assert_close(mean_od(half[b:]), 0.5 * mu + 0.5 * mean_od(full[b:]), atol=5e-3, rtol=2e-2)

    def test_reproducible_and_seed_dependent(self, tiny, tiles):
        a = F.mix(tiny, tiles, num_mixes=2, generator=gen(1))
        b = F.mix(tiny, tiles, num_mixes=2, generator=gen(1))
        c = F.mix(tiny, tiles, num_mixes=2, generator=gen(2))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_generator_keeps_global_rng(self, tiny, tiles):
        state = torch.get_rng_state()
        F.mix(tiny, tiles, num_mixes=2, generator=gen())
        assert torch.equal(state, torch.get_rng_state())

    def test_one_encode_for_the_whole_batch(self, tiles):
        model = make_tiny_model()
        calls = _count_calls(model)
        F.mix(model, tiles, num_mixes=4, generator=gen())
        assert calls == {"content": [tiles.shape[0]], "attributes": [tiles.shape[0]]}

    def test_functional_api_checks_its_inputs_as_the_transform_does(self, tiny, tiles):
        """contrimix / apply_contrimix / normalize refuse 0-255 and integer images with the fix, validate p and
        strength, clamp a tiny overshoot, and refuse params that index past a smaller bank."""
        target = tiny.bank[0] if tiny.bank.numel() else torch.zeros(3, tiny.config.num_attributes)
        p_all = sample_mix_params(tiles.shape[0], donors="batch", generator=gen())
        for call in (lambda x: F.contrimix(tiny, x, generator=gen()), lambda x: F.apply_contrimix(tiny, x, p_all),
                     lambda x: F.normalize(tiny, x, target)):
            with pytest.raises(ValueError, match="divide by 255"):
                call(tiles * 255)
            with pytest.raises(TypeError, match="uint8"):
                call((tiles * 255).to(torch.uint8))
            assert call(tiles * 1.005).amax() <= 1  # a resize's overshoot is clamped, as in ContriMix
        with pytest.raises(ValueError, match="probability"):
            F.contrimix(tiny, tiles, p=7, generator=gen())
        with pytest.raises(ValueError, match="low <= high <= 1"):
            F.contrimix(tiny, tiles, strength=(1.5, 2.0), generator=gen())
        assert torch.equal(F.contrimix(tiny, tiles, strength=0.5, generator=gen(1)),
                           F.contrimix(tiny, tiles, strength=(0.5, 0.5), generator=gen(1)))
        bank = torch.randn(6, 3, tiny.config.num_attributes)
        b = tiles.shape[0]
        from_entry_5 = params(torch.full((b,), 5), torch.ones(b), from_bank=torch.ones(b, dtype=torch.bool))
        assert F.apply_contrimix(tiny, tiles, from_entry_5, bank=bank).shape == tiles.shape
        with pytest.raises(ValueError, match="donor 5 of a bank of 2 entries; replay params with the bank"):
            F.apply_contrimix(tiny, tiles, from_entry_5, bank=bank[:2])

    def test_errors(self, tiny, tiles):
        with pytest.raises(ValueError, match="batch of one"):
            F.mix(tiny, tiles[:1], num_mixes=1, generator=gen())
        with pytest.raises(ValueError, match="divide by 255"):
            F.mix(tiny, tiles * 255, num_mixes=1)
        with pytest.raises(TypeError, match="uint8"):
            F.mix(tiny, (tiles * 255).to(torch.uint8), num_mixes=1)
        with pytest.raises(ValueError, match="3 channel"):
            F.mix(tiny, tiles[:, :1], num_mixes=1)


class TestApplyContrimix:
    def test_module_matches_functional(self, tiny, tiles):
        aug = ca.ContriMix(weights=tiny, p=0.6, strength=(0.3, 1.0), seed=0)
        out = aug(tiles)
        assert torch.equal(out, F.apply_contrimix(aug.model, tiles, MixParams.from_dict(aug.params)))

    def test_unselected_rows_untouched_and_sparse_equals_dense(self, tiny, tiles):
        b = tiles.shape[0]
        donors = torch.roll(torch.arange(b), 1)
        strength = torch.ones(b)
        sel = torch.arange(b) % 3 == 0
        part = F.apply_contrimix(tiny, tiles, params(donors, strength, selected=sel))
        full = F.apply_contrimix(tiny, tiles, params(donors, strength))
        assert torch.equal(part[~sel], tiles[~sel])
        torch.testing.assert_close(part[sel], full[sel], atol=1e-5, rtol=1e-5)
        none = F.apply_contrimix(tiny, tiles, params(donors, strength, selected=torch.zeros(b, dtype=torch.bool)))
        assert torch.equal(none, tiles)

    def test_sparse_path_encodes_only_what_it_needs(self, tiles):
        model = make_tiny_model()
        calls = _count_calls(model)
        b = tiles.shape[0]
        sel = torch.zeros(b, dtype=torch.bool)
        sel[0] = True
        donors = torch.full((b,), 2)
        F.apply_contrimix(model, tiles, params(donors, torch.ones(b), selected=sel))
        assert calls == {"content": [1], "attributes": [1]}  # image 0's content; at α = 1 only donor 2's attributes
        calls["content"].clear()
        calls["attributes"].clear()
        F.apply_contrimix(model, tiles, params(donors, torch.full((b,), 0.5), selected=sel))
        assert calls == {"content": [1], "attributes": [2]}  # at α < 1 image 0's own attributes too

    def test_colour_transfer(self, handset, tiles):
        b = tiles.shape[0]
        donors = torch.roll(torch.arange(b), 1)
        out = F.apply_contrimix(handset, tiles, params(donors, torch.ones(b)), render_guard=False)
        torch.testing.assert_close(mean_od(out), mean_od(tiles)[donors], atol=5e-3, rtol=2e-2)

    def test_bank_donors(self, handset, tiles):
        b = tiles.shape[0]
        bank = compute_bank(handset, tiles[:2])
        from_bank = torch.arange(b) % 2 == 0
        donors = torch.where(from_bank, torch.arange(b) % 2, torch.roll(torch.arange(b), 1))
        out = F.apply_contrimix(handset, tiles, params(donors, torch.ones(b), from_bank=from_bank), bank=bank,
                                render_guard=False)
        want = torch.where(from_bank[:, None], mean_od(tiles[:2])[donors % 2], mean_od(tiles)[donors])
        torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)

    def test_default_bank_is_the_models(self, handset, tiles):
        b = tiles.shape[0]
        model = ca.ContriMixModel(handset.config, bank=compute_bank(handset, tiles[:2]))
        model.load_state_dict(handset.state_dict())
        p = params(torch.arange(b) % 2, torch.ones(b), from_bank=torch.ones(b, dtype=torch.bool))
        torch.testing.assert_close(F.apply_contrimix(model.freeze(), tiles, p),
                                   F.apply_contrimix(handset, tiles, p, bank=model.bank))

    def test_errors(self, tiny, tiles):
        b = tiles.shape[0]
        with pytest.raises(ValueError, match="params were drawn for a batch of 3"):
            F.apply_contrimix(tiny, tiles, params(torch.tensor([1, 2, 0]), torch.ones(3)))
        with pytest.raises(ValueError, match="donors from a bank, and there is none"):
            F.apply_contrimix(tiny, tiles, params(torch.zeros(b, dtype=torch.long), torch.ones(b),
                                                  from_bank=torch.ones(b, dtype=torch.bool)))

    def test_draws_no_random_numbers(self, tiny, tiles):
        state = torch.get_rng_state()
        b = tiles.shape[0]
        F.apply_contrimix(tiny, tiles, params(torch.roll(torch.arange(b), 1), torch.rand(b, generator=gen())))
        assert torch.equal(state, torch.get_rng_state())

    def test_channels_last_in_channels_last_out(self, tiny, tiles):
        b = tiles.shape[0]
        x = tiles.contiguous(memory_format=torch.channels_last)
        donors = torch.roll(torch.arange(b), 1)
        for sel in (None, torch.arange(b) % 2 == 0):
            out = F.apply_contrimix(tiny, x, params(donors, torch.ones(b), selected=sel))
            assert out.is_contiguous(memory_format=torch.channels_last)


class TestContrimix:
    """``contrimix()``: sample_mix_params + apply_contrimix in one call (the functional ContriMix)."""

    @pytest.mark.parametrize("donors", ["batch", "bank", "both", "sampled"])
    def test_equals_draw_then_apply(self, handset, tiles, donors):
        bank = compute_bank(handset, tiles[-3:])
        out = F.contrimix(handset, tiles, p=0.7, strength=(0.4, 1.0), donors=donors, bank=bank, generator=gen(9))
        p = sample_mix_params(tiles.shape[0], p=0.7, strength=(0.4, 1.0), donors=donors, bank=bank,
                              generator=gen(9))
        assert torch.equal(out, F.apply_contrimix(handset, tiles, p, bank=bank))
        assert not torch.equal(out, tiles)

    def test_both_draws_batch_and_bank_donors_and_transfers_colour(self, handset, tiles):
        bank = compute_bank(handset, tiles[-2:])
        g = gen(4)
        seen = set()
        for _ in range(6):
            state = g.get_state()
            out = F.contrimix(handset, tiles, donors="both", bank=bank, generator=g, render_guard=False)
            probe = torch.Generator()
            probe.set_state(state)
            p = sample_mix_params(tiles.shape[0], donors="both", bank_size=2, generator=probe)
            seen |= set(p.from_bank.tolist())
            want = torch.where(p.from_bank[:, None], mean_od(tiles[-2:])[p.donors.clamp(max=1)],
                               mean_od(tiles)[p.donors.clamp(max=tiles.shape[0] - 1)])
            torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)
        assert seen == {True, False}

    def test_single_image_uses_the_models_bank(self, handset, tiles):
        model = ca.ContriMixModel(handset.config, bank=compute_bank(handset, tiles[-2:]))
        model.load_state_dict(handset.state_dict())
        out = F.contrimix(model.freeze(), tiles[:1], generator=gen(), render_guard=False)
        d = mean_od(tiles[-2:])
        assert min(float((mean_od(out)[0] - d[i]).norm()) for i in range(2)) < 5e-3 + 2e-2 * float(d.norm(dim=1).max())
        with pytest.raises(ValueError, match="no other image"):
            F.contrimix(handset, tiles[:1], generator=gen())


@pytest.fixture(scope="module")
def camelyon():
    """The bundled ``camelyon`` weights (attribute bank of real crops of 26 H&E labs)."""
    return ca.load_model("camelyon")


class TestSampledDonors:
    """``donors="sampled"``: new attribute matrices around the bank, carried in ``MixParams.donor_attributes``."""

    def test_explicit_donor_attributes_transfer_colour(self, handset, tiles):
        """The hand-set model's last attribute column is the mean OD: a render takes its donor matrix's exactly."""
        bank = compute_bank(handset, tiles)
        # spread 0.7 < 1/κ: inside the bank's hull, so every mean OD is a blend of the tiles' (positive) ones
        p = sample_mix_params(tiles.shape[0], donors="sampled", bank=bank, spread=0.7, generator=gen(1))
        # no bank needed: the matrices travel in the params
        out = F.apply_contrimix(handset, tiles, p, render_guard=False)
        torch.testing.assert_close(mean_od(out), p.donor_attributes[:, :, -1], atol=5e-3, rtol=2e-2)
        # new colours: not the colour of any tile the bank was made from
        d = torch.cdist(mean_od(out), mean_od(tiles)).min(1).values
        assert float(d.min()) > 1e-3

    def test_spread_zero_renders_the_bank_centre_like_normalize(self, camelyon, tiles):
        out = F.contrimix(camelyon, tiles, donors="sampled", spread=0.0, generator=gen(2))
        torch.testing.assert_close(out, F.normalize(camelyon, tiles, camelyon.bank.mean(0)), atol=1e-6, rtol=0)

    def test_reproducible_seed_dependent_and_single_image(self, camelyon, tiles):
        a = F.contrimix(camelyon, tiles, donors="sampled", spread=1.2, generator=gen(3))
        assert torch.equal(a, F.contrimix(camelyon, tiles, donors="sampled", spread=1.2, generator=gen(3)))
        assert not torch.equal(a, F.contrimix(camelyon, tiles, donors="sampled", spread=1.2, generator=gen(4)))
        one = F.contrimix(camelyon, tiles[:1], donors="sampled", generator=gen(5))  # a batch of one: only the bank
        assert one.shape == tiles[:1].shape and float((one - tiles[:1]).abs().mean()) > 1e-3

    def test_sparse_path_encodes_no_donor(self, tiles):
        model = make_tiny_model()
        calls = _count_calls(model)
        b = tiles.shape[0]
        bank = compute_bank(model, tiles[:3])
        calls["content"].clear()
        calls["attributes"].clear()
        p = sample_mix_params(b, donors="sampled", bank=bank, generator=gen())
        sel = torch.zeros(b, dtype=torch.bool)
        sel[1] = True
        F.apply_contrimix(model, tiles, MixParams(sel, p.donors, p.from_bank, p.strength, p.donor_attributes))
        assert calls == {"content": [1], "attributes": []}  # image 1's content; no donor image to encode

    def test_partial_selection_and_strength(self, handset, tiles):
        bank = compute_bank(handset, tiles)
        p = sample_mix_params(tiles.shape[0], p=0.5, strength=(0.5, 0.5), donors="sampled", bank=bank,
                              generator=gen(6))
        out = F.apply_contrimix(handset, tiles, p, render_guard=False)
        sel = p.selected
        assert bool(sel.any()) and not bool(sel.all())
        assert torch.equal(out[~sel], tiles[~sel])
        want = 0.5 * mean_od(tiles[sel]) + 0.5 * p.donor_attributes[sel][:, :, -1]
        torch.testing.assert_close(mean_od(out[sel]), want, atol=5e-3, rtol=2e-2)

    def test_errors(self, camelyon, tiny, tiles):
        with pytest.raises(ValueError, match=r"donors='sampled' draws new attribute matrices.*pass bank="):
            F.contrimix(tiny, tiles, donors="sampled", generator=gen())
        with pytest.raises(ValueError, match=">= 0"):
            F.contrimix(camelyon, tiles, donors="sampled", spread=-1.0, generator=gen())
        p = sample_mix_params(tiles.shape[0], donors="sampled", bank=camelyon.bank, generator=gen())
        with pytest.raises(ValueError, match="donors of -1 mark sampled donors.*no donor_attributes"):
            F.apply_contrimix(camelyon, tiles, MixParams(p.selected, p.donors, p.from_bank, p.strength))


class TestRenderViews:
    def test_views_are_decode_signal_per_view(self, tiny, tiles):
        with torch.no_grad():
            content, attrs = tiny.encode(tiles)
            stack = torch.stack([attrs, attrs.roll(1, 0), attrs.roll(2, 0)])  # (V, B, C, K)
            views = F.render_views(tiny, content, stack)
            assert views.shape == (3, *tiles.shape)
            for v in range(3):
                torch.testing.assert_close(views[v], tiny.decode_signal(content, stack[v]))
            torch.testing.assert_close(tiny.signal_to_image(views[0]), tiny(tiles))

    def test_gradients_flow(self, tiles, tiny_config):
        model = ca.ContriMixModel(tiny_config)
        content, attrs = model.encode(tiles)
        F.render_views(model, content, torch.stack([attrs, attrs.flip(0)])).square().mean().backward()
        assert model.content_encoder.conv_in.weight.grad.abs().sum() > 0
        assert model.attribute_encoder.stem.weight.grad.abs().sum() > 0


class TestNormalize:
    def test_normalize_to_reference(self, handset, tiles):
        target = compute_bank(handset, tiles[:1])[0]
        out = F.normalize(handset, tiles, target, render_guard=False)
        want = mean_od(tiles[:1]).expand(tiles.shape[0], -1)
        torch.testing.assert_close(mean_od(out), want, atol=5e-3, rtol=2e-2)
        assert torch.equal(out, F.normalize(handset, tiles, target, render_guard=False))

    def test_target_shape_checked(self, handset, tiles):
        with pytest.raises(ValueError, match="target must be a \\(3, 7\\) attribute matrix"):
            F.normalize(handset, tiles, torch.zeros(3, 4))


class TestRenderGuard:
    """``render_guard`` (default True) in the functional API: the render's optical density goes through
    :func:`~contrimix_aug.optical_density.limit_render` against the rendered image's own, in absorbance mode."""

    @staticmethod
    def by_definition(model, x, mixed):
        from contrimix_aug.optical_density import limit_render

        with torch.no_grad():
            content, _ = model.encode(x)
            signal = model.decode_signal(content, mixed)
            return model.signal_to_image(limit_render(signal, model.image_to_signal(x)))

    @pytest.mark.parametrize("donors", ["batch", "bank", "sampled"])
    def test_contrimix_is_limit_render_of_the_unguarded_signal(self, camelyon, tiles, donors):
        from contrimix_aug.mixing import gather_attributes, mix_attributes

        p = sample_mix_params(tiles.shape[0], strength=(0.5, 1.0), donors=donors, bank=camelyon.bank,
                              generator=gen(7))
        out = F.contrimix(camelyon, tiles, strength=(0.5, 1.0), donors=donors, generator=gen(7))
        assert torch.equal(out, F.apply_contrimix(camelyon, tiles, p))
        with torch.no_grad():
            attrs = camelyon.encode_attributes(tiles)
        donor = (p.donor_attributes if p.donor_attributes is not None
                 else gather_attributes(attrs, p.donors, camelyon.bank, p.from_bank))
        want = self.by_definition(camelyon, tiles, mix_attributes(attrs, donor, p.strength))
        torch.testing.assert_close(out, want, atol=2e-5, rtol=0)
        raw = F.contrimix(camelyon, tiles, strength=(0.5, 1.0), donors=donors, generator=gen(7), render_guard=False)
        assert float((raw - out).abs().max()) > 0.05  # real tiles: the guard has glass and dark pixels to act on

    def test_normalize_default_is_guarded(self, camelyon, tiles):
        target = camelyon.bank.mean(0)
        out = F.normalize(camelyon, tiles, target)
        want = self.by_definition(camelyon, tiles, target.expand(tiles.shape[0], -1, -1))
        torch.testing.assert_close(out, want, atol=2e-5, rtol=0)
        assert not torch.equal(out, F.normalize(camelyon, tiles, target, render_guard=False))

    def test_training_expansion_stays_unguarded(self, camelyon, tiles):
        """mix / render_views feed the training loss: the authors' render, self-reconstruction first."""
        b = tiles.shape[0]
        out = F.mix(camelyon, tiles, num_mixes=1, generator=gen())
        with torch.no_grad():
            rec = camelyon(tiles)
        torch.testing.assert_close(out[:b], rec, atol=1e-6, rtol=1e-6)
        guarded_self = F.contrimix(camelyon, tiles, strength=(0.0, 0.0), generator=gen())
        assert not torch.equal(guarded_self, F.contrimix(camelyon, tiles, strength=(0.0, 0.0), generator=gen(),
                                                         render_guard=False))

    def test_flag_must_be_a_bool(self, camelyon, tiles):
        with pytest.raises(TypeError, match="render_guard"):
            F.contrimix(camelyon, tiles, generator=gen(), render_guard="off")
        with pytest.raises(TypeError, match="render_guard"):
            F.normalize(camelyon, tiles, camelyon.bank.mean(0), render_guard=0)
