"""Optical density conversions against a float64 numpy oracle (Beer–Lambert, method notes §1.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from contrimix_aug.optical_density import OD_MAX, OD_MIN, T_MIN, from_signal, od_to_rgb, rgb_to_od, to_signal

FAST = settings(max_examples=60, deadline=None)


def oracle_rgb_to_od(x: np.ndarray) -> np.ndarray:
    return -np.log10(np.maximum(x.astype(np.float64), 1e-6))


def oracle_od_to_rgb(a: np.ndarray, clip: bool = True) -> np.ndarray:
    t = np.power(10.0, -np.clip(a.astype(np.float64), -0.2, 6.0))
    return np.clip(t, 0.0, 1.0) if clip else t


def test_constants() -> None:
    assert (T_MIN, OD_MIN, OD_MAX) == (1e-6, -0.2, 6.0)


class TestRgbToOd:
    def test_correctness_real_tiles(self, real_tiles: torch.Tensor) -> None:
        x = real_tiles
        want = oracle_rgb_to_od(x.numpy())
        np.testing.assert_allclose(rgb_to_od(x).numpy(), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rgb_to_od(x.double()).numpy(), want, rtol=1e-12, atol=1e-12)

    def test_range_on_real_tissue(self, real_tiles: torch.Tensor) -> None:
        od = rgb_to_od(real_tiles)
        assert od.min() >= 0 and od.max() <= 6.0 + 1e-5
        # tissue absorbs: some pixels clearly above the white background
        assert od.amax() > 0.3

    def test_floor(self) -> None:
        x = torch.tensor([0.0, 1e-9, 1e-6, -0.5], dtype=torch.float64)
        torch.testing.assert_close(rgb_to_od(x), torch.full_like(x, 6.0))
        assert rgb_to_od(torch.ones(3)).abs().max() == 0
        # custom eps
        torch.testing.assert_close(
            rgb_to_od(torch.zeros(2, dtype=torch.float64), eps=1e-3), torch.full((2,), 3.0, dtype=torch.float64)
        )

    def test_shape_dtype_no_inplace(self, real_tiles: torch.Tensor) -> None:
        x = real_tiles[:, :, :17, :11].clone()
        v0, before = x._version, x.clone()
        for dt in (torch.float32, torch.float64):
            out = rgb_to_od(x.to(dt))
            assert out.shape == x.shape and out.dtype == dt
        assert x._version == v0 and torch.equal(x, before)

    def test_gradient_finite_at_zero(self) -> None:
        x = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
        rgb_to_od(x).sum().backward()
        assert torch.isfinite(x.grad).all()
        assert x.grad[0] == 0  # clamped

    @FAST
    @given(arrays(np.float64, st.integers(1, 64), elements=st.floats(0.0, 1.0)))
    def test_property_oracle_and_monotone(self, x: np.ndarray) -> None:
        od = rgb_to_od(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(od, oracle_rgb_to_od(x), rtol=1e-12, atol=1e-12)
        assert (od >= 0).all() and (od <= 6.0 + 1e-12).all()
        order = np.argsort(x, kind="stable")
        assert (np.diff(od[order]) <= 1e-12).all()  # non-increasing in transmittance


class TestOdToRgb:
    def test_correctness_real_tiles(self, real_tiles: torch.Tensor) -> None:
        # OD of real tissue, stretched to cover the floor and the ceiling
        a = rgb_to_od(real_tiles.double()) * 3.0 - 0.5
        assert a.min() < -0.2 and a.max() > 6.0
        np.testing.assert_allclose(od_to_rgb(a).numpy(), oracle_od_to_rgb(a.numpy()), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            od_to_rgb(a, clip=False).numpy(), oracle_od_to_rgb(a.numpy(), clip=False), rtol=1e-12, atol=1e-15
        )
        np.testing.assert_allclose(od_to_rgb(a.float()).numpy(), oracle_od_to_rgb(a.numpy()), rtol=2e-6, atol=1e-7)

    def test_clamps(self) -> None:
        a = torch.tensor([-5.0, -0.2, -0.1, 0.0, 6.0, 7.0, 1e6], dtype=torch.float64)
        t = od_to_rgb(a, clip=False)
        torch.testing.assert_close(t[0], torch.tensor(10**0.2, dtype=torch.float64))  # -0.2 floor
        torch.testing.assert_close(t[1], t[0])
        assert t[2] > 1.0  # the floor lets T exceed 1 before the final clip
        torch.testing.assert_close(t[4:], torch.full((3,), 1e-6, dtype=torch.float64))  # 6 ceiling
        tc = od_to_rgb(a)
        assert tc.max() == 1.0 and tc[:4].eq(1.0).all()
        torch.testing.assert_close(tc[4:], torch.full((3,), 1e-6, dtype=torch.float64))

    def test_dead_gradient_of_final_clip(self) -> None:
        # method notes Q9: with the final clip there is no gradient for -0.2 < A < 0; without it there is
        a = torch.tensor([-0.1, 0.5, 7.0], dtype=torch.float64, requires_grad=True)
        (g_clip,) = torch.autograd.grad(od_to_rgb(a).sum(), a)
        (g_free,) = torch.autograd.grad(od_to_rgb(a, clip=False).sum(), a)
        assert g_clip[0] == 0 and g_free[0] < 0
        assert g_clip[1] < 0 and g_clip[2] == 0 and g_free[2] == 0

    def test_gradcheck(self) -> None:
        a = torch.rand(1, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4 + 0.1
        a.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda v: od_to_rgb(v, clip=False), (a,), fast_mode=True)
        x = torch.rand(1, 3, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.9 + 0.05
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(rgb_to_od, (x,), fast_mode=True)

    @FAST
    @given(arrays(np.float64, st.integers(1, 64), elements=st.floats(-50.0, 50.0)))
    def test_property_oracle_and_range(self, a: np.ndarray) -> None:
        t = od_to_rgb(torch.from_numpy(a)).numpy()
        np.testing.assert_allclose(t, oracle_od_to_rgb(a), rtol=1e-12, atol=1e-300)
        assert (t >= 1e-6 * (1 - 1e-12)).all() and (t <= 1.0).all()


class TestRoundTrip:
    def test_real_tiles(self, real_tiles: torch.Tensor) -> None:
        x = real_tiles
        torch.testing.assert_close(od_to_rgb(rgb_to_od(x)), x.clamp_min(1e-6), rtol=1e-5, atol=1e-6)
        x64 = x.double()
        torch.testing.assert_close(od_to_rgb(rgb_to_od(x64)), x64.clamp_min(1e-6), rtol=1e-12, atol=1e-14)

    @FAST
    @given(arrays(np.float64, st.integers(1, 64), elements=st.floats(0.0, 1.0)))
    def test_property_image_side(self, x: np.ndarray) -> None:
        back = od_to_rgb(rgb_to_od(torch.from_numpy(x))).numpy()
        np.testing.assert_allclose(back, np.maximum(x, 1e-6), rtol=1e-10, atol=0)

    @FAST
    @given(arrays(np.float64, st.integers(1, 64), elements=st.floats(-3.0, 10.0)))
    def test_property_od_side(self, a: np.ndarray) -> None:
        # rgb_to_od(od_to_rgb(A)) = clip(A, 0, 6): the [0, 1] clip removes the negative floor
        back = rgb_to_od(od_to_rgb(torch.from_numpy(a))).numpy()
        np.testing.assert_allclose(back, np.clip(a, 0.0, 6.0), rtol=1e-9, atol=1e-9)


class TestSignal:
    def test_absorbance_mode(self, real_tiles: torch.Tensor) -> None:
        x = real_tiles[:2]
        assert torch.equal(to_signal(x, "absorbance"), rgb_to_od(x))
        a = to_signal(x, "absorbance") * 1.7 - 0.3
        assert torch.equal(from_signal(a, "absorbance"), od_to_rgb(a))

    def test_linear_mode(self, real_tiles: torch.Tensor) -> None:
        x = real_tiles[:2]
        assert torch.equal(to_signal(x, "linear"), x)  # identity on the way in
        s = x * 3.0 - 1.0
        out = from_signal(s, "linear")
        assert torch.equal(out, s.clamp(0, 1))  # only the final clip on the way out
        assert out.min() == 0 and out.max() == 1

    @FAST
    @given(arrays(np.float32, st.integers(1, 32), elements=st.floats(-2.0, 2.0, width=32)))
    def test_property_linear_clip(self, s: np.ndarray) -> None:
        out = from_signal(torch.from_numpy(s), "linear").numpy()
        np.testing.assert_array_equal(out, np.clip(s, 0, 1))


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 3, 17, 11), (2, 2, 3, 5, 4)])
def test_arbitrary_leading_dims(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    assert rgb_to_od(x).shape == shape and od_to_rgb(x).shape == shape


class TestFloorsAndStainBasis:
    """The named transmittance floors and the fixed Ruifrok–Johnston H&E(-DAB) basis."""

    def test_named_floors(self, real_tiles: torch.Tensor) -> None:
        from contrimix_aug.optical_density import T_MIN_UINT8

        assert T_MIN == 1e-6 and T_MIN_UINT8 == 1.0 / 255.0
        black = torch.zeros(1, 3, 2, 2)
        assert float(rgb_to_od(black).max()) == pytest.approx(6.0)  # the model's floor: OD 6
        assert float(rgb_to_od(black, T_MIN_UINT8).max()) == pytest.approx(np.log10(255))  # measures: OD 2.41
        x = real_tiles.double()
        np.testing.assert_allclose(rgb_to_od(x, T_MIN_UINT8).numpy(),
                                   -np.log10(np.maximum(x.numpy(), 1 / 255)), rtol=1e-12, atol=1e-12)

    def test_ruifrok_basis(self) -> None:
        from contrimix_aug.optical_density import RUIFROK_HED

        raw = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])  # Ruifrok & Johnston 2001
        np.testing.assert_allclose(RUIFROK_HED.numpy(), raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-12)
        assert RUIFROK_HED.dtype == torch.float64

    def test_hed_against_numpy_oracle(self, real_tiles: torch.Tensor) -> None:
        from contrimix_aug.optical_density import RUIFROK_HED, rgb_to_hed

        x = real_tiles[:4].double()
        basis = RUIFROK_HED.numpy()
        od = -np.log10(np.maximum(x.numpy(), 1 / 255))  # (B, 3, H, W)
        conc = np.einsum("bchw,cd->bdhw", od, np.linalg.inv(basis))  # od = conc @ basis
        np.testing.assert_allclose(rgb_to_hed(x).numpy(), conc, rtol=1e-10, atol=1e-10)
        # on real H&E both stains are present: positive mean haematoxylin and eosin concentrations
        h, e = (rgb_to_hed(real_tiles.float())[:, i].mean().item() for i in range(2))
        assert h > 0.1 and e > 0.05

    def test_hed_round_trip(self, real_tiles: torch.Tensor) -> None:
        from contrimix_aug.optical_density import hed_to_rgb, rgb_to_hed

        x = real_tiles[:4].double().clamp_min(1 / 255)  # above the floor the conversion is exactly invertible
        torch.testing.assert_close(hed_to_rgb(rgb_to_hed(x)), x, rtol=1e-9, atol=1e-9)
        assert hed_to_rgb(rgb_to_hed(x.float())).dtype == torch.float32
        # one stain removed: the image gets lighter where that stain was, and stays in [0, 1]
        hed = rgb_to_hed(x)
        hed[:, 0] = 0
        no_h = hed_to_rgb(hed)
        assert float(no_h.min()) >= 0 and float(no_h.max()) <= 1 and float(no_h.mean()) > float(x.mean())


class TestLimitRender:
    """limit_render as the transforms use it: per pixel, in the weights' channel order, differentiable."""

    def test_channel_order_invariant_and_per_pixel(self, real_tiles: torch.Tensor) -> None:
        from contrimix_aug.optical_density import limit_render

        src = rgb_to_od(real_tiles)
        render = src.roll(1, 0) * 1.6 + torch.tensor([0.05, 0.2, 0.1]).view(1, 3, 1, 1)  # another tile's look, dark
        out = limit_render(render, src)
        # BGR weights apply it to flipped channels: the same pixels come out, flipped
        torch.testing.assert_close(limit_render(render.flip(1), src.flip(1)), out.flip(1), atol=2e-6, rtol=0)
        # pixel-wise: a crop of the inputs gives the crop of the output (chunks and batches cannot matter)
        torch.testing.assert_close(limit_render(render[1:3, :, 5:20, 7:30], src[1:3, :, 5:20, 7:30]),
                                   out[1:3, :, 5:20, 7:30], atol=0, rtol=0)

    def test_gradcheck(self, real_tiles: torch.Tensor) -> None:
        from contrimix_aug.optical_density import limit_render

        od = rgb_to_od(real_tiles.double()).permute(0, 2, 3, 1).reshape(-1, 3)
        order = od.sum(1).argsort()
        picks = order[(torch.linspace(0.005, 0.995, 36) * (len(order) - 1)).long()]  # glass to the darkest tissue
        src = od[picks].T.reshape(1, 3, 6, 6).contiguous()
        render = (src.flip(-1) * 1.5 + 0.1).detach()
        # real pixels on both sides of the cap and inside the glass band (the kinks themselves are measure zero)
        assert bool((render.amax(1) > 1.2).any()) and bool((render.amax(1) < 1.2).any())
        assert bool(((src.sum(1) > 0.1) & (src.sum(1) < 0.4)).any())
        src = src.requires_grad_(True)
        render = render.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda o, s: limit_render(o, s, od_max=1.2), (render, src), eps=1e-7,
                                        atol=1e-6)
