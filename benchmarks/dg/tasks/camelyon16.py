"""CAMELYON16 tumour vs normal across hospitals: train on one hospital's patches, test on the other's.

Data (``contrimix_aug.data.load_camelyon16_patches``): 89 real 256 px patches at 0.243 µm/px, RUMC 57 (tumour 28,
normal 29) and UMCU 32 (16 / 16). RUMC's stain is pink, UMCU's purple. Caveat: in RUMC, slide and label are
correlated (tumour patches come mostly from tumor_001, normal ones mostly from tumor_064), a colour shortcut a
classifier can learn; UMCU's 32 patches all come from one slide (tumor_073).

Inputs: each patch is resampled to 0.5 µm/px (124 px) and cut into five 96 px crops (the four corners and the
centre). Camelyon17-WILDS distributes 96 px patches at about 1 µm/px; at that scale a CAMELYON16 patch is only
62 px wide, smaller than one crop, so 0.5 µm/px is the closest scale at which several 96 px crops exist. The
classifier scores every crop; a patch's prediction averages its five crops' logits. Metrics: per-patch accuracy
and AUROC (tumour as positive) on the test hospital.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from contrimix_aug.data import load_camelyon16_patches
from contrimix_aug.data.patches import resample_to_mpp

__all__ = ["CROPS_PER_PATCH", "DIRECTIONS", "MPP", "Hospital", "hospitals"]

MPP = 0.5
CROP = 96
CROPS_PER_PATCH = 5
DIRECTIONS = ("RUMC->UMCU", "UMCU->RUMC")  # the first is the headline


@dataclass(frozen=True)
class Hospital:
    """The crops of one hospital: ``x`` (N·5, 96, 96, 3) uint8, ``y`` (N·5,) crop labels, ``patch`` (N·5,) patch
    index, ``patch_y`` (N,) patch labels, ``slides`` (N,) slide of each patch."""

    name: str
    x: np.ndarray
    y: np.ndarray
    patch: np.ndarray
    patch_y: np.ndarray
    slides: np.ndarray


def _five_crops(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    tops = [(0, 0), (0, w - CROP), (h - CROP, 0), (h - CROP, w - CROP), ((h - CROP) // 2, (w - CROP) // 2)]
    return [img[y:y + CROP, x:x + CROP] for y, x in tops]


@functools.lru_cache(maxsize=1)
def hospitals() -> dict[str, Hospital]:
    """{"RUMC": Hospital, "UMCU": Hospital} (read through the data root; sha256-verified)."""
    data = load_camelyon16_patches(progress=False)
    out = {}
    for centre in ("RUMC", "UMCU"):
        idx = np.flatnonzero(data.centres == centre)
        xs, ys, ps = [], [], []
        for j, i in enumerate(idx):
            img = resample_to_mpp(data.images[i], data.um_per_px, MPP)
            for crop in _five_crops(img):
                xs.append(crop)
                ys.append(int(data.labels[i]))
                ps.append(j)
        out[centre] = Hospital(centre, np.stack(xs), np.asarray(ys), np.asarray(ps), data.labels[idx],
                               data.slides[idx])
    return out


def describe() -> dict:
    hs = hospitals()
    return {
        "task": "CAMELYON16 tumour vs normal, train on one hospital, test on the other",
        "shift": "real: two hospitals (RUMC pink, UMCU purple), different labs and scanners",
        "inputs": f"patches resampled from 0.243 to {MPP} um/px (124 px), {CROPS_PER_PATCH} crops of {CROP} px "
                  "(corners + centre); a patch's logits are the mean of its crops'",
        "metrics": "per-patch accuracy and AUROC (tumour positive) on the test hospital",
        "patches": {k: {"tumour": int(h.patch_y.sum()), "normal": int((1 - h.patch_y).sum()),
                        "slides": sorted(set(h.slides.tolist()))} for k, h in hs.items()},
        "caveat": "in RUMC, slide identity and label are correlated (tumour mostly tumor_001, normal mostly "
                  "tumor_064): a colour shortcut a classifier can learn; UMCU's patches come from one slide",
    }


def to_tensor(x: np.ndarray) -> torch.Tensor:
    from ..methods import to_float

    return to_float(x)
