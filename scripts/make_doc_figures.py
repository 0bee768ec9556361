"""Regenerate the pictures in README.md and docs/ from the bundled weights and real tiles.

    python scripts/make_doc_figures.py          # needs the data root (CONTRIMIX_AUG_DATA) for the hospital figure

Writes docs/images/demo.png (the main job's picture, bundled tiles), docs/images/hospitals.png (each CAMELYON17
hospital's tissue in every hospital's look, camelyon weights) and docs/images/dataflow.png.
"""

from __future__ import annotations

import numpy as np
import torch

from contrimix_aug import load_model
from contrimix_aug.data import load_camelyon17_tiles
from contrimix_aug.data.patches import resample_to_mpp
from contrimix_aug.showcase import run_demo
from contrimix_aug.viz import dataflow_figure, swap_grid


def _crops(images: np.ndarray, mpp: float, size: int = 128, corner: str = "top") -> torch.Tensor:
    out = []
    for im in images:
        small = resample_to_mpp(im, mpp, 0.5)
        out.append(small[:size, :size] if corner == "top" else small[-size:, -size:])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def main() -> None:
    run_demo(None, "docs/images/demo.png", seed=0)
    tiles = load_camelyon17_tiles(progress=False)
    first = [int(np.flatnonzero(tiles.hospitals == h)[0]) for h in range(5)]
    second = [int(np.flatnonzero(tiles.hospitals == h)[1]) for h in range(5)]
    contents = _crops(tiles.images[first], tiles.um_per_px)
    donors = _crops(tiles.images[second], tiles.um_per_px, corner="bottom")
    labels = [f"hospital {h}{' (unseen)' if h in (1, 2) else ''}" for h in range(5)]
    model = load_model("camelyon")
    swap_grid(model, contents, donors, labels, [f"look of {h}" for h in range(5)]).save("docs/images/hospitals.png")
    dataflow_figure(model, contents[2], donors[4]).save("docs/images/dataflow.png")
    print("wrote docs/images/demo.png, docs/images/hospitals.png, docs/images/dataflow.png")


if __name__ == "__main__":
    main()
