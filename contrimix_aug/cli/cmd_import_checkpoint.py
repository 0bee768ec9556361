"""``contrimix-aug import-checkpoint SRC --name NAME``: the authors' ``.pth`` checkpoints as weights files."""

from __future__ import annotations

import argparse

from ._help import HelpFormatter

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..authors_checkpoint import import_authors_checkpoint
    from ..weights import load_weights

    try:
        path = import_authors_checkpoint(args.src, args.name, channel_order=args.channel_order,
                                         overwrite=args.force, mode=args.mode, bank_images=args.bank_images)
    except FileExistsError as err:
        raise FileExistsError(f"{err.filename or err} already exists; pass --force to replace it.") from None
    w = load_weights(path)
    c = w.config
    bank = 0 if w.bank is None else w.bank.shape[0]
    print(
        f"wrote {path}\n"
        f"  authors' checkpoint, C={c.in_channels}, K={c.num_attributes}, mode={c.mode}, "
        f"expects {c.channel_order.upper()} (inputs are always given as RGB), "
        f"{w.meta.num_params:,} parameters, attribute bank of {bank} ({w.meta.bank_source}), "
        f"source sha256 {str(w.meta.extra.get('source_sha256', ''))[:12]}\n"
        f"use it: contrimix_aug.ContriMix(weights={args.name!r})  (contrimix_aug.available_weights() lists it; "
        f"it lives in {path.parent}, set by $CONTRIMIX_AUG_HOME)"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-checkpoint",
        formatter_class=HelpFormatter,
        help="convert an authors' ContriMix .pth checkpoint into a contrimix_aug weights file",
        description=(
            "Convert a checkpoint saved by the authors' ContriMix training code (a dict with an 'algorithm' state "
            "dict) into NAME.safetensors in the contrimix_aug weights cache, with an attribute bank computed from "
            "reference images, so that ContriMix(weights=NAME) works on single images too. The file is read with "
            "torch.load(weights_only=True): nothing but tensors is unpickled."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the authors' checkpoint (.pth)")
    p.add_argument("--name", required=True,
                   help="weights name to register, e.g. camelyon-authors or tcga (bundled names are refused)")
    p.add_argument("--channel-order", choices=("rgb", "bgr"), default="rgb",
                   help="channel order the checkpoint was trained on")
    p.add_argument("--mode", choices=("absorbance", "linear"), default="absorbance",
                   help="absorbance for H&E (Camelyon, TCGA), linear for fluorescence (RxRx1)")
    p.add_argument("--bank-images", metavar="DIR", default=None,
                   help="folder of reference images for the attribute bank (default: the real tiles bundled "
                        "with the package for the checkpoint's channel count)")
    p.add_argument("--force", action="store_true", help="overwrite an existing weights file of that name")
    p.set_defaults(func=_run)
