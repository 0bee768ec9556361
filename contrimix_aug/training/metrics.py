"""Reconstruction quality: PSNR and SSIM per image, in torch (no extra dependency)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim"]


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10·log10(range² / MSE), in dB (MSE floored at 1e-10).

    Shape:
        (B, C, H, W), (B, C, H, W) -> (B,).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"psnr: expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}."
        )
    mse = (x.float() - y.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return (g / g.sum()).float()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels and valid pixels.

    Local statistics use a separable ``window_size`` Gaussian window of std ``sigma`` without padding
    (only windows fully inside the image count); C1 = (k1·range)², C2 = (k2·range)².

    Shape:
        (B, C, H, W), (B, C, H, W) -> (B,), with H, W >= ``window_size``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ssim: expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}."
        )
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: images must be at least {window_size}×{window_size} px, got {h}×{w}.")
    g = _gaussian_window(window_size, sigma, x.device)
    gh = g.view(1, 1, window_size, 1).expand(c * 5, 1, window_size, 1)
    gw = g.view(1, 1, 1, window_size).expand(c * 5, 1, 1, window_size)
    x, y = x.float(), y.float()
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one depthwise pass for all five moments
    stats = F.conv2d(F.conv2d(stats, gh, groups=c * 5), gw, groups=c * 5)
    mx, my, exx, eyy, exy = stats.split(c, dim=1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
