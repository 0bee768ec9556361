"""PSNR and SSIM against a float64 numpy/scipy oracle on real H&E crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from contrimix_aug.training import psnr, ssim


def _ssim_oracle(x: np.ndarray, y: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two (C, H, W) float64 images: Gaussian-weighted moments over windows fully inside the image."""
    r = np.arange(win) - (win - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    g /= g.sum()
    half = win // 2

    def blur(a: np.ndarray) -> np.ndarray:
        out = correlate1d(correlate1d(a, g, axis=-2, mode="constant"), g, axis=-1, mode="constant")
        return out[..., half:-half, half:-half]  # keep only the valid windows

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


@pytest.fixture
def pair(real_tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = real_tiles[:4, :, :40, :37].contiguous()  # non-square on purpose
    g = torch.Generator().manual_seed(1)
    y = (x * 0.9 + 0.05 + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def test_ssim_matches_oracle(pair):
    x, y = pair
    got = ssim(x, y)
    expected = [_ssim_oracle(x[i].double().numpy(), y[i].double().numpy()) for i in range(len(x))]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert (got < 1).all() and (got > 0.3).all()


def test_ssim_identity_and_symmetry(pair):
    x, y = pair
    torch.testing.assert_close(ssim(x, x), torch.ones(len(x)))
    torch.testing.assert_close(ssim(x, y), ssim(y, x))


def test_psnr_matches_numpy(pair):
    x, y = pair
    mse = ((x.double().numpy() - y.double().numpy()) ** 2).reshape(len(x), -1).mean(1)
    np.testing.assert_allclose(psnr(x, y).numpy(), 10 * np.log10(1 / mse), rtol=1e-5)


def test_exception(pair):
    x, _ = pair
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(ValueError, match="one shape"):
        psnr(x, x[:2])
