"""Attribute banks: the attribute matrices of reference images, donors for single images and normalisation targets.

:func:`resolve_bank` is the one place where a ``bank=`` argument is validated (the kornia/torchvision module,
the albumentations adapter and checkpoint import call it); :func:`compute_bank` encodes images (for those and
for the bank that training writes into its weights); :func:`select_bank` takes the entries of some labs out of a
weights file's bank (a bank with only the terms you need).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._checks import check_image, check_image_values
from .model import ContriMixModel

__all__ = ["compute_bank", "resolve_bank", "images_from_numpy", "select_bank"]


def _model_device_dtype(model: ContriMixModel) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


@torch.no_grad()
def compute_bank(model: ContriMixModel, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Attribute bank of reference images: (N, C, H, W) in [0, 1] -> (N, C, K) float32 on the CPU."""
    check_image(images, model.config.in_channels, name="bank images", min_size=model.min_size)
    check_image_values(images, name="bank images", value_range=model.value_range)
    dev, dtype = _model_device_dtype(model)
    return torch.cat(
        [model.encode_attributes(chunk.to(dev, dtype)).float().cpu() for chunk in images.split(batch_size)]
    )


def images_from_numpy(arr: np.ndarray, channels: int, name: str = "bank") -> torch.Tensor:
    """Numpy images (N, H, W, C) or (N, H, W) for one channel, uint8 (0-255), uint16 (0-65535) or float in [0, 1]
    -> float32 (N, C, H, W) in [0, 1]."""
    a = np.asarray(arr)
    if not a.flags.writeable:  # e.g. np.asarray of a PIL image: torch.from_numpy warns on read-only memory
        a = a.copy()
    if a.ndim == 3 and channels == 1:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] != channels:
        hint = " It looks channels-first: use np.transpose(x, (0, 2, 3, 1))." if a.ndim == 4 and a.shape[1] == channels else ""
        raise ValueError(f"{name}: expected reference images (N, H, W, {channels}) as numpy, got shape {a.shape}.{hint}")
    if a.dtype == np.uint8:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    elif a.dtype == np.uint16:
        x = torch.from_numpy(np.ascontiguousarray(a).astype(np.float32)).div_(65535.0)
    elif np.issubdtype(a.dtype, np.floating):
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    else:
        raise TypeError(f"{name}: expected uint8, uint16 or float images, got dtype {a.dtype}.")
    return x.permute(0, 3, 1, 2).contiguous()


def _matches(lab: str, selector: str) -> bool:
    """A bank lab (``kind:name``, e.g. ``monuseg:RD``) is named by itself or by its kind (``monuseg``)."""
    return lab == selector or lab.split(":", 1)[0] == selector


def select_bank(weights: Any, labs: Sequence[str] | str | None = None, exclude: Sequence[str] | str = ()) -> torch.Tensor:
    """The attribute matrices of some labs of a weights file's bank, to pass as ``bank=``: (N, C, K) float32, CPU.

    Labs are those of ``meta.bank_labs`` (``camelyon17:0``, ``monuseg:RD``, ``source:cmu1``, ...), named in full or by
    their kind (``"monuseg"``: every MoNuSeg site). ``labs``: keep only these (None: all); ``exclude``: then drop
    these. ``weights``: whatever :func:`~contrimix_aug.load_model` takes (a registry name, a path, a model).

    Example, a bank without the MoNuSeg-derived entries::

        ContriMix(weights="camelyon", bank=select_bank("camelyon", exclude="monuseg"))

    Raises:
        ValueError: the weights name no labs for their bank; a name that matches no lab (the known ones are listed);
            nothing left.
    """
    from .weights import load_model

    model = load_model(weights)
    entry_labs = model.meta.bank_entry_labs() if model.meta is not None else []
    if not entry_labs or len(entry_labs) != model.bank.shape[0]:
        raise ValueError("select_bank: these weights do not name the lab of each bank entry (meta.bank_labs); "
                         "select rows of model.bank yourself, or pass bank= your own reference images.")
    known = list(dict.fromkeys(entry_labs))
    wanted = [labs] if isinstance(labs, str) else labs
    dropped = [exclude] if isinstance(exclude, str) else list(exclude)
    for name, given in (("labs", wanted or []), ("exclude", dropped)):
        if isinstance(given, str) or not all(isinstance(v, str) for v in given):
            raise TypeError(f"select_bank: {name} must be lab names (str), got {given!r}.")
        unknown = [v for v in given if not any(_matches(lab, v) for lab in known)]
        if unknown:
            kinds = sorted({lab.split(':', 1)[0] for lab in known})
            raise ValueError(f"select_bank: {name} {unknown} match no lab of this bank; its labs are {known} "
                             f"(or a kind: {kinds}).")
    keep = [i for i, lab in enumerate(entry_labs)
            if (wanted is None or any(_matches(lab, v) for v in wanted)) and not any(_matches(lab, v) for v in dropped)]
    if not keep:
        raise ValueError(f"select_bank: labs={wanted!r}, exclude={dropped!r} leave no bank entry.")
    return model.bank[keep].detach().float().cpu().clone()


def resolve_bank(model: ContriMixModel, bank: Any) -> torch.Tensor | None:
    """A ``bank=`` argument -> (N, C, K) float32 attributes on the CPU (None stays None).

    Accepted: (N, C, K) attribute tensors; reference images as a (N, C, H, W) float tensor in [0, 1], a numpy
    stack (N, H, W, C) or a list of (H, W, C) numpy images (any sizes; uint8, uint16 or float).

    Raises:
        TypeError / ValueError: anything else, an empty bank, NaN/Inf attributes, images outside [0, 1].
    """
    if bank is None:
        return None
    c, k = model.config.in_channels, model.config.num_attributes
    if isinstance(bank, torch.Tensor):
        if bank.ndim == 3 and tuple(bank.shape[1:]) == (c, k):
            if bank.shape[0] == 0:
                raise ValueError("bank: the attribute bank is empty; pass at least one attribute matrix or image.")
            if not bank.is_floating_point() or not bool(torch.isfinite(bank).all()):
                raise ValueError("bank: attributes must be finite floating-point values (NaN, Inf or integers found).")
            return bank.detach().float().cpu()
        if bank.ndim == 4:
            return compute_bank(model, bank)
        raise ValueError(
            f"bank: expected attributes (N, {c}, {k}) or reference images (N, {c}, H, W), got {tuple(bank.shape)}."
        )
    if isinstance(bank, np.ndarray):
        return compute_bank(model, images_from_numpy(bank, c))
    if isinstance(bank, (list, tuple)):
        if not bank:
            raise ValueError("bank: the list of reference images is empty.")
        return torch.cat([_one_numpy(model, img, i) for i, img in enumerate(bank)])
    raise TypeError(
        f"bank: expected attributes ((N, C, K) tensor) or reference images ((N, C, H, W) tensor, (N, H, W, C) numpy, "
        f"or a list of (H, W, C) numpy images), got {type(bank).__name__}."
    )


def _one_numpy(model: ContriMixModel, img: Any, i: int) -> torch.Tensor:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"bank[{i}]: expected a numpy (H, W, C) image, got {type(img).__name__}.")
    return compute_bank(model, images_from_numpy(img[None], model.config.in_channels, f"bank[{i}]"))
