"""The training data stream: dataset opening and size checks, a resumable index stream, random patches, held-out split.

Randomness here is *stateless*: the order of epoch e is ``randperm`` seeded by (seed, e), and the crop,
rotation and flip of the item at stream position p are seeded by (seed, p). A run can therefore resume
at any step from the step number alone, with any number of DataLoader workers, on any rank.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._seeding import derive_seed

__all__ = ["IndexStream", "StepBatches", "TrainPatches", "center_patch", "check_image_sizes", "image_of",
           "open_datasets", "split_indices"]

_SPLIT_SPECS = ("he-sources", "fluo-sources", "camelyon17-tiles")  # datasets with their own spatial train/val split


def open_datasets(
    spec: str, *, patch_size: int, seed: int, val_size: int, progress: bool = True, channels: int | None = 3,
    data_root: str | os.PathLike | None = None,
) -> tuple[Dataset, list[int], Dataset, list[int]]:
    """Open DATA with :func:`contrimix_aug.data.make_dataset`: (train set, its indices, held-out set, its indices).

    The real sources (``he-sources[:ids]``, ``fluo-sources[:ids]``, ``camelyon17-tiles[:hospitals]``) use their own
    spatially held-out train/val regions; every other spec (folders, ``camelyon17:ROOT``, ``rxrx1:ROOT``) yields
    whole items, of which a seeded :func:`split_indices` holds ``val_size`` out.
    """
    from ..data import make_dataset

    kind = spec.strip().lower().split(":", 1)[0]
    if kind in _SPLIT_SPECS:
        kw: dict[str, Any] = {"progress": progress}
        if kind == "camelyon17-tiles":
            kw["data_root"] = data_root or None
        else:
            kw.update(size=patch_size, seed=seed)
        train, val = make_dataset(spec, split="train", **kw), make_dataset(spec, split="val", **kw)
        g = torch.Generator().manual_seed(derive_seed(seed, "split"))
        return train, list(range(len(train))), val, sorted(torch.randperm(len(val), generator=g)[:val_size].tolist())
    data = make_dataset(spec, channels=channels)
    train_idx, val_idx = split_indices(len(data), val_size, seed)
    return data, train_idx, data, val_idx


def check_image_sizes(dataset: Dataset, indices: Sequence[int], size: int, role: str = "training") -> None:
    """Refuse, before the first step, any ``role`` (training / validation) image smaller than the patch size
    (naming the file).

    Datasets that report their sizes cheaply (``image_sizes()``, e.g. image folders, read from file headers) are
    checked image by image; fixed-size datasets (the real sources, WILDS layouts) by their first item.
    """
    sizes = getattr(dataset, "image_sizes", None)
    if callable(sizes):
        all_sizes = sizes()
        paths = getattr(dataset, "paths", None)
        bad = [(i, all_sizes[i]) for i in indices if min(all_sizes[i]) < size]
        if bad:
            i, (h, w) = bad[0]
            where = str(paths[i]) if paths is not None else f"item {i}"
            more = f" ({len(bad)} images in all)" if len(bad) > 1 else ""
            raise ValueError(f"{where}: {role} image of {h}×{w} px is smaller than the patch size {size}{more}; "
                             "pass a smaller --patch-size or remove the image.")
        return
    if indices:
        _check_size(image_of(dataset[indices[0]]), size, f"{role} item {indices[0]}")


def image_of(item: Any) -> torch.Tensor:
    """The (C, H, W) float image of a dataset item: a tensor, the first element of a tuple, or ``item["image"]``."""
    if isinstance(item, dict):
        item = item.get("image")
    elif isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, torch.Tensor) or item.ndim != 3 or not item.is_floating_point():
        desc = type(item).__name__
        if isinstance(item, torch.Tensor):
            desc += f" {tuple(item.shape)} {item.dtype}"
        raise ValueError(f"dataset items must be float (C, H, W) tensors in [0, 1] (or (image, ...) tuples), "
                         f"got {desc}.")
    return item


class IndexStream:
    """An endless stream of dataset indices: epoch after epoch, each a seeded permutation of ``range(n)``.

    Step s on rank r of W, with B images per rank, reads stream positions
    ``s·B·W + r·B ... s·B·W + (r + 1)·B − 1``: the W ranks together consume the global batch B·W, exactly
    the positions one process with batch B·W would read (the DistributedSampler equivalent).
    """

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("IndexStream: the training set is empty.")
        self.n = n
        self.seed = seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        perm = self._cache.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            perm = torch.randperm(self.n, generator=g)
            self._cache = {e: p for e, p in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = perm
        return perm

    def positions(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> range:
        start = (step * world_size + rank) * batch_size
        return range(start, start + batch_size)

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
        """[(stream position, index)] for this step and rank."""
        positions = self.positions(step, batch_size, rank, world_size)
        return [(p, int(self._perm(p // self.n)[p % self.n])) for p in positions]


class StepBatches:
    """``batch_sampler`` for a DataLoader: the stream's batches for steps ``start .. stop − 1`` of one rank."""

    def __init__(self, stream: IndexStream, start: int, stop: int, batch_size: int, rank: int, world_size: int):
        self.stream, self.start, self.stop = stream, start, stop
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield self.stream.batch(step, self.batch_size, self.rank, self.world_size)


def _crop(img: torch.Tensor, size: int, top: int, left: int) -> torch.Tensor:
    return img[:, top : top + size, left : left + size]


def _check_size(img: torch.Tensor, size: int, where: str) -> None:
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError(
            f"{where}: image of {h}×{w} px is smaller than the patch size {size}; pass a smaller --patch-size."
        )


def center_patch(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` × ``size`` crop of a (C, H, W) image (no randomness: validation, attribute bank)."""
    _check_size(img, size, "center_patch")
    h, w = img.shape[-2:]
    return _crop(img, size, (h - size) // 2, (w - size) // 2).contiguous()


class TrainPatches(Dataset):
    """Random training patches: item ``(position, j)`` is a crop of ``base[indices[j]]``.

    The crop offset, a rotation by k·90° and a horizontal flip (and, with a ``scale`` range, the crop scale) are
    drawn from a generator seeded by (seed, position), so the patch at a stream position never depends on what
    ran before. With ``scale=(lo, hi)``, a region of s·P px (s log-uniform in [lo, hi], at most the image) is
    cropped and resized to P px (bilinear, antialiased): the model sees the tissue at several resolutions.

    Shape: each item (C, P, P), P = ``patch_size``.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], patch_size: int, seed: int,
                 scale: tuple[float, float] = (1.0, 1.0)) -> None:
        self.base, self.indices, self.patch_size, self.seed = base, list(indices), patch_size, seed
        self.scale = (float(scale[0]), float(scale[1]))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        pos, j = key
        img = image_of(self.base[self.indices[j]])
        size = self.patch_size
        _check_size(img, size, f"training image {self.indices[j]}")
        g = torch.Generator().manual_seed(derive_seed(self.seed, "patch", pos))
        top, left, rot, flip = torch.randint(0, 1 << 30, (4,), generator=g).tolist()
        h, w = img.shape[-2:]
        region = size
        if self.scale != (1.0, 1.0):
            lo, hi = math.log(self.scale[0]), math.log(self.scale[1])
            s = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64)))
            region = max(1, min(h, w, round(size * s)))
        patch = _crop(img, region, top % (h - region + 1), left % (w - region + 1))
        if region != size:
            patch = F.interpolate(patch.unsqueeze(0).float(), size=(size, size), mode="bilinear",
                                  align_corners=False, antialias=region > size).squeeze(0).clamp(0, 1)
        if rot % 4:
            patch = torch.rot90(patch, rot % 4, dims=(-2, -1))
        if flip % 2:
            patch = patch.flip(-1)
        return patch.contiguous()


def split_indices(n: int, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``range(n)`` into (train, held-out); at most 20 % of the items are held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "split"))).tolist()
    n_val = min(val_size, n // 5)
    return sorted(perm[n_val:]), sorted(perm[:n_val])
