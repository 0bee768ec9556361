"""The table of real data the package knows: PyPI sources (by sha256 of the member) and the labelled collections
(per-file sha256 in ``contrimix_aug/data/manifests``), checked against the project's real-data reference and, when
the data root is present, against the published collections' own manifests."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from contrimix_aug.data import registry as R

REAL_DATA_SHA = {  # from the project's real-data reference
    "cmu1": "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
    "prostate": "db1b88735af9214894d3084a01d37229b16a146eb7fc814420974eac377c351c",
    "prostate_ink": "2e935967f53d43d3e449a8bb8f296a5a96cefd6f7dc42ffa66aa52a5414871b9",
    "skin": "6995ff640f0aa2be916d1ebe5acb15b79ae4b1fc0ddeda9825aa4fc098c96ea3",
    "hgsc_nest": "4525ae5db61e7a385f24ec7ff3bf26e10f61a870c36e3c74b1a3cd436990ea57",
    "hgsc_stroma": "24d152a0c8cf6860567881855db9dbbbf279f1c749adadbe61f58aacdf112631",
    "tcia": "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
    "ihc": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "hgsc_nest_inst": "bde26874264819e60300edb0be133f72b8b4ce785fc064c25394d8102c346119",
    "hgsc_nest_type": "c90bcce7fe8be0be7a00fcc5cf7667f7b1f7ba21aa1de8bb37b2b138d862162a",
    "dsb": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
    "dsb_mask": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
    "cells3d": "355bd4ecebe78326c0439330fc1b70fa04bf4175c7698844fc9a97ee6dc85eb8",
    "cells3d_label": "873478582ef328da92331eba4ffb188b6718fd74bddc9506343a40cbf8e3f182",
    "ctc": "0bd8aee2e983ba7d6ea065cdb106cf94789a0afb596225961f9b4be2cb8ce75c",
}
SHA = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------------------------------------
# PyPI sources
# ---------------------------------------------------------------------------------------------
def test_registry_matches_reference_sha256():
    for sid, sha in REAL_DATA_SHA.items():
        assert R.get_source(sid).sha256 == sha, sid


def test_registry_fields_are_sane():
    for sid, src in R.SOURCES.items():
        assert src.id == sid
        assert SHA.fullmatch(src.sha256), sid
        assert src.archive in ("wheel", "sdist")
        assert src.stain in ("he", "ihc", "fluorescence")
        assert src.kind in ("image", "label", "polygons")
        assert src.licence and src.attribution
        assert src.um_per_px is None or src.um_per_px > 0
        assert src.requirement == f"{src.package}=={src.version}"
        if src.kind != "image":
            assert src.annotates in R.SOURCES and R.SOURCES[src.annotates].kind == "image", sid
    # only CC0 / public-domain material may be committed
    assert {s for s, v in R.SOURCES.items() if v.may_vendor} == {"cmu1", "skin", "dsb", "dsb_mask"}
    assert R.get_source("cmu1").mpp_measured and R.get_source("cmu1").um_per_px == pytest.approx(0.499)
    assert sum(v.mpp_measured for v in R.SOURCES.values()) == 1  # only the scanner header is a measurement


def test_list_sources_filters():
    assert R.list_sources("he") == ["cmu1", "prostate", "prostate_ink", "skin", "hgsc_nest", "hgsc_stroma", "tcia"]
    assert R.list_sources("ihc") == ["ihc"]
    assert R.list_sources("fluorescence") == ["dsb", "cells3d", "ctc"]
    assert set(R.list_sources(kind=None)) == set(R.SOURCES)
    assert "hgsc_nest_inst" in R.list_sources("he", kind="label")
    with pytest.raises(ValueError, match="stain"):
        R.list_sources("pas")


def test_he_sources_and_nucleus_classes():
    assert R.HE_SOURCES == ("cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma", "tcia")
    assert set(R.HE_SOURCES) <= set(R.list_sources("he")) and "prostate_ink" not in R.HE_SOURCES
    assert not hasattr(R, "HE_CLEAR_TERMS")
    assert R.NUCLEUS_CLASSES == {1: "connective", 2: "inflammatory", 3: "neoplastic"}


def test_unknown_source_lists_known_ids():
    with pytest.raises(KeyError, match="cmu1"):
        R.get_source("nope")


# ---------------------------------------------------------------------------------------------
# labelled collections
# ---------------------------------------------------------------------------------------------
def test_collections_table():
    assert list(R.COLLECTIONS) == ["camelyon17-tiles", "camelyon16-patches", "bbbc021-mcf7", "monuseg"]
    for name, c in R.COLLECTIONS.items():
        assert c.name == name and c.description and c.licence and c.attribution and c.provenance
        assert re.fullmatch(r"[0-9a-f]{40}", c.commit) and "/" in c.repository
        assert c.stain in ("he", "fluorescence")
        if c.url is not None:
            assert c.url.startswith("https://raw.githubusercontent.com/") and "{commit}" in c.url and "{path}" in c.url
        assert R.get_collection(name) is c
    assert R.COLLECTIONS["bbbc021-mcf7"].url is None  # no single public file holds the stack
    assert R.COLLECTIONS["camelyon16-patches"].um_per_px == pytest.approx(0.243)
    with pytest.raises(KeyError, match="camelyon17-tiles"):
        R.get_collection("camelyon18")


def test_manifests():
    c17 = R.COLLECTIONS["camelyon17-tiles"].files
    assert len(c17) == 25 and Counter(f.meta["centre"] for f in c17) == {str(i): 5 for i in range(5)}
    assert all(f.pixel_sha256 and SHA.fullmatch(f.pixel_sha256) for f in c17)  # published as .pt tensors
    assert all(re.fullmatch(r"domain_[0-4]_\d+\.png", f.path) and f.path.startswith(f"domain_{f.meta['centre']}_")
               for f in c17)
    c16 = R.COLLECTIONS["camelyon16-patches"].files
    assert len(c16) == 89
    assert Counter((f.meta["centre"], f.meta["label"]) for f in c16) == {
        ("RUMC", "normal"): 29, ("RUMC", "tumor"): 28, ("UMCU", "normal"): 16, ("UMCU", "tumor"): 16}
    assert Counter(f.meta["slide"] for f in c16) == {"tumor_001": 24, "tumor_004": 7, "tumor_064": 26, "tumor_073": 32}
    assert all(f.path.startswith(f.meta["label"] + "/") and f.pixel_sha256 is None for f in c16)
    bbbc = R.COLLECTIONS["bbbc021-mcf7"].files
    assert [f.path for f in bbbc] == ["images.npz", "cells.tsv", "BBBC021_v1_moa.csv"]
    assert R.COLLECTIONS["bbbc021-mcf7"].file("images.npz").sha256 == (
        "3dac8e22338143c97e6f9badb959c009223da96305c602b6506d22a009a36032")  # as published in the data README
    mo = R.COLLECTIONS["monuseg"].files
    assert Counter(f.meta["kind"] for f in mo) == {"image": 44, "mask": 44, "instances": 27}
    images = [f for f in mo if f.meta["kind"] == "image"]
    assert Counter(f.meta["split"] for f in images) == {"train": 30, "test": 14}
    assert all(f.path.startswith(("images/", "masks/", "instances/")) and f.meta["image"].startswith("images/")
               for f in mo)
    assert all(SHA.fullmatch(f.meta["source_sha256"]) and f.meta["source_path"].endswith(".tif") for f in images)
    assert R.COLLECTIONS["monuseg"].url is None  # test masks and instance maps were rasterised: data root only
    for c in R.COLLECTIONS.values():
        assert all(SHA.fullmatch(f.sha256) for f in c.files)
        assert len({f.path for f in c.files}) == len(c.files)
    with pytest.raises(KeyError, match="has no file 'nope.png'"):
        R.COLLECTIONS["camelyon17-tiles"].file("nope.png")


def test_monuseg_manifest_agrees_with_the_published_collection(data_root: Path):
    """Every image, mask and instance map of monuseg/MANIFEST.tsv, with its sha256, split, site and source."""
    with open(data_root / "monuseg" / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        published = list(csv.DictReader(fh, delimiter="\t"))
    ours = {f.path: f for f in R.COLLECTIONS["monuseg"].files}
    expected = {}
    for r in published:
        expected[r["path"]] = r["sha256"]
        expected[r["mask"]] = r["mask_sha256"]
        if r["instances"]:
            expected[r["instances"]] = r["instances_sha256"]
        f = ours[r["path"]]
        assert (f.meta["split"], f.meta["site"], f.meta["organ"], f.meta["source_sha256"]) == (
            r["split"], r["site"], r["organ"], r["source_sha256"]), r["path"]
    assert {p: f.sha256 for p, f in ours.items()} == expected


@pytest.mark.parametrize("name", ["camelyon17-tiles", "camelyon16-patches"])
def test_manifests_agree_with_the_published_collection(data_root: Path, name: str):
    """The package's manifest lists exactly the files (and sha256) of the collection's own MANIFEST.tsv."""
    with open(data_root / name / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        published = {r["path"]: r for r in csv.DictReader(fh, delimiter="\t")}
    ours = {f.path: f for f in R.COLLECTIONS[name].files}
    assert set(ours) == set(published)
    for path, f in ours.items():
        assert f.sha256 == published[path]["sha256"], path
        assert f.meta["centre"] == published[path]["centre"], path
        if name == "camelyon16-patches":
            assert (f.meta["label"], f.meta["slide"]) == (published[path]["label"], published[path]["slide"]), path
