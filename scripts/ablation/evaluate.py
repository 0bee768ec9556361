"""Score a short ablation run on the val patches of every H&E source (32 each, seed 1).

    python scripts/ablation/evaluate.py RUN_DIR [SOURCES]

Prints: mean reconstruction PSNR (dB), mean structure SSIM under a swap (as content and as donor),
fraction of swaps whose colour moved towards the donor; then the same triple per source. The measures are
those of the model cards (``scripts/evaluate_weights.py``), on fewer patches.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate_weights import evaluate, source_patches  # noqa: E402

from contrimix_aug import load_model  # noqa: E402
from contrimix_aug.data import HE_SOURCES  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    run = sys.argv[1]
    sources = sys.argv[2].split(",") if len(sys.argv) > 2 else HE_SOURCES
    model = load_model(run + "/weights.safetensors").eval()
    pools = {s: source_patches(s, 32, 1) for s in HE_SOURCES}
    g = torch.Generator().manual_seed(1)
    out = {}
    for s in sources:
        others = torch.cat([p for k, p in pools.items() if k != s])
        r = evaluate(model, pools[s], others, g)
        c, d = r["swap_as_content"], r["swap_as_donor"]
        out[s] = (r["psnr_db"], round((c["structure_ssim_mean"] + d["structure_ssim_mean"]) / 2, 3),
                  round((c["closer_to_donor"] + d["closer_to_donor"]) / 2, 3))
    avg = [round(sum(v[i] for v in out.values()) / len(out), 3) for i in range(3)]
    print(Path(run).name, "AVG psnr/struct/closer", avg, out)


if __name__ == "__main__":
    main()
