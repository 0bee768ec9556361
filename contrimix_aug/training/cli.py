"""``contrimix-aug train DATA --out DIR``: argument parsing only; the work is in :mod:`.loop`."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any, Callable

from .config import ARCHS, TrainConfig, load_config
from .losses import LOSS_PRESETS

__all__ = ["register"]


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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand. Every flag defaults to None ("not given"), so ``--config`` values survive."""
    p = subparsers.add_parser(
        "train",
        help="train ContriMix encoders on your images (no labels needed)",
        description="Train a ContriMix content/attribute model on DATA and export OUT/weights.safetensors "
        "(with an attribute bank), OUT/metrics.json and a resumable OUT/checkpoint.safetensors. "
        "Under `torchrun --nproc_per_node N` it trains with DistributedDataParallel. See docs/training.md.",
    )
    p.add_argument("data", nargs="?", metavar="DATA",
                   help="a folder of images, 'he-sources[:id,id]', 'fluo-sources', 'camelyon17:ROOT' or 'rxrx1:ROOT'")
    p.add_argument("--out", metavar="DIR", help="output folder")
    p.add_argument("--config", metavar="FILE", help="JSON/TOML file of training settings; flags override it")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors if present")
    p.add_argument("--steps", type=_int_at_least(1), help="optimiser steps in total (default 2000)")
    p.add_argument("--batch-size", type=_int_at_least(1), help="images per step per process (default 16)")
    p.add_argument("--num-attributes", type=_int_at_least(1), metavar="K", help="attribute vectors K (default 4)")
    p.add_argument("--num-mixes", type=_int_at_least(0), metavar="M", help="donor views per image M (default 3)")
    p.add_argument("--patch-size", type=_int_at_least(16), metavar="P", help="training patch side in px (default 96)")
    p.add_argument("--lr", type=_nonneg_float, help="peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=_nonneg_float, help="AdamW weight decay (default 0.01)")
    p.add_argument("--seed", type=_int_at_least(0), help="seed of init, data order, crops and donors (default 0)")
    p.add_argument("--checkpoint-every", type=_int_at_least(0), metavar="N", help="steps between checkpoints")
    p.add_argument("--val-every", type=_int_at_least(0), metavar="N", help="steps between validations")
    p.add_argument("--loss", choices=sorted(LOSS_PRESETS), help="loss-weight preset (default tcga)")
    p.add_argument("--arch", choices=sorted(ARCHS), help="architecture preset (default authors)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], help="mixed precision (default auto)")
    p.add_argument("--num-workers", type=_int_at_least(-1), help="DataLoader workers (-1 = auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .loop import train

    settings: dict[str, Any] = load_config(args.config) if args.config else {}
    command = ["contrimix-aug", "train"]
    for key in ("data", "out", "steps", "batch_size", "num_attributes", "num_mixes", "patch_size", "lr",
                "weight_decay", "seed", "checkpoint_every", "val_every", "loss", "arch", "device", "amp",
                "num_workers", "progress"):
        value = getattr(args, key)
        if value is None:
            continue
        settings[key] = value
        if key == "data":
            command.append(str(value))
        elif key == "progress":
            command.append("--no-progress")
        else:
            command += [f"--{key.replace('_', '-')}", str(value)]
    if args.config:
        command += ["--config", args.config]
    if args.resume:
        command.append("--resume")
    settings["command"] = shlex.join(command)
    if not settings.get("data"):
        raise ValueError("DATA is missing: give a folder of images or a dataset spec (or `data` in --config).")
    if not settings.get("out"):
        raise ValueError("--out DIR is missing (or set `out` in --config).")
    path = train(TrainConfig.from_dict(settings), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, also under torchrun
        print(path)
    return 0
