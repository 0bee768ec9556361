"""Score a short ablation run on the val patches of every H&E source (32 each, seed 1).

    python scripts/ablation/evaluate.py RUN_DIR [SOURCES]

Prints: mean reconstruction PSNR (dB), mean structure SSIM under a swap (as content and as donor),
fraction of swaps whose colour moved towards the donor; then the same triple per source.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate_weights import patches, donors_for
from contrimix_aug import load_model
from contrimix_aug.data import HE_CLEAR_TERMS
from contrimix_aug.quality import reconstruction, swap_report
torch.set_num_threads(1)
run = sys.argv[1]; sources = sys.argv[2].split(',') if len(sys.argv) > 2 else HE_CLEAR_TERMS
m = load_model(run + '/weights.safetensors').eval()
pools = {s: patches(s, 32, 1) for s in HE_CLEAR_TERMS}
g = torch.Generator().manual_seed(1)
out = {}
for s in sources:
    r = reconstruction(m, pools[s])
    sc = swap_report(m, pools[s], donors_for(s, pools, 32, g)).summary()
    sd = swap_report(m, donors_for(s, pools, 32, g), pools[s]).summary()
    out[s] = (round(float(r['psnr'].mean()), 2), round((sc['structure_ssim_mean'] + sd['structure_ssim_mean']) / 2, 3), round((sc['closer_to_donor'] + sd['closer_to_donor']) / 2, 3))
avg = [round(sum(v[i] for v in out.values()) / len(out), 3) for i in range(3)]
print(run, 'AVG psnr/struct/closer', avg, out)
