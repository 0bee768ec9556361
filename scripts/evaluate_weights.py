"""Measure weights for their model card (JSON), from real images only.

Suites:

* ``--suite camelyon``: the CAMELYON17 tiles of all five hospitals (0, 3, 4 seen in training; 1 and 2 never), at
  0.25 (native), 0.5 and 1.0 µm/px, 96 px crops on a grid; the CAMELYON16 patches of RUMC and UMCU (0.243 and
  0.5 µm/px); and the stain-transfer measure (the same tissue in another hospital's stain, both renderers) against
  RGB mean/std transfer, Reinhard and Macenko.
* ``--suite he`` / ``--suite fluorescence``: ``split='val'`` patches of each registered source (the spatially held-out
  region), the shipped weights and, with ``--loso``, leave-one-source-out runs of the same recipe.

Swaps pair each content crop with a donor crop of a *different* hospital or source, at full strength; structure =
:func:`contrimix_aug.quality.structure_ssim`; transfer = the output's colour statistics are closer to the donor's.

    python scripts/evaluate_weights.py --suite camelyon --weights runs/camelyon/weights.safetensors \
        --card docs/weights/camelyon.json --grid docs/weights/camelyon_grid.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from contrimix_aug import load_model  # noqa: E402
from contrimix_aug.data import load_camelyon16_patches, load_camelyon17_tiles  # noqa: E402
from contrimix_aug.data.source_datasets import FLUO_SOURCES, FluorescenceSourcesDataset, HESourcesDataset  # noqa: E402
from contrimix_aug.data.patches import resample_to_mpp  # noqa: E402
from contrimix_aug.data.registry import HE_SOURCES  # noqa: E402
from contrimix_aug.quality import reconstruction, swap_report  # noqa: E402
from contrimix_aug.viz import swap_grid  # noqa: E402

SCALES = (0.25, 0.5, 1.0)
SEEN = (0, 3, 4)
CROP = 96


def _grid_crops(img: np.ndarray, size: int = CROP) -> list[np.ndarray]:
    h, w = img.shape[:2]
    return [img[y:y + size, x:x + size] for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]


def _t(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def evaluate(model, x: torch.Tensor, donors: torch.Tensor, g: torch.Generator) -> dict:
    """Reconstruction of ``x``; swaps with ``x`` as content (donors from ``donors``) and as donor."""
    rec = reconstruction(model, x)
    pick = lambda n: donors[torch.randint(0, donors.shape[0], (n,), generator=g)]  # noqa: E731
    as_content = swap_report(model, x, pick(x.shape[0]))
    as_donor = swap_report(model, pick(x.shape[0]), x)
    r4 = lambda d: {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}  # noqa: E731
    return {"patches": int(x.shape[0]), "psnr_db": round(float(rec["psnr"].mean()), 2),
            "psnr_db_p10": round(float(rec["psnr"].quantile(0.1)), 2), "ssim": round(float(rec["ssim"].mean()), 4),
            "swap_as_content": r4(as_content.summary()), "swap_as_donor": r4(as_donor.summary())}


def camelyon_suite(model, seed: int) -> dict:
    from dg.tasks import stain_transfer as ST

    g = torch.Generator().manual_seed(seed)
    tiles = load_camelyon17_tiles(progress=False)
    card: dict = {"hospitals": {}, "scales_um_per_px": list(SCALES), "seen_hospitals": list(SEEN)}
    crops = {s: {h: [] for h in range(5)} for s in SCALES}
    for im, h in zip(tiles.images, tiles.hospitals):
        for s in SCALES:
            crops[s][int(h)] += _grid_crops(resample_to_mpp(im, tiles.um_per_px, s))
    for h in range(5):
        per_scale = {}
        for s in SCALES:
            x = _t(crops[s][h])
            donors = _t([c for hh in range(5) if hh != h for c in crops[s][hh]])
            per_scale[str(s)] = evaluate(model, x, donors, g)
        card["hospitals"][str(h)] = {"seen": h in SEEN, "by_scale": per_scale}
    c16 = load_camelyon16_patches(progress=False)
    card["camelyon16"] = {}
    for centre in ("RUMC", "UMCU"):
        other = "UMCU" if centre == "RUMC" else "RUMC"
        out = {}
        for s in (0.243, 0.5):
            def crops_of(c):
                return [cr for im, cc in zip(c16.images, c16.centres) if cc == c
                        for cr in _grid_crops(resample_to_mpp(im, c16.um_per_px, s))]
            out[str(s)] = evaluate(model, _t(crops_of(centre)), _t(crops_of(other)), g)
        card["camelyon16"][centre] = out
    card["stain_transfer"] = {"models": {}, "peers": {}}
    for r in ST.RENDERERS:
        card["stain_transfer"]["models"][r] = ST.score_model(model, r)
        card["stain_transfer"]["peers"][r] = ST.score_peers(r)
    held = [card["hospitals"][str(h)]["by_scale"]["0.5"] for h in (1, 2)]
    card["heldout_summary"] = {
        "psnr_db_mean": round(float(np.mean([v["psnr_db"] for v in held])), 2),
        "structure_ssim_mean": round(float(np.mean([v["swap_as_content"]["structure_ssim_mean"] for v in held])), 4),
        "closer_to_donor_as_content": round(float(np.mean([v["swap_as_content"]["closer_to_donor"] for v in held])), 4),
        "by_scale_psnr_db": {str(s): round(float(np.mean([card["hospitals"][str(h)]["by_scale"][str(s)]["psnr_db"]
                                                          for h in (1, 2)])), 2) for s in SCALES},
        "gap_closed": {r: round(card["stain_transfer"]["models"][r]["gap_closed"]["mean"], 4) for r in ST.RENDERERS},
        "best_peer_gap_closed": {r: round(max(v["gap_closed"]["mean"] for v in card["stain_transfer"]["peers"][r]
                                              .values()), 4) for r in ST.RENDERERS},
    }
    return card


def source_patches(source: str, n: int, seed: int) -> torch.Tensor:
    if source in FLUO_SOURCES:
        ds = FluorescenceSourcesDataset([source], size=96, n_per_source=n, split="val", seed=seed, progress=False)
    else:
        ds = HESourcesDataset([source], size=96, n_per_source=n, split="val", seed=seed, progress=False)
    return torch.stack([ds[i][0] for i in range(len(ds))])


def sources_suite(model, sources: list[str], loso: str | None, n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    pools = {s: source_patches(s, n, seed) for s in sources}
    others = lambda s: torch.cat([p for k, p in pools.items() if k != s])  # noqa: E731
    card: dict = {"in_training_sources": {s: evaluate(model, pools[s], others(s), g) for s in sources}}
    if loso:
        res = {}
        for s in sources:
            run = Path(loso.format(source=s))
            if (run / "weights.safetensors").exists():
                res[s] = {**evaluate(load_model(str(run / "weights.safetensors")), pools[s], others(s), g),
                          "run": str(run)}
        card["left_out_sources"] = res
        if res:
            mean = lambda key, sub=None: round(float(np.mean([v[sub][key] if sub else v[key]  # noqa: E731
                                                              for v in res.values()])), 4)
            card["left_out_summary"] = {
                "psnr_db_mean": mean("psnr_db"), "psnr_db_min_source": min(v["psnr_db"] for v in res.values()),
                "structure_ssim_mean": mean("structure_ssim_mean", "swap_as_content"),
                "closer_to_donor_as_content": mean("closer_to_donor", "swap_as_content"),
                "closer_to_donor_as_donor": mean("closer_to_donor", "swap_as_donor")}
    if model.config.in_channels == 3:
        from dg.tasks import stain_transfer as ST

        card["stain_transfer"] = {"models": {r: ST.score_model(model, r) for r in ST.RENDERERS},
                                  "peers": {r: ST.score_peers(r) for r in ST.RENDERERS}}
    card["_pools"] = pools
    return card


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", required=True, choices=["camelyon", "he", "fluorescence"])
    ap.add_argument("--weights", required=True, help="weights file (or a training output folder)")
    ap.add_argument("--loso", default=None, help="he/fluorescence: run folder pattern with {source}")
    ap.add_argument("--n", type=int, default=64, help="he/fluorescence: patches per source")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--card", required=True, help="JSON to write")
    ap.add_argument("--grid", default=None, help="PNG swap grid to write")
    a = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    model = load_model(a.weights)
    run = Path(a.weights) if Path(a.weights).is_dir() else Path(a.weights).parent
    card: dict = {"weights": str(a.weights), "eval_command": " ".join(["python", *sys.argv]), "eval_seed": a.seed,
                  "suite": a.suite,
                  "training": json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}}
    card["training"].pop("history", None)
    if a.suite == "camelyon":
        card.update(camelyon_suite(model, a.seed))
        contents = _t([resample_to_mpp(im, 0.25, 0.5)[:CROP, :CROP] for im in load_camelyon17_tiles(progress=False)
                       .images[::5]])
        labels = [f"hospital {h}" for h in range(5)]
        donors = _t([resample_to_mpp(im, 0.25, 0.5)[-CROP:, -CROP:] for im in load_camelyon17_tiles(progress=False)
                     .images[1::5]])
    else:
        sources = list(HE_SOURCES) if a.suite == "he" else list(FLUO_SOURCES)
        card.update(sources_suite(model, sources, a.loso, a.n, a.seed))
        pools = card.pop("_pools")
        contents = torch.stack([pools[s][0] for s in sources])
        donors = torch.stack([pools[s][1] for s in sources])
        labels = sources
    card["eval_hardware"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "machine": platform.machine(), "seconds": round(time.time() - t0, 1)}
    Path(a.card).parent.mkdir(parents=True, exist_ok=True)
    Path(a.card).write_text(json.dumps(card, indent=1))
    if a.grid:
        swap_grid(model, contents, donors, labels, labels).save(a.grid)
    print(json.dumps(card.get("heldout_summary") or card.get("left_out_summary") or {}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
