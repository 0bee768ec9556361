"""Torch datasets: image folders, the WILDS Camelyon17 and RxRx1 layouts, the real H&E and fluorescence sources,
and the CAMELYON17 tiles.

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

from .patches import sample_source_patches
from .readers import load_camelyon17_tiles, load_image
from .registry import HE_SOURCES, SOURCES

__all__ = [
    "IMAGE_EXTENSIONS",
    "FLUO_SOURCES",
    "Camelyon17Dataset",
    "Camelyon17TilesDataset",
    "FluorescenceSourcesDataset",
    "HESourcesDataset",
    "ImageFolderDataset",
    "RxRx1Dataset",
    "make_dataset",
    "read_image",
    "to_tensor",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

Transform = Callable[[torch.Tensor], torch.Tensor]


def read_image(path: str | os.PathLike, channels: int | None = 3) -> np.ndarray:
    """``(H, W, C)`` array of an image file (PNG/JPEG via PIL; TIFF via tifffile), native dtype.

    ``channels=3``: grey is repeated, alpha dropped (RGB). ``1``: one grey channel (RGB files are converted to
    luminance). ``None``: keep the file's channels.

    Raises:
        ValueError: the file cannot be decoded (names the file).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
                arr = np.moveaxis(arr, 0, -1)  # (C, H, W) TIFF
        else:
            from PIL import Image

            with Image.open(path) as im:
                if channels == 1 and im.mode not in ("L", "I", "I;16", "I;16B", "F"):
                    im = im.convert("L")
                elif channels == 3 or im.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types; name the file instead
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}. "
                         "Remove or re-export the file (PNG/JPEG/TIFF are supported).") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D image (H, W[, C]), got shape {arr.shape}")
    if channels == 1 and arr.shape[-1] != 1:
        raise ValueError(f"{path}: has {arr.shape[-1]} channels, 1 was asked for; pass channels=None or 3")
    if channels == 3:
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
        elif arr.shape[-1] != 3:
            raise ValueError(f"{path}: cannot make RGB from {arr.shape[-1]} channels; pass channels=None")
    return arr


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` array -> float32 ``(C, H, W)`` tensor in [0, 1].

    8/16-bit integers are divided by their dtype's maximum (uint8 / 255, uint16 / 65535); wider integers
    by the array's maximum; floats are clipped to [0, 1].
    """
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        f = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        scale = float(np.iinfo(arr.dtype).max) if arr.dtype.itemsize <= 2 else max(float(arr.max(initial=1)), 1.0)
        f = np.clip(arr.astype(np.float32) / scale, 0.0, 1.0)
    else:
        f = np.clip(arr.astype(np.float32), 0.0, 1.0)
    return torch.from_numpy(f).permute(2, 0, 1).contiguous()


def _crop_offsets(h: int, w: int, size: int, mode: str, rng: np.random.Generator | None) -> tuple[int, int]:
    if mode == "center" or rng is None:
        return (h - size) // 2, (w - size) // 2
    return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def _fit(arr: np.ndarray, size: int | None, mode: str, rng: np.random.Generator | None) -> tuple[np.ndarray, int, int]:
    """Crop ``arr`` to ``size`` x ``size`` (symmetric padding first when it is smaller)."""
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
        arr, y, x = _fit(arr, self.size, self.crop, rng)
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


class HESourcesDataset(Dataset):
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

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img = to_tensor(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        d = int(self.domains[index])
        y, x = (int(v) for v in self.coords[index])
        return img, {"source": self.source_ids[d], "domain": d, "y": y, "x": x}


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


class Camelyon17TilesDataset(Dataset):
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

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        img = to_tensor(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, {"hospital": int(self.hospitals[index]), "name": self.names[index]}


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
