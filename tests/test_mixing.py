"""Donor sampling, the donor policy of :func:`sample_mix_params`, the :class:`MixParams` record and attribute
mixing: explicit generators only, never the global RNG."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrimix_aug.mixing import (
    DONOR_MODES,
    MixParams,
    gather_attributes,
    mix_attributes,
    sample_donors,
    sample_mix_params,
    sample_strength,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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

    @pytest.mark.parametrize("donors, bank", [("batch", 0), ("bank", 3), ("both", 3)])
    def test_identical_to_what_contrimix_draws(self, tiny, real_tiles, donors: str, bank: int) -> None:
        """The transform draws its parameters with sample_mix_params from its own seeded generator, nothing else."""
        from contrimix_aug import ContriMix

        x = real_tiles[:5, :, :32, :32]
        kw = {"bank": x[:bank]} if bank else {}
        aug = ContriMix(weights=tiny, p=0.6, strength=(0.3, 0.9), donors=donors, seed=17, **kw)
        g = gen(17)
        for _ in range(3):
            aug(x)
            want = sample_mix_params(5, p=0.6, strength=(0.3, 0.9), donors=donors, bank_size=bank, generator=g)
            got = MixParams.from_dict(aug.params)
            for f in ("selected", "donors", "from_bank", "strength"):
                assert torch.equal(getattr(got, f), getattr(want, f)), f

    def test_bad_arguments(self) -> None:
        assert DONOR_MODES == ("batch", "bank", "both")
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
