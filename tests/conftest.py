"""Shared test fixtures: real H&E tiles, a tiny model config, device/dtype defaults, an isolated cache, and the
labelled real collections.

``CONTRIMIX_TEST_DEVICE`` (default ``cpu``) and ``CONTRIMIX_TEST_DTYPE`` (default ``float32``) pick the
``device`` and ``dtype`` fixtures.

The labelled collections (CAMELYON17 tiles, CAMELYON16 patches, BBBC021 crops) are never in the repository: they
are read from a data root, ``$CONTRIMIX_AUG_DATA``. When that is unset and ``<repo>/../shared/data`` exists (the
layout of this project's machines and CI), it is used. Tests that need the collections take the ``data_root``
fixture, which skips without them, or fails when ``CONTRIMIX_AUG_REQUIRE_DATA`` is set (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrimix_aug.model_config import ModelConfig

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DATA_ROOT_ENV = "CONTRIMIX_AUG_DATA"


def _load_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


@pytest.fixture(scope="session")
def real_tile_list() -> list[torch.Tensor]:
    """Every real H&E PNG crop under ``tests/fixtures`` as a (3, H, W) float32 tensor in [0, 1], sorted by path."""
    paths = sorted(FIXTURES.rglob("*.png"))
    if not paths:
        pytest.fail(f"no real H&E PNG crops under {FIXTURES}; the test fixtures are missing from the checkout.")
    return [_load_rgb(p) for p in paths]


@pytest.fixture(scope="session")
def real_tiles(real_tile_list: list[torch.Tensor]) -> torch.Tensor:
    """The real H&E crops as one (N, 3, S, S) float32 batch in [0, 1], centre-cropped to the smallest side."""
    s = min(min(t.shape[-2:]) for t in real_tile_list)

    def centre(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2:]
        top, left = (h - s) // 2, (w - s) // 2
        return t[:, top : top + s, left : left + s]

    return torch.stack([centre(t) for t in real_tile_list]).contiguous()


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A small, fast architecture (K=3, three attribute widths: minimum attribute input 8 px)."""
    return ModelConfig(num_attributes=3, content_hidden=4, attr_widths=(4, 8, 8))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(os.environ.get("CONTRIMIX_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def dtype() -> torch.dtype:
    return getattr(torch, os.environ.get("CONTRIMIX_TEST_DTYPE", "float32"))


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded CPU generator (tests never seed the global RNG)."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``CONTRIMIX_AUG_HOME`` at an empty temporary folder; returns it."""
    home = tmp_path / "contrimix_home"
    monkeypatch.setenv("CONTRIMIX_AUG_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny models that gain nothing from intra-op threads; on a busy 2-core runner OpenMP spinning
    makes them 10x slower. Benchmarks, not tests, measure speed."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tile_folder(tmp_path_factory: pytest.TempPathFactory, real_tile_list: list[torch.Tensor]) -> Path:
    """The real H&E fixture crops written as a plain folder of PNGs (what a user points DATA at)."""
    root = tmp_path_factory.mktemp("tiles")
    for i, t in enumerate(real_tile_list):
        arr = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(root / f"tile_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def tiny():
    """A small random-init model (tests/helpers.py)."""
    from helpers import make_tiny_model

    return make_tiny_model()


@pytest.fixture(scope="module")
def handset():
    """Hand-set weights whose re-rendering transfers mean optical density exactly (tests/helpers.py)."""
    from helpers import make_handset_model

    return make_handset_model()


@pytest.fixture(scope="session", autouse=True)
def _default_data_root():
    """For the session: ``CONTRIMIX_AUG_DATA`` = ``<repo>/../shared/data`` when unset and that folder exists, so the
    documented test command works on this project's machines. An explicit value always wins."""
    if os.environ.get(DATA_ROOT_ENV) or not SHARED_DATA.is_dir():
        yield
        return
    os.environ[DATA_ROOT_ENV] = str(SHARED_DATA)
    try:
        yield
    finally:
        os.environ.pop(DATA_ROOT_ENV, None)


@pytest.fixture(scope="session")
def data_root(_default_data_root) -> Path:
    """The folder holding the labelled collections (``$CONTRIMIX_AUG_DATA``): skip without it, or fail when
    ``CONTRIMIX_AUG_REQUIRE_DATA`` is set."""
    value = os.environ.get(DATA_ROOT_ENV)
    root = Path(value).expanduser() if value else None
    if root is None or not root.is_dir():
        msg = ("labelled collections not found: set CONTRIMIX_AUG_DATA=... (see docs)"
               + (f"; {root} is not a folder" if root is not None else ""))
        if os.environ.get("CONTRIMIX_AUG_REQUIRE_DATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def fixture_png(name: str) -> np.ndarray:
    """(H, W, 3) uint8 of a real crop in tests/fixtures."""
    with Image.open(FIXTURES / name) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="session")
def cmu1_edge() -> np.ndarray:
    """256 px real CMU-1 crop with glass, tissue and green marking ink."""
    return fixture_png("cmu1_edge_256.png")


@pytest.fixture(scope="session")
def skin_edge() -> np.ndarray:
    """256 px real skin crop across the epidermis/glass border."""
    return fixture_png("skin_edge_256.png")


@pytest.fixture(scope="session")
def fixture_tiles_u8() -> dict[str, list[np.ndarray]]:
    """The 8 real tissue crops of each vendorable source, uint8 (H, W, 3)."""
    return {s: [fixture_png(f"{s}_tile_{i:02d}.png") for i in range(8)] for s in ("cmu1", "skin")}


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled real fluorescence tiles (dsb nuclei) as a plain folder of 8-bit grey PNGs."""
    from contrimix_aug.data.readers import load_demo_tiles

    tiles, _ = load_demo_tiles(modality="fluorescence")
    root = tmp_path_factory.mktemp("grey")
    for i, t in enumerate(tiles):
        Image.fromarray(t[..., 0]).save(root / f"nuclei_{i:02d}.png")
    return root
