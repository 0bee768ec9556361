"""Regenerate the pictures in README.md and docs/ from the bundled weights and real tiles.

    python scripts/make_doc_figures.py          # needs the data root (CONTRIMIX_AUG_DATA) for the hospital figure

Writes docs/images/demo.png (the main job's picture, bundled tiles: ``contrimix-aug demo``), docs/images/hospitals.png
(each CAMELYON17 hospital's tissue in every hospital's look, camelyon weights) and docs/images/dataflow.png, and
prints the plausibility of every render in the two pictures.

The hospital figure renders through ``ContriMix`` (its render guard included) with each hospital's look taken from a
crop of another of its tiles; a look whose renders do not all pass :func:`contrimix_aug.quality.plausible` and the
demo's artefact check (``contrimix_aug.showcase``) takes the next donor crop of that hospital, so no rejected render
is in the picture.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from contrimix_aug import ContriMix, load_model
from contrimix_aug.data import load_camelyon17_tiles
from contrimix_aug.data.patches import resample_to_mpp
from contrimix_aug.quality import load_plausibility_reference, stain_features
from contrimix_aug.showcase import _acceptable, run_demo
from contrimix_aug.viz import dataflow_figure, tile_grid


def _crops(images: np.ndarray, mpp: float, size: int = 128, corner: str = "top") -> torch.Tensor:
    out = []
    for im in images:
        small = resample_to_mpp(im, mpp, 0.5)
        out.append(small[:size, :size] if corner == "top" else small[-size:, -size:])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def hospitals_figure(model, tiles, ref):
    """Rows: the first tile of each hospital; columns: its input, then each hospital's look (a donor crop of another
    tile of that hospital, the first whose renders of all five rows pass). Returns (picture, report)."""
    first = [int(np.flatnonzero(tiles.hospitals == h)[0]) for h in range(5)]
    contents = _crops(tiles.images[first], tiles.um_per_px)
    n = contents.shape[0]
    params = {"batch_prob": torch.ones(n), "donors": torch.zeros(n, dtype=torch.long),
              "from_bank": torch.ones(n, dtype=torch.bool), "strength": torch.ones(n)}
    header, columns, report = [], [], {}
    for h in range(5):
        others = [int(i) for i in np.flatnonzero(tiles.hospitals == h)[1:]]
        candidates = [(i, c) for i in others for c in ("bottom", "top")]
        for tries, (i, corner) in enumerate(candidates, start=1):
            donor = _crops(tiles.images[[i]], tiles.um_per_px, corner=corner)
            aug = ContriMix(weights=model, p=1.0, donors="bank", bank=donor, seed=0)
            y = aug(contents, params=params)
            ok = _acceptable(contents, y, ref)
            if bool(ok.all()):
                break
        else:
            raise SystemExit(f"hospital {h}: no donor crop renders all five tiles plausibly")
        header.append(donor)
        columns.append(y)
        d = ref.distance(stain_features(y))
        report[f"look of hospital {h}"] = {"donor": f"tile {i}, {corner} corner", "donors_tried": tries,
                                           "plausible": int(ok.sum()), "renders": n,
                                           "distance_over_threshold_max": round(float(d.max() / ref.threshold), 3)}
    rows = [torch.cat([torch.ones_like(contents[:1])] + header)]
    rows += [torch.cat([contents[r:r + 1]] + [c[r:r + 1] for c in columns]) for r in range(n)]
    labels = ["donors"] + [f"hospital {h}{' (unseen)' if h in (1, 2) else ''}" for h in range(5)]
    pic = tile_grid(rows, labels, ["input"] + [f"look of {h}" for h in range(5)])
    return pic, contents, torch.cat(header), report


def main() -> None:
    demo = run_demo(None, "docs/images/demo.png", seed=0)
    tiles = load_camelyon17_tiles(progress=False)
    model = load_model("camelyon")
    ref = load_plausibility_reference()
    pic, contents, donors, report = hospitals_figure(model, tiles, ref)
    pic.save("docs/images/hospitals.png")
    dataflow_figure(model, contents[2], donors[4]).save("docs/images/dataflow.png")
    print(json.dumps({"demo.png": demo["plausibility"], "hospitals.png": report}, indent=1))
    print("wrote docs/images/demo.png, docs/images/hospitals.png, docs/images/dataflow.png")


if __name__ == "__main__":
    main()
