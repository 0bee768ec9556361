"""Dataset classes on tiny copies of the WILDS layouts written from the vendored real crops, image folders (RGB and
grey), the real CAMELYON17 tiles through the data root, plus make_dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from contrimix_aug.data import datasets as D
from contrimix_aug.data import readers as RD
from contrimix_aug.data import source_datasets as SD
from contrimix_aug.data import patches as P

FIXTURES = Path(__file__).parent / "fixtures"


def _png(name: str) -> np.ndarray:
    with Image.open(FIXTURES / name) as im:
        return np.asarray(im.convert("RGB")).copy()


def _tiles() -> list[np.ndarray]:
    return [_png(f"{s}_tile_{i:02d}.png") for s in ("cmu1", "skin") for i in range(8)]


# ---------------------------------------------------------------------------------------------
# Camelyon17-WILDS layout
# ---------------------------------------------------------------------------------------------

# (patient, node, x, y, tumor, slide, center, split): centers 0, 3, 4 have train (0) and id_val (1) rows;
# center 1 = OOD val, center 2 = test (their metadata split value is 0 in the real file).
CAMELYON_ROWS = [
    (4, 4, 3328, 21792, 1, 0, 0, 0), (4, 4, 3360, 21792, 0, 0, 0, 0), (9, 1, 6240, 24384, 1, 1, 0, 1),
    (15, 1, 8000, 13728, 0, 2, 1, 0), (15, 1, 8032, 13728, 1, 2, 1, 0),
    (20, 2, 5632, 10944, 0, 3, 2, 0), (21, 2, 5664, 10944, 1, 4, 2, 0), (22, 4, 1024, 2048, 0, 5, 2, 0),
    (60, 3, 1200, 3000, 1, 6, 3, 0), (61, 4, 1232, 3000, 0, 7, 3, 1),
    (80, 1, 900, 700, 1, 8, 4, 0), (81, 0, 932, 700, 0, 9, 4, 0), (81, 0, 964, 700, 1, 9, 4, 1),
]


def write_camelyon(root: Path, rows=CAMELYON_ROWS) -> Path:
    d = root / "camelyon17_v1.0"
    tiles = _tiles()
    d.mkdir(parents=True)
    with open(d / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split"])
        for i, (p, n, x, y, t, s, c, sp) in enumerate(rows):
            w.writerow([i, f"{p:03d}", n, x, y, t, s, c, sp])
            folder = d / "patches" / f"patient_{p:03d}_node_{n}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(tiles[i % len(tiles)]).save(folder / f"patch_patient_{p:03d}_node_{n}_x_{x}_y_{y}.png")
    return d


@pytest.mark.parametrize(("split", "n", "centers"), [
    ("train", 5, {0, 3, 4}), ("id_val", 3, {0, 3, 4}), ("val", 2, {1}), ("test", 3, {2}), ("all", 13, {0, 1, 2, 3, 4}),
])
def test_camelyon17_official_splits(tmp_path, split, n, centers):
    write_camelyon(tmp_path)
    ds = D.Camelyon17Dataset(tmp_path, split)
    assert len(ds) == n and set(ds.hospitals.tolist()) == centers
    img, meta = ds[0]
    assert img.shape == (3, 96, 96) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert set(meta) >= {"label", "hospital", "slide", "patient", "node", "x", "y", "path"}
    assert meta["hospital"] in centers and meta["label"] in (0, 1)
    row = next(r for r in CAMELYON_ROWS if (r[2], r[3]) == (meta["x"], meta["y"]))
    assert (meta["label"], meta["hospital"], meta["slide"]) == (row[4], row[6], row[5])
    # pixels are the PNG's, scaled to [0, 1]
    ref = np.asarray(Image.open(meta["path"]).convert("RGB"), np.float32) / 255
    np.testing.assert_allclose(img.permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_camelyon17_train_and_id_val_disjoint_and_root_forms(tmp_path):
    d = write_camelyon(tmp_path)
    tr, iv = D.Camelyon17Dataset(tmp_path, "train"), D.Camelyon17Dataset(d, "id_val")  # parent or the folder
    assert not {tr.path(i) for i in range(len(tr))} & {iv.path(i) for i in range(len(iv))}
    assert tr.labels.tolist() == [1, 0, 1, 1, 0] and iv.hospitals.tolist() == [0, 3, 4]


def test_camelyon17_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        D.Camelyon17Dataset(tmp_path)
    d = write_camelyon(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        D.Camelyon17Dataset(tmp_path, "ood")
    ds = D.Camelyon17Dataset(tmp_path, "train")
    ds.path(0).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        ds[0]
    (d / "metadata.csv").write_text("patient,node\n004,4\n")
    with pytest.raises(ValueError, match="missing column"):
        D.Camelyon17Dataset(tmp_path)


def test_camelyon17_collates(tmp_path):
    write_camelyon(tmp_path)
    x, meta = next(iter(DataLoader(D.Camelyon17Dataset(tmp_path, "train"), batch_size=4)))
    assert x.shape == (4, 3, 96, 96) and meta["label"].shape == (4,) and len(meta["path"]) == 4


# ---------------------------------------------------------------------------------------------
# RxRx1-WILDS layout
# ---------------------------------------------------------------------------------------------

# (experiment, plate, well, site, dataset, sirna_id, cell_type)
RXRX_ROWS = [
    ("HEPG2-01", 1, "B02", 1, "train", 10, "HEPG2"), ("HEPG2-01", 1, "B02", 2, "train", 10, "HEPG2"),
    ("HUVEC-03", 2, "C05", 1, "train", 3, "HUVEC"), ("HUVEC-03", 2, "C05", 2, "train", 3, "HUVEC"),
    ("RPE-02", 4, "D11", 1, "val", 7, "RPE"), ("RPE-02", 4, "D11", 2, "val", 7, "RPE"),
    ("U2OS-04", 3, "E09", 1, "test", 1138, "U2OS"),
]


def write_rxrx1(root: Path) -> Path:
    d = root / "rxrx1_v1.0"
    crops = [_png("cmu1_edge_256.png"), _png("skin_edge_256.png")]
    d.mkdir(parents=True)
    with open(d / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["site_id", "well_id", "cell_type", "dataset", "experiment", "plate", "well", "site",
                    "well_type", "sirna", "sirna_id"])
        for i, (e, p, well, site, ds, sid, ct) in enumerate(RXRX_ROWS):
            w.writerow([f"{e}_{p}_{well}_{site}", f"{e}_{p}_{well}", ct, ds, e, p, well, site,
                        "treatment", f"s{sid}", sid])
            folder = d / "images" / e / f"Plate{p}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crops[i % 2]).save(folder / f"{well}_s{site}.png")
    return d


@pytest.mark.parametrize(("split", "n"), [("train", 2), ("id_test", 2), ("val", 2), ("test", 1), ("all", 7)])
def test_rxrx1_official_splits(tmp_path, split, n):
    write_rxrx1(tmp_path)
    ds = D.RxRx1Dataset(tmp_path, split)
    assert len(ds) == n
    img, meta = ds[0]
    assert img.shape == (3, 256, 256) and img.dtype == torch.float32
    assert ds.experiments == ["HEPG2-01", "HUVEC-03", "RPE-02", "U2OS-04"]
    assert meta["domain"] == ds.experiments.index(meta["experiment"])
    sites = {ds[i][1]["site"] for i in range(len(ds))}
    if split == "train":
        assert sites == {1} and ds.labels.tolist() == [10, 3]
    if split == "id_test":
        assert sites == {2}
    assert Path(meta["path"]).parts[-3:-1] == (meta["experiment"], f"Plate{meta['plate']}")


def test_rxrx1_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="rxrx1_v1.0"):
        D.RxRx1Dataset(tmp_path)
    write_rxrx1(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        D.RxRx1Dataset(tmp_path, "id_val")


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------


def write_folder(root: Path) -> Path:
    import tifffile

    (root / "sub").mkdir(parents=True)
    for i, t in enumerate(_tiles()[:4]):
        Image.fromarray(t).save(root / f"tile_{i}.png")
    Image.fromarray(_png("skin_edge_256.png")).save(root / "sub" / "edge.jpg", quality=95)
    grey16 = (_png("cmu1_tile_00.png")[..., 0].astype(np.uint16) * 257)
    tifffile.imwrite(root / "sub" / "grey16.tif", grey16)
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_lists_and_crops(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = D.ImageFolderDataset(root, size=64, crop="center")
    assert len(ds) == 6
    assert len(D.ImageFolderDataset(root, recursive=False)) == 4
    img, meta = ds[[p.name for p in ds.paths].index("tile_0.png")]
    assert img.shape == (3, 64, 64) and (meta["y"], meta["x"]) == (16, 16)
    full = RD.to_tensor(RD.read_image(meta["path"]))
    torch.testing.assert_close(img, full[:, 16:80, 16:80])
    # 16-bit grey TIFF -> RGB in [0, 1], scaled by 65535
    tif = next(i for i, p in enumerate(ds.paths) if p.suffix == ".tif")
    g, _ = ds[tif]
    torch.testing.assert_close(g[0], g[1])
    assert g.max() <= 1 and g.max() > 0.5
    native = D.ImageFolderDataset(root, channels=None, extensions=["tif"])
    assert native[0][0].shape == (1, 96, 96)


def test_image_folder_random_crop_seeded(tmp_path):
    root = write_folder(tmp_path / "imgs")
    a = D.ImageFolderDataset(root, size=48, seed=7)
    b = D.ImageFolderDataset(root, size=48, seed=7)
    i = next(i for i, p in enumerate(a.paths) if p.name == "edge.jpg")
    (xa, ma), (xb, mb) = a[i], b[i]
    torch.testing.assert_close(xa, xb)
    assert (ma["y"], ma["x"]) == (mb["y"], mb["x"])
    seen = {(a[i][1]["y"], a[i][1]["x"]) for _ in range(3)}
    assert len(seen) == 1  # fixed per item with a seed
    fresh = D.ImageFolderDataset(root, size=48)
    assert len({(fresh[i][1]["y"], fresh[i][1]["x"]) for _ in range(8)}) > 1


def test_read_image_channels(tmp_path):
    rgb = _png("cmu1_tile_00.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 1]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    # channels=1: one grey channel; a grey file as stored, an RGB file converted to luminance (PIL's "L")
    g = RD.read_image(tmp_path / "grey.png", channels=1)
    assert g.shape == (96, 96, 1) and g.dtype == np.uint8 and np.array_equal(g[..., 0], rgb[..., 1])
    lum = RD.read_image(tmp_path / "rgb.png", channels=1)
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    assert lum.shape == (96, 96, 1) and np.array_equal(lum[..., 0], want)
    # channels=3: grey repeated, alpha dropped; None: as stored
    assert np.array_equal(RD.read_image(tmp_path / "grey.png"), np.repeat(g, 3, axis=-1))
    assert np.array_equal(RD.read_image(tmp_path / "rgba.png"), rgb)
    assert RD.read_image(tmp_path / "rgba.png", channels=None).shape == (96, 96, 4)
    assert RD.read_image(tmp_path / "grey.png", channels=None).shape == (96, 96, 1)


def test_image_folder_grey_and_sizes(tmp_path):
    from contrimix_aug.data.readers import load_demo_tiles

    fluo, _ = load_demo_tiles(modality="fluorescence")  # real nuclei, 8-bit grey
    for i, t in enumerate(fluo[:3]):
        Image.fromarray(t[..., 0]).save(tmp_path / f"nuc_{i}.png")
    Image.fromarray(fluo[3, :64, :80, 0]).save(tmp_path / "small.png")
    ds = D.ImageFolderDataset(tmp_path, channels=1)
    assert ds.image_sizes() == [(96, 96), (96, 96), (96, 96), (64, 80)]
    img, _ = ds[0]
    assert img.shape == (1, 96, 96)
    torch.testing.assert_close(img[0], torch.from_numpy(fluo[0, ..., 0]).float() / 255)
    spec = D.make_dataset(str(tmp_path), channels=1)
    assert isinstance(spec, D.ImageFolderDataset) and spec[0][0].shape == (1, 96, 96)
    assert D.make_dataset(f"folder:{tmp_path}", channels=1)[0][0].shape == (1, 96, 96)
    assert D.make_dataset(str(tmp_path))[0][0].shape == (3, 96, 96)  # the default stays RGB
    tif = tmp_path / "t"
    tif.mkdir()
    import tifffile

    tifffile.imwrite(tif / "a.tif", (fluo[0, ..., 0].astype(np.uint16) * 257)[:50, :70])
    assert D.ImageFolderDataset(tif, channels=None).image_sizes() == [(50, 70)]


def test_image_folder_pads_small_images(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = D.ImageFolderDataset(root, size=128, crop="center", extensions=[".png"])
    assert ds[0][0].shape == (3, 128, 128)


def test_fit_to_size_crops_and_mirror_pads_a_real_tile():
    """The crop behind the folder dataset and ``contrimix-aug demo``: centre offsets, seeded random offsets inside
    the image, mirror padding (the tile's own border rows, not black) when the tile is smaller than ``size``."""
    tile = _png("cmu1_tile_00.png")
    h, w = tile.shape[:2]
    crop, y, x = D.fit_to_size(tile, 32, "center", None)
    assert (y, x) == ((h - 32) // 2, (w - 32) // 2) and np.array_equal(crop, tile[y:y + 32, x:x + 32])
    crop, y, x = D.fit_to_size(tile, 32, "random", np.random.default_rng(0))
    assert 0 <= y <= h - 32 and 0 <= x <= w - 32 and np.array_equal(crop, tile[y:y + 32, x:x + 32])
    assert D.fit_to_size(tile, None, "center", None)[0] is tile
    small = tile[:20, :30]
    padded, y, x = D.fit_to_size(small, 40, "center", None)
    assert padded.shape == (40, 40, 3) and (y, x) == (0, 0)
    assert np.array_equal(padded[10:30, 5:35], small)  # the tile sits in the middle
    assert np.array_equal(padded[9, 5:35], small[0]) and np.array_equal(padded[:, 4], padded[:, 5])  # mirrored edges


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        D.ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"\x89PNG not really")
    ds = D.ImageFolderDataset(tmp_path / "bad")
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]
    with pytest.raises(ValueError, match="crop"):
        D.ImageFolderDataset(tmp_path / "bad", crop="corner")


# ---------------------------------------------------------------------------------------------
# real H&E sources dataset (registry loader replaced by the vendored real crops)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fixture_sources(monkeypatch):
    def mosaic(sid):
        t = [_png(f"{sid}_tile_{i:02d}.png") for i in range(8)]
        return np.concatenate([np.concatenate(t[:4], axis=1), np.concatenate(t[4:], axis=1)], axis=0)

    imgs = {"cmu1": mosaic("cmu1"), "skin": mosaic("skin")}
    monkeypatch.setattr(P, "load_image", lambda sid, **kw: imgs[sid].copy())
    return imgs


def test_he_sources_dataset(fixture_sources):
    ds = SD.HESourcesDataset(["cmu1", "skin"], size=48, n_per_source=6, seed=1, split="train")
    assert len(ds) == 12 and ds.source_ids == ("cmu1", "skin")
    img, meta = ds[7]
    assert img.shape == (3, 48, 48) and meta == {"source": "skin", "domain": 1, "y": meta["y"], "x": meta["x"]}
    val = SD.HESourcesDataset(["cmu1", "skin"], size=48, n_per_source=6, seed=1, split="val")
    for d in (0, 1):
        a = ds.coords[ds.domains == d]
        b = val.coords[val.domains == d]
        assert not any(abs(p[0] - q[0]) < 48 and abs(p[1] - q[1]) < 48 for p in a for q in b)
    with pytest.raises(ValueError, match="unknown source"):
        SD.HESourcesDataset(["cmu1", "nope"])


# ---------------------------------------------------------------------------------------------
# make_dataset
# ---------------------------------------------------------------------------------------------


def test_make_dataset_specs(tmp_path, fixture_sources):
    write_camelyon(tmp_path / "wilds")
    write_rxrx1(tmp_path / "wilds")
    folder = write_folder(tmp_path / "imgs")
    assert isinstance(D.make_dataset(f"camelyon17:{tmp_path / 'wilds'}", split="test"), D.Camelyon17Dataset)
    assert len(D.make_dataset(f"rxrx1:{tmp_path / 'wilds'}", split="val")) == 2
    assert isinstance(D.make_dataset(str(folder), size=32), D.ImageFolderDataset)
    assert isinstance(D.make_dataset(f"folder:{folder}"), D.ImageFolderDataset)
    he = D.make_dataset("he-sources:cmu1, skin", size=32, n_per_source=2)
    assert isinstance(he, SD.HESourcesDataset) and he.source_ids == ("cmu1", "skin")


def test_make_dataset_default_he_sources(monkeypatch):
    seen = {}

    def fake(self, source_ids, **kw):
        seen["ids"] = tuple(source_ids)

    monkeypatch.setattr(SD.HESourcesDataset, "__init__", fake)
    D.make_dataset("he-sources")
    assert seen["ids"] == ("cmu1", "prostate", "skin", "hgsc_nest", "hgsc_stroma", "tcia")


@pytest.mark.parametrize("spec", ["imagenet:/data", "/no/such/folder", "camelyon17:", "he-sources:"])
def test_make_dataset_errors(spec):
    with pytest.raises(ValueError) as info:
        D.make_dataset(spec)
    msg = str(info.value)
    assert "camelyon17:ROOT" in msg or "he-sources:" in msg


# ---------------------------------------------------------------------------------------------
# real CAMELYON17 tiles (data root)
# ---------------------------------------------------------------------------------------------


def test_camelyon17_tiles_dataset_spatial_split(data_root):
    train = SD.Camelyon17TilesDataset(split="train", data_root=data_root, progress=False)
    val = SD.Camelyon17TilesDataset(split="val", data_root=data_root, progress=False)
    whole = SD.Camelyon17TilesDataset(data_root=data_root, progress=False)
    assert SD.WILDS_TRAIN_HOSPITALS == (0, 3, 4)
    assert len(train) == len(val) == len(whole) == 15 and set(train.hospitals.tolist()) == {0, 3, 4}
    x, meta = train[0]
    assert x.shape == (3, 410, 512) and x.dtype == torch.float32 and set(meta) == {"hospital", "name"}
    v, _ = val[0]
    assert v.shape == (3, 102, 512)
    full, _ = whole[0]
    # top 80 % train, bottom 20 % val: disjoint rows that tile the whole image
    assert torch.equal(torch.cat([x, v], 1), full) and full.shape == (3, 512, 512)
    assert train.um_per_px == pytest.approx(0.25)
    spec = D.make_dataset("camelyon17-tiles:1, 2", data_root=data_root, progress=False)
    assert isinstance(spec, SD.Camelyon17TilesDataset) and set(spec.hospitals.tolist()) == {1, 2} and len(spec) == 10
    assert set(D.make_dataset("camelyon17-tiles", data_root=data_root, progress=False).hospitals.tolist()) == {0, 3, 4}
    with pytest.raises(ValueError, match="hospitals are integers 0-4"):
        D.make_dataset("camelyon17-tiles:a,b")
    with pytest.raises(ValueError, match="split"):
        SD.Camelyon17TilesDataset(split="test", data_root=data_root)
