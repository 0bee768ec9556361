"""``contrimix-aug`` command line: each subcommand lives next to the code it drives.

Subcommands register through ``_SUBCOMMANDS``: a list of ``"module:function"`` strings naming a
``register(subparsers)`` function that adds a parser and sets ``func`` (``args -> int``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

_SUBCOMMANDS = [
    "contrimix_aug.demo:register",
    "contrimix_aug.checkpoint:register",
    "contrimix_aug.data.sources:register",
    "contrimix_aug.training.cli:register",
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="contrimix-aug", description="ContriMix stain augmentation: demo, training, checkpoint import."
    )
    parser.add_argument("--version", action="version", version=f"contrimix_aug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for spec in _SUBCOMMANDS:
        mod_name, fn = spec.split(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("contrimix_aug"):
                continue  # subcommand not built yet
            raise
        getattr(mod, fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"contrimix-aug {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
