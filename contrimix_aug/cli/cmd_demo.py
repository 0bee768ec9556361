"""``contrimix-aug demo``: the pretrained weights at work on real tiles bundled with the package."""

from __future__ import annotations

import argparse
import json

from ._help import HelpFormatter

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..showcase import run_demo

    given = [f"--{k.replace('_', '-')}" for k in ("size", "max_images", "um_per_px") if getattr(args, k) is not None]
    if given and args.images is None:
        raise ValueError(f"{', '.join(given)} apply to your own images: add --images PATH (files or folders).")
    result = run_demo(args.weights, args.out, args.seed, images=args.images,
                      size=96 if args.size is None else args.size,
                      max_images=32 if args.max_images is None else args.max_images, um_per_px=args.um_per_px)
    print(json.dumps(result, indent=2))
    if "reading" in result.get("your_images", {}):
        print(result["your_images"]["reading"])
    print(f"wrote {result['picture']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", formatter_class=HelpFormatter, help="show pretrained weights at work on the bundled real tiles",
        description="Re-render the real tiles bundled with the package with pretrained weights. H&E weights: a "
        "picture of the tiles (rows) in the looks of six real labs of the weights' attribute bank (columns, labs far "
        "apart), every render checked with contrimix_aug.quality.plausible and render_artefacts (a rejected one is "
        "redrawn from another bank entry of that lab, a lab without an accepted one is skipped); other weights: "
        "each tile before and after ContriMix and a swap grid. Prints reconstruction and swap measures, and the "
        "plausibility of what is shown, as JSON. With --images: your own tiles instead, and how much they look "
        "like the H&E these weights know.")
    p.add_argument("--weights", default=None,
                   help="registry name or .safetensors path (default: the bundled 'he'); 1-channel weights run on "
                        "the bundled fluorescence tiles")
    p.add_argument("--out", default="contrimix_demo.png", help="where to write the picture")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the augmentation's donor draws (same seed, same picture)")
    p.add_argument("--images", nargs="+", default=None, metavar="PATH",
                   help="your own image files or folders of them (PNG/JPEG/TIFF) instead of the bundled tiles: "
                        "centre crops (see --um-per-px); prints the share of "
                        "them that look like real H&E (quality.plausible) and whether swaps keep their structure (default: "
                        "the bundled tiles)")
    p.add_argument("--um-per-px", type=float, default=None,
                   help="with --images: their resolution in µm per pixel; they are resized to the weights' training "
                        "resolution first (default: taken as they are)")
    p.add_argument("--size", type=int, default=None, help="with --images: the crop size in px (default: 96)")
    p.add_argument("--max-images", type=int, default=None,
                   help="with --images: how many images (the first, sorted) the measures use; the picture shows 6 "
                        "(default: 32)")
    p.set_defaults(func=_run)
