"""What a user installs: the licence and the data notice in the wheel, the PyPI description (no links that break
on PyPI), the sdist carrying the documents that description names, and the TIFF readers as the ``[data]`` extra."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTICE = ROOT / "contrimix_aug" / "assets" / "README.md"
PYPI = ROOT / "docs" / "pypi.md"


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def _requirements(text: str) -> set[str]:
    """Distribution names of a setup.cfg requirement list (newline- or ';'-separated)."""
    return {re.split(r"[<>=!\[ ]", r.strip(), maxsplit=1)[0].lower()
            for r in re.split(r"[\n;]", text) if r.strip()}


# ---------------------------------------------------------------------------------------------------------------
# licence and notice
# ---------------------------------------------------------------------------------------------------------------
def test_licence_is_mit_and_declared():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text
    meta = _setup_cfg()["metadata"]
    assert meta["license"] == "MIT"
    assert "LICENSE" in meta["license_files"].replace(",", " ").split()


def test_notice_states_the_terms_of_every_bundled_file():
    """contrimix_aug/assets/README.md names every bundled weights file and tile source with the terms the registry
    (and the weights' own metadata) record for it."""
    from importlib import resources

    from contrimix_aug import load_weights, weights_path
    from contrimix_aug.data.registry import COLLECTIONS, HE_SOURCES, SOURCES
    from contrimix_aug.data.source_datasets import FLUO_SOURCES

    text = NOTICE.read_text(encoding="utf-8")
    assert resources.files("contrimix_aug").joinpath("assets", "README.md").read_text(encoding="utf-8") == text
    for name in sorted(p.stem for p in (ROOT / "contrimix_aug" / "assets" / "weights").glob("*.safetensors")):
        assert f"| `{name}` |" in text, f"bundled weights {name} not in the notice"
        assert "MIT (this project)" in load_weights(weights_path(name)).meta.licence
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    for sid in (*HE_SOURCES, *FLUO_SOURCES):
        src = SOURCES[sid]
        assert src.licence in rows[sid], f"{sid}: the notice does not give the registry's terms {src.licence!r}"
        assert src.requirement in rows[sid]
    assert COLLECTIONS["camelyon17-tiles"].licence in rows["camelyon"]
    # every bundled tile's source, with its terms; only redistributable sources are bundled
    bundled = {p.name.split("_")[0] for d in ("tiles", "tiles_fluorescence")
               for p in (ROOT / "contrimix_aug" / "assets" / d).glob("*.png")}
    assert bundled == {"cmu1", "skin", "dsb"}
    for sid in bundled:
        assert SOURCES[sid].may_vendor
        line = next(v for k, v in rows.items() if k.startswith(("tiles/" + sid, "tiles_fluorescence/" + sid)))
        assert SOURCES[sid].licence in line


# ---------------------------------------------------------------------------------------------------------------
# the PyPI description
# ---------------------------------------------------------------------------------------------------------------
def test_pypi_description_has_no_relative_link_or_image():
    meta = _setup_cfg()["metadata"]
    assert meta["long_description"].strip() == "file: docs/pypi.md"
    assert meta["long_description_content_type"].strip() == "text/markdown"
    text = PYPI.read_text(encoding="utf-8")
    assert "![" not in text and "<img" not in text.lower()  # no images: none has a public URL
    targets = re.findall(r"\]\(([^)]*)\)", text) + re.findall(r"""href=["']([^"']*)""", text)
    relative = [t for t in targets if not t.startswith("https://")]
    assert not relative, f"relative links break on PyPI: {relative}"
    # the documents it names by path exist: in the source tree (the sdist test checks they ship) or the package
    for path in re.findall(r"`((?:docs|contrimix_aug)/[\w/.*-]+\.md)`", text):
        if "*" not in path:
            assert (ROOT / path).is_file(), path
    assert "contrimix-aug --help" in text and 'pip install "contrimix_aug[data]"' in text


def _source_copy(dest: Path) -> Path:
    """The files a build reads (no .venv, no benchmark results): the source tree as an sdist would hold it."""
    src = dest / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "LICENSE", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "docs", src / "docs", ignore=shutil.ignore_patterns("*.png", "*.json", "*.gz", "*.csv"))
    shutil.copytree(ROOT / "contrimix_aug", src / "contrimix_aug", ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A wheel (`pip wheel --no-deps --no-build-isolation`) and an sdist (setuptools' build_meta) of a copy of the
    source tree, built in a temporary folder (nothing is written into the checkout)."""
    tmp = tmp_path_factory.mktemp("build")
    src = _source_copy(tmp)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp / "wheel"), str(src)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not installed in this environment")
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; "
                        f"print(build_meta.build_sdist({str(tmp / 'sdist')!r}))"],
                       cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"wheel": next((tmp / "wheel").glob("contrimix_aug-*.whl")),
            "sdist": next((tmp / "sdist").glob("contrimix_aug-*.tar.gz"))}


def test_wheel_holds_licence_notice_and_pypi_description(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        licence = [n for n in names if ".dist-info/" in n and n.endswith("LICENSE")]
        assert licence and whl.read(licence[0]) == (ROOT / "LICENSE").read_bytes()
        assert whl.read("contrimix_aug/assets/README.md") == NOTICE.read_bytes()
        assert "contrimix_aug/recipes/README.md" in names  # named by `contrimix-aug train --list-recipes`
        metadata = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode("utf-8")
    head, _, description = metadata.partition("\n\n")
    assert "License: MIT" in head and "License-File: LICENSE" in head
    assert description.strip() == PYPI.read_text(encoding="utf-8").strip()
    requires = re.findall(r"^Requires-Dist: (.*)$", head, flags=re.M)
    base = [r for r in requires if "extra ==" not in r]
    assert base and not [r for r in base if r.lower().startswith(("tifffile", "imagecodecs"))]
    assert {r.split(">=")[0] for r in requires if r.endswith('extra == "data"')} == {"tifffile", "imagecodecs"}


def test_sdist_holds_the_documents_the_description_names(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert "LICENSE" in names and "contrimix_aug/assets/README.md" in names
    for path in re.findall(r"`((?:docs|contrimix_aug)/[\w/.-]+\.md)`", PYPI.read_text(encoding="utf-8")):
        assert path in names, f"docs/pypi.md names {path}, which the sdist lacks (MANIFEST.in)"


# ---------------------------------------------------------------------------------------------------------------
# the [data] extra
# ---------------------------------------------------------------------------------------------------------------
def test_tiff_readers_are_the_data_extra():
    opts = _setup_cfg()
    base = _requirements(opts["options"]["install_requires"])
    extras = opts["options.extras_require"]
    assert not base & {"tifffile", "imagecodecs"}
    assert _requirements(extras["data"]) == {"tifffile", "imagecodecs"}
    assert {"tifffile", "imagecodecs"} <= _requirements(extras["test"])  # the test suite reads TIFF
    assert "data" in extras["dev"]


def test_the_package_works_without_the_data_extra():
    """tifffile and imagecodecs blocked (as when not installed): importing, the CLI parser, the bundled tiles and
    weights all work; only a TIFF read asks for the extra."""
    code = (
        "import sys\n"
        "sys.modules['tifffile'] = None; sys.modules['imagecodecs'] = None\n"
        "import torch, contrimix_aug, contrimix_aug.data, contrimix_aug.cli\n"
        "from contrimix_aug.data import load_demo_tiles\n"
        "tiles, ids = load_demo_tiles()\n"
        "x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255\n"
        "y = contrimix_aug.ContriMix(weights='he', p=1.0, seed=0)(x)\n"
        "contrimix_aug.cli.build_parser()\n"
        "print(tuple(y.shape), sorted(set(ids)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "(16, 3, 96, 96) ['cmu1', 'skin']"
