"""Donor sampling, the donor policy of :func:`sample_mix_params`, the :class:`MixParams` record and attribute
mixing: explicit generators only, never the global RNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrimix_aug.mixing import (
    DONOR_MODES,
    SAMPLED_ENTRIES,
    MixParams,
    check_spread,
    gather_attributes,
    mix_attributes,
    sample_bank_attributes,
    sample_donors,
    sampled_reach,
    sample_mix_params,
    sample_strength,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def camelyon_bank() -> torch.Tensor:
    """The attribute bank of the bundled ``camelyon`` weights: (N, 3, 8) attributes of real crops of 26 H&E labs."""
    from contrimix_aug import load_model

    return load_model("camelyon").bank.float().clone()


def in_scaled_hull(z: torch.Tensor, bank: torch.Tensor, spread: float, tol: float = 1e-5) -> torch.Tensor:
    """(n,) bool: whether each z lies in c + spread·(hull(bank) − c), c the bank mean, by the support function.

    A point of that region satisfies u·(z − c) <= spread·max_j u·(b_j − c) for every direction u; checked on the
    coordinate axes (both signs), 256 random directions and each sample's own direction z − c (where a point
    outside is most often caught). Necessary for membership; with these directions a practical test of it.
    """
    c = bank.mean(0).flatten().double()
    b = bank.flatten(1).double() - c
    d = z.flatten(1).double() - c
    eye = torch.eye(b.shape[1], dtype=torch.float64)
    rand = torch.randn(256, b.shape[1], generator=gen(123), dtype=torch.float64)
    own = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = torch.cat([eye, -eye, rand / rand.norm(dim=1, keepdim=True), own])  # (U, D)
    support = (u @ b.T).amax(1)  # (U,) max_j u·(b_j − c)
    return ((d @ u.T) <= spread * support + tol * (1 + support.abs())).all(1)


class TestSampleDonors:
    @settings(max_examples=50, deadline=None)
    @given(b=st.integers(2, 40), m=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
    def test_never_self_and_in_range(self, b: int, m: int, seed: int) -> None:
        d = sample_donors(b, m, generator=gen(seed))
        assert d.shape == (m, b) and d.dtype == torch.long
        assert (d >= 0).all() and (d < b).all()
        assert (d != torch.arange(b)).all()

    def test_batch_of_two_swaps(self) -> None:
        assert torch.equal(sample_donors(2, 5, generator=gen()), torch.tensor([[1, 0]] * 5))

    def test_uniform_over_the_others(self) -> None:
        b, m = 5, 20000
        d = sample_donors(b, m, generator=gen(7))
        counts = torch.zeros(b, b)
        counts.index_put_((torch.arange(b).expand(m, b).reshape(-1), d.reshape(-1)), torch.ones(m * b), accumulate=True)
        assert counts.diagonal().sum() == 0
        expected = m / (b - 1)
        off = counts[~torch.eye(b, dtype=torch.bool)]
        chi2 = float(((off - expected) ** 2 / expected).sum())
        # b·(b-2) = 15 degrees of freedom: 99.99 % quantile ≈ 44; a biased sampler lands in the hundreds
        assert chi2 < 50, chi2

    def test_include_self_is_uniform_over_all(self) -> None:
        b, m = 4, 20000
        d = sample_donors(b, m, generator=gen(8), exclude_self=False)
        assert (d == torch.arange(b)).any()
        counts = torch.stack([torch.bincount(d[:, i], minlength=b) for i in range(b)]).float()
        expected = m / b
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 50, chi2  # 12 dof

    def test_deterministic_with_seeded_generator(self) -> None:
        a = sample_donors(16, 3, generator=gen(42))
        b = sample_donors(16, 3, generator=gen(42))
        c = sample_donors(16, 3, generator=gen(43))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_global_rng_untouched(self) -> None:
        state = torch.get_rng_state()
        g = gen(1)
        sample_donors(8, 4, generator=g)
        sample_donors(8, 4, generator=g, exclude_self=False)
        sample_mix_params(8, p=0.5, strength=(0.2, 0.9), donors="bank", bank_size=10, generator=g)
        sample_mix_params(8, donors="both", bank_size=10, generator=g)
        sample_strength(8, 0.2, 0.9, generator=g)
        assert torch.equal(torch.get_rng_state(), state)

    def test_generator_advances(self) -> None:
        g = gen(2)
        first = sample_donors(32, 1, generator=g)
        second = sample_donors(32, 1, generator=g)
        assert not torch.equal(first, second)

    @pytest.mark.parametrize("b, m", [(0, 1), (3, -1)])
    def test_bad_sizes(self, b: int, m: int) -> None:
        with pytest.raises(ValueError, match="batch_size"):
            sample_donors(b, m, generator=gen())

    def test_batch_of_one_needs_a_bank(self) -> None:
        with pytest.raises(ValueError, match="bank"):
            sample_donors(1, 1, generator=gen())
        assert torch.equal(
            sample_donors(1, 3, generator=gen(), exclude_self=False), torch.zeros(3, 1, dtype=torch.long)
        )


class TestBankDonors:
    """Bank donors are drawn by sample_mix_params(donors="bank") (the old sample_bank_donors is gone)."""

    def test_range_shape_deterministic(self) -> None:
        p = sample_mix_params(5, donors="bank", bank_size=7, generator=gen(3))
        d = p.donors
        assert d.shape == (5,) and d.dtype == torch.long and (d >= 0).all() and (d < 7).all()
        assert bool(p.from_bank.all())
        assert torch.equal(d, sample_mix_params(5, donors="bank", bank_size=7, generator=gen(3)).donors)

    def test_uniform(self) -> None:
        g = gen(4)
        d = torch.cat([sample_mix_params(1000, donors="bank", bank_size=6, generator=g).donors for _ in range(12)])
        counts = torch.bincount(d, minlength=6).float()
        expected = d.numel() / 6
        assert float(((counts - expected) ** 2 / expected).sum()) < 35  # 5 dof

    def test_empty_bank(self) -> None:
        with pytest.raises(ValueError, match="donors='bank' needs an attribute bank"):
            sample_mix_params(4, donors="bank", bank_size=0, generator=gen())


class TestStrength:
    @settings(max_examples=40, deadline=None)
    @given(lo=st.floats(0, 1), width=st.floats(0, 1), b=st.integers(1, 64), seed=st.integers(0, 2**31 - 1))
    def test_in_range(self, lo: float, width: float, b: int, seed: int) -> None:
        hi = min(1.0, lo + width)
        a = sample_strength(b, lo, hi, generator=gen(seed))
        assert a.shape == (b,)
        assert (a >= lo - 1e-6).all() and (a <= hi + 1e-6).all()

    def test_spread(self) -> None:
        a = sample_strength(4000, 0.25, 0.75, generator=gen(5))
        assert abs(float(a.mean()) - 0.5) < 0.02 and float(a.min()) < 0.27 and float(a.max()) > 0.73

    def test_fixed_strength_draws_nothing(self) -> None:
        g = gen(6)
        before = g.get_state()
        a = sample_strength(5, 0.4, 0.4, generator=g)
        assert torch.equal(a, torch.full((5,), 0.4))
        assert torch.equal(g.get_state(), before)


class TestMixAttributes:
    def test_endpoints_and_midpoint(self, real_tiles: torch.Tensor) -> None:
        # real-image derived attribute matrices: mean OD per channel, a stand-in stain vector
        from contrimix_aug.optical_density import rgb_to_od

        od = rgb_to_od(real_tiles)
        own = torch.stack([od.mean((2, 3)), od.std((2, 3))], dim=-1)  # (N, 3, 2)
        donor = own.roll(1, 0)
        n = own.shape[0]
        assert torch.equal(mix_attributes(own, donor, torch.zeros(n)), own)
        assert torch.equal(mix_attributes(own, donor, torch.ones(n)), donor)
        torch.testing.assert_close(mix_attributes(own, donor, torch.full((n,), 0.5)), (own + donor) / 2)

    def test_per_sample_strength(self) -> None:
        own = torch.zeros(3, 2, 4)
        donor = torch.ones(3, 2, 4)
        out = mix_attributes(own, donor, torch.tensor([0.0, 0.25, 1.0]))
        torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.25, 1.0]))
        assert (out == out[:, :1, :1]).all()

    def test_dtype_follows_attributes(self) -> None:
        own = torch.zeros(2, 3, 4, dtype=torch.float64)
        out = mix_attributes(own, torch.ones(2, 3, 4), torch.tensor([0.5, 0.5]))
        assert out.dtype == torch.float64


class TestGather:
    def test_batch_only(self) -> None:
        attrs = torch.arange(4 * 3 * 2, dtype=torch.float32).view(4, 3, 2)
        d = torch.tensor([1, 0, 3, 2])
        assert torch.equal(gather_attributes(attrs, d), attrs[d])

    def test_bank_donors(self) -> None:
        attrs = torch.arange(3 * 3 * 2, dtype=torch.float32).view(3, 3, 2)
        bank = -torch.arange(1, 6 * 3 * 2 + 1, dtype=torch.float32).view(6, 3, 2)
        donors = torch.tensor([5, 0, 4])  # bank index 5 > batch size: must not be clamped for bank rows
        from_bank = torch.tensor([True, False, True])
        out = gather_attributes(attrs, donors, bank, from_bank)
        assert torch.equal(out[0], bank[5]) and torch.equal(out[1], attrs[0]) and torch.equal(out[2], bank[4])

    def test_bank_dtype_follows_attributes(self) -> None:
        attrs = torch.zeros(2, 3, 2, dtype=torch.float64)
        bank = torch.ones(4, 3, 2)
        out = gather_attributes(attrs, torch.tensor([3, 1]), bank, torch.tensor([True, False]))
        assert out.dtype == torch.float64 and out[0].eq(1).all() and out[1].eq(0).all()


# ---------------------------------------------------------------------------------------------------------------
# the donor policy: one table, one function
# ---------------------------------------------------------------------------------------------------------------
POLICY = [
    # (batch size, donors, bank size) -> where the donors come from ("batch", "bank", "mixed") or the error
    (4, "batch", 0, "batch"),
    (4, "batch", 5, "batch"),  # a bank does not change batch donors
    (1, "batch", 5, "bank"),  # a batch of one falls back to the bank
    (1, "batch", 0, "error: no other image"),
    (4, "bank", 5, "bank"),
    (1, "bank", 5, "bank"),
    (4, "bank", 0, "error: donors='bank' needs an attribute bank"),
    (4, "both", 5, "mixed"),
    (4, "both", 0, "batch"),  # "both" with an empty bank: the batch alone
    (1, "both", 5, "bank"),  # one image: the bank is all there is
    (1, "both", 0, "error: no other image"),
    (2, "both", 0, "batch"),
]


class TestSampleMixParams:
    @pytest.mark.parametrize("b, donors, bank, want", POLICY, ids=[f"B{b}-{d}-bank{n}" for b, d, n, _ in POLICY])
    def test_policy_table(self, b: int, donors: str, bank: int, want: str) -> None:
        if want.startswith("error"):
            with pytest.raises(ValueError, match=want.split(": ", 1)[1]):
                sample_mix_params(b, donors=donors, bank_size=bank, generator=gen())
            return
        seen_bank = seen_batch = False
        g = gen(11)
        for _ in range(40):
            p = sample_mix_params(b, donors=donors, bank_size=bank, generator=g)
            assert isinstance(p, MixParams) and p.batch_size == b
            fb, d = p.from_bank, p.donors
            assert fb.dtype == torch.bool and d.dtype == torch.long
            assert bool((d[fb] >= 0).all()) and bool((d[fb] < bank).all())
            assert bool((d[~fb] >= 0).all()) and bool((d[~fb] < b).all())
            assert bool((d[~fb] != torch.arange(b)[~fb]).all()), "an image was its own donor"
            seen_bank |= bool(fb.any())
            seen_batch |= bool((~fb).any())
        assert (seen_bank, seen_batch) == {"batch": (False, True), "bank": (True, False), "mixed": (True, True)}[want]

    def test_both_is_uniform_over_the_others_and_the_bank(self) -> None:
        """``"both"``: uniform over the B - 1 other images and the N bank entries (N + B - 1 outcomes)."""
        b, n, draws = 4, 3, 3000
        g = gen(12)
        counts = torch.zeros(b, b + n)
        for _ in range(draws):
            p = sample_mix_params(b, donors="both", bank_size=n, generator=g)
            col = torch.where(p.from_bank, b + p.donors, p.donors)
            counts[torch.arange(b), col] += 1
        assert counts.diagonal().sum() == 0  # never self
        off = counts[:, :b][~torch.eye(b, dtype=torch.bool)].view(b, b - 1)
        cells = torch.cat([off, counts[:, b:]], 1)  # (B, B - 1 + N)
        expected = draws / (b - 1 + n)
        chi2 = float(((cells - expected) ** 2 / expected).sum())
        assert chi2 < 60, chi2  # 4 x 5 = 20 dof: 99.99 % quantile about 50

    def test_selection_and_strength(self) -> None:
        p = sample_mix_params(4000, p=0.3, strength=(0.2, 0.6), generator=gen(13))
        assert 0.27 < float(p.selected.float().mean()) < 0.33
        assert float(p.strength.min()) >= 0.2 and float(p.strength.max()) <= 0.6 and float(p.strength.std()) > 0.05
        none = sample_mix_params(16, p=0.0, generator=gen(13))
        assert not bool(none.selected.any())
        assert bool(sample_mix_params(16, p=1.0, generator=gen(13)).selected.all())
        fixed = sample_mix_params(16, strength=(0.4, 0.4), generator=gen(13))
        assert torch.equal(fixed.strength, torch.full((16,), 0.4))

    def test_draw_order_is_selection_donors_strength(self) -> None:
        """The draws come off the generator in a fixed order, so seeded results never change between versions."""
        for donors, bank in (("batch", 0), ("bank", 5), ("both", 5)):
            p = sample_mix_params(6, p=0.5, strength=(0.1, 0.9), donors=donors, bank_size=bank, generator=gen(21))
            g = gen(21)
            selected = torch.rand(6, generator=g) < 0.5
            if donors == "batch":
                r = torch.randint(0, 5, (1, 6), generator=g)[0]
                donor = r + (r >= torch.arange(6)).long()
            elif donors == "bank":
                donor = torch.randint(0, bank, (6,), generator=g)
            else:
                r = torch.randint(0, 5 + bank, (6,), generator=g)
                donor = torch.where(r >= 5, r - 5, r + (r >= torch.arange(6)).long())
            alpha = 0.1 + 0.8 * torch.rand(6, generator=g)
            assert torch.equal(p.selected, selected) and torch.equal(p.donors, donor), donors
            torch.testing.assert_close(p.strength, alpha, rtol=0, atol=0)

    def test_reproducible_and_seed_dependent(self) -> None:
        a = sample_mix_params(32, p=0.5, strength=(0.0, 1.0), donors="both", bank_size=7, generator=gen(5))
        b = sample_mix_params(32, p=0.5, strength=(0.0, 1.0), donors="both", bank_size=7, generator=gen(5))
        c = sample_mix_params(32, p=0.5, strength=(0.0, 1.0), donors="both", bank_size=7, generator=gen(6))
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("selected", "donors", "from_bank", "strength"))
        assert not torch.equal(a.donors, c.donors)

    @pytest.mark.parametrize("donors, bank", [("batch", 0), ("bank", 3), ("both", 3), ("sampled", 3)])
    def test_identical_to_what_contrimix_draws(self, tiny, real_tiles, donors: str, bank: int) -> None:
        """The transform draws its parameters with sample_mix_params from its own seeded generator, nothing else."""
        from contrimix_aug import ContriMix

        x = real_tiles[:5, :, :32, :32]
        kw = {"bank": x[:bank]} if bank else {}
        spread = {"spread": 1.3} if donors == "sampled" else {}
        aug = ContriMix(weights=tiny, p=0.6, strength=(0.3, 0.9), donors=donors, seed=17, **kw, **spread)
        g = gen(17)
        for _ in range(3):
            aug(x)
            want = sample_mix_params(5, p=0.6, strength=(0.3, 0.9), donors=donors, bank=aug.model.bank,
                                     generator=g, **spread)
            got = MixParams.from_dict(aug.params)
            for f in ("selected", "donors", "from_bank", "strength", "donor_attributes"):
                a, b = getattr(got, f), getattr(want, f)
                assert (a is None and b is None) or torch.equal(a, b), f

    def test_bad_arguments(self) -> None:
        assert DONOR_MODES == ("batch", "bank", "both", "sampled")
        with pytest.raises(ValueError, match="donors: expected one of"):
            sample_mix_params(4, donors="others", generator=gen())
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            sample_mix_params(0, generator=gen())


class TestMixParams:
    def test_dict_round_trip(self) -> None:
        p = sample_mix_params(6, p=0.5, strength=(0.2, 0.8), donors="both", bank_size=4, generator=gen(8))
        d = p.to_dict()
        assert set(d) == {"batch_prob", "donors", "from_bank", "strength"}
        assert d["batch_prob"].dtype == torch.float32 and torch.equal(d["batch_prob"] > 0.5, p.selected)
        q = MixParams.from_dict(d)
        assert all(torch.equal(getattr(p, f), getattr(q, f)) for f in ("selected", "donors", "from_bank", "strength"))

    def test_validation(self) -> None:
        ok = sample_mix_params(3, generator=gen())
        with pytest.raises(ValueError, match="four \\(B,\\) tensors"):
            MixParams(ok.selected, ok.donors[:2], ok.from_bank, ok.strength)
        with pytest.raises(ValueError, match="lack \\['strength'\\]"):
            MixParams.from_dict({k: v for k, v in ok.to_dict().items() if k != "strength"})


# ---------------------------------------------------------------------------------------------------------------
# sampled donors: new attribute matrices around the bank (stains nobody saw)
# ---------------------------------------------------------------------------------------------------------------
class TestSampleBankAttributes:
    """z = c + spread·κ·(Dirichlet(1) blend of 3 distinct bank entries − c): spread is the samples' std relative to
    the bank's; spread 1/κ (0.71) stays inside the bank's hull."""

    def test_new_stains_in_the_scaled_hull(self, camelyon_bank):
        z = sample_bank_attributes(camelyon_bank, 300, generator=gen(0))
        assert z.shape == (300, 3, 8) and z.dtype == torch.float32 and bool(torch.isfinite(z).all())
        nearest = torch.cdist(z.flatten(1), camelyon_bank.flatten(1)).min(1).values
        assert float(nearest.min()) > 1e-4, "a sampled matrix is a bank entry"  # bank entries are >= 6e-3 apart
        assert len({tuple(r) for r in z.flatten(1).tolist()}) == 300  # and all differ from each other
        kappa = sampled_reach(camelyon_bank.shape[0])
        assert abs(kappa - 2**0.5) < 0.01
        assert bool(in_scaled_hull(z, camelyon_bank, kappa).all())
        assert not bool(in_scaled_hull(z, camelyon_bank, 1.0).all()), "spread 1 never left the bank's hull"
        inside = sample_bank_attributes(camelyon_bank, 300, 1 / kappa, generator=gen(0))
        assert bool(in_scaled_hull(inside, camelyon_bank, 1.0).all())  # spread 1/κ: blends of real stains
        assert float(torch.cdist(inside.flatten(1), camelyon_bank.flatten(1)).min()) > 1e-4

    @pytest.mark.parametrize("n_bank", [2, 3, 5, 449])
    def test_spread_is_the_std_relative_to_the_banks(self, camelyon_bank, n_bank):
        bank = camelyon_bank[:n_bank]
        centre = bank.mean(0)
        bank_var = float((bank - centre).square().flatten(1).sum(1).mean())
        for spread in (0.5, 1.0, 1.5):
            z = sample_bank_attributes(bank, 8000, spread, generator=gen(n_bank))
            ratio = float((z - centre).square().flatten(1).sum(1).mean()) / bank_var
            assert abs(ratio / spread**2 - 1) < 0.06, (n_bank, spread, ratio)
            assert bool(in_scaled_hull(z[:500], bank, spread * sampled_reach(n_bank)).all())

    def test_spread_scales_the_deviation_from_the_bank_centre(self, camelyon_bank):
        centre = camelyon_bank.mean(0)
        z1 = sample_bank_attributes(camelyon_bank, 300, 1.0, generator=gen(1))
        z2 = sample_bank_attributes(camelyon_bank, 300, 2.0, generator=gen(1))  # the same draws, twice as far
        torch.testing.assert_close(z2 - centre, 2 * (z1 - centre), atol=1e-5, rtol=1e-5)

    def test_spread_zero_is_the_bank_centre(self, camelyon_bank):
        z = sample_bank_attributes(camelyon_bank, 5, 0.0, generator=gen(2))
        assert torch.equal(z, camelyon_bank.mean(0).expand(5, -1, -1))

    def test_draws_only_from_the_generator_in_a_fixed_order(self, camelyon_bank):
        state = torch.get_rng_state()
        a = sample_bank_attributes(camelyon_bank, 6, 1.3, generator=gen(3))
        assert torch.equal(a, sample_bank_attributes(camelyon_bank, 6, 1.3, generator=gen(3)))
        assert not torch.equal(a, sample_bank_attributes(camelyon_bank, 6, 1.3, generator=gen(4)))
        assert torch.equal(torch.get_rng_state(), state)
        # entries (without replacement), then the simplex weights: spacings of sorted uniforms
        g = gen(3)
        n_bank = camelyon_bank.shape[0]
        idx = torch.multinomial(torch.ones(6, n_bank), SAMPLED_ENTRIES, replacement=False, generator=g)
        assert all(len(set(row)) == SAMPLED_ENTRIES for row in idx.tolist())
        cuts = torch.rand(6, SAMPLED_ENTRIES - 1, generator=g).sort(1).values
        w = torch.diff(torch.cat([torch.zeros(6, 1), cuts, torch.ones(6, 1)], 1), dim=1)
        assert bool((w >= 0).all()) and torch.allclose(w.sum(1), torch.ones(6))
        c = camelyon_bank.mean(0)
        want = c + 1.3 * sampled_reach(n_bank) * (torch.einsum("nm,nmck->nck", w, camelyon_bank[idx]) - c)
        torch.testing.assert_close(a, want, rtol=0, atol=1e-7)
        # every spread draws the same numbers: spread changes the scale, not the stream
        g0, g1 = gen(5), gen(5)
        sample_bank_attributes(camelyon_bank, 4, 0.0, generator=g0)
        sample_bank_attributes(camelyon_bank, 4, 1.5, generator=g1)
        assert torch.equal(g0.get_state(), g1.get_state())

    def test_small_banks(self, camelyon_bank):
        one = camelyon_bank[:1]
        assert sampled_reach(1) == 1.0
        assert torch.equal(sample_bank_attributes(one, 3, 1.7, generator=gen()), one.expand(3, -1, -1))
        two = camelyon_bank[:2]  # on the line through the two entries, within √3 of their half-distance
        z = sample_bank_attributes(two, 50, generator=gen())
        c, half = two.mean(0), (two[1] - two[0]) / 2
        t = ((z - c) * half).sum((1, 2)) / half.square().sum()
        torch.testing.assert_close(z, c + t.view(-1, 1, 1) * half, atol=1e-6, rtol=1e-5)
        assert abs(sampled_reach(2) - 3**0.5) < 1e-12 and float(t.abs().max()) <= 3**0.5 + 1e-5
        assert sample_bank_attributes(camelyon_bank, 0, generator=gen()).shape == (0, 3, 8)

    @settings(max_examples=40, deadline=None)
    @given(n=st.integers(0, 12), n_bank=st.integers(1, 30), spread=st.floats(0, 3), seed=st.integers(0, 2**31 - 1))
    def test_shape_and_region(self, camelyon_bank, n: int, n_bank: int, spread: float, seed: int) -> None:
        pick = torch.randperm(camelyon_bank.shape[0], generator=gen(seed))[:n_bank]
        bank = camelyon_bank[pick]
        z = sample_bank_attributes(bank, n, spread, generator=gen(seed))
        assert z.shape == (n, 3, 8) and bool(torch.isfinite(z).all())
        assert bool(in_scaled_hull(z, bank, spread * sampled_reach(n_bank)).all())

    @pytest.mark.parametrize("spread, exc, match", [
        (-0.1, ValueError, ">= 0"), (float("nan"), ValueError, "finite"), (float("inf"), ValueError, "finite"),
        ("1", TypeError, "spread"), (True, TypeError, "spread"),
    ])
    def test_bad_spread(self, camelyon_bank, spread, exc, match):
        with pytest.raises(exc, match=match):
            sample_bank_attributes(camelyon_bank, 2, spread, generator=gen())
        with pytest.raises(exc, match=match):
            sample_mix_params(2, donors="sampled", bank=camelyon_bank, spread=spread, generator=gen())

    def test_spread_none_is_the_default_spread(self, camelyon_bank):
        from contrimix_aug.mixing import DEFAULT_SPREAD, check_spread

        assert check_spread(None) == DEFAULT_SPREAD and check_spread(None, "batch") is None
        assert torch.equal(sample_bank_attributes(camelyon_bank, 3, None, generator=gen(1)),
                           sample_bank_attributes(camelyon_bank, 3, DEFAULT_SPREAD, generator=gen(1)))

    def test_bad_bank(self):
        with pytest.raises(ValueError, match="non-empty .N, C, K. attribute bank.*bank="):
            sample_bank_attributes(torch.zeros(0, 3, 8), 2, generator=gen())
        with pytest.raises(ValueError, match="attribute bank"):
            sample_bank_attributes(torch.zeros(3, 8), 2, generator=gen())

    def test_check_spread(self):
        assert check_spread(1) == 1.0 and check_spread(0.0) == 0.0 and check_spread(2.5, "sampled") == 2.5
        assert check_spread(np.float32(0.5), "sampled") == 0.5  # numpy numbers are numbers
        assert check_spread(1.0, "batch") == 1.0  # the default is accepted with every mode
        with pytest.raises(ValueError, match="applies to donors='sampled' only"):
            check_spread(1.5, "bank")


class TestSampledMixParams:
    @pytest.mark.parametrize("b", [1, 2, 5])
    def test_record(self, camelyon_bank, b):
        p = sample_mix_params(b, p=0.5, strength=(0.2, 0.9), donors="sampled", bank=camelyon_bank, spread=1.2,
                              generator=gen(7))
        assert p.batch_size == b and p.donor_attributes.shape == (b, 3, 8)
        assert torch.equal(p.donors, torch.full((b,), -1)) and not bool(p.from_bank.any())
        assert bool(in_scaled_hull(p.donor_attributes, camelyon_bank, 1.2 * sampled_reach(len(camelyon_bank))).all())
        assert float(p.strength.min()) >= 0.2 and float(p.strength.max()) <= 0.9

    def test_draw_order_is_selection_attributes_strength(self, camelyon_bank):
        p = sample_mix_params(6, p=0.5, strength=(0.1, 0.9), donors="sampled", bank=camelyon_bank, spread=0.8,
                              generator=gen(21))
        g = gen(21)
        selected = torch.rand(6, generator=g) < 0.5
        attrs = sample_bank_attributes(camelyon_bank, 6, 0.8, generator=g)
        alpha = 0.1 + 0.8 * torch.rand(6, generator=g)
        assert torch.equal(p.selected, selected) and torch.equal(p.donor_attributes, attrs)
        torch.testing.assert_close(p.strength, alpha, rtol=0, atol=0)

    def test_bank_size_stands_in_only_for_index_donors(self, camelyon_bank):
        a = sample_mix_params(5, donors="bank", bank_size=len(camelyon_bank), generator=gen(2))
        b = sample_mix_params(5, donors="bank", bank=camelyon_bank, generator=gen(2))
        assert torch.equal(a.donors, b.donors) and a.donor_attributes is None and b.donor_attributes is None
        with pytest.raises(ValueError, match=f"bank_size=3 but the bank has {len(camelyon_bank)}"):
            sample_mix_params(5, donors="bank", bank_size=3, bank=camelyon_bank, generator=gen())
        with pytest.raises(ValueError, match="needs the bank itself"):
            sample_mix_params(5, donors="sampled", bank_size=len(camelyon_bank), generator=gen())

    def test_errors(self, camelyon_bank):
        for bank in (None, camelyon_bank[:0]):
            with pytest.raises(ValueError, match=r"donors='sampled' draws new attribute matrices.*pass bank="):
                sample_mix_params(3, donors="sampled", bank=bank, generator=gen())
        with pytest.raises(ValueError, match=r"spread=1.5 applies to donors='sampled' only"):
            sample_mix_params(3, donors="bank", bank=camelyon_bank, spread=1.5, generator=gen())

    def test_dict_round_trip_and_validation(self, camelyon_bank):
        p = sample_mix_params(4, p=0.5, donors="sampled", bank=camelyon_bank, generator=gen(8))
        d = p.to_dict()
        assert set(d) == {"batch_prob", "donors", "from_bank", "strength", "donor_attributes"}
        q = MixParams.from_dict(d)
        assert torch.equal(q.donor_attributes, p.donor_attributes)
        assert all(torch.equal(getattr(p, f), getattr(q, f)) for f in ("selected", "donors", "from_bank", "strength"))
        with pytest.raises(ValueError, match=r"donor_attributes must be a float \(B, C, K\) tensor with B = 4"):
            MixParams(p.selected, p.donors, p.from_bank, p.strength, p.donor_attributes[:3])
        with pytest.raises(ValueError, match="donor_attributes"):
            MixParams(p.selected, p.donors, p.from_bank, p.strength, p.donor_attributes[:, 0])
