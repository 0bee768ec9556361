"""Measure how plausible ContriMix renders are: share of renders whose colour statistics lie within the calibrated
distance of some real lab's crop (:func:`contrimix_aug.quality.plausible`, shipped reference) and pixel artefacts
(:func:`contrimix_aug.quality.render_artefacts`), for the bundled ``camelyon`` and ``he`` weights with batch, bank,
both and sampled donors, next to the real crops themselves and two peers (kornia ColorJitter, HED jitter).

Each ContriMix draw is rendered twice: as shipped (the default ``render_guard=True``:
:func:`contrimix_aug.optical_density.limit_render`, glass stays glass and no pixel is darker than real tissue;
method ``contrimix-W``) and, replaying the same parameters, with ``render_guard=False`` (the authors' unguarded
render; method ``contrimix-W (render_guard=False)``).

Data (96 px crops at 0.5 um/px): CAMELYON16 RUMC (one crop per patch), CAMELYON17 hospitals 0, 3, 4, the MoNuSeg
training sites, and the 16 bundled demo tiles. Renders use ``ContriMix(weights=W, p=1.0, donors=D, seed=0)`` on
shuffled batches of 16 crops of one data set (the demo: the 16 tiles in one batch, as ``contrimix-aug demo``).

    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/measure_plausibility.py --out docs/weights/plausibility.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from contrimix_aug import ContriMix, weights_path  # noqa: E402
from contrimix_aug.optical_density import RENDER_BACKGROUND_OD, RENDER_OD_MAX  # noqa: E402
from contrimix_aug.data import (  # noqa: E402
    load_camelyon16_patches,
    load_camelyon17_tiles,
    load_demo_tiles,
    load_monuseg,
)
from contrimix_aug.data.patches import resample_to_mpp, sample_patches_from_images  # noqa: E402
from contrimix_aug.quality import (  # noqa: E402
    ARTEFACT_THRESHOLDS,
    load_plausibility_reference,
    render_artefacts,
    stain_features,
)
from make_plausibility_reference import MPP, SIZE, to_batch  # noqa: E402

BATCH = 16
ARTEFACT_RENDER = 0.01
"""A render "has an artefact" when more than 1 % of its pixels are artefact pixels of one kind."""


def _crops(images: dict[str, tuple[np.ndarray, float]], n: int, seed: int) -> np.ndarray:
    """``n`` crops of each image (at least half tissue; the centre crop where no such position exists)."""
    out = []
    for key, (img, mpp) in images.items():
        try:
            out.append(sample_patches_from_images({key: (img, mpp)}, SIZE, n, target_mpp=MPP, seed=seed).images)
        except ValueError:
            r = resample_to_mpp(img, mpp, MPP)
            t, l = (r.shape[0] - SIZE) // 2, (r.shape[1] - SIZE) // 2
            out.append(r[None, t:t + SIZE, l:l + SIZE])
    return np.concatenate(out)


def evaluation_sets(seed: int = 1) -> dict[str, tuple[np.ndarray, list[str]]]:
    """{name: ((N, 96, 96, 3) uint8 crops, N lab names as in the reference)}; ``seed`` differs from the
    reference's so that the in-reference labs are other crops."""
    sets = {}
    c16 = load_camelyon16_patches(("RUMC",), progress=False)
    x = _crops({f"RUMC#{i}": (im, c16.um_per_px) for i, im in enumerate(c16.images)}, 1, seed)
    sets["camelyon16_rumc"] = (x, ["camelyon16:RUMC"] * len(x))
    c17 = load_camelyon17_tiles((0, 3, 4), progress=False)
    xs, labs = [], []
    for i, (im, h) in enumerate(zip(c17.images, c17.hospitals)):
        xs.append(_crops({f"{h}#{i}": (im, c17.um_per_px)}, 4, seed))
        labs += [f"camelyon17:{h}"] * len(xs[-1])
    sets["camelyon17_h034"] = (np.concatenate(xs), labs)
    mo = load_monuseg("train", progress=False)
    xs, labs = [], []
    for site in sorted(set(mo.sites.tolist())):
        idx = np.where(mo.sites == site)[0]
        per = max(1, 8 // len(idx))
        c = np.concatenate([_crops({f"{site}#{i}": (mo.images[i], mo.um_per_px)}, per, seed) for i in idx])[:8]
        xs.append(c)
        labs += [f"monuseg:{site}"] * len(c)
    sets["monuseg_train"] = (np.concatenate(xs), labs)
    tiles, ids = load_demo_tiles()
    sets["demo_tiles"] = (tiles, [f"source:{s}" for s in ids])
    return sets


def heldout_real(ref, seed: int = 1) -> dict:
    """Share of real crops of labs the reference never saw that pass (the calibration's promise: about 0.95):
    MoNuSeg test sites (16 crops each), CAMELYON16 RUMC and UMCU (one per patch), CAMELYON17 hospitals 1, 2."""
    from contrimix_aug.quality import plausible

    mo = load_monuseg("test", progress=False)
    groups = {}
    for site in sorted(set(mo.sites.tolist())):
        idx = np.where(mo.sites == site)[0]
        groups[f"monuseg:{site}"] = _crops({f"{site}#{i}": (mo.images[i], mo.um_per_px) for i in idx},
                                           16 // len(idx), seed)
    c16 = load_camelyon16_patches(progress=False)
    for c in ("RUMC", "UMCU"):
        idx = np.where(c16.centres == c)[0]
        groups[f"camelyon16:{c}"] = _crops({f"{c}#{i}": (c16.images[i], c16.um_per_px) for i in idx}, 1, seed)
    c17 = load_camelyon17_tiles((1, 2), progress=False)
    for h in (1, 2):
        idx = np.where(c17.hospitals == h)[0]
        groups[f"camelyon17:{h}"] = _crops({f"{h}#{i}": (c17.images[i], c17.um_per_px) for i in idx}, 4, seed)
    per_lab = {k: {"n": len(v), "plausible": round(float(plausible(to_batch(v), ref).float().mean()), 4)}
               for k, v in groups.items()}
    return {"per_lab": per_lab,
            "mean_over_labs": round(float(np.mean([v["plausible"] for v in per_lab.values()])), 4),
            "lowest": min(per_lab.items(), key=lambda kv: kv[1]["plausible"])[0]}


def _batches(x: torch.Tensor, shuffle: bool, seed: int) -> list[torch.Tensor]:
    """Row indices of the batches of :data:`BATCH` (shuffled with ``seed`` unless ``shuffle`` is False)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(x))
    return list(order.split(BATCH))


def _render(fn, x: torch.Tensor, shuffle: bool, seed: int) -> torch.Tensor:
    """``fn`` on batches of :data:`BATCH` (shuffled with ``seed`` unless ``shuffle`` is False)."""
    y = torch.empty_like(x)
    with torch.no_grad():
        for idx in _batches(x, shuffle, seed):
            y[idx] = fn(x[idx]).float()
    return y


def render_both(weights: str, donors: str, x: torch.Tensor, shuffle: bool,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(shipped, unguarded): ``ContriMix(weights, p=1, donors, seed)`` as shipped (``render_guard`` at its default,
    True) on each batch, and the same draw (its ``params``) replayed by an otherwise identical transform with
    ``render_guard=False``."""
    aug = ContriMix(weights=weights, p=1.0, donors=donors, seed=seed)
    raw = ContriMix(weights=weights, p=1.0, donors=donors, seed=seed, render_guard=False)
    assert aug.render_guard and not raw.render_guard
    y, y_raw = torch.empty_like(x), torch.empty_like(x)
    with torch.no_grad():
        for idx in _batches(x, shuffle, seed):
            y[idx] = aug(x[idx]).float()
            y_raw[idx] = raw(x[idx], params=aug.params).float()
    return y, y_raw


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def summarise(ref, x: torch.Tensor, y: torch.Tensor, exclude: list[str] | None = None) -> dict:
    """Plausible share, median distance to the nearest reference crop and median shift of the features from the
    input's (both in the reference's z-units), mean artefact fractions, share of renders with > 1 % artefact
    pixels of a kind, share plausible without such artefacts."""
    f = stain_features(y)
    dist = ref.distance(f)
    ok = dist <= ref.threshold
    art = render_artefacts(x, y)
    any_art = torch.stack([v > ARTEFACT_RENDER for v in art.values()]).any(0)
    shift = ((f.double() - stain_features(x).double()) / ref.scale).norm(dim=1)  # how far the look moved
    row = {"n": len(x), "plausible": round(float(ok.float().mean()), 4),
           "distance_median": round(float(dist.median()), 3),
           "shift_from_input_median": round(float(shift.median()), 3),
           **{f"{k}_pixels": round(float(v.mean()), 5) for k, v in art.items()},
           "renders_with_artefacts": round(float(any_art.float().mean()), 4),
           "plausible_and_clean": round(float((ok & ~any_art).float().mean()), 4)}
    if exclude is not None:  # real crops: their own lab left out of the reference (the calibration's view)
        d_ex = torch.stack([ref.distance(f[i:i + 1], [lab])[0] for i, lab in enumerate(exclude)])
        row["plausible_own_lab_left_out"] = round(float((d_ex <= ref.threshold).float().mean()), 4)
    return row


def peers(seed: int) -> dict:
    import kornia.augmentation as K

    from dg.methods import hed_jitter

    g = torch.Generator().manual_seed(seed)
    cj = K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=1.0)

    def colour_jitter(x):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))  # kornia draws from the global RNG
        return cj(x).clamp(0, 1)

    return {"kornia-colorjitter(0.2,0.2,0.2,0.05)": colour_jitter,
            "hed-jitter-strong(0.2)": lambda x: hed_jitter(x, 0.2, generator=g)}


SUMMARY_KEYS = ("plausible", "background_coloured_pixels", "near_black_pixels", "clipped_pixels",
                "renders_with_artefacts", "plausible_and_clean", "shift_from_input_median")


def before_after(rows: list[dict]) -> list[dict]:
    """Per weights x donors: each measure averaged over the data sets (equal weight per data set), without the
    guard ("before", ``render_guard=False``) and as shipped ("after", the default)."""
    out = []
    keys = sorted({(r["method"].split(" ")[0], r["donors"]) for r in rows if "render_guard" in r},
                  key=lambda k: (k[0], ["batch", "bank", "both", "sampled"].index(k[1])))
    for method, donors in keys:
        entry = {"weights": method.removeprefix("contrimix-"), "donors": donors}
        for label, guard in (("before", False), ("after", True)):
            sel = [r for r in rows if r.get("render_guard") is guard and r["donors"] == donors
                   and r["method"].split(" ")[0] == method]
            entry[label] = {k: round(float(np.mean([r[k] for r in sel])), 5) for k in SUMMARY_KEYS}
        out.append(entry)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "weights" / "plausibility.json")
    ap.add_argument("--weights", nargs="+", default=["camelyon", "he"])
    ap.add_argument("--donors", nargs="+", default=["batch", "bank", "both", "sampled"])
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    ref = load_plausibility_reference()
    sets = evaluation_sets()
    held = heldout_real(ref)
    print("held-out real labs:", held["mean_over_labs"], held["lowest"], flush=True)
    rows = []
    for name, (crops, labs) in sets.items():
        x = to_batch(crops)
        shuffle = name != "demo_tiles"
        rows.append({"data": name, "method": "real crops", **summarise(ref, x, x, exclude=labs)})
        print(rows[-1], flush=True)
        for w in args.weights:
            for d in args.donors:
                y, y_raw = render_both(w, d, x, shuffle, args.seed)
                for method, guard, out in ((f"contrimix-{w} (render_guard=False)", False, y_raw),
                                           (f"contrimix-{w}", True, y)):
                    rows.append({"data": name, "method": method, "donors": d, "render_guard": guard,
                                 **summarise(ref, x, out)})
                    print(rows[-1], flush=True)
        if not args.no_peers:
            for pname, fn in peers(args.seed).items():
                rows.append({"data": name, "method": pname, **summarise(ref, x, _render(fn, x, shuffle, args.seed))})
                print(rows[-1], flush=True)
    out = {"written_by": "scripts/measure_plausibility.py",
           "reference": {"labs": len(ref.lab_names), "crops": len(ref.labs), "threshold": round(ref.threshold, 4),
                         "quantile": ref.quantile},
           "artefact_thresholds": ARTEFACT_THRESHOLDS,
           "limit_render": {"od_max": RENDER_OD_MAX, "background": list(RENDER_BACKGROUND_OD),
                            "note": "applied by ContriMix by default (render_guard=True): rows 'contrimix-W' are the "
                                    "shipped render, rows 'contrimix-W (render_guard=False)' the authors' unguarded "
                                    "render of the same draws"},
           "weights_sha256": {w: _sha256(weights_path(w)) for w in args.weights},
           "artefact_render_fraction": ARTEFACT_RENDER, "heldout_real_crops": held, "batch": BATCH,
           "seed": args.seed, "data": {k: len(v[0]) for k, v in sets.items()},
           "summary_mean_over_data_sets": before_after(rows), "rows": rows, "seconds": round(time.time() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {args.out} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
