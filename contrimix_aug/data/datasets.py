"""Torch datasets of the user's own data: an image folder and the WILDS Camelyon17 and RxRx1 layouts, and
:func:`make_dataset`, which builds any dataset (these and :mod:`.source_datasets`) from a short spec.

Every dataset returns ``(image, meta)``: ``image`` a float32 ``(C, H, W)`` tensor in [0, 1] (after the
optional ``transform``), ``meta`` a dict of plain ints/strings (collates with the default collate).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .readers import IMAGE_EXTENSIONS, read_image, to_tensor
from .registry import HE_SOURCES
from .source_datasets import (
    FLUO_SOURCES,
    WILDS_TRAIN_HOSPITALS,
    Camelyon17TilesDataset,
    FluorescenceSourcesDataset,
    HESourcesDataset,
)

__all__ = ["Camelyon17Dataset", "ImageFolderDataset", "RxRx1Dataset", "fit_to_size", "make_dataset"]

Transform = Callable[[torch.Tensor], torch.Tensor]


def _crop_offsets(h: int, w: int, size: int, mode: str, rng: np.random.Generator | None) -> tuple[int, int]:
    if mode == "center" or rng is None:
        return (h - size) // 2, (w - size) // 2
    return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def fit_to_size(arr: np.ndarray, size: int | None, mode: str,
                rng: np.random.Generator | None) -> tuple[np.ndarray, int, int]:
    """``(size, size, C)`` crop of an ``(H, W, C)`` array (symmetric padding first when it is smaller) and the crop's
    top-left offset in the padded array; ``mode`` ``"center"`` or ``"random"`` (drawn from ``rng``).
    ``size=None`` returns ``arr`` whole."""
    if size is None:
        return arr, 0, 0
    h, w = arr.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")
        h, w = arr.shape[:2]
    y, x = _crop_offsets(h, w, size, mode, rng)
    return arr[y:y + size, x:x + size], y, x


class ImageFolderDataset(Dataset):
    """All images under ``root`` (sorted paths), optionally cropped to ``size`` x ``size``.

    Args:
        root: folder of images.
        size: crop size (``None``: whole images, which then must share one size to batch).
        extensions: file suffixes to take (case-insensitive).
        recursive: also look in sub-folders.
        crop: ``"random"`` or ``"center"``.
        seed: with ``crop="random"``, makes the crop of item ``i`` a fixed function of ``(seed, i)``;
            ``None`` draws fresh crops each time (training).
        channels: 3 (RGB), 1 (grey) or ``None`` (native channels, e.g. fluorescence TIFFs).
        transform: applied to the ``(C, H, W)`` tensor.

    Items: ``(image, {"path": str, "index": int, "y": int, "x": int})``.
    """

    def __init__(self, root: str | os.PathLike, size: int | None = None, *,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True,
                 crop: Literal["random", "center"] = "random", seed: int | None = None,
                 channels: int | None = 3, transform: Transform | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist (or is not a folder)")
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive int or None, got {size}")
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        it = self.root.rglob("*") if recursive else self.root.iterdir()
        self.paths = sorted(p for p in it if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))
        if not self.paths:
            raise ValueError(f"no images with extensions {', '.join(exts)} in {self.root}"
                             f"{' (recursive)' if recursive else ' (pass recursive=True to search sub-folders)'}")
        self.size, self.crop, self.seed, self.channels, self.transform = size, crop, seed, channels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every image, read from the file headers (nothing is decoded except TIFF)."""
        from PIL import Image

        sizes = []
        for p in self.paths:
            if p.suffix.lower() in (".tif", ".tiff"):
                h, w = read_image(p, self.channels).shape[:2]
            else:
                with Image.open(p) as im:
                    w, h = im.size
            sizes.append((int(h), int(w)))
        return sizes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        path = self.paths[index]
        arr = read_image(path, self.channels)
        rng = None
        if self.crop == "random":
            rng = np.random.default_rng([self.seed, index]) if self.seed is not None else np.random.default_rng()
        arr, y, x = fit_to_size(arr, self.size, self.crop, rng)
        img = to_tensor(arr)
        if self.transform is not None:
            img = self.transform(img)
        return img, {"path": str(path), "index": int(index), "y": int(y), "x": int(x)}


def _find_dataset_dir(root: str | os.PathLike, name: str) -> Path:
    """``root`` itself or ``root/name`` (the WILDS folder), whichever holds metadata.csv."""
    root = Path(root).expanduser()
    for cand in (root, root / name):
        if (cand / "metadata.csv").is_file():
            return cand
    raise FileNotFoundError(
        f"no metadata.csv in {root} or {root / name}. Point root at the folder that contains {name}/ "
        f"(as downloaded by WILDS) or at {name}/ itself."
    )


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(c for c in cols if c)}")
        return list(reader)


def _check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(repr(s) for s in allowed)}, got {split!r}")


def _load_file(path: Path, channels: int | None) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"image {path} listed in metadata.csv is missing; re-download or re-extract the dataset"
        )
    return read_image(path, channels)



class _MetadataImageDataset(Dataset):
    """A WILDS-style dataset: ``self.rows`` from metadata.csv, ``path(index)`` and ``_meta(row, index)`` per layout."""

    rows: list[dict[str, str]]
    transform: Transform | None

    def path(self, index: int) -> Path:
        raise NotImplementedError

    def _meta(self, r: dict[str, str], index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        path = self.path(index)
        img = to_tensor(_load_file(path, 3))
        if self.transform is not None:
            img = self.transform(img)
        return img, {**self._meta(self.rows[index], index), "path": str(path)}


class Camelyon17Dataset(_MetadataImageDataset):
    """Camelyon17-WILDS patches (96x96 RGB PNG) with the official split.

    Layout: ``ROOT/camelyon17_v1.0/metadata.csv`` (patient, node, x_coord, y_coord, tumor, slide, center,
    split) and ``patches/patient_{PPP}_node_{N}/patch_patient_{PPP}_node_{N}_x_{X}_y_{Y}.png``.

    Splits: ``"train"`` = centers 0, 3, 4 with split == 0; ``"id_val"`` = those with split == 1;
    ``"val"`` = center 1 (OOD validation); ``"test"`` = center 2; ``"all"`` = every row.

    Items: ``(image (3, 96, 96), {"label": tumor, "hospital": center, "slide", "patient", "node", "x", "y",
    "path"})``. ``labels`` and ``hospitals`` give the per-item arrays (e.g. for group samplers).
    """

    SPLITS = ("train", "id_val", "val", "test", "all")
    _COLUMNS = ("patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split")

    def __init__(self, root: str | os.PathLike, split: str = "train", *, transform: Transform | None = None) -> None:
        _check_split(split, self.SPLITS)
        self.dir = _find_dataset_dir(root, "camelyon17_v1.0")
        rows = _read_csv(self.dir / "metadata.csv", self._COLUMNS)
        try:
            center = np.array([int(r["center"]) for r in rows], np.int64)
            meta_split = np.array([int(r["split"]) for r in rows], np.int64)
        except ValueError as err:
            raise ValueError(f"{self.dir / 'metadata.csv'}: non-integer center/split value ({err})") from None
        ood = (center == 1) | (center == 2)
        keep = {
            "train": ~ood & (meta_split == 0),
            "id_val": ~ood & (meta_split == 1),
            "val": center == 1,
            "test": center == 2,
            "all": np.ones(len(rows), bool),
        }[split]
        self.rows = [rows[i] for i in np.flatnonzero(keep)]
        if not self.rows:
            raise ValueError(f"split {split!r} of {self.dir / 'metadata.csv'} is empty")
        self.split, self.transform = split, transform
        self.labels = np.array([int(r["tumor"]) for r in self.rows], np.int64)
        self.hospitals = np.array([int(r["center"]) for r in self.rows], np.int64)

    @staticmethod
    def _patient(value: str) -> str:
        v = value.strip()
        return v.zfill(3) if v.isdigit() else v

    def path(self, index: int) -> Path:
        """File of item ``index``."""
        r = self.rows[index]
        p, n = self._patient(r["patient"]), int(r["node"])
        x, y = int(r["x_coord"]), int(r["y_coord"])
        return self.dir / "patches" / f"patient_{p}_node_{n}" / f"patch_patient_{p}_node_{n}_x_{x}_y_{y}.png"

    def _meta(self, r: dict[str, str], index: int) -> dict[str, Any]:
        return {"label": int(r["tumor"]), "hospital": int(r["center"]), "slide": int(r["slide"]),
                "patient": self._patient(r["patient"]), "node": int(r["node"]),
                "x": int(r["x_coord"]), "y": int(r["y_coord"])}


class RxRx1Dataset(_MetadataImageDataset):
    """RxRx1-WILDS fluorescence images (256x256, 3-channel PNG) with the official split.

    Layout: ``ROOT/rxrx1_v1.0/metadata.csv`` (site_id, well_id, cell_type, dataset, experiment, plate, well,
    site, well_type, sirna, sirna_id) and ``images/{experiment}/Plate{plate}/{well}_s{site}.png``.

    Splits (WILDS ``official``): ``"train"`` = dataset == train and site 1; ``"id_test"`` = dataset == train
    and site 2; ``"val"`` = dataset == val; ``"test"`` = dataset == test; ``"all"``.

    Items: ``(image (3, H, W), {"label": sirna_id, "domain": experiment index, "experiment", "cell_type",
    "plate", "well", "site", "path"})``; ``experiments`` lists the domain names in index order (sorted).
    """

    SPLITS = ("train", "id_test", "val", "test", "all")
    _COLUMNS = ("site_id", "well_id", "cell_type", "dataset", "experiment", "plate", "well", "site",
                "well_type", "sirna", "sirna_id")

    def __init__(self, root: str | os.PathLike, split: str = "train", *, transform: Transform | None = None) -> None:
        _check_split(split, self.SPLITS)
        self.dir = _find_dataset_dir(root, "rxrx1_v1.0")
        rows = _read_csv(self.dir / "metadata.csv", self._COLUMNS)

        def keep(r: dict[str, str]) -> bool:
            ds, site = r["dataset"], int(r["site"])
            return {"train": ds == "train" and site == 1, "id_test": ds == "train" and site == 2,
                    "val": ds == "val", "test": ds == "test", "all": True}[split]

        try:
            self.rows = [r for r in rows if keep(r)]
        except ValueError as err:
            raise ValueError(f"{self.dir / 'metadata.csv'}: non-integer site value ({err})") from None
        if not self.rows:
            raise ValueError(f"split {split!r} of {self.dir / 'metadata.csv'} is empty")
        self.experiments = sorted({r["experiment"] for r in rows})
        index = {e: i for i, e in enumerate(self.experiments)}
        self.split, self.transform = split, transform
        self.labels = np.array([int(r["sirna_id"]) for r in self.rows], np.int64)
        self.domains = np.array([index[r["experiment"]] for r in self.rows], np.int64)

    def path(self, index: int) -> Path:
        """File of item ``index``."""
        r = self.rows[index]
        return self.dir / "images" / r["experiment"] / f"Plate{int(r['plate'])}" / f"{r['well']}_s{int(r['site'])}.png"

    def _meta(self, r: dict[str, str], index: int) -> dict[str, Any]:
        return {"label": int(r["sirna_id"]), "domain": int(self.domains[index]), "experiment": r["experiment"],
                "cell_type": r["cell_type"], "plate": int(r["plate"]), "well": r["well"], "site": int(r["site"])}



_SPEC_FORMS = (
    "'camelyon17:ROOT' (WILDS Camelyon17 layout), 'rxrx1:ROOT' (WILDS RxRx1 layout), "
    "'he-sources' (real H&E sources: " + ", ".join(HE_SOURCES) + "), 'he-sources:ID,ID,...', "
    "'camelyon17-tiles' (real CAMELYON17 tiles of the WILDS training hospitals 0, 3, 4) or 'camelyon17-tiles:0,3', "
    "'fluo-sources' or 'fluo-sources:dsb,ctc' (real 1-channel nuclear stains), "
    "'folder:PATH' or an existing folder path (image folder)"
)


def make_dataset(spec: str, **kwargs: Any) -> Dataset:
    """Build a dataset from a short spec; ``kwargs`` go to the dataset class.

    Forms: ``"camelyon17:ROOT"``, ``"rxrx1:ROOT"``, ``"he-sources"``, ``"he-sources:cmu1,skin"``,
    ``"fluo-sources"``, ``"camelyon17-tiles"``, ``"camelyon17-tiles:0,3,4"``, ``"folder:PATH"`` or a path to an
    existing folder (``channels=1`` reads grey images).

    Raises:
        ValueError: unknown form (lists the forms), or bad ids.
    """
    spec = str(spec)
    channels = kwargs.pop("channels", 3)
    if os.path.isdir(os.path.expanduser(spec)):
        return ImageFolderDataset(spec, channels=channels, **kwargs)
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("camelyon17", "camelyon") and sep and arg:
        return Camelyon17Dataset(arg, **kwargs)
    if kind == "rxrx1" and sep and arg:
        return RxRx1Dataset(arg, **kwargs)
    if kind == "camelyon17-tiles":
        try:
            hosp = [int(s) for s in arg.split(",") if s.strip()] if sep else list(WILDS_TRAIN_HOSPITALS)
        except ValueError:
            raise ValueError(f"dataset spec {spec!r}: hospitals are integers 0-4, e.g. 'camelyon17-tiles:0,3,4'") from None
        return Camelyon17TilesDataset(hosp, **kwargs)
    if kind == "he-sources":
        ids = [s.strip() for s in arg.split(",") if s.strip()] if sep else list(HE_SOURCES)
        if not ids:
            raise ValueError("'he-sources:' needs at least one source id, e.g. 'he-sources:cmu1,skin'")
        return HESourcesDataset(ids, **kwargs)
    if kind == "fluo-sources":
        ids = [s.strip() for s in arg.split(",") if s.strip()] if sep else list(FLUO_SOURCES)
        return FluorescenceSourcesDataset(ids, **kwargs)
    if kind == "folder" and sep and arg:
        return ImageFolderDataset(arg, channels=channels, **kwargs)
    if sep and kind in ("camelyon17", "camelyon", "rxrx1", "folder"):
        raise ValueError(f"dataset spec {spec!r} lacks a path after ':'. Forms: {_SPEC_FORMS}")
    raise ValueError(f"unknown dataset spec {spec!r} (not a known form, and no such folder). Forms: {_SPEC_FORMS}")

