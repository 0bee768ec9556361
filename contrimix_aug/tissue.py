"""Tissue and marking-ink masks of 8-bit RGB images (numpy), used by patch sampling and by the quality measures.

Images are ``(H, W, 3)`` uint8 RGB.

Masks:

* **glass** (not tissue): grey > 0.82 *and* HSV saturation < 0.10, with grey the ITU-R 601 luma
  of RGB in [0, 1] and saturation ``(max - min) / max``.
* **ink**: a non-glass pixel whose red optical density exceeds its green optical density by more
  than 0.10 while its summed OD exceeds 0.30 (isolated hits dropped: at least half of a 5x5
  neighbourhood must qualify), plus the faint halo: pixels with OD_R - OD_G > 0.04 and summed OD > 0.12
  within about 12 px of such ink (see :func:`ink_mask`). Haematoxylin, eosin and DAB all
  absorb green at least as strongly as red (OD_G >= OD_R), whereas green, teal and blue marking inks
  absorb red most (OD_R > OD_G). This catches cmu1's green/teal edge ink and prostate_ink's blue blot;
  it does **not** catch black or red ink.
"""

from __future__ import annotations

import numpy as np
import torch

from .optical_density import T_MIN_UINT8, rgb_to_od

__all__ = ["check_rgb", "ink_mask", "integral", "optical_density", "tissue_mask", "tissue_mask_tensor", "window_sums"]


def check_rgb(rgb: np.ndarray, name: str = "rgb") -> np.ndarray:
    """``rgb`` as an ``(H, W, 3)`` uint8 array; ValueError/TypeError naming the fix otherwise."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"{name}: expected uint8 RGB, got {rgb.dtype}; convert with (x * 255).round().astype(np.uint8)")
    return rgb


def tissue_mask(rgb: np.ndarray, *, grey_threshold: float = 0.82, saturation_threshold: float = 0.10) -> np.ndarray:
    """``(H, W)`` bool, True on tissue: not (grey > ``grey_threshold`` and saturation < ``saturation_threshold``).

    Computed in integers (grey = (299 R + 587 G + 114 B) / 1000 / 255, saturation = (max - min) / max).
    """
    rgb = check_rgb(rgb)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    grey = 299 * r.astype(np.int32)
    grey += 587 * g.astype(np.int32)
    grey += 114 * b.astype(np.int32)
    bright = grey > grey_threshold * 255_000
    mx = np.maximum(np.maximum(r, g), b).astype(np.float32)
    mn = np.minimum(np.minimum(r, g), b).astype(np.float32)
    pale = (mx - mn) < saturation_threshold * mx  # False where mx == 0 (black is not glass)
    return ~(bright & pale)


# optical density of every 8-bit value, by the package's one conversion (floor: the darkest non-zero value)
_OD_LUT = rgb_to_od(torch.arange(256, dtype=torch.float64) / 255.0, T_MIN_UINT8).float().numpy()


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 OD = -log10(I / 255), with I clipped to [1, 255]."""
    return _OD_LUT[check_rgb(rgb)]


def integral(mask: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1)`` summed-area table (int32, or int64 for huge images) of a bool/int mask."""
    dt = np.int32 if mask.size < 2**31 else np.int64
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dt)
    np.cumsum(mask, axis=0, dtype=dt, out=ii[1:, 1:])
    np.cumsum(ii[1:, 1:], axis=1, out=ii[1:, 1:])
    return ii


def window_sums(ii: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """Sum of the mask over the ``size`` x ``size`` windows with top-lefts ``(ys, xs)``."""
    y1, x1 = ys + size, xs + size
    return ii[y1, x1] - ii[ys, x1] - ii[y1, xs] + ii[ys, xs]


def _box_mean_same(mask: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``mask`` over a k x k window centred on each pixel (window clipped at the borders)."""
    r = k // 2
    ii = integral(np.pad(mask, ((r, k - 1 - r), (r, k - 1 - r))))
    s = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
    h, w = mask.shape
    ny = np.minimum(np.arange(h) + k - r, h) - np.maximum(np.arange(h) - r, 0)
    nx = np.minimum(np.arange(w) + k - r, w) - np.maximum(np.arange(w) - r, 0)
    return s.astype(np.float32) / (ny[:, None] * nx[None, :]).astype(np.float32)


def _dilate_coarse(mask: np.ndarray, radius: int, block: int = 8) -> np.ndarray:
    """Pixels within about ``radius`` px (rounded up to ``block``-px cells) of a True pixel of ``mask``."""
    h, w = mask.shape
    ph, pw = -h % block, -w % block
    padded = np.pad(mask, ((0, ph), (0, pw)))
    cells = padded.reshape((h + ph) // block, block, (w + pw) // block, block).any(axis=(1, 3))
    r = -(-radius // block)
    grown = _box_mean_same(cells, 2 * r + 1) > 0
    return np.repeat(np.repeat(grown, block, axis=0), block, axis=1)[:h, :w]


def ink_mask(rgb: np.ndarray, *, margin: float = 0.10, min_od: float = 0.30, window: int = 5,
             min_fraction: float = 0.5, weak_margin: float = 0.04, weak_min_od: float = 0.12,
             radius: int = 12, tissue: np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` bool, True on green/teal/blue marking ink (rule in the module docstring).

    Two levels (hysteresis): *strong* pixels need OD_red - OD_green > ``margin`` and summed OD >
    ``min_od``, kept where at least ``min_fraction`` of their ``window`` x ``window`` neighbourhood is strong
    (drops isolated hits; ``window=1`` disables this). *Weak* pixels (OD_red - OD_green > ``weak_margin``,
    summed OD > ``weak_min_od``) within about ``radius`` px (8-px cells) of a strong one are added: the
    faint halo of the ink. Glass (``tissue`` False; computed when not given) is never ink. On the H&E
    sources without ink (prostate, skin, hgsc_*, tcia) and the IHC image it flags < 0.01 % of pixels.
    """
    rgb = check_rgb(rgb)
    od_r, od_g, od_b = (_OD_LUT[rgb[..., i]] for i in range(3))
    diff = od_r - od_g
    total = od_r + od_g
    total += od_b
    tissue = tissue_mask(rgb) if tissue is None else tissue
    strong = (diff > margin) & (total > min_od) & tissue
    if not strong.any():
        return strong
    if window > 1:
        strong = (_box_mean_same(strong, window) >= min_fraction) & tissue
        if not strong.any():
            return strong
    if radius <= 0:
        return strong
    weak = (diff > weak_margin) & (total > weak_min_od) & tissue
    return strong | (weak & _dilate_coarse(strong, radius))


def tissue_mask_tensor(images: torch.Tensor) -> torch.Tensor:
    """:func:`tissue_mask` of a float batch (B, 3, H, W) in [0, 1] (rounded to 8 bits first) -> (B, H, W) bool."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"tissue_mask_tensor: expected (B, 3, H, W) RGB images, got {tuple(images.shape)}.")
    u8 = (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return torch.from_numpy(np.stack([tissue_mask(im) for im in u8]))
