"""What a smaller bank costs: the default policy of ``ContriMix(weights="camelyon")`` with the whole shipped bank and
with the banks a user may pick for their terms (:func:`contrimix_aug.bank.select_bank`), measured as
``benchmarks/coverage.py`` measures every method: coverage of unseen-lab crops and the plausible share of the renders,
on the same two one-lab training sets and held-out labs, same seed.

    CONTRIMIX_AUG_DATA=/work/shared/data python scripts/measure_bank_subsets.py

Writes ``docs/weights/bank_subsets.json``; docs/weights.md and ``contrimix_aug/assets/README.md`` quote it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import coverage as C  # noqa: E402
from dg.contrimix_models import load_bundled  # noqa: E402
from dg.methods import contrimix_augment  # noqa: E402

from contrimix_aug.bank import select_bank  # noqa: E402
from contrimix_aug.quality import load_plausibility_reference  # noqa: E402

SUBSETS = {
    "whole bank (26 labs)": {},
    "without MoNuSeg (8 labs)": {"exclude": "monuseg"},
    "CC0 / public domain / BSD only (6 labs)": {"labs": ["camelyon17", "source:cmu1", "source:skin", "source:hgsc"]},
}
"""name -> :func:`select_bank` arguments. The last keeps the labs whose images have clear open terms: CAMELYON17
hospitals 0, 3, 4 (CC0), cmu1 (CC0), skin (public domain), hgsc (BSD-3); it drops MoNuSeg (CC BY-NC-SA), prostate
(provenance undocumented) and tcia (licence not stated)."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "weights" / "bank_subsets.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    ref = load_plausibility_reference()
    train = C.training_sets(160, args.seed)
    held = C.heldout_sets(16, args.seed)
    model, _ = load_bundled("camelyon")
    rows = []
    for name, sel in SUBSETS.items():
        bank = select_bank("camelyon", **sel)
        for tname, tx in train.items():
            m = contrimix_augment(name, model, seed=args.seed, p=1.0, bank=bank)
            r = C.measure(m, tx, held, ref, 3, args.seed)
            rows.append({"bank": name, "select_bank": sel, "entries": int(bank.shape[0]), "training_set": tname, **r})
            print(f"{name:42s} {tname:16s} coverage {r['coverage']:.3f} plausible {r['plausible']:.3f}", flush=True)
    summary = [{"bank": name, "select_bank": SUBSETS[name],
                "entries": next(r["entries"] for r in rows if r["bank"] == name),
                **{k: round(float(np.mean([r[k] for r in rows if r["bank"] == name])), 4)
                   for k in ("coverage", "plausible")}} for name in SUBSETS]
    out = {"written_by": "scripts/measure_bank_subsets.py",
           "what": "ContriMix(weights='camelyon', p=1, seed=0, bank=select_bank('camelyon', ...)) with the default "
                   "donor policy; coverage and plausible as in benchmarks/coverage.py (docs/benchmarks/coverage.json: "
                   "same training sets, held-out labs, 3 augmented passes, seed), averaged over the two one-lab "
                   "training sets",
           "heldout_labs": sorted(held), "summary": summary, "rows": rows, "seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for s in summary:
        print(f"{s['bank']:42s} {s['entries']:5d} entries: coverage {s['coverage']:.3f}, plausible {s['plausible']:.3f}")
    print(f"-> {args.out} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
