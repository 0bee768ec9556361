"""The attribute bank of the camelyon weights: attributes of 96 px grid crops of the CAMELYON17 tiles of the
training hospitals (0, 3, 4), at each training scale (0.25, 0.5, 1 um/px).

    python scripts/make_bank.py --weights runs/cpu/camelyon --out runs/cpu/camelyon_bank.pt
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from contrimix_aug import load_model
from contrimix_aug.bank import compute_bank
from contrimix_aug.data import load_camelyon17_tiles
from contrimix_aug.data.patches import resample_to_mpp
from contrimix_aug.tissue import tissue_mask


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hospitals", type=int, nargs="+", default=[0, 3, 4])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--min-tissue", type=float, default=0.5)
    a = ap.parse_args()
    model = load_model(a.weights)
    tiles = load_camelyon17_tiles(tuple(a.hospitals), progress=False)
    crops = []
    for im in tiles.images:
        for s in a.scales:
            img = resample_to_mpp(im, tiles.um_per_px, s)
            for y in range(0, img.shape[0] - 95, 96):
                for x in range(0, img.shape[1] - 95, 96):
                    c = img[y:y + 96, x:x + 96]
                    if tissue_mask(c).mean() >= a.min_tissue:
                        crops.append(c)
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    bank = compute_bank(model, x)
    torch.save(bank, a.out)
    print(f"wrote {a.out}: {tuple(bank.shape)} attributes of {len(crops)} crops (hospitals {a.hospitals}, "
          f"scales {a.scales} um/px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
