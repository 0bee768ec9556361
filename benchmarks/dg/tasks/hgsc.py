"""HGSC nuclei, leave one stain out (the secondary, semi-synthetic table).

The real, labelled HGSC nest nuclei (connective / inflammatory / neoplastic; silver-standard labels of the lab's
pipeline) are re-rendered, whole, in the stains of four other real sources (cmu1, prostate, skin, tcia) by both
renderers of :mod:`..renderers`, then 48 px crops are cut around the nuclei. Split: spatial, nuclei in the top-left
and bottom-right quadrants train, the other two test, with a guard band of half a crop. The shift is colour-only
and semi-synthetic: every domain shows the same nuclei.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..engine import Fold
from ..renderers import RENDERERS, render, source_stain

from contrimix_aug.data import load_hgsc_nuclei

__all__ = ["CROP", "HGSC", "STAIN_TARGETS", "describe", "folds", "load_nuclei"]

HGSC = "hgsc_nest"
STAIN_TARGETS = ("cmu1", "prostate", "skin", "tcia")
CROP = 48


@dataclass
class Nuclei:
    image: np.ndarray  # (H, W, 3) uint8 native stain
    centroids: np.ndarray  # (N, 2) int (y, x)
    labels: np.ndarray  # (N,) 0..2
    split: np.ndarray  # (N,) "train" | "test"
    class_names: tuple[str, ...]

    def crops(self, img: np.ndarray | None = None) -> np.ndarray:
        """(N, 48, 48, 3) uint8 crops centred on the nuclei of ``img`` (default: the native image)."""
        img = self.image if img is None else img
        h = CROP // 2
        pad = np.pad(img, ((h, h), (h, h), (0, 0)), mode="reflect")
        return np.stack([pad[y : y + CROP, x : x + CROP] for y, x in self.centroids])


@functools.lru_cache(maxsize=1)
def load_nuclei() -> Nuclei:
    """The hgsc_nest nuclei with a spatial (diagonal-quadrant) split and a guard band of half a crop."""
    lab = load_hgsc_nuclei("hgsc_nest", progress=False)
    ok = np.isfinite(lab.centroids).all(1) & (lab.classes > 0)
    cen = np.round(lab.centroids[ok]).astype(int)
    cls = lab.classes[ok].astype(int) - 1
    h, w = lab.image.shape[:2]
    my, mx = h // 2, w // 2
    guard = CROP // 2
    far = (np.abs(cen[:, 0] - my) >= guard) & (np.abs(cen[:, 1] - mx) >= guard)
    top, left = cen[:, 0] < my, cen[:, 1] < mx
    split = np.where(top == left, "train", "test")
    names = tuple(lab.class_names[k] for k in sorted(lab.class_names))
    return Nuclei(lab.image, cen[far], cls[far], split[far], names)


@functools.lru_cache(maxsize=None)
def domain_crops(renderer: str, domain: str) -> np.ndarray:
    """The nuclei crops of the HGSC image rendered in ``domain``'s stain ("hgsc" = native)."""
    nuc = load_nuclei()
    img = nuc.image if domain == "hgsc" else render(nuc.image, renderer, source_stain(HGSC), source_stain(domain))
    out = nuc.crops(img)
    out.setflags(write=False)
    return out


def folds(renderer: str, heldouts: tuple[str, ...] | None = None, max_per_split: int | None = None) -> list[Fold]:
    """One :class:`~..engine.Fold` per held-out stain: train on the other stains' training nuclei, test on the
    held-out stain's test nuclei."""
    nuc = load_nuclei()
    itr, ite = np.flatnonzero(nuc.split == "train"), np.flatnonzero(nuc.split == "test")
    if max_per_split:
        rng = np.random.default_rng(0)
        itr = np.sort(rng.choice(itr, min(max_per_split, len(itr)), replace=False))
        ite = np.sort(rng.choice(ite, min(max_per_split, len(ite)), replace=False))
    doms = ("hgsc", *STAIN_TARGETS)
    out = []
    for held in heldouts or doms:
        train = [d for d in doms if d != held]
        tx = np.concatenate([domain_crops(renderer, d)[itr] for d in train])
        ty = np.concatenate([nuc.labels[itr]] * len(train))
        out.append(Fold(f"hgsc/{renderer}", held, tx, ty, domain_crops(renderer, held)[ite], nuc.labels[ite],
                        np.arange(len(ite)), num_classes=len(nuc.class_names)))
    return out


def describe() -> dict:
    nuc = load_nuclei()
    return {
        "task": "leave-one-stain-out nucleus classification (connective / inflammatory / neoplastic)",
        "shift": "colour-only, semi-synthetic: the same real HGSC nuclei re-rendered in other real sources' stains",
        "labels": "histolytics hgsc_nest type raster (silver standard: the lab's segmentation pipeline output)",
        "split": "spatial: top-left + bottom-right quadrants train, the other two test; 24 px guard band",
        "n_nuclei": {s: int((nuc.split == s).sum()) for s in ("train", "test")},
        "class_names": list(nuc.class_names),
        "domains": ["hgsc", *STAIN_TARGETS],
        "renderers": list(RENDERERS),
    }
