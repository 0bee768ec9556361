"""Write contrimix_aug/assets/plausibility_reference.json: the colour features of real H&E crops of many labs and
the leave-one-lab-out threshold of :func:`contrimix_aug.quality.plausible`.

Labs (only those that no benchmark of this project ever holds out):

* the 18 MoNuSeg *training* sites (TCGA tissue source sites; 40x, 0.2521 um/px);
* CAMELYON17 hospitals 0, 3 and 4 (the `camelyon17-tiles` collection, 0.25 um/px);
* the H&E sources of ``contrimix_aug.data.HE_SOURCES`` (fetched from pinned PyPI files); ``hgsc_nest`` and
  ``hgsc_stroma`` are two images of one lab (histolytics' sample data) and count as one lab, ``hgsc``.

Never used: the MoNuSeg test sites, CAMELYON16 (RUMC, UMCU), CAMELYON17 hospitals 1 and 2.

Every lab gives the same number of 96 px crops at 0.5 um/px (random positions with at least half tissue, no marking
ink: ``contrimix_aug.data.patches.sample_patches_from_images``); the JSON holds their 6 features (CIELAB mean/std over
tissue), lab names, the z-scaling and the threshold, no pixels.

    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/make_plausibility_reference.py
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrimix_aug.data import HE_SOURCES, load_camelyon17_tiles, load_monuseg, sample_source_patches  # noqa: E402
from contrimix_aug.data.patches import sample_patches_from_images  # noqa: E402
from contrimix_aug.quality import PLAUSIBILITY_REFERENCE, PlausibilityReference  # noqa: E402

OUT = REPO / "contrimix_aug" / "assets" / PLAUSIBILITY_REFERENCE
SIZE, MPP = 96, 0.5
CAMELYON17_HOSPITALS = (0, 3, 4)
LAB_OF_SOURCE = {"hgsc_nest": "hgsc", "hgsc_stroma": "hgsc"}
HELD_OUT = {"monuseg": "test sites", "camelyon16": ("RUMC", "UMCU"), "camelyon17": (1, 2)}
"""What the benchmarks hold out; never in the reference (checked by tests/test_quality.py)."""


def _per_lab(images: dict[str, tuple[np.ndarray, float]], lab_of: dict[str, str], n: int, seed: int,
             rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """``n`` crops per lab from its images (as many from each image as needed, then a random ``n`` of them)."""
    per_image = defaultdict(int)
    for key in images:
        per_image[lab_of[key]] += 1
    crops, labs = [], []
    by_lab: dict[str, list[np.ndarray]] = defaultdict(list)
    for key, (img, mpp) in images.items():
        k = -(-n // per_image[lab_of[key]])  # ceil: every image of the lab contributes
        s = sample_patches_from_images({key: (img, mpp)}, SIZE, k, target_mpp=MPP, seed=seed)
        by_lab[lab_of[key]].extend(s.images)
    for lab in sorted(by_lab):
        pool = np.stack(by_lab[lab])
        pick = np.sort(rng.choice(len(pool), n, replace=False))
        crops.extend(pool[pick])
        labs.extend([lab] * n)
    return crops, labs


def reference_crops(n_per_lab: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(N, 96, 96, 3) uint8 crops at 0.5 um/px and their N lab names (``monuseg:SITE``, ``camelyon17:H``,
    ``source:ID``), ``n_per_lab`` per lab."""
    rng = np.random.default_rng(seed)
    crops, labs = [], []
    mo = load_monuseg("train", progress=False)
    assert set(mo.splits.tolist()) == {"train"}
    images = {f"monuseg:{site}#{i}": (img, mo.um_per_px) for i, (img, site) in enumerate(zip(mo.images, mo.sites))}
    c, lb = _per_lab(images, {k: k.split("#")[0] for k in images}, n_per_lab, seed, rng)
    crops += c
    labs += lb
    c17 = load_camelyon17_tiles(CAMELYON17_HOSPITALS, progress=False)
    assert set(c17.hospitals.tolist()) <= set(CAMELYON17_HOSPITALS)
    images = {f"camelyon17:{h}#{i}": (img, c17.um_per_px) for i, (img, h) in enumerate(zip(c17.images, c17.hospitals))}
    c, lb = _per_lab(images, {k: k.split("#")[0] for k in images}, n_per_lab, seed, rng)
    crops += c
    labs += lb
    per_source = {s: -(-n_per_lab // sum(LAB_OF_SOURCE.get(t, t) == LAB_OF_SOURCE.get(s, s) for t in HE_SOURCES))
                  for s in HE_SOURCES}
    by_lab: dict[str, list[np.ndarray]] = defaultdict(list)
    for sid in HE_SOURCES:
        s = sample_source_patches((sid,), SIZE, per_source[sid], target_mpp=MPP, seed=seed, progress=False)
        by_lab["source:" + LAB_OF_SOURCE.get(sid, sid)].extend(s.images)
    for lab in sorted(by_lab):
        pool = np.stack(by_lab[lab])
        pick = np.sort(rng.choice(len(pool), n_per_lab, replace=False))
        crops.extend(pool[pick])
        labs.extend([lab] * n_per_lab)
    return np.stack(crops), labs


def to_batch(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-per-lab", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    crops, labs = reference_crops(args.n_per_lab, args.seed)
    meta = {"crop_px": SIZE, "um_per_px": MPP, "crops_per_lab": args.n_per_lab, "seed": args.seed,
            "labs": len(set(labs)),
            "collections": {"monuseg": "training sites only", "camelyon17-tiles": list(CAMELYON17_HOSPITALS),
                            "he-sources": list(HE_SOURCES) + ["(hgsc_nest + hgsc_stroma = one lab, hgsc)"]},
            "never": {"monuseg": "test sites", "camelyon16": ["RUMC", "UMCU"], "camelyon17": [1, 2]},
            "written_by": "scripts/make_plausibility_reference.py"}
    ref = PlausibilityReference.from_crops(to_batch(crops), labs, quantile=0.95, meta=meta)
    ref.save(args.out)
    loo = ref.loo_distances()
    print(f"{len(labs)} crops of {len(set(labs))} labs -> {args.out}; threshold {ref.threshold:.3f} "
          f"(leave-one-lab-out distances: median {float(loo.median()):.3f}, max {float(loo.max()):.3f})")


if __name__ == "__main__":
    main()
