"""Stage 1 (and 5): image <-> optical density (Beer–Lambert).

``absorbance`` mode (H&E, brightfield): A = -log10(max(T, 1e-6)); T = clip(10^(-clip(A, -0.2, 6)), 0, 1).
``linear`` mode (fluorescence): the identity on the way in and a clip to [0, 1] on the way out.
"""

from __future__ import annotations

import math

import torch

__all__ = ["rgb_to_od", "od_to_rgb", "to_signal", "from_signal", "rgb_to_hed", "hed_to_rgb", "OD_MIN", "OD_MAX",
           "RUIFROK_HED", "T_MIN", "T_MIN_UINT8", "RENDER_OD_MAX", "RENDER_BACKGROUND_OD", "limit_render"]

T_MIN = 1e-6
"""Transmittance floor of the model's signal (the authors': OD at most 6)."""
T_MIN_UINT8 = 1.0 / 255.0
"""Floor for measures on 8-bit images: a 0 pixel counts as the darkest non-zero value (OD 2.41), not OD 6."""
OD_MIN = -0.2
OD_MAX = 6.0
_LN10 = math.log(10.0)


def rgb_to_od(image: torch.Tensor, eps: float = T_MIN) -> torch.Tensor:
    """Transmittance in [0, 1] -> optical density in [0, -log10(eps)].

    Shape: (*, C, H, W) -> (*, C, H, W).

    >>> rgb_to_od(torch.ones(1, 3, 8, 8)).abs().max().item()
    0.0
    """
    return -torch.log10(image.clamp_min(eps))


def od_to_rgb(od: torch.Tensor, od_min: float = OD_MIN, od_max: float = OD_MAX, clip: bool = True) -> torch.Tensor:
    """Optical density -> transmittance, T = 10^(-clip(A, od_min, od_max)), then clipped to [0, 1].

    Shape: (*, C, H, W) -> (*, C, H, W).
    """
    out = torch.exp(od.clamp(od_min, od_max) * -_LN10)
    return out.clamp(0.0, 1.0) if clip else out


RENDER_OD_MAX = 1.7
"""Largest channel optical density of a re-rendered pixel under :func:`limit_render`: 99.9 % of the tissue pixels
of the real crops of 26 labs behind :func:`contrimix_aug.quality.load_plausibility_reference` lie below it."""
RENDER_BACKGROUND_OD = (0.20, 0.45)
"""Summed source optical density below which a pixel keeps the source under :func:`limit_render` (glass stays
glass), and above which it is fully re-rendered; smooth in between. (Glass by the tissue mask's definition, grey >
0.82, has a summed OD below about 0.26.)"""


def limit_render(od: torch.Tensor, source_od: torch.Tensor, od_max: float | None = RENDER_OD_MAX,
                 background: tuple[float, float] | None = RENDER_BACKGROUND_OD) -> torch.Tensor:
    """Keep a re-rendering's optical density in the range of real stained tissue, pixel by pixel (absorbance mode).

    * background stays background (``background``; None: off): out = src + w·(od − src), with w the smoothstep of
      the source pixel's summed OD from ``background[0]`` (w = 0: near-white glass keeps the source) to
      ``background[1]`` (w = 1: tissue is fully re-rendered). Without it a donor's attributes add their own
      image's OD offset to the glass (pink or cyan on white);
    * no pixel darker than real tissue (``od_max``; None: off): where the largest channel OD exceeds ``od_max``,
      the pixel's OD vector is scaled down to it (its hue, the ratio of the channels, is kept) instead of the
      per-channel clip of :func:`od_to_rgb`, which turns overshooting pixels black or into saturated primaries.

    The augmentation renders apply it by default (``render_guard=True`` of :class:`~contrimix_aug.ContriMix`,
    :class:`~contrimix_aug.ContriMixNormalize`, the albumentations adapter and :mod:`contrimix_aug.functional`),
    with the rendered images' own optical density as ``source_od``; ``render_guard=False`` is the authors' render
    (exact transfer of the donor's mean optical density, glass and all). ``scripts/measure_plausibility.py``
    measures what it changes. Differentiable in ``od`` and ``source_od``.

    Shape: (B, C, H, W), (B, C, H, W) -> (B, C, H, W).
    """
    if source_od.shape != od.shape:
        raise ValueError(f"limit_render: the source's optical density {tuple(source_od.shape)} must have the "
                         f"render's shape {tuple(od.shape)}.")
    out = od
    if background is not None:
        lo, hi = background
        if not 0 <= lo < hi:
            raise ValueError(f"limit_render: background must be (low, high) with 0 <= low < high, got {background}.")
        src = source_od.to(od.dtype)
        t = ((src.clamp_min(0).sum(-3, keepdim=True) - lo) / (hi - lo)).clamp(0, 1)
        out = torch.lerp(src, out, t * t * (3 - 2 * t))
    if od_max is not None:
        if not od_max > 0:
            raise ValueError(f"limit_render: od_max must be positive, got {od_max}.")
        peak = out.amax(-3, keepdim=True)
        out = torch.where(peak > od_max, out * (od_max / peak.clamp_min(od_max)), out)  # untouched below the cap
    return out


def to_signal(image: torch.Tensor, mode: str) -> torch.Tensor:
    """Image in [0, 1] -> the signal the encoders see (OD for ``absorbance``, the image for ``linear``)."""
    return rgb_to_od(image) if mode == "absorbance" else image


def from_signal(signal: torch.Tensor, mode: str) -> torch.Tensor:
    """Generated signal -> image in [0, 1]."""
    return od_to_rgb(signal) if mode == "absorbance" else signal.clamp(0.0, 1.0)


RUIFROK_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
"""Ruifrok & Johnston unit stain vectors in RGB optical density (rows: haematoxylin, eosin, DAB), as in
scikit-image's ``rgb_from_hed`` (normalised below)."""
RUIFROK_HED = RUIFROK_HED / RUIFROK_HED.norm(dim=1, keepdim=True)


def rgb_to_hed(image: torch.Tensor, eps: float = T_MIN_UINT8) -> torch.Tensor:
    """RGB in [0, 1] -> haematoxylin / eosin / DAB concentrations (fixed Ruifrok basis, OD units).

    Shape: (B, 3, H, W) -> (B, 3, H, W).
    """
    od = rgb_to_od(image, eps)
    m = torch.linalg.inv(RUIFROK_HED).to(od.device, od.dtype)  # od = conc @ basis  ->  conc = od @ basis^-1
    return torch.einsum("bchw,cd->bdhw", od, m)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`, clipped to [0, 1]. Shape: (B, 3, H, W) -> (B, 3, H, W)."""
    od = torch.einsum("bdhw,dc->bchw", hed, RUIFROK_HED.to(hed.device, hed.dtype))
    return od_to_rgb(od, od_min=0.0, od_max=OD_MAX)
