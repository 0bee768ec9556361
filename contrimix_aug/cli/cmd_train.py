"""``contrimix-aug train DATA --out DIR``: argument parsing only; the work is in :mod:`contrimix_aug.training.loop`."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any, Callable

from ._help import HelpFormatter

__all__ = ["RECIPE_COLUMNS", "add_parser", "recipe_summary"]

_FLAGS = ("data", "out", "steps", "batch_size", "num_attributes", "num_mixes", "patch_size", "lr", "weight_decay",
          "seed", "checkpoint_every", "val_every", "log_every", "loss", "arch", "device", "amp", "num_workers",
          "progress", "channels", "data_root")

RECIPE_COLUMNS = ("K", "M", "batch", "patch", "crop scale", "steps", "lr", "loss", "attributes", "mode")
"""The columns of :func:`recipe_summary`, ``--list-recipes`` and the recipe tables of the documentation."""
_DEFAULT_RECIPES = ("he-lite", "fluorescence-lite")  # what `train` uses without --config (RGB / 1-channel data)


def _show_loss(loss: Any) -> str:
    """A preset name as such; a dict as its preset, ``+ paired terms`` when it weights them (see the recipe file
    for the weights), ``+ own weights`` for other overrides."""
    if isinstance(loss, str):
        return loss
    extra = {k: v for k, v in loss.items() if k != "preset"}
    paired = {k for k, v in extra.items() if k.startswith("pair_") and v}
    name = str(loss.get("preset", "custom"))
    if paired:
        name += " + paired terms"
    return name + (" + own weights" if set(extra) - {"pair_recon", "pair_content"} else "")


def recipe_summary(name: str) -> dict[str, str]:
    """The settings a shipped recipe trains with (its file over ``TrainConfig``'s defaults), as the text of the
    columns :data:`RECIPE_COLUMNS`: the one rendering behind ``contrimix-aug train --list-recipes`` and the recipe
    tables of the documentation (a test compares them)."""
    from ..model_config import ModelConfig
    from ..training import ARCHS, TrainConfig, load_recipe

    cfg = TrainConfig.from_dict(load_recipe(name))
    model = {**ARCHS[cfg.arch], **cfg.model}
    lo, hi = cfg.patch_scale
    return {
        "K": str(cfg.num_attributes),
        "M": str(cfg.num_mixes),
        "batch": str(cfg.batch_size),
        "patch": f"{cfg.patch_size} px",
        "crop scale": f"{lo:g}×" if lo == hi else f"{lo:g}-{hi:g}×",
        "steps": str(cfg.steps),
        "lr": f"{cfg.lr:g}",
        "loss": _show_loss(cfg.loss),
        "attributes": str(model.get("attributes", ModelConfig.attributes)),
        "mode": str(model.get("mode", "auto")),
    }


def _recipe_default(key: str) -> str:
    """``(default: ...)`` of a train flag whose default comes from the recipe (flags default to None so that a
    recipe's values survive): the value of the two default recipes, or TrainConfig's where no recipe sets it."""
    from ..training import TrainConfig, load_recipe

    base = TrainConfig()
    values = {}
    for r in _DEFAULT_RECIPES:
        recipe = load_recipe(r)
        v = recipe.get(key, getattr(base, key))
        values[r] = _show_loss(v) if key == "loss" else (f"{v:g}" if isinstance(v, float) else str(v))
    if len(set(values.values())) == 1:
        v = next(iter(values.values()))
        named = any(key in load_recipe(r) for r in _DEFAULT_RECIPES)
        return f"(default: {v}{', from the recipe' if named else ''})"
    return "(default: from the recipe: " + ", ".join(f"{r} {v}" for r, v in values.items()) + ")"


def _list_recipes() -> int:
    from ..training import RECIPES

    rows = [(r, *recipe_summary(r).values()) for r in RECIPES]
    header = ("recipe", *RECIPE_COLUMNS)
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    import textwrap

    print(textwrap.fill(
        "Without --config: he-lite for RGB data, fluorescence-lite for 1-channel or fluorescence data; flags "
        "override a recipe. Mode auto: linear (fluorescence) for 1-channel and fluorescence data, else absorbance "
        "(Beer-Lambert). What each recipe is for: contrimix_aug/recipes/README.md in the installed package; its "
        "settings in Python: contrimix_aug.training.load_recipe(NAME).", 110))
    return 0


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

    if args.list_recipes:
        return _list_recipes()
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
    """Add ``train``. Every flag defaults to None ("not given"), so recipe values survive; the help says the value
    a run gets without the flag."""
    from ..training import ARCHS, LOSS_PRESETS, RECIPES

    d = _recipe_default
    p = subparsers.add_parser(
        "train",
        formatter_class=HelpFormatter,
        help="train ContriMix encoders on your images (no labels needed)",
        description="Train a ContriMix content/attribute model on DATA and export OUT/weights.safetensors "
        "(with an attribute bank), OUT/metrics.json and a resumable OUT/checkpoint.safetensors. "
        "Under `torchrun --nproc_per_node N -m contrimix_aug.cli train ...` it trains with DistributedDataParallel. "
        "Ctrl-C keeps the last checkpoint; --resume continues it.",
        epilog="Settings come from a recipe (--config; the shipped ones: contrimix-aug train --list-recipes), and "
        "flags override it. The defaults shown are what a run gets without the flag.",
    )
    p.add_argument("data", nargs="?", metavar="DATA",
                   help="a folder of images (PNG/JPEG; TIFF needs pip install \"contrimix_aug[data]\"), "
                        "'he-sources[:id,id]', 'fluo-sources', 'camelyon17-tiles[:0,3,4]', 'camelyon17:ROOT' or "
                        "'rxrx1:ROOT'")
    p.add_argument("--out", metavar="DIR", help="output folder (required, unless the --config file sets `out`)")
    p.add_argument("--config", metavar="RECIPE",
                   help=f"a shipped recipe ({', '.join(RECIPES)}) or a JSON/TOML file; flags override it "
                        "(default: he-lite, or fluorescence-lite for 1-channel / fluorescence data)")
    p.add_argument("--list-recipes", action="store_true",
                   help="print the shipped recipes and the settings each trains with, then exit")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors if present")
    p.add_argument("--channels", type=_channels, default=None, metavar="{1,3,auto}",
                   help="channels read from a folder: 3 = RGB, 1 = grey (e.g. a nuclear stain), auto = as stored "
                        "(default: 3)")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the labelled collections "
                   "(camelyon17-tiles) (default: $CONTRIMIX_AUG_DATA)")
    p.add_argument("--steps", type=_int_at_least(1), help=f"optimiser steps in total {d('steps')}")
    p.add_argument("--batch-size", type=_int_at_least(1), help=f"images per step per process {d('batch_size')}")
    p.add_argument("--num-attributes", type=_int_at_least(1), metavar="K",
                   help=f"attribute vectors K {d('num_attributes')}")
    p.add_argument("--num-mixes", type=_int_at_least(0), metavar="M",
                   help=f"donor views per image M {d('num_mixes')}")
    p.add_argument("--patch-size", type=_int_at_least(16), metavar="P",
                   help=f"training patch side in px {d('patch_size')}")
    p.add_argument("--lr", type=_nonneg_float, help=f"peak learning rate {d('lr')}")
    p.add_argument("--weight-decay", type=_nonneg_float, help=f"AdamW weight decay {d('weight_decay')}")
    p.add_argument("--seed", type=_int_at_least(0), help=f"seed of init, data order, crops and donors {d('seed')}")
    p.add_argument("--checkpoint-every", type=_int_at_least(0), metavar="N",
                   help=f"steps between checkpoints; 0 = only at the end {d('checkpoint_every')}")
    p.add_argument("--val-every", type=_int_at_least(0), metavar="N",
                   help=f"steps between validations; 0 = only at the end {d('val_every')}")
    p.add_argument("--log-every", type=_int_at_least(0), metavar="N",
                   help="steps between entries of the metrics history (with --no-progress also a log line, at "
                        f"least 10 steps apart); 0 = only at the end {d('log_every')}")
    p.add_argument("--loss", choices=sorted(LOSS_PRESETS), help=f"loss-weight preset {d('loss')}")
    p.add_argument("--arch", choices=sorted(ARCHS),
                   help=f"architecture preset under the recipe's model overrides {d('arch')}")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"auto = cuda when available {d('device')}")
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"],
                   help=f"mixed precision; auto = bf16 on GPUs that support it {d('amp')}")
    p.add_argument("--num-workers", type=_int_at_least(-1),
                   help=f"DataLoader workers; -1 = auto (0 on machines with <= 2 cores) {d('num_workers')}")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (batch jobs): a log line on stderr every --log-every steps (at least 10 "
                        "apart) and at each validation and checkpoint")
    p.set_defaults(func=_run)
