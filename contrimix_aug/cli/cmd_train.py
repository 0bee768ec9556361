"""``contrimix-aug train DATA --out DIR``: argument parsing only; the work is in :mod:`contrimix_aug.training.loop`."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any, Callable

__all__ = ["add_parser"]

_FLAGS = ("data", "out", "steps", "batch_size", "num_attributes", "num_mixes", "patch_size", "lr", "weight_decay",
          "seed", "checkpoint_every", "val_every", "loss", "arch", "device", "amp", "num_workers", "progress",
          "channels", "data_root")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v

    parse.__name__ = f"integer >= {lo}"
    return parse


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def _channels(text: str) -> int | str:
    if text == "auto":
        return text
    if text in ("1", "3"):
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 1, 3 or auto, got {text!r}")


def _stored_channels(data: str) -> int | None:
    """``--channels auto`` on a folder: the channel count of its first image as stored (None for other specs), so
    that a folder of grey images gets the 1-channel default recipe."""
    if not os.path.isdir(os.path.expanduser(data)):
        return None
    from ..data import make_dataset

    return int(make_dataset(data, channels=None)[0][0].shape[0])


def _run(args: argparse.Namespace) -> int:
    from ..training import RECIPES, TrainConfig, default_recipe, load_recipe, train

    channels = {None: 3, "auto": None}.get(args.channels, args.channels)
    recipe = args.config or default_recipe(args.data or "", channels if channels is not None
                                           else _stored_channels(args.data or ""))
    settings: dict[str, Any] = load_recipe(recipe)
    command = ["contrimix-aug", "train"]
    for key in _FLAGS:
        value = getattr(args, key)
        if value is None:
            continue
        settings[key] = channels if key == "channels" else value
        if key == "data":
            command.append(str(value))
        elif key == "progress":
            command.append("--no-progress")
        else:
            command += [f"--{key.replace('_', '-')}", str(value)]
    command += ["--config", recipe]
    if args.resume:
        command.append("--resume")
    settings["command"] = shlex.join(command)
    if not settings.get("data"):
        raise ValueError("DATA is missing: give a folder of images or a dataset spec (or `data` in --config).")
    if not settings.get("out"):
        raise ValueError("--out DIR is missing (or set `out` in --config).")
    if recipe in RECIPES and int(os.environ.get("RANK", "0")) == 0 and not args.config:
        print(f"contrimix-aug train: recipe {recipe!r} (the shipped default; --config NAME or FILE to choose)")
    path = train(TrainConfig.from_dict(settings), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, also under torchrun
        print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``. Every flag defaults to None ("not given"), so recipe values survive."""
    from ..training import ARCHS, LOSS_PRESETS, RECIPES

    p = subparsers.add_parser(
        "train",
        help="train ContriMix encoders on your images (no labels needed)",
        description="Train a ContriMix content/attribute model on DATA and export OUT/weights.safetensors "
        "(with an attribute bank), OUT/metrics.json and a resumable OUT/checkpoint.safetensors. "
        "Under `torchrun --nproc_per_node N -m contrimix_aug.cli train ...` it trains with DistributedDataParallel. "
        "Ctrl-C keeps the last checkpoint; --resume continues it. See docs/training.md.",
    )
    p.add_argument("data", nargs="?", metavar="DATA",
                   help="a folder of images, 'he-sources[:id,id]', 'fluo-sources', 'camelyon17-tiles[:0,3,4]', "
                        "'camelyon17:ROOT' or 'rxrx1:ROOT'")
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument("--config", metavar="RECIPE",
                   help=f"a shipped recipe ({', '.join(RECIPES)}) or a JSON/TOML file; flags override it "
                        "(default: he-lite, or fluorescence-lite for 1-channel / fluorescence data)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors if present")
    p.add_argument("--channels", type=_channels, default=None, metavar="{1,3,auto}",
                   help="channels read from a folder: 3 = RGB (default), 1 = grey (e.g. a nuclear stain), auto = "
                        "as stored")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the labelled collections "
                   "(camelyon17-tiles); default $CONTRIMIX_AUG_DATA")
    p.add_argument("--steps", type=_int_at_least(1), help="optimiser steps in total")
    p.add_argument("--batch-size", type=_int_at_least(1), help="images per step per process")
    p.add_argument("--num-attributes", type=_int_at_least(1), metavar="K", help="attribute vectors K")
    p.add_argument("--num-mixes", type=_int_at_least(0), metavar="M", help="donor views per image M")
    p.add_argument("--patch-size", type=_int_at_least(16), metavar="P", help="training patch side in px")
    p.add_argument("--lr", type=_nonneg_float, help="peak learning rate")
    p.add_argument("--weight-decay", type=_nonneg_float, help="AdamW weight decay")
    p.add_argument("--seed", type=_int_at_least(0), help="seed of init, data order, crops and donors (default 0)")
    p.add_argument("--checkpoint-every", type=_int_at_least(0), metavar="N", help="steps between checkpoints")
    p.add_argument("--val-every", type=_int_at_least(0), metavar="N", help="steps between validations")
    p.add_argument("--loss", choices=sorted(LOSS_PRESETS), help="loss-weight preset")
    p.add_argument("--arch", choices=sorted(ARCHS), help="architecture preset under the recipe's model overrides")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], help="mixed precision (default auto)")
    p.add_argument("--num-workers", type=_int_at_least(-1), help="DataLoader workers (-1 = auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar: one log line per validation and checkpoint instead (batch jobs)")
    p.set_defaults(func=_run)
