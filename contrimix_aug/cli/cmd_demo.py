"""``contrimix-aug demo``: the pretrained weights at work on real tiles bundled with the package."""

from __future__ import annotations

import argparse
import json

from ._help import HelpFormatter

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..showcase import run_demo

    result = run_demo(args.weights, args.out, args.seed)
    print(json.dumps(result, indent=2))
    print(f"wrote {result['picture']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", formatter_class=HelpFormatter, help="show pretrained weights at work on the bundled real tiles",
        description="Augment the real tiles bundled with the package with pretrained weights: writes a picture "
        "(each tile before and after ContriMix, then a swap grid: contents by rows, donor attributes by columns) "
        "and prints reconstruction and swap measures as JSON.")
    p.add_argument("--weights", default=None,
                   help="registry name or .safetensors path (default: the bundled 'he'); 1-channel weights run on "
                        "the bundled fluorescence tiles")
    p.add_argument("--out", default="contrimix_demo.png", help="where to write the picture")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the augmentation's donor draws (same seed, same picture)")
    p.set_defaults(func=_run)
