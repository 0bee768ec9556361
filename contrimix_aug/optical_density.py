"""Stage 1 (and 5): image <-> optical density (Beer–Lambert).

``absorbance`` mode (H&E, brightfield): A = -log10(max(T, 1e-6)); T = clip(10^(-clip(A, -0.2, 6)), 0, 1).
``linear`` mode (fluorescence): the identity on the way in and a clip to [0, 1] on the way out.
"""

from __future__ import annotations

import math

import torch

__all__ = ["rgb_to_od", "od_to_rgb", "to_signal", "from_signal", "OD_MIN", "OD_MAX", "T_MIN"]

T_MIN = 1e-6
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


def to_signal(image: torch.Tensor, mode: str) -> torch.Tensor:
    """Image in [0, 1] -> the signal the encoders see (OD for ``absorbance``, the image for ``linear``)."""
    return rgb_to_od(image) if mode == "absorbance" else image


def from_signal(signal: torch.Tensor, mode: str) -> torch.Tensor:
    """Generated signal -> image in [0, 1]."""
    return od_to_rgb(signal) if mode == "absorbance" else signal.clamp(0.0, 1.0)
