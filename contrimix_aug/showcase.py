"""The demo behind ``contrimix-aug demo``: pretrained weights at work on the real tiles bundled with the package (H&E tiles for
3-channel weights, fluorescence nuclei for 1-channel weights).

Writes a picture (a batch before/after ContriMix, and a content × donor swap matrix) and prints
reconstruction and swap measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["run_demo"]


def run_demo(weights: str | None = None, out: str | Path = "contrimix_demo.png", seed: int = 0) -> dict:
    """Run the demo; returns the printed measures as a dict."""
    from .data.readers import load_demo_tiles
    from .quality import reconstruction, swap_report
    from .transform import ContriMix
    from .viz import swap_grid, tile_grid
    from .weights import load_model

    model = load_model(weights)
    channels = model.config.in_channels
    if channels not in (1, 3):
        raise ValueError(f"the demo has bundled tiles for 3-channel (H&E) and 1-channel (fluorescence) weights; "
                         f"these weights take {channels} channels.")
    tiles, ids = load_demo_tiles(modality="he" if channels == 3 else "fluorescence")
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    aug = ContriMix(weights=model, p=1.0, seed=seed)
    y = aug(x)

    # a swap matrix: two contents per source, donors one per source
    srcs = sorted(set(ids))
    idx = {s: [i for i, v in enumerate(ids) if v == s] for s in srcs}
    contents = torch.stack([x[i] for s in srcs for i in idx[s][:2]])
    c_labels = [s for s in srcs for _ in idx[s][:2]]
    donors = torch.stack([x[idx[s][-1]] for s in srcs] + [x[idx[s][-2]] for s in srcs])
    d_labels = srcs + srcs

    half = (x.shape[0] + 1) // 2
    batch_pic = tile_grid([x[:half], y[:half], x[half:], y[half:]], ["input", "ContriMix", "input", "ContriMix"])
    swap_pic = swap_grid(model, contents, donors, c_labels, d_labels)
    from PIL import Image

    canvas = Image.new("RGB", (max(batch_pic.width, swap_pic.width), batch_pic.height + swap_pic.height + 8), "white")
    canvas.paste(batch_pic, (0, 0))
    canvas.paste(swap_pic, (0, batch_pic.height + 8))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)

    rec = reconstruction(model, x)
    # every tile as content, its donor the tile at the same rank in the next source (cyclic), or the next tile
    # when there is only one source
    other = []
    for i, s in enumerate(ids):
        donor_src = srcs[(srcs.index(s) + 1) % len(srcs)]
        rank = idx[s].index(i) + (len(srcs) == 1)
        other.append(idx[donor_src][rank % len(idx[donor_src])])
    rep = swap_report(model, x, x[other])
    result = {
        "weights": model.meta.name if model.meta is not None else str(weights or "he"),
        "tiles": len(ids),
        "sources": srcs,
        "reconstruction_psnr_db": round(float(rec["psnr"].mean()), 2),
        "reconstruction_ssim": round(float(rec["ssim"].mean()), 4),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rep.summary().items()},
        "picture": str(out),
    }
    return result
