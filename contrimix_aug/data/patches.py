"""Resampling to a target µm/px and deterministic patch sampling (numpy only); masks are in :mod:`..tissue`.

Conventions: images are ``(H, W, 3)`` uint8 RGB unless said otherwise; coordinates are the
top-left ``(y, x)`` of a ``size x size`` patch; regions are ``(y0, x0, y1, x1)`` with exclusive ends.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._seeding import source_rng
from ..tissue import check_rgb, ink_mask, integral, tissue_mask, window_sums
from .readers import load_image
from .registry import HE_SOURCES, get_source

__all__ = [
    "PatchSample",
    "Region",
    "crop_patches",
    "grid_patches",
    "random_patches",
    "resample_to_mpp",
    "sample_patches_from_images",
    "sample_source_patches",
    "source_rng",
    "spatial_split_region",
    "window_fraction",
]

Region = tuple[int, int, int, int]
Split = Literal["train", "val"] | None


def resample_to_mpp(img: np.ndarray, from_mpp: float, to_mpp: float, *,
                    method: Literal["area", "nearest"] = "area", max_pixels: int | None = 2**28) -> np.ndarray:
    """Rescale ``img`` (``(H, W)`` or ``(H, W, C)``, any dtype) from ``from_mpp`` to ``to_mpp`` µm/px.

    ``"area"``: PIL box (area-average) filter when shrinking, bicubic when enlarging; integer output
    is rounded and clipped to its dtype. ``"nearest"``: exact nearest-neighbour (use for label rasters).
    New size: ``round(H * from_mpp / to_mpp)`` (at least 1); more than ``max_pixels`` output pixels is
    refused (ValueError) as a guard against a wrong µm/px.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C), got shape {img.shape}")
    if not (from_mpp > 0 and to_mpp > 0):
        raise ValueError(f"µm/px must be positive, got from_mpp={from_mpp}, to_mpp={to_mpp}")
    scale = from_mpp / to_mpp
    h, w = img.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return img.copy()
    if max_pixels is not None and nh * nw > max_pixels:
        raise ValueError(f"resampling {h}x{w} from {from_mpp} to {to_mpp} µm/px gives {nh}x{nw} pixels "
                         f"(> max_pixels={max_pixels}); check the µm/px or pass max_pixels=None")
    if method == "nearest":
        iy = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
        ix = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
        return img[iy][:, ix].copy()
    if method != "area":
        raise ValueError(f"method must be 'area' or 'nearest', got {method!r}")
    from PIL import Image

    filt = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (3, 4)):
        return np.asarray(Image.fromarray(img).resize((nw, nh), filt))
    chans = img[..., None] if img.ndim == 2 else img
    out = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(chans[..., c], dtype=np.float32)).resize((nw, nh), filt))
         for c in range(chans.shape[2])],
        axis=-1,
    )
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(img.dtype)
    return out[..., 0] if img.ndim == 2 else out


def window_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """``(H - size + 1, W - size + 1)`` float32: fraction of True in the patch with each top-left."""
    h, w = mask.shape
    if size > h or size > w:
        return np.zeros((0, 0), np.float32)
    ii = integral(mask)
    s = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    return s.astype(np.float32) / float(size * size)


def spatial_split_region(tissue: np.ndarray, size: int, split: Split, val_fraction: float = 0.2) -> Region:
    """Deterministic held-out band of an image, so train and val patches can never overlap.

    The image is cut across its longer axis (rows when square) where the tissue behind the cut is
    ``val_fraction`` of all tissue; ``"val"`` is the band behind the cut, ``"train"`` the rest. Each band is
    kept at least ``size`` pixels wide. ``split=None`` gives the whole image.
    """
    h, w = tissue.shape
    if split is None:
        return (0, 0, h, w)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    axis = 0 if h >= w else 1
    length = tissue.shape[axis]
    if length < 2 * size:
        raise ValueError(f"image {h}x{w} is too small for a spatial train/val split with {size}-px patches "
                         f"(needs >= {2 * size} px along its longer side)")
    profile = tissue.sum(axis=1 - axis).astype(np.float64)
    total = profile.sum()
    if total > 0:
        cum = np.cumsum(profile)
        cut = int(np.searchsorted(cum, (1.0 - val_fraction) * total, side="left")) + 1
    else:
        cut = round(length * (1.0 - val_fraction))
    cut = int(np.clip(cut, size, length - size))
    lo, hi = (0, cut) if split == "train" else (cut, length)
    return (lo, 0, hi, w) if axis == 0 else (0, lo, h, hi)


class _PatchTester:
    """Vectorised tissue/ink tests of patches by summed-area tables (no full per-position map)."""

    def __init__(self, img: np.ndarray, size: int, *, min_tissue: float, exclude_ink: bool, max_ink: float,
                 region: Region | None, tissue: np.ndarray | None, ink: np.ndarray | None) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        h, w = img.shape[:2]
        tissue = tissue_mask(img) if tissue is None else tissue
        if exclude_ink:
            ink = ink_mask(img, tissue=tissue) if ink is None else ink
            self._ink = integral(ink)
            tissue = tissue & ~ink
        self._tissue = integral(tissue)
        self.size, self.exclude_ink = size, exclude_ink
        area = size * size
        self._need = int(np.ceil(min_tissue * area - 1e-9))
        self._max_ink = int(np.floor(max_ink * area + 1e-9))
        y0, x0, y1, x1 = region if region is not None else (0, 0, h, w)
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
        # top-left ranges [ylo, yhi) x [xlo, xhi) keeping the patch inside the region
        self.ylo, self.xlo, self.yhi, self.xhi = y0, x0, max(y1 - size + 1, y0), max(x1 - size + 1, x0)

    @property
    def n_positions(self) -> int:
        return (self.yhi - self.ylo) * (self.xhi - self.xlo)

    def ok(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        good = window_sums(self._tissue, ys, xs, self.size) >= self._need
        if self.exclude_ink:
            good &= window_sums(self._ink, ys, xs, self.size) <= self._max_ink
        return good

    def all_valid(self, chunk: int = 256) -> np.ndarray:
        """Flat indices (row-major over the top-left range) of every valid position."""
        width = self.xhi - self.xlo
        xs_row = np.arange(self.xlo, self.xhi)
        out = []
        for y in range(self.ylo, self.yhi, chunk):
            yy = np.arange(y, min(y + chunk, self.yhi))
            ys, xs = np.repeat(yy, width), np.tile(xs_row, len(yy))
            ok = np.flatnonzero(self.ok(ys, xs))
            out.append(ok + (y - self.ylo) * width)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def grid_patches(img: np.ndarray, size: int, stride: int | None = None, min_tissue: float = 0.5,
                 exclude_ink: bool = True, *, max_ink: float = 0.01, region: Region | None = None,
                 tissue: np.ndarray | None = None, ink: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Top-lefts ``(y, x)`` of a regular grid (from ``region``'s corner, step ``stride``, default ``size``).

    A patch is kept when at least ``min_tissue`` of it is tissue (not counting ink when ``exclude_ink``)
    and, with ``exclude_ink``, at most ``max_ink`` of it is ink. ``tissue``/``ink`` may be passed precomputed.
    """
    stride = size if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    t = _PatchTester(img, size, min_tissue=min_tissue, exclude_ink=exclude_ink, max_ink=max_ink,
                     region=region, tissue=tissue, ink=ink)
    gy, gx = np.arange(t.ylo, t.yhi, stride), np.arange(t.xlo, t.xhi, stride)
    if gy.size == 0 or gx.size == 0:
        return []
    ys, xs = np.repeat(gy, gx.size), np.tile(gx, gy.size)
    keep = t.ok(ys, xs)
    return [(int(y), int(x)) for y, x in zip(ys[keep], xs[keep], strict=True)]


def random_patches(img: np.ndarray, size: int, n: int, *, seed: int | np.random.Generator = 0,
                   min_tissue: float = 0.5, exclude_ink: bool = True, max_ink: float = 0.01,
                   region: Region | None = None, replace: bool | None = None,
                   tissue: np.ndarray | None = None, ink: np.ndarray | None = None) -> list[tuple[int, int]]:
    """``n`` top-lefts drawn uniformly among all valid pixel positions (same tests as :func:`grid_patches`).

    Deterministic for a given ``seed``. Positions are drawn by rejection (uniform over the valid ones);
    when that is slow or there are fewer valid positions than ``n``, every valid position is listed and
    sampled from. ``replace=None`` samples without replacement when possible and with replacement (plus a
    warning) otherwise.

    Raises:
        ValueError: no valid position at all.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n <= 0:
        return []
    t = _PatchTester(img, size, min_tissue=min_tissue, exclude_ink=exclude_ink, max_ink=max_ink,
                     region=region, tissue=tissue, ink=ink)
    total = t.n_positions
    width = t.xhi - t.xlo
    if total > 0 and replace is not True:
        chosen: dict[int, None] = {}
        batch = max(1024, 8 * n)
        for _ in range(32):
            cand = rng.integers(0, total, size=batch)
            ok = t.ok(t.ylo + cand // width, t.xlo + cand % width)
            for c in cand[ok]:
                chosen.setdefault(int(c), None)
                if len(chosen) == n:
                    break
            if len(chosen) == n:
                flat = np.fromiter(chosen, np.int64)
                return [(int(t.ylo + p // width), int(t.xlo + p % width)) for p in flat]
    flat = t.all_valid() if total > 0 else np.zeros(0, np.int64)
    if flat.size == 0:
        raise ValueError(f"no {size}x{size} patch with >= {min_tissue:.0%} tissue"
                         f"{' and no ink' if exclude_ink else ''} in the image/region; lower min_tissue or size")
    if replace is None:
        replace = flat.size < n
        if replace:
            warnings.warn(f"only {flat.size} valid positions for {n} patches; sampling with replacement",
                          stacklevel=2)
    elif not replace and flat.size < n:
        raise ValueError(f"only {flat.size} valid positions for {n} patches without replacement")
    pick = rng.choice(flat, size=n, replace=replace)
    return [(int(t.ylo + p // width), int(t.xlo + p % width)) for p in pick]


def crop_patches(img: np.ndarray, coords: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """``(N, size, size, ...)`` copies of the patches at ``coords``."""
    if len(coords) == 0:
        return np.zeros((0, size, size) + img.shape[2:], img.dtype)
    return np.stack([img[y:y + size, x:x + size] for y, x in coords])


@dataclass(frozen=True)
class PatchSample:
    """Patches of several sources.

    Attributes:
        images: ``(N, S, S, 3)`` uint8 RGB.
        labels: ``(N,)`` int64 index into ``source_ids``.
        source_ids: the sources, in label order.
        coords: ``(N, 2)`` int64 top-left (y, x) in the image *after* resampling to the target µm/px.
    """

    images: np.ndarray
    labels: np.ndarray
    source_ids: tuple[str, ...]
    coords: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def sample_patches_from_images(images: Mapping[str, tuple[np.ndarray, float | None]], size: int = 96,
                               n_per_source: int | None = 64, *, target_mpp: float | None = 0.5, seed: int = 0,
                               split: Split = None, val_fraction: float = 0.2, min_tissue: float = 0.5,
                               exclude_ink: bool = True, max_ink: float = 0.01,
                               method: Literal["random", "grid"] = "random",
                               stride: int | None = None) -> PatchSample:
    """Balanced patches from in-memory images: ``{source_id: ((H, W, 3) uint8, µm/px or None)}``.

    Each image is resampled to ``target_mpp`` (skipped when it or the image's µm/px is None), masked,
    restricted to its ``split`` band (:func:`spatial_split_region`) and sampled: ``"random"`` draws
    ``n_per_source`` positions; ``"grid"`` takes the grid (stride ``stride``) and, when ``n_per_source`` is
    set, a seeded random subset of it. Deterministic given ``seed``.
    """
    if method not in ("random", "grid"):
        raise ValueError(f"method must be 'random' or 'grid', got {method!r}")
    if method == "random" and n_per_source is None:
        raise ValueError("method='random' needs n_per_source")
    if not images:
        raise ValueError("no images given")
    out_imgs, out_labels, out_coords = [], [], []
    ids = tuple(images)
    for label, sid in enumerate(ids):
        img, mpp = images[sid]
        img = check_rgb(img, sid)
        if target_mpp is not None and mpp is not None:
            img = resample_to_mpp(img, mpp, target_mpp)
        tissue = tissue_mask(img)
        ink = ink_mask(img, tissue=tissue) if exclude_ink else None
        good = tissue & ~ink if exclude_ink else tissue
        region = spatial_split_region(good, size, split, val_fraction)
        rng = source_rng(seed, sid)
        kw = {"min_tissue": min_tissue, "exclude_ink": exclude_ink, "max_ink": max_ink, "region": region,
              "tissue": tissue, "ink": ink}
        try:
            if method == "random":
                coords = random_patches(img, size, n_per_source, seed=rng, **kw)
            else:
                coords = grid_patches(img, size, stride, **kw)
                if n_per_source is not None and len(coords) > n_per_source:
                    keep = np.sort(rng.choice(len(coords), size=n_per_source, replace=False))
                    coords = [coords[i] for i in keep]
        except ValueError as err:
            raise ValueError(f"{sid}: {err}") from None
        out_imgs.append(crop_patches(img, coords, size))
        out_labels.append(np.full(len(coords), label, np.int64))
        out_coords.append(np.asarray(coords, np.int64).reshape(-1, 2))
    return PatchSample(np.concatenate(out_imgs), np.concatenate(out_labels), ids, np.concatenate(out_coords))


def sample_source_patches(source_ids: Sequence[str] = HE_SOURCES, size: int = 96, n_per_source: int | None = 64,
                          target_mpp: float | None = 0.5, seed: int = 0, split: Split = None, *,
                          val_fraction: float = 0.2, min_tissue: float = 0.5, exclude_ink: bool = True,
                          max_ink: float = 0.01, method: Literal["random", "grid"] = "random",
                          stride: int | None = None, cache_dir: str | os.PathLike | None = None,
                          progress: bool = True) -> PatchSample:
    """Balanced ``(N, size, size, 3)`` uint8 patches from registered real sources (fetched if needed).

    ``n_per_source`` patches per source at ``target_mpp`` µm/px (registry µm/px; ``None``: native pixels),
    with the spatial ``split`` of :func:`spatial_split_region` (``"train"``/``"val"`` never overlap).
    See :func:`sample_patches_from_images` for the other arguments.
    """
    images = {}
    for sid in source_ids:
        src = get_source(sid)
        if src.kind != "image" or src.stain not in ("he", "ihc"):
            raise ValueError(f"{sid} is not an RGB (H&E/IHC) image source")
        images[sid] = (load_image(sid, cache_dir=cache_dir, progress=progress), src.um_per_px)
    return sample_patches_from_images(images, size, n_per_source, target_mpp=target_mpp, seed=seed, split=split,
                                      val_fraction=val_fraction, min_tissue=min_tissue, exclude_ink=exclude_ink,
                                      max_ink=max_ink, method=method, stride=stride)
