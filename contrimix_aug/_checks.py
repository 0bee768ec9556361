"""Guards at the public boundary: metadata checks plus one opt-out value check.

Every message names what was expected, what came in, and how to fix it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_image", "check_image_values", "check_nonnegative", "check_probability", "check_strength"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_image(x: Any, channels: int | None = None, *, name: str = "image", allow_chw: bool = False,
                min_size: int = 8) -> None:
    """Check that ``x`` is a float (B, C, H, W) tensor (or (C, H, W) when ``allow_chw``).

    Raises:
        TypeError: not a tensor, or an integer/bool tensor.
        ValueError: wrong number of dims, empty batch, wrong channel count, tile smaller than ``min_size`` px
            (the weights' metadata says how small a tile they accept).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor of shape (B, C, H, W) with values in [0, 1], got {type(x).__name__}. "
            "Convert numpy arrays with torch.from_numpy(arr).permute(2, 0, 1).float() / 255."
        )
    dims = "(B, C, H, W)" + (" or (C, H, W)" if allow_chw else "")
    if x.ndim not in ((3, 4) if allow_chw else (4,)):
        raise ValueError(
            f"{name}: expected {dims}, got a {x.ndim}-D tensor of shape {tuple(x.shape)}. "
            + ("Add a batch dim with x.unsqueeze(0)." if x.ndim == 3 else "")
            + ("Add a channel dim with x.unsqueeze(-3)." if x.ndim == 2 else "")
            + ("Flatten extra leading dims with x.flatten(0, -4)." if x.ndim >= 5 else "")
        )
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a floating-point tensor with values in [0, 1], got dtype {x.dtype}. "
            "For uint8 images use x.float() / 255."
        )
    if x.ndim == 4 and x.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)}); pass at least one image.")
    c = x.shape[-3]
    if channels is not None and c != channels:
        hint = " It looks channels-last: use x.permute(0, 3, 1, 2)." if x.shape[-1] == channels else ""
        raise ValueError(
            f"{name}: the weights expect {channels} channel(s), got {c} (shape {tuple(x.shape)}).{hint} "
            "Load weights trained for this channel count (see contrimix_aug.available_weights())."
        )
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name}: tiles must be at least {min_size}×{min_size} px for these weights, got {h}×{w}.")


def check_image_values(x: torch.Tensor, *, name: str = "image", value_range: tuple[float, float] = (0.0, 1.0)
                       ) -> None:
    """Check values are finite and inside ``value_range`` (one host sync); skipped while compiling.

    The message says what most likely happened: negative values mean the image was mean/std-normalised
    (``transforms.Normalize``) before ContriMix; values far above 1 are 8- or 16-bit intensities; values a little
    above 1 come from an earlier float step (interpolation, brightness or contrast jitter).
    """
    if torch.compiler.is_compiling() or x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach().float())
    lo_f, hi_f = float(lo), float(hi)
    if lo_f != lo_f or hi_f != hi_f or abs(lo_f) == float("inf") or abs(hi_f) == float("inf"):
        raise ValueError(f"{name}: contains NaN or Inf values; clean the input (e.g. torch.nan_to_num) first.")
    vlo, vhi = value_range
    tol = 1e-3 * (vhi - vlo)
    got = f"got values in [{lo_f:.4g}, {hi_f:.4g}]"
    if lo_f < vlo - tol:
        raise ValueError(
            f"{name}: expected values in [{vlo:g}, {vhi:g}], {got}. Negative values mean the image was most likely "
            "mean/std-normalised (e.g. transforms.Normalize) before ContriMix: apply ContriMix first, right after "
            "ToTensor, and Normalize after it."
        )
    if hi_f > vhi + tol:
        if hi_f > 255.5:
            hint = "This looks like 16-bit intensities: divide by 65535 (x.float() / 65535)."
        elif hi_f > 2.0:
            hint = "This looks like 8-bit 0-255 values: divide by 255 (x.float() / 255)."
        else:
            hint = ("Not an 8-bit image: an earlier float step (interpolation, brightness or contrast jitter) most "
                    "likely pushed values past 1. Apply ContriMix before it, or clamp with x.clamp(0, 1).")
        raise ValueError(f"{name}: expected values in [{vlo:g}, {vhi:g}], {got}. {hint}")


def check_nonnegative(v: Any, name: str) -> float:
    """Return ``v`` as float after checking it is a finite number >= 0 (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}.")
    return float(v)


def check_probability(p: Any, name: str = "p") -> float:
    """Return ``p`` as float after checking 0 <= p <= 1."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(p).__name__}.")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p}.")
    return float(p)


def check_strength(strength: Any) -> tuple[float, float]:
    """Return ``strength`` as a (low, high) range inside [0, 1]."""
    if isinstance(strength, (int, float)) and not isinstance(strength, bool):
        lo = hi = float(strength)
    elif isinstance(strength, (tuple, list)) and len(strength) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in strength
    ):
        lo, hi = float(strength[0]), float(strength[1])
    else:
        raise TypeError(f"strength: expected a number or a (low, high) pair in [0, 1], got {strength!r}.")
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"strength: expected 0 <= low <= high <= 1, got {strength!r}.")
    return lo, hi
