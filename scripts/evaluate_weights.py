"""Measure shipped weights for their model card: reconstruction on every source, structure kept and colour
moved under attribute swaps, on sources left out of training (leave-one-source-out runs).

    python scripts/evaluate_weights.py --final runs/he-lite --loso "runs/loso-lite-{source}" \
        --card docs/weights/he.json --grid docs/weights/he_grid.png

Patches: ``HESourcesDataset(split="val")`` of each source (the spatially held-out region), 96 px at
0.5 µm/px. Swaps pair each content patch with a donor patch of a *different* source.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from contrimix_aug import load_model
from contrimix_aug.data import FLUO_SOURCES, HE_CLEAR_TERMS, FluorescenceSourcesDataset, HESourcesDataset
from contrimix_aug.quality import reconstruction, swap_report
from contrimix_aug.viz import swap_grid


def patches(source: str, n: int, seed: int) -> torch.Tensor:
    if source in FLUO_SOURCES:
        ds = FluorescenceSourcesDataset([source], size=96, n_per_source=n, split="val", seed=seed, progress=False)
    else:
        ds = HESourcesDataset([source], size=96, n_per_source=n, split="val", seed=seed, progress=False)
    return torch.stack([ds[i][0] for i in range(len(ds))])


def donors_for(source: str, pools: dict[str, torch.Tensor], n: int, g: torch.Generator) -> torch.Tensor:
    others = torch.cat([p for s, p in pools.items() if s != source])
    return others[torch.randint(0, others.shape[0], (n,), generator=g)]


def evaluate(model, source: str, pools: dict[str, torch.Tensor], g: torch.Generator) -> dict:
    x = pools[source]
    rec = reconstruction(model, x)
    as_content = swap_report(model, x, donors_for(source, pools, x.shape[0], g))
    others = donors_for(source, pools, x.shape[0], g)
    as_donor = swap_report(model, others, x)
    return {
        "patches": int(x.shape[0]),
        "psnr_db": round(float(rec["psnr"].mean()), 2),
        "psnr_db_p10": round(float(rec["psnr"].quantile(0.1)), 2),
        "ssim": round(float(rec["ssim"].mean()), 4),
        "swap_as_content": {k: round(v, 4) if isinstance(v, float) else v for k, v in as_content.summary().items()},
        "swap_as_donor": {k: round(v, 4) if isinstance(v, float) else v for k, v in as_donor.summary().items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--final", required=True, help="run folder of the shipped weights (weights.safetensors, metrics.json)")
    ap.add_argument("--loso", default=None, help="run folder pattern with {source} for leave-one-source-out runs")
    ap.add_argument("--sources", nargs="*", default=list(HE_CLEAR_TERMS),
                    help=f"default: the H&E sources; fluorescence: {' '.join(FLUO_SOURCES)}")
    ap.add_argument("--n", type=int, default=64, help="patches per source")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--card", required=True, help="JSON to write")
    ap.add_argument("--grid", default=None, help="PNG swap grid to write")
    a = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    pools = {s: patches(s, a.n, a.seed) for s in a.sources}
    final = Path(a.final)
    model = load_model(str(final / "weights.safetensors"))
    card: dict = {
        "weights": str(final / "weights.safetensors"),
        "eval_command": " ".join(["python"] + sys.argv),
        "eval_seed": a.seed,
        "patches": "split='val' patches of each source (H&E: the spatially held-out region, 96 px at 0.5 um/px; "
                   "fluorescence: the held-out plane or region, 96 px)",
        "training": json.loads((final / "metrics.json").read_text()) if (final / "metrics.json").exists() else {},
        "in_training_sources": {s: evaluate(model, s, pools, g) for s in a.sources},
    }
    card["training"].pop("history", None)
    if a.loso:
        loso = {}
        for s in a.sources:
            run = Path(a.loso.format(source=s))
            if not (run / "weights.safetensors").exists():
                continue
            m = load_model(str(run / "weights.safetensors"))
            loso[s] = evaluate(m, s, pools, g)
            loso[s]["run"] = str(run)
        card["left_out_sources"] = loso
        if loso:
            def mean(key, sub=None):
                vals = [v[sub][key] if sub else v[key] for v in loso.values()]
                return round(sum(vals) / len(vals), 4)
            card["left_out_summary"] = {
                "psnr_db_mean": mean("psnr_db"),
                "psnr_db_min_source": min(v["psnr_db"] for v in loso.values()),
                "structure_ssim_mean": mean("structure_ssim_mean", "swap_as_content"),
                "closer_to_donor_as_content": mean("closer_to_donor", "swap_as_content"),
                "closer_to_donor_as_donor": mean("closer_to_donor", "swap_as_donor"),
            }
    card["eval_hardware"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "machine": platform.machine(), "seconds": round(time.time() - t0, 1)}
    Path(a.card).parent.mkdir(parents=True, exist_ok=True)
    Path(a.card).write_text(json.dumps(card, indent=1))
    if a.grid:
        contents = torch.stack([pools[s][0] for s in a.sources])
        donors = torch.stack([pools[s][1] for s in a.sources])
        swap_grid(model, contents, donors, a.sources, a.sources).save(a.grid)
    print(json.dumps({k: card[k] for k in card if k in ("left_out_summary",)}, indent=1))
    for s, v in card.get("left_out_sources", {}).items():
        print(s, v["psnr_db"], v["swap_as_content"]["structure_ssim_mean"], v["swap_as_content"]["closer_to_donor"], v["swap_as_donor"]["closer_to_donor"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
