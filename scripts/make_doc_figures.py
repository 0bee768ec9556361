"""Regenerate the pictures in README.md and docs/ from the bundled weights and tiles.

    python scripts/make_doc_figures.py
"""

from __future__ import annotations

import torch

from contrimix_aug import load_model
from contrimix_aug.data.sources import load_demo_tiles
from contrimix_aug.showcase import run_demo
from contrimix_aug.viz import dataflow_figure


def main() -> None:
    run_demo(None, "docs/images/demo.png", seed=0)
    tiles, ids = load_demo_tiles()
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    model = load_model("he")
    donor = x[[i for i, s in enumerate(ids) if s == "skin"][3]]
    dataflow_figure(model, x[0], donor).save("docs/images/dataflow.png")
    print("wrote docs/images/demo.png, docs/images/dataflow.png")


if __name__ == "__main__":
    main()
