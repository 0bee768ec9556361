"""Donor sampling and attribute mixing: explicit generators only, never the global RNG."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrimix_aug.mixing import gather_attributes, mix_attributes, sample_bank_donors, sample_donors, sample_strength


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
        sample_bank_donors(10, 8, 4, generator=g)
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
    def test_range_shape_deterministic(self) -> None:
        d = sample_bank_donors(7, 5, 3, generator=gen(3))
        assert d.shape == (3, 5) and (d >= 0).all() and (d < 7).all()
        assert torch.equal(d, sample_bank_donors(7, 5, 3, generator=gen(3)))

    def test_uniform(self) -> None:
        d = sample_bank_donors(6, 1000, 12, generator=gen(4)).reshape(-1)
        counts = torch.bincount(d, minlength=6).float()
        expected = d.numel() / 6
        assert float(((counts - expected) ** 2 / expected).sum()) < 35  # 5 dof

    def test_empty_bank(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            sample_bank_donors(0, 4, generator=gen())


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
