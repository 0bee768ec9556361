"""Readers: image files (:func:`read_image`, :func:`to_tensor`), pixels and labels of the registered data
(TIFF/SVS, PNG/JPEG, npz, parquet polygons), the bundled demo tiles, and the labelled collections (CAMELYON17
tiles, CAMELYON16 patches, BBBC021 crops, MoNuSeg nuclei tiles).

H&E images come back as ``(H, W, 3)`` uint8 RGB; fluorescence and labels as their native arrays.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .cache import collection_file, fetch
from .registry import NUCLEUS_CLASSES, get_collection, get_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "BBBC021",
    "BBBC021_CHANNELS",
    "DEMO_TILES",
    "Camelyon16Patches",
    "Camelyon17Tiles",
    "MoNuSeg",
    "NucleiLabels",
    "load_bbbc021",
    "load_camelyon16_patches",
    "load_camelyon17_tiles",
    "load_demo_tiles",
    "load_hgsc_nuclei",
    "load_image",
    "load_monuseg",
    "read_image",
    "to_grey",
    "to_tensor",
]

DATA_EXTRA_HINT = 'pip install "contrimix_aug[data]"'
"""The install command of the optional TIFF readers (tifffile, imagecodecs), named by every error about them."""


class MissingDataExtraError(ModuleNotFoundError):
    """An optional reader package (tifffile or imagecodecs, the ``[data]`` extra) is not installed; the message
    names the file, the package and ``pip install "contrimix_aug[data]"``."""


def _import_tifffile(path: Path):
    try:
        import tifffile
    except ImportError as err:
        raise MissingDataExtraError(
            f"reading {path.name} (TIFF/SVS) needs tifffile, which is not installed: {DATA_EXTRA_HINT} "
            "(tifffile and imagecodecs)", name="tifffile") from err
    return tifffile


def _tiff_asarray(read, path: Path) -> np.ndarray:
    """``read()`` with a missing codec (tifffile raises ValueError naming imagecodecs) as MissingDataExtraError."""
    try:
        return read()
    except ValueError as err:
        if "imagecodecs" not in str(err):
            raise
        raise MissingDataExtraError(
            f"decoding {path.name} (compressed TIFF/SVS tiles) needs imagecodecs, which is not installed: "
            f"{DATA_EXTRA_HINT} ({err})", name="imagecodecs") from err


def _read_tiff(path: Path) -> np.ndarray:
    tifffile = _import_tifffile(path)
    with tifffile.TiffFile(path) as tif:
        if path.suffix.lower() == ".svs":
            page = tif.pages[0]  # level 0 (full resolution); later pages: thumbnail, label, macro
            return _tiff_asarray(page.asarray, path)  # JPEG tiles need imagecodecs
        return _tiff_asarray(tif.asarray, path)


@functools.lru_cache(maxsize=16)
def _load_cached(path_str: str, mtime_ns: int, kind: str) -> np.ndarray:
    path = Path(path_str)
    suffix = path.suffix.lower()
    if suffix in (".svs", ".tif", ".tiff"):
        arr = _read_tiff(path)
    elif suffix == ".npz":
        with np.load(path) as z:
            arr = z["nuc_raster"] if "nuc_raster" in z.files else z[z.files[0]]
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    arr = np.ascontiguousarray(arr)
    arr.flags.writeable = False
    return arr


def load_image(source_id: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> np.ndarray:
    """Pixels of ``source_id`` (fetched first if needed); a fresh writable copy.

    Returns:
        H&E/IHC: ``(H, W, 3)`` uint8 RGB (cmu1: level 0 of the SVS, 2967x2220).
        Fluorescence: the native array (dsb ``(512, 512)`` uint16, cells3d ``(60, 256, 256)`` uint16,
        ctc ``(30, 511, 511)`` uint8). Labels: the native raster (HGSC npz: ``(1500, 1500)`` int32).
    """
    src = get_source(source_id)
    if src.kind == "polygons":
        raise ValueError(f"{source_id} is a polygon table, not an image; use load_hgsc_nuclei({src.annotates!r})")
    path = fetch(source_id, cache_dir=cache_dir, progress=progress)
    arr = _load_cached(str(path), path.stat().st_mtime_ns, src.kind)
    rgb_ok = arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8
    if src.stain in ("he", "ihc") and src.kind == "image" and not rgb_ok:
        raise ValueError(f"{source_id}: expected an (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}")
    return arr.copy()


@dataclass(frozen=True)
class NucleiLabels:
    """Labelled nuclei of one HGSC image.

    Attributes:
        source_id: the image (``"hgsc_nest"`` or ``"hgsc_stroma"``).
        image: ``(H, W, 3)`` uint8 RGB.
        instances: ``(H, W)`` int32, 0 = background, 1..N = nucleus ids.
        types: ``(H, W)`` uint8 codes of :data:`NUCLEUS_CLASSES` (0 = background).
        classes: ``(N,)`` int64 class code of nucleus ``i + 1`` (majority of its pixels).
        centroids: ``(N, 2)`` float64 (y, x) centroid of nucleus ``i + 1`` (NaN if it has no pixel).
    """

    source_id: str
    image: np.ndarray
    instances: np.ndarray
    types: np.ndarray
    classes: np.ndarray
    centroids: np.ndarray
    class_names: dict[int, str] = field(default_factory=lambda: dict(NUCLEUS_CLASSES))

    def __len__(self) -> int:
        return int(self.classes.shape[0])


def _per_instance(instances: np.ndarray, types: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = int(instances.max())
    flat = instances.ravel().astype(np.int64)
    counts = np.bincount(flat, minlength=n + 1).astype(np.float64)
    yy, xx = np.indices(instances.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1) / counts
        cx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1) / counts
    votes = np.zeros((n + 1, len(NUCLEUS_CLASSES) + 1), np.int64)
    np.add.at(votes, (flat, types.ravel().astype(np.int64)), 1)
    votes[:, 0] = 0
    classes = votes.argmax(1)
    return classes[1:], np.stack([cy[1:], cx[1:]], axis=1)


def _wkb_polygons(buf: bytes) -> list[list[np.ndarray]]:
    """Polygons (list of rings, each ``(K, 2)`` x, y) of a WKB Polygon or MultiPolygon."""

    def rings_at(off: int, order: str) -> tuple[list[np.ndarray], int]:
        (nrings,) = struct.unpack_from(order + "I", buf, off)
        off += 4
        rings = []
        for _ in range(nrings):
            (npts,) = struct.unpack_from(order + "I", buf, off)
            off += 4
            rings.append(np.frombuffer(buf, dtype=order + "f8", count=2 * npts, offset=off).reshape(-1, 2))
            off += 16 * npts
        return rings, off

    order = "<" if buf[0] == 1 else ">"
    (gtype,) = struct.unpack_from(order + "I", buf, 1)
    if gtype == 3:
        return [rings_at(5, order)[0]]
    if gtype == 6:
        (n,) = struct.unpack_from(order + "I", buf, 5)
        off, polys = 9, []
        for _ in range(n):
            sub = "<" if buf[off] == 1 else ">"
            rings, off = rings_at(off + 5, sub)
            polys.append(rings)
        return polys
    raise ValueError(f"unsupported WKB geometry type {gtype} (only Polygon/MultiPolygon)")


def _rasterise_parquet(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "the hgsc_stroma nuclei exist only as a parquet polygon table; reading it needs pyarrow "
            "(pip install pyarrow). hgsc_nest has npz rasters and needs nothing extra."
        ) from err
    from PIL import Image, ImageDraw

    table = pq.read_table(path, columns=["geometry", "class_name"])
    geoms = table.column("geometry").to_pylist()
    names = table.column("class_name").to_pylist()
    code = {v: k for k, v in NUCLEUS_CLASSES.items()}
    inst = Image.new("I", (shape[1], shape[0]), 0)
    typ = Image.new("L", (shape[1], shape[0]), 0)
    d_inst, d_typ = ImageDraw.Draw(inst), ImageDraw.Draw(typ)
    for i, (g, name) in enumerate(zip(geoms, names, strict=True), start=1):
        for rings in _wkb_polygons(g):
            outer = [tuple(p) for p in rings[0]]
            d_inst.polygon(outer, fill=i)
            d_typ.polygon(outer, fill=code.get(name, 0))
            for hole in rings[1:]:
                d_inst.polygon([tuple(p) for p in hole], fill=0)
                d_typ.polygon([tuple(p) for p in hole], fill=0)
    return np.asarray(inst, dtype=np.int32), np.asarray(typ, dtype=np.uint8)


def load_hgsc_nuclei(source_id: str = "hgsc_nest", *, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> NucleiLabels:
    """Labelled nuclei of ``"hgsc_nest"`` (npz rasters, 1,295 nuclei) or ``"hgsc_stroma"`` (423 nuclei).

    hgsc_stroma ships only as parquet polygons: it needs ``pyarrow`` and is rasterised here (polygon
    vertices are pixel (x, y) coordinates of the 1500x1500 image). Labels are silver-standard output of
    the lab's segmentation pipeline; split spatially, never by nucleus.
    """
    if source_id not in ("hgsc_nest", "hgsc_stroma"):
        raise ValueError(f"labelled nuclei exist for 'hgsc_nest' and 'hgsc_stroma' only, got {source_id!r}")
    image = load_image(source_id, cache_dir=cache_dir, progress=progress)
    if source_id == "hgsc_nest":
        inst = load_image("hgsc_nest_inst", cache_dir=cache_dir, progress=progress).astype(np.int32)
        typ = load_image("hgsc_nest_type", cache_dir=cache_dir, progress=progress).astype(np.uint8)
    else:
        path = fetch("hgsc_stroma_parquet", cache_dir=cache_dir, progress=progress)
        inst, typ = _rasterise_parquet(path, image.shape[:2])
    classes, centroids = _per_instance(inst, typ)
    return NucleiLabels(source_id, image, inst, typ, classes, centroids)


DEMO_TILES = {"he": "tiles", "fluorescence": "tiles_fluorescence"}
"""Folders of real tiles bundled with the package, by modality (under ``contrimix_aug/assets``)."""


def load_demo_tiles(source_id: str | None = None, *, modality: str = "he") -> tuple[np.ndarray, list[str]]:
    """Real tiles bundled with the package, 96 px: H&E (CC0 cmu1 and public-domain skin, about 0.5 um/px) or
    fluorescence (CC0 dsb nuclei, 8-bit after a percentile stretch).

    Returns:
        ``(N, 96, 96, 3)`` uint8 RGB tiles (fluorescence: ``(N, 96, 96, 1)``) and their ``N`` source ids (sorted by
        file name).
    """
    from importlib import resources

    from PIL import Image

    if modality not in DEMO_TILES:
        raise ValueError(f"modality: expected one of {sorted(DEMO_TILES)}, got {modality!r}.")
    folder = resources.files("contrimix_aug").joinpath("assets", DEMO_TILES[modality])
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    if source_id is not None:
        names = [n for n in names if n.rsplit("_", 1)[0] == source_id]
    if not names:
        raise FileNotFoundError(f"no bundled {modality} demo tiles{' for ' + source_id if source_id else ''} in {folder}")
    tiles, ids = [], []
    for n in names:
        with Image.open(io.BytesIO(folder.joinpath(n).read_bytes())) as im:
            arr = np.asarray(im.convert("RGB" if modality == "he" else "L"))
        tiles.append(arr if arr.ndim == 3 else arr[..., None])
        ids.append(n.rsplit("_", 1)[0])
    return np.stack(tiles), ids


# ------------------------------------------------------------------------------------------------
# labelled collections (read through a data root, the cache or the public URL)
# ------------------------------------------------------------------------------------------------
def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


@dataclass(frozen=True)
class Camelyon17Tiles:
    """CAMELYON17 tiles: ``images`` (N, 512, 512, 3) uint8 RGB, ``hospitals`` (N,) centre index 0-4 (WILDS
    numbering: 0, 3, 4 train, 1 validation, 2 test), ``names`` (N,) file names, ``um_per_px`` (an estimate)."""

    images: np.ndarray
    hospitals: np.ndarray
    names: tuple[str, ...]
    um_per_px: float

    def __len__(self) -> int:
        return int(self.hospitals.shape[0])


def load_camelyon17_tiles(hospitals: tuple[int, ...] | list[int] | None = None, *,
                          data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                          progress: bool = True) -> Camelyon17Tiles:
    """The 25 CAMELYON17 tiles (5 per hospital), or those of ``hospitals`` only, sorted by file name."""
    coll = get_collection("camelyon17-tiles")
    files = [f for f in coll.files if hospitals is None or int(f.meta["centre"]) in set(hospitals)]
    if not files:
        raise ValueError(f"camelyon17-tiles: no tile of hospitals {hospitals}; hospitals are 0-4.")
    imgs = [_read_rgb(collection_file(coll.name, f.path, data_root=data_root, cache_dir=cache_dir,
                                      progress=progress)) for f in files]
    return Camelyon17Tiles(np.stack(imgs), np.array([int(f.meta["centre"]) for f in files]),
                           tuple(f.path for f in files), float(coll.um_per_px))


@dataclass(frozen=True)
class Camelyon16Patches:
    """CAMELYON16 patches: ``images`` (N, 256, 256, 3) uint8 RGB (alpha dropped), ``labels`` (N,) 1 = tumour,
    0 = normal, ``centres`` (N,) ``"RUMC"`` / ``"UMCU"``, ``slides`` (N,), ``names`` (N,), ``um_per_px``."""

    images: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    slides: np.ndarray
    names: tuple[str, ...]
    um_per_px: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_camelyon16_patches(centres: tuple[str, ...] | list[str] | None = None, *,
                            data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                            progress: bool = True) -> Camelyon16Patches:
    """The 89 CAMELYON16 patches (RUMC 57, UMCU 32), or those of ``centres`` only, in manifest order."""
    coll = get_collection("camelyon16-patches")
    files = [f for f in coll.files if centres is None or f.meta["centre"] in set(centres)]
    if not files:
        raise ValueError(f"camelyon16-patches: no patch of centres {centres}; centres are 'RUMC' and 'UMCU'.")
    imgs = [_read_rgb(collection_file(coll.name, f.path, data_root=data_root, cache_dir=cache_dir,
                                      progress=progress)) for f in files]
    return Camelyon16Patches(
        np.stack(imgs), np.array([int(f.meta["label"] == "tumor") for f in files]),
        np.array([f.meta["centre"] for f in files]), np.array([f.meta["slide"] for f in files]),
        tuple(f.path for f in files), float(coll.um_per_px),
    )


BBBC021_CHANNELS = ("DAPI", "tubulin", "actin")
"""Channel order of the BBBC021 crops."""


@dataclass(frozen=True)
class BBBC021:
    """BBBC021 single-cell crops: ``images`` (N, 68, 68, 3) uint16 (channels :data:`BBBC021_CHANNELS`),
    ``labels`` (N,) 1 = cycloheximide (mechanism "Protein synthesis"), 0 = DMSO control, ``plates`` (N,) plate
    numbers as strings (``"27801"``), ``wells`` (N,), ``compounds`` (N,)."""

    images: np.ndarray
    labels: np.ndarray
    plates: np.ndarray
    wells: np.ndarray
    compounds: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_bbbc021(*, data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> BBBC021:
    """The 7,774 BBBC021 MCF-7 crops of ``bbbc021-mcf7`` with their plate and class (needs a data root)."""
    kw = {"data_root": data_root, "cache_dir": cache_dir, "progress": progress}
    table = collection_file("bbbc021-mcf7", "cells.tsv", **kw)
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    with np.load(collection_file("bbbc021-mcf7", "images.npz", **kw), allow_pickle=False) as z:
        images = np.ascontiguousarray(z["images"])
    if images.shape[0] != len(rows) or images.shape[1:] != (68, 68, 3):
        raise ValueError(f"bbbc021-mcf7: images {images.shape} do not match the {len(rows)} rows of cells.tsv.")
    moa = np.array([r["moa"] for r in rows])
    unknown = sorted(set(moa) - {"DMSO", "Protein synthesis"})
    if unknown:
        raise ValueError(f"bbbc021-mcf7: unexpected mechanisms {unknown} in cells.tsv.")
    return BBBC021(images, (moa == "Protein synthesis").astype(np.int64),
                   np.array([r["plate"].removeprefix("Week4_") for r in rows]), np.array([r["well"] for r in rows]),
                   np.array([r["compound"] for r in rows]))


@dataclass(frozen=True)
class MoNuSeg:
    """MoNuSeg tiles: ``images`` (N, 1000, 1000, 3) uint8 RGB at ``um_per_px``, ``masks`` (N, 1000, 1000) bool
    nuclei, ``instances`` (N,) uint16 (1000, 1000) instance maps (0 = background) or None where the collection has
    none (17 training tiles), ``splits`` (N,) ``"train"`` / ``"test"`` (the official hospital-disjoint split),
    ``sites`` (N,) TCGA tissue source site, ``organs`` (N,), ``names`` (N,) slide barcodes."""

    images: np.ndarray
    masks: np.ndarray
    instances: tuple[np.ndarray | None, ...]
    splits: np.ndarray
    sites: np.ndarray
    organs: np.ndarray
    names: tuple[str, ...]
    um_per_px: float

    def __len__(self) -> int:
        return int(self.splits.shape[0])


def load_monuseg(split: str | None = None, *, sites: tuple[str, ...] | list[str] | None = None,
                 data_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> MoNuSeg:
    """The MoNuSeg tiles of ``split`` (``"train"``, ``"test"`` or None for all 44), optionally of ``sites`` only,
    in manifest order, with their nuclei masks and instance maps (needs a data root holding ``monuseg/``)."""
    if split not in (None, "train", "test"):
        raise ValueError(f"monuseg: split must be 'train', 'test' or None, got {split!r}.")
    coll = get_collection("monuseg")
    kw = {"data_root": data_root, "cache_dir": cache_dir, "progress": progress}
    rows = [f for f in coll.files if f.meta["kind"] == "image" and (split is None or f.meta["split"] == split)
            and (sites is None or f.meta["site"] in set(sites))]
    if not rows:
        known = sorted({f.meta["site"] for f in coll.files if split is None or f.meta["split"] == split})
        raise ValueError(f"monuseg: no tile of sites {sites} in split {split!r}; its sites are {known}.")
    by_image: dict[str, dict[str, str]] = {}
    for f in coll.files:
        by_image.setdefault(f.meta["image"], {})[f.meta["kind"]] = f.path
    images, masks, instances = [], [], []
    for f in rows:
        images.append(_read_rgb(collection_file(coll.name, f.path, **kw)))
        masks.append(_read_label(collection_file(coll.name, by_image[f.path]["mask"], **kw)) > 0)
        inst = by_image[f.path].get("instances")
        instances.append(_read_label(collection_file(coll.name, inst, **kw)) if inst else None)
    return MoNuSeg(np.stack(images), np.stack(masks), tuple(instances), np.array([f.meta["split"] for f in rows]),
                   np.array([f.meta["site"] for f in rows]), np.array([f.meta["organ"] for f in rows]),
                   tuple(f.meta["slide"] for f in rows), float(coll.um_per_px))


def _read_label(path: Path) -> np.ndarray:
    """A single-channel label PNG (binary mask or uint16 instance map) as its native 2-D array."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    return np.ascontiguousarray(arr if arr.ndim == 2 else arr[..., 0])


# ------------------------------------------------------------------------------------------------
# image files
# ------------------------------------------------------------------------------------------------
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""File suffixes :func:`read_image` reads."""


def read_image(path: str | os.PathLike, channels: int | None = 3) -> np.ndarray:
    """``(H, W, C)`` array of an image file (PNG/JPEG via PIL; TIFF via tifffile), native dtype.

    ``channels=3``: grey is repeated, alpha dropped (RGB). ``1``: one grey channel (RGB files are converted to
    luminance, :func:`to_grey`). ``None``: keep the file's channels.

    Raises:
        ValueError: the file cannot be decoded (names the file).
    """
    path = Path(path)
    tifffile = _import_tifffile(path) if path.suffix.lower() in (".tif", ".tiff") else None
    try:
        if tifffile is not None:
            arr = _tiff_asarray(lambda: tifffile.imread(path), path)
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
    except (FileNotFoundError, MissingDataExtraError):
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types; name the file instead
        raise ValueError(f"cannot read image {path}: {type(err).__name__}: {err}. "
                         "Remove or re-export the file (PNG/JPEG/TIFF are supported).") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D image (H, W[, C]), got shape {arr.shape}")
    if channels == 1 and arr.shape[-1] in (3, 4):
        arr = to_grey(arr)  # TIFF: the same luminance as PIL's "L" above
    elif channels == 1 and arr.shape[-1] != 1:
        raise ValueError(f"{path}: cannot make one grey channel from {arr.shape[-1]} channels; pass channels=None")
    if channels == 3:
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
        elif arr.shape[-1] != 3:
            raise ValueError(f"{path}: cannot make RGB from {arr.shape[-1]} channels; pass channels=None")
    return arr


def to_grey(arr: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` array -> ``(H, W, 1)`` luminance, same dtype: one channel is kept as it is; RGB (alpha
    dropped) is weighted 0.299 R + 0.587 G + 0.114 B, exactly as PIL's ``convert("L")`` for 8-bit, rounded for
    other integers.

    Raises:
        ValueError: ``C`` is not 1, 3 or 4.
    """
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"to_grey: expected an (H, W, C) array with C = 1, 3 or 4, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        return arr
    rgb = arr[..., :3]
    if arr.dtype == np.uint8:  # PIL's fixed point: (19595 R + 38470 G + 7471 B + 2^15) >> 16
        w = np.array([19595, 38470, 7471], np.uint32)
        return ((rgb.astype(np.uint32) @ w + 0x8000) >> 16).astype(np.uint8)[..., None]
    grey = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return grey.astype(arr.dtype)[..., None]


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


