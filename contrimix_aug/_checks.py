"""Guards at the public boundary: metadata checks plus one opt-out value check.

Every message names what was expected, what came in, and how to fix it; where the fix is code, the message
holds it verbatim (``x.permute(2, 0, 1)``, ``x.float() / 255``, ...) and tests/test_checks.py applies it.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .weights_registry import weights_for_channels

__all__ = ["VALUE_TOLERANCE", "check_image", "check_image_values", "check_nonnegative", "check_probability",
           "check_strength", "clamped_values"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

VALUE_TOLERANCE = 0.15
"""Values at most this far outside the value range (as a fraction of its width: 0.15 on [0, 1]) are clamped into it,
not refused: resizing, interpolation, noise and float colour steps overshoot (bicubic interpolation up to 0.11 past a
sharp edge, 0.09 on real H&E patches). Anything further out is refused with a diagnosis (0-255 data,
mean/std-normalised data, which lies far below 0, ...)."""
NORMALISED_BELOW = 0.5
"""Values more than this (fraction of the range) below it are read as mean/std-normalised data in the message; less
far below, as a float step's overshoot (noise, sharpening)."""


def _dtype_fix(dtype: Any) -> str:
    """The conversion to float in [0, 1] for an integer/bool dtype (torch or numpy), as code on ``x``."""
    name = str(dtype).replace("torch.", "")
    if name == "bool":
        return "x.float()"
    if name == "uint8":
        return "x.float() / 255"
    if name == "uint16":
        return "x.float() / 65535"
    return "x.float() / 255 (8-bit values) or x.float() / 65535 (16-bit values)"


def _not_a_tensor_hint(x: Any, channels: int | None) -> str:
    """How to turn a numpy array or a PIL image into a float (C, H, W) tensor in [0, 1], for its shape and dtype."""
    c = 3 if channels is None else channels
    if type(x).__module__.startswith("PIL."):
        mode = getattr(x, "mode", "RGB")
        layout = "[None]" if mode in ("L", "I", "I;16", "F", "1") else ".permute(2, 0, 1)"
        scale = {"I;16": ".float() / 65535", "I": ".float() / 65535", "F": "", "1": ".float()"}.get(
            mode, ".float() / 255")
        return (f"For a PIL image put transforms.ToTensor() (or v2.ToImage(), v2.ToDtype(torch.float32, scale=True)) "
                f"before ContriMix, or convert it with torch.from_numpy(np.array(img)){layout}{scale}.")
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is None or dtype is None or type(x).__module__.split(".")[0] != "numpy":
        return ("Pass the image as a tensor; (H, W, C) uint8 numpy images convert with "
                "torch.from_numpy(arr).permute(2, 0, 1).float() / 255.")
    layout = ""
    if len(shape) == 3 and shape[-1] == c and shape[0] != c:
        layout = ".permute(2, 0, 1)"
    elif len(shape) == 4 and shape[-1] == c and shape[1] != c:
        layout = ".permute(0, 3, 1, 2)"
    elif len(shape) == 2:
        layout = "[None]"
    kind = str(dtype)
    scale = {"float32": "", "bool": ".float()", "uint8": ".float() / 255", "uint16": ".float() / 65535"}.get(
        kind, ".float()" if kind.startswith("float") else ".float() / 255")
    return f"Convert it with torch.from_numpy(arr){layout}{scale}."


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
            f"{name}: expected a torch.Tensor of shape (B, C, H, W){' or (C, H, W)' if allow_chw else ''} with "
            f"values in [0, 1], got {type(x).__name__}. {_not_a_tensor_hint(x, channels)}"
        )
    dims = "(B, C, H, W)" + (" or (C, H, W)" if allow_chw else "")
    if x.ndim not in ((3, 4) if allow_chw else (4,)):
        if x.ndim == 3:
            hint = "Add a batch dim with x.unsqueeze(0)."
        elif x.ndim == 2:
            fix = "x.unsqueeze(0)" if allow_chw else "x[None, None]"
            if channels in (None, 1):
                hint = f"Add a channel dim with {fix}."
            else:
                names = weights_for_channels(1)
                hint = (f"A (H, W) greyscale image has no channel dim, and these weights expect {channels} channels. "
                        + (f"Weights for 1 channel ({', '.join(map(repr, names))}) take it as {fix}." if names else
                           f"Pass the ({channels}, H, W) image."))
        elif x.ndim >= 5:
            hint = "Flatten extra leading dims with x.flatten(0, -4)."
        else:
            hint = "Pass an image, not a vector or a scalar."
        raise ValueError(f"{name}: expected {dims}, got a {x.ndim}-D tensor of shape {tuple(x.shape)}. {hint}")
    if x.dtype not in _FLOAT_DTYPES:
        fix = _dtype_fix(x.dtype)
        v2 = " (in a torchvision v2 pipeline: v2.ToDtype(torch.float32, scale=True))" if x.dtype in (
            torch.uint8, torch.uint16) else ""
        raise TypeError(
            f"{name}: expected a floating-point tensor with values in [0, 1], got dtype {x.dtype}. "
            f"Convert it with {fix}{v2}."
        )
    if x.ndim == 4 and x.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(x.shape)}); pass at least one image.")
    c = x.shape[-3]
    if channels is not None and c != channels:
        if x.shape[-1] == channels:
            perm = "x.permute(2, 0, 1)" if x.ndim == 3 else "x.permute(0, 3, 1, 2)"
            hint = f"It looks channels-last ({'H, W, C' if x.ndim == 3 else 'B, H, W, C'}): use {perm}."
        elif c == 4 and channels == 3:
            hint = "It looks like RGBA: drop the alpha channel with x[..., :3, :, :]."
        else:
            names = weights_for_channels(c)
            hint = (f"Load weights trained for {c} channel(s): {', '.join(map(repr, names))}." if names else
                    f"No available weights take {c} channel(s): train some with "
                    f"`contrimix-aug train DATA --channels {c} --out DIR` and pass weights=DIR.")
        raise ValueError(f"{name}: the weights expect {channels} channel(s), got {c} (shape {tuple(x.shape)}). {hint}")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        size = (max(h, min_size), max(w, min_size))
        fix = (f"torch.nn.functional.interpolate(x, size={size}, mode='bilinear')" if x.ndim == 4 else
               f"torch.nn.functional.interpolate(x[None], size={size}, mode='bilinear')[0]")
        raise ValueError(f"{name}: tiles must be at least {min_size}×{min_size} px for these weights, got {h}×{w}. "
                         f"Use larger tiles, or upsample with {fix}.")


def check_image_values(x: torch.Tensor, *, name: str = "image", value_range: tuple[float, float] = (0.0, 1.0)
                       ) -> bool:
    """Check values are finite and inside ``value_range`` up to :data:`VALUE_TOLERANCE` (one host sync).

    Returns:
        True when some values lie outside ``value_range`` but within the tolerance: the caller clamps
        (``x.clamp(*value_range)``). False otherwise, and while compiling (the check is skipped).

    The message says what most likely happened: values far below 0 mean the image was mean/std-normalised
    (``transforms.Normalize``) before ContriMix; values far above 1 are 8- or 16-bit intensities; values a little
    outside come from an earlier float step (noise, sharpening, brightness or contrast jitter).
    """
    if torch.compiler.is_compiling() or x.numel() == 0:
        return False
    lo, hi = torch.aminmax(x.detach().float())
    lo_f, hi_f = float(lo), float(hi)
    if lo_f != lo_f or hi_f != hi_f or abs(lo_f) == float("inf") or abs(hi_f) == float("inf"):
        vlo, vhi = value_range
        raise ValueError(f"{name}: contains NaN or Inf values; clean the input first, e.g. "
                         f"torch.nan_to_num(x, nan={vlo:g}, posinf={vhi:g}, neginf={vlo:g}).")
    vlo, vhi = value_range
    tol = VALUE_TOLERANCE * (vhi - vlo)
    got = f"got values in [{lo_f:.4g}, {hi_f:.4g}]"
    step = (f"an earlier float step (noise, sharpening, brightness or contrast jitter) most likely pushed values past "
            f"the range (up to {tol:g} past it is clamped; these go further). Apply ContriMix before it, or clamp with "
            f"x.clamp({vlo:g}, {vhi:g}).")
    if lo_f < vlo - tol:
        if lo_f < vlo - NORMALISED_BELOW * (vhi - vlo):
            hint = ("Values this far below 0 mean the image was most likely mean/std-normalised (e.g. "
                    "transforms.Normalize) before ContriMix: apply ContriMix first, right after ToTensor, and "
                    "Normalize after it.")
        else:
            hint = "Not mean/std-normalised data (that lies further below 0): " + step
        raise ValueError(f"{name}: expected values in [{vlo:g}, {vhi:g}], {got}. {hint}")
    if hi_f > vhi + tol:
        if hi_f > 255.5:
            hint = "This looks like 16-bit intensities: divide by 65535 (x.float() / 65535)."
        elif hi_f > 2.0:
            hint = "This looks like 8-bit 0-255 values: divide by 255 (x.float() / 255)."
        else:
            hint = "Not an 8-bit image: " + step
        raise ValueError(f"{name}: expected values in [{vlo:g}, {vhi:g}], {got}. {hint}")
    return lo_f < vlo or hi_f > vhi


def clamped_values(x: torch.Tensor, *, name: str = "image", value_range: tuple[float, float] = (0.0, 1.0)
                   ) -> torch.Tensor:
    """``x`` after :func:`check_image_values`: refused with a fix when far outside ``value_range``, clamped into it
    when at most :data:`VALUE_TOLERANCE` of the range outside (a resize's or a jitter's overshoot), else as is."""
    return x.clamp(*value_range) if check_image_values(x, name=name, value_range=value_range) else x


def check_nonnegative(v: Any, name: str) -> float:
    """Return ``v`` as float after checking it is a finite number >= 0 (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}.")
    return float(v)


def check_probability(p: Any, name: str = "p") -> float:
    """Return ``p`` as float after checking 0 <= p <= 1."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(p).__name__}; pass e.g. {name}=0.5.")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p}.")
    return float(p)


def check_strength(strength: Any) -> tuple[float, float]:
    """Return ``strength`` as a (low, high) range inside [0, 1]."""
    if isinstance(strength, numbers.Real) and not isinstance(strength, bool):
        lo = hi = float(strength)
    elif isinstance(strength, (tuple, list)) and len(strength) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in strength
    ):
        lo, hi = float(strength[0]), float(strength[1])
    else:
        raise TypeError(f"strength: expected a number or a (low, high) pair in [0, 1], got {strength!r}.")
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"strength: expected 0 <= low <= high <= 1, got {strength!r}.")
    return lo, hi
