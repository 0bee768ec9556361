"""``contrimix-aug demo``: the pretrained weights at work on real tiles bundled with the package."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..showcase import run_demo

    result = run_demo(args.weights, args.out, args.seed)
    print(json.dumps(result, indent=2))
    print(f"wrote {result['picture']}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="show pretrained weights at work on the bundled real tiles")
    p.add_argument("--weights", default=None,
                   help="registry name or .safetensors path (default: the bundled 'he'); 1-channel weights run on "
                        "the bundled fluorescence tiles")
    p.add_argument("--out", default="contrimix_demo.png", help="where to write the picture")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
