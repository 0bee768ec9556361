"""``contrimix-aug demo``: the pretrained weights at work on the real H&E tiles bundled with the package.

Writes a picture (a batch before/after ContriMix, and a content × donor swap matrix) and prints
reconstruction and swap measures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

__all__ = ["run_demo", "register"]


def run_demo(weights: str | None = None, out: str | Path = "contrimix_demo.png", seed: int = 0) -> dict:
    """Run the demo; returns the printed measures as a dict."""
    from .data.sources import load_demo_tiles
    from .quality import reconstruction, swap_report
    from .transform import ContriMix
    from .viz import swap_grid, tile_grid
    from .weights import load_model

    model = load_model(weights)
    tiles, ids = load_demo_tiles()
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
    # every tile as content, its donor the tile at the same rank in the next source (cyclic)
    other = []
    for i, s in enumerate(ids):
        donor_src = srcs[(srcs.index(s) + 1) % len(srcs)]
        rank = idx[s].index(i)
        other.append(idx[donor_src][rank % len(idx[donor_src])])
    rep = swap_report(model, x, x[other])
    result = {
        "weights": getattr(model, "meta", {}).get("name", str(weights or "he")),
        "tiles": len(ids),
        "sources": srcs,
        "reconstruction_psnr_db": round(float(rec["psnr"].mean()), 2),
        "reconstruction_ssim": round(float(rec["ssim"].mean()), 4),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in rep.summary().items()},
        "picture": str(out),
    }
    return result


def _cmd(args: argparse.Namespace) -> int:
    result = run_demo(args.weights, args.out, args.seed)
    print(json.dumps(result, indent=2))
    print(f"wrote {result['picture']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="show the pretrained weights at work on the bundled real H&E tiles")
    p.add_argument("--weights", default=None, help="registry name or .safetensors path (default: bundled 'he')")
    p.add_argument("--out", default="contrimix_demo.png", help="where to write the picture")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)
