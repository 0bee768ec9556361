"""MoNuSeg nuclei segmentation across hospitals: train on the tiles of some TCGA tissue source sites, test on the
tiles of 14 sites never seen.

Data (``contrimix_aug.data.load_monuseg``): 44 real H&E tiles, 1000 px at 0.2521 µm/px, from 32 TCGA tissue
source sites (hospitals and biobanks; a site sends one organ, so site and organ are confounded), with nuclei masks;
the official split is hospital-disjoint (train 30 tiles of 18 sites, test 14 tiles of 14 other sites), and every
test tile has an instance map.

Variants (the held-out domain of a run is always the 14 test sites; the variant names the training set):

* ``official``: the 30 training tiles of 18 sites;
* ``few-sites``: the 11 tiles of the three training sites with the most tiles, fixed before any run:
  ``G9`` (5 prostate tiles), ``B0`` (1 liver, 2 kidney) and ``HE`` (3 kidney): the few-hospital case most users
  live in.

Inputs: tiles resampled to 0.5 µm/px (504 px; masks and instance maps by nearest neighbour). Metrics per test tile
(each is its own site): Dice of the nuclei mask and AJI of the instances, averaged over tiles.

Pre-registration used only training sites (``DEV_SPLITS``): ``official-dev`` trains on 12 training sites and
validates on the other 6; ``few-sites-dev`` trains on the three sites and validates on the other 15 training sites.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from contrimix_aug.data import load_monuseg
from contrimix_aug.data.patches import resample_to_mpp

__all__ = ["DEV_SPLITS", "FEW_SITES", "MPP", "VARIANTS", "Split", "describe", "dev_validation_sites", "grid_crops", "split"]

MPP = 0.5
FEW_SITES = ("G9", "B0", "HE")  # the three training sites with the most tiles (5, 3, 3), fixed in advance
VARIANTS = ("official", "few-sites")
DEV_SPLITS = ("official-dev", "few-sites-dev")


@dataclass(frozen=True)
class Split:
    """One train -> test split of tiles: ``*_x`` (T, 504, 504, 3) uint8, ``*_mask`` (T, 504, 504) bool,
    ``test_inst`` (T,) instance maps (or None), ``*_sites`` (T,) TCGA site codes, ``test_names`` (T,) slides."""

    name: str
    train_x: np.ndarray
    train_mask: np.ndarray
    train_sites: np.ndarray
    test_x: np.ndarray
    test_mask: np.ndarray
    test_inst: tuple
    test_sites: np.ndarray
    test_names: tuple
    test_organs: np.ndarray


TILES_ENV = "CONTRIMIX_AUG_MONUSEG_TILES"
"""Path of a prepared copy of the tiles at 0.5 µm/px (:func:`save_tiles`), read instead of the data root when set:
the whole collection does not fit the 64 MiB that a GPU session can carry (``scripts/prepare_gpu_carry.sh``)."""


def _manifest_sha() -> str:
    import hashlib
    from importlib import resources

    return hashlib.sha256(resources.files("contrimix_aug.data").joinpath("manifests", "monuseg.tsv")
                          .read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _tiles():
    """Every tile at 0.5 µm/px: (images, masks, instances, splits, sites, organs, names)."""
    import os

    prepared = os.environ.get(TILES_ENV)
    if prepared:
        with np.load(prepared, allow_pickle=False) as z:
            if str(z["manifest_sha"]) != _manifest_sha():
                raise ValueError(f"{prepared} was prepared from another monuseg manifest; prepare it again "
                                 "(python benchmarks/dg/tasks/monuseg.py OUT.npz) or unset " + TILES_ENV)
            inst = tuple(z[f"inst_{i}"] if f"inst_{i}" in z else None for i in range(len(z["splits"])))
            return (z["images"], z["masks"], inst, z["splits"], z["sites"], z["organs"], tuple(z["names"].tolist()))
    d = load_monuseg(progress=False)
    img = np.stack([resample_to_mpp(im, d.um_per_px, MPP) for im in d.images])
    msk = np.stack([resample_to_mpp(m.astype(np.uint8), d.um_per_px, MPP, method="nearest") > 0 for m in d.masks])
    inst = tuple(None if i is None else resample_to_mpp(i, d.um_per_px, MPP, method="nearest") for i in d.instances)
    return img, msk, inst, d.splits, d.sites, d.organs, d.names


def save_tiles(path: str) -> None:
    """Write the tiles at 0.5 µm/px (read from the sha256-verified data root) to ``path`` (compressed npz)."""
    img, msk, inst, splits, sites, organs, names = _tiles()
    np.savez_compressed(path, images=img, masks=msk, splits=splits, sites=sites, organs=organs,
                        names=np.asarray(names), manifest_sha=np.asarray(_manifest_sha()),
                        **{f"inst_{i}": a for i, a in enumerate(inst) if a is not None})


if __name__ == "__main__":  # python benchmarks/dg/tasks/monuseg.py OUT.npz
    import sys

    save_tiles(sys.argv[1])


def _make(name: str, train: np.ndarray, test: np.ndarray) -> Split:
    img, msk, inst, _, sites, organs, names = _tiles()
    return Split(name, img[train], msk[train], sites[train], img[test], msk[test],
                 tuple(inst[i] for i in np.flatnonzero(test)), sites[test], tuple(np.asarray(names)[test]),
                 organs[test])


def dev_validation_sites() -> tuple[str, ...]:
    """The 6 training sites the official dev split validates on (every third of the sorted training sites)."""
    _, _, _, splits, sites, _, _ = _tiles()
    return tuple(sorted(set(sites[splits == "train"].tolist()))[1::3])


def split(name: str) -> Split:
    """A variant (``official``, ``few-sites``: test = the 14 official test sites) or a dev split (``*-dev``:
    training sites only)."""
    _, _, _, splits, sites, _, _ = _tiles()
    tr = splits == "train"
    if name == "official":
        return _make(name, tr, splits == "test")
    if name == "few-sites":
        return _make(name, tr & np.isin(sites, FEW_SITES), splits == "test")
    if name == "official-dev":
        val = np.isin(sites, dev_validation_sites())
        return _make(name, tr & ~val, tr & val)
    if name == "few-sites-dev":
        few = np.isin(sites, FEW_SITES)
        return _make(name, tr & few, tr & ~few)
    raise ValueError(f"monuseg: unknown split {name!r}; known: {VARIANTS + DEV_SPLITS}")


def describe() -> dict:
    _, _, _, splits, sites, organs, _ = _tiles()
    per_site = {s: {"split": str(splits[sites == s][0]), "organ": str(organs[sites == s][0]),
                    "tiles": int((sites == s).sum())} for s in sorted(set(sites))}
    return {
        "task": "MoNuSeg nuclei segmentation, train on some TCGA tissue source sites, test on 14 unseen sites",
        "shift": "real: 32 hospitals/biobanks (TCGA tissue source sites), 9 organs (site and organ confounded)",
        "inputs": f"1000 px tiles at 0.2521 um/px resampled to {MPP} um/px (504 px; labels nearest-neighbour)",
        "metrics": "per test tile: Dice of the nuclei mask, AJI of the instances (connected components of the "
                   "prediction, components under 8 px dropped); mean over the 14 test tiles (one per site)",
        "variants": {"official": "30 training tiles of 18 sites", "few-sites": f"the 11 tiles of sites "
                     f"{', '.join(FEW_SITES)} (the three training sites with the most tiles)"},
        "sites": per_site,
    }


def grid_crops(tiles: np.ndarray, size: int) -> np.ndarray:
    """(T·n, size, size, 3) non-overlapping crops on a grid over each (T, H, W, 3) tile (n = (H // size)·(W // size))."""
    t, h, w, c = tiles.shape
    ny, nx = h // size, w // size
    x = tiles[:, : ny * size, : nx * size].reshape(t, ny, size, nx, size, c)
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c))
