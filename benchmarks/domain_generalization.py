#!/usr/bin/env python
"""Domain generalisation: ContriMix against stain normalisation and stain/colour augmentation on real shifts.

Datasets (``--dataset``; the pieces live in ``benchmarks/dg/``):

* ``camelyon16`` (headline): tumour vs normal, train on one hospital, test on the other (RUMC->UMCU, UMCU->RUMC);
  real CAMELYON16 patches through the data root (``CONTRIMIX_AUG_DATA``). :mod:`dg.tasks.camelyon16`.
* ``bbbc021``: DMSO vs cycloheximide, leave one plate out over plates 27801, 27821, 27861. :mod:`dg.tasks.bbbc021`.
* ``monuseg``: nuclei segmentation, MoNuSeg tiles of 18 (``official``) or 3 (``few-sites``) TCGA tissue source
  sites -> the 14 test sites; a small U-Net per method and seed, per-tile AJI and Dice (``dg/segmentation.py``);
  ``--dev`` runs the pre-registration splits (training sites only). :mod:`dg.tasks.monuseg`.
* ``hgsc`` (secondary, semi-synthetic): HGSC nuclei leave-one-stain-out, two renderers. :mod:`dg.tasks.hgsc`.
* ``stain-transfer``: do attributes carry the whole stain (CAMELYON17 tiles re-rendered in other hospitals'
  stains; ContriMix weights against RGB mean/std, Reinhard, Macenko). :mod:`dg.tasks.stain_transfer`.

Every method trains the same classifier (``dg/classifier.py``) with the same epochs, batch and augmentation
probability; normalisers and the per-fold ContriMix see the training domains only. ``--quick`` is CI-sized (every
method, one seed, few epochs); the default is the pre-registered full protocol (10 seeds). Outputs (``--out``,
default ``docs/benchmarks/``): ``dg_<dataset>[_quick].json`` (environment, settings, every run with per-item
correctness, summary, paired differences with 95 % bootstrap intervals), CSVs and PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dg import diagnostics, engine, plots  # noqa: E402
from dg import report as R  # noqa: E402
from contrimix_aug.mixing import DONOR_MODES  # noqa: E402
from dg.contrimix_models import JointObjective, fold_model, load_bundled  # noqa: E402
from dg.methods import (  # noqa: E402
    HE_PEERS,
    STRONG_PEERS,
    Method,
    build_peers,
    contrimix_augment,
    contrimix_normalise,
    then,
    to_float,
    to_uint8_hwc,
)

CONTRIMIX_HE = ["contrimix-camelyon", "contrimix-camelyon-both", "contrimix-camelyon-normalise", "contrimix-he",
                "contrimix-fold", "contrimix-joint"]
METHODS = {
    "camelyon16": HE_PEERS + CONTRIMIX_HE,
    "hgsc": HE_PEERS + ["contrimix-camelyon", "contrimix-he", "contrimix-fold"],
    "bbbc021": ["erm", "plate-zscore", "gain-gamma", "contrimix-fold"],
    "monuseg": HE_PEERS + STRONG_PEERS + ["contrimix-camelyon", "contrimix-camelyon-batch", "contrimix-camelyon-bank",
                                          "contrimix-camelyon-both", "contrimix-camelyon-sampled", "contrimix-he",
                                          "contrimix-fold", "contrimix-camelyon-colorjitter"],
}
MODELS = {  # the one network every method of a task trains
    "classification": "SmallCNN 16-32-64-128 (dg/classifier.py), AdamW lr 2e-3 one-cycle, last epoch (no model "
                      "selection)",
    "monuseg": "U-Net 16-32-64-128, two conv-BN-ReLU per stage (dg/segmentation.py), BCE + soft Dice, AdamW lr 2e-3 "
               "one-cycle, last step (no model selection)",
}
# per-run metrics of each task, the primary first (it ranks the peers); segmentation scores tiles, not crops
METRICS = {"monuseg": ("aji", "dice")}
ITEMS = {"monuseg": ("tile_aji", "tile_dice")}
# post-hoc variants (--post-hoc): tried after the pre-registered results, because of what the coverage diagnostic
# showed (docs/benchmarks/preregistration.md, "Post-hoc"); reported apart, paired against the registered rows
POST_HOC = {
    # donors from the weights' bank only: stains the training hospital lacks; and (2026-12-03) the default use of
    # release 0.3 (sampled stains around the 26-lab bank, render guard), the re-run issue 17/18 asks for
    "camelyon16": ["contrimix-camelyon-bank", "contrimix-camelyon-r2"],
    "bbbc021": ["contrimix-fold-ls8"],  # per-fold model of the `fluorescence-ls` recipe (K = 8, least-squares)
}
FOLD_RECIPES = {"contrimix-fold-ls8": "fluorescence-ls"}  # per-fold variants with their own recipe
AUG_P = 0.5  # every augmentation (peers and ContriMix) is applied to an image with this probability

# MoNuSeg segmenter steps, chosen on the training sites only (--dev; docs/benchmarks/preregistration.md)
MONUSEG_STEPS = 800
DEV = dict(methods=["erm", "kornia-colorjitter"], seeds=[0])  # what the --dev splits registered for that choice
# pre-registered protocol (fixed before any held-out result was seen; docs/benchmarks.md says when and how)
FULL = {
    "camelyon16": dict(seeds=list(range(10)), epochs=30, batch_size=32, fold_steps=600, fold_max_steps=2400),
    "bbbc021": dict(seeds=list(range(10)), epochs=8, batch_size=64, fold_steps=300, fold_max_steps=900,
                    max_per_plate=1000),
    "hgsc": dict(seeds=list(range(10)), epochs=8, batch_size=32, fold_steps=300, fold_max_steps=900,
                 max_per_split=160),
    "monuseg": dict(seeds=list(range(10)), steps=MONUSEG_STEPS, batch_size=8, crop=96, fold_steps=600,
                    fold_max_steps=2400),
}
QUICK = {
    "camelyon16": dict(seeds=[0], epochs=2, batch_size=32, fold_steps=8, fold_max_steps=8),
    "bbbc021": dict(seeds=[0], epochs=1, batch_size=64, fold_steps=8, fold_max_steps=8, max_per_plate=120),
    "hgsc": dict(seeds=[0], epochs=1, batch_size=32, fold_steps=8, fold_max_steps=8, max_per_split=64),
    "monuseg": dict(seeds=[0], steps=6, batch_size=4, crop=96, fold_steps=8, fold_max_steps=8),
}
# the bundled weights' measured quality: a per-fold model must reach it on its held-out images before it is used
TARGET_DB = {"he": 32.0, "fluorescence": 45.0}


def _contrimix(name: str, fold_images: np.ndarray, key: str, args, notes: dict, log, recipe: str,
               target: float) -> Any:
    """The model behind a ContriMix method name (bundled weights, or the per-fold model, trained once per fold)."""
    if name.startswith(("contrimix-camelyon", "contrimix-he")):
        model, label = load_bundled(name.split("-")[1])
        notes.setdefault("contrimix", {})[name] = label
        return model
    if name in FOLD_RECIPES:
        recipe, key = FOLD_RECIPES[name], f"{key}-{name.removeprefix('contrimix-fold-')}"
    cache = notes.setdefault("_fold_models", {})
    if key not in cache:
        model, info = fold_model(key, fold_images, recipe=recipe, target_db=target, steps=args.fold_steps,
                                 max_steps=args.fold_max_steps, fold_dir=args.fold_dir,
                                 train=not args.from_journal, log=log)  # publishing trains nothing
        cache[key] = model
        if model is not None:
            notes.setdefault("contrimix_fold", {})[key] = info
    return cache[key]


def methods_for(names: Sequence[str], fold_images: np.ndarray, key: str, args, notes: dict, log, *,
                recipe: str = "camelyon", target: float = TARGET_DB["he"], p: float = AUG_P, picture: bool = False):
    """A function seed -> [Method] for this fold (peers, then the ContriMix variants). ``picture``: the example
    figure's methods (p = 1), which must not overwrite the description of what the runs ran in ``notes``."""
    peers = [n for n in names if not n.startswith("contrimix") and n != "plate-zscore"]
    cmx = [n for n in names if n.startswith("contrimix") and n != "contrimix-joint"]
    models = {n: _contrimix(n, fold_images, key, args, notes, log, recipe, target) for n in cmx}

    def build(seed: int) -> list[Method]:
        ms = build_peers(peers, fold_images if fold_images.dtype == np.uint8 else None, seed=seed, p=p)
        if "plate-zscore" in names:
            ms.insert(1, Method("plate-zscore", "normalise", "batch", "own (standard of high-content screening)",
                                "every channel z-scored with its plate's statistics", _batch_fn=lambda x: x))
        for n, m in models.items():
            if m is None:
                continue
            if n.endswith("-normalise"):
                ms.append(contrimix_normalise(n, m, to_float(fold_images[_sample(len(fold_images), 64)]),
                                              note="ContriMixNormalize, target = mean attributes of 64 training "
                                                   "crops"))
            else:
                base, jitter = n.removesuffix("-colorjitter"), n.endswith("-colorjitter")
                mode = base.rsplit("-", 1)[-1]  # a donor mode named in the method, else the library's default
                # a named "sampled" row is the registered spread 1 (as varied as the bank), not the default's 0.7
                aug = contrimix_augment(n, m, seed=seed, p=p, donors=mode if mode in DONOR_MODES else None,
                                        spread=1.0 if mode == "sampled" else None)
                mod = aug.extra["module"]
                donors = mod.donors
                aug.note = (f"ContriMix(p={p}, donors={donors!r}"
                            + (f", spread={mod.spread}" if donors == "sampled" else "")
                            + f", render_guard={mod.render_guard}; bank of {mod.model.bank.shape[0]} entries)") + {
                    "both": ": other images of the batch and the weights' bank", "bank": ": the weights' bank only",
                    "sampled": ": new attribute matrices drawn from the bank's distribution"}.get(donors, "") + (
                    "" if mode in DONOR_MODES else " (the library's default donor policy)")
                if jitter:  # what users write: ContriMix, then kornia ColorJitter (each with its own p)
                    aug = then(n, aug, build_peers(["kornia-colorjitter"], None, seed=seed + 7919, p=p)[0])
                ms.append(aug)
        if not picture:  # what the runs ran: the peers' settings, ContriMix's donor policy, guard and bank size
            for x in ms:
                notes.setdefault("methods", {})[x.name] = x.describe()
        return ms

    return build


def _sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(n, k), replace=False))


def _joint(names: Sequence[str], channels: int = 3):
    if "contrimix-joint" not in names:
        return None
    return lambda seed: JointObjective(seed=seed, in_channels=channels)


def run_camelyon16(args, log) -> dict[str, Any]:
    from dg.tasks import camelyon16 as T

    hs = T.hospitals()
    rows, notes, cov = [], {}, []
    for direction in args.heldout or T.DIRECTIONS:
        src, tgt = direction.split("->")
        fold = engine.Fold("camelyon16", direction, hs[src].x, hs[src].y, hs[tgt].x, hs[tgt].y, hs[tgt].patch)
        build = methods_for(args.methods, hs[src].x, f"camelyon16-{src}", args, notes, log)
        cov += _coverage(fold, build, log)
        if not args.coverage_only:
            rows += engine.run_fold(fold, build, args.seeds, epochs=args.epochs, device=args.device_t,
                                    batch_size=args.batch_size, log=log, joint=_joint(args.methods),
                                    journal=args.journal)
        if not args.no_plot and direction == (args.heldout or T.DIRECTIONS)[0]:
            pic = methods_for(args.methods, hs[src].x, f"camelyon16-{src}", args, notes, log, p=1.0,
                              picture=True)(0)
            examples(pic, hs, args.out_dir / f"{args.stem}_examples.png", log)
    return {**T.describe(), "rows": rows, "coverage": cov, "notes": _public(notes)}


def _coverage(fold: engine.Fold, build, log) -> list[dict[str, Any]]:
    """Does each method's training set (seed 0) cover the held-out domain's look? (dg/diagnostics.py)"""
    rows = diagnostics.coverage(build(0), fold.train_x, fold.test_x, heldout=fold.heldout,
                                pretransformed=fold.pretransformed)
    for r in rows:
        log(f"[coverage] {fold.heldout:12s} {r['method']:28s} nearest-training distance, median "
            f"{r['nn_distance_median']:.3f}")
    return rows


def examples(methods: list[Method], hs: dict, path: Path, log) -> None:
    """Example crops of each hospital before and after each method (p = 1 for the picture)."""
    g = np.random.default_rng(0)
    cols, imgs = [], []
    for name, h in hs.items():
        idx = g.choice(len(h.x), 4, replace=False)
        imgs.append(h.x[idx])
        cols += [f"{name} {'tumour' if h.y[i] else 'normal'}" for i in idx]
    _before_after(np.concatenate(imgs), methods, cols, path, log, "the same crops before/after each method (one "
                  "draw, p = 1; batch donors come from this mixed batch)")


def _before_after(raw: np.ndarray, methods: list[Method], cols: Sequence[str], path: Path, log, title: str,
                  pretransformed: dict[str, np.ndarray] | None = None, input_row: np.ndarray | None = None) -> None:
    """The example grid: ``raw`` (N, H, W, C) crops as the input row, then one row per method applied to them
    (``pretransformed[name]``: that method's own (N, H, W, C) version of the crops; identity methods skipped;
    ``input_row``: what to show as the input row instead of ``raw``, e.g. with the labels drawn on)."""
    x = to_float(raw)
    rows = [("input", to_uint8_hwc(x) if input_row is None else input_row)]
    for m in methods:
        if pretransformed and m.name in pretransformed:
            rows.append((m.name, to_uint8_hwc(to_float(pretransformed[m.name]))))
        elif m.kind != "none":
            rows.append((m.name, to_uint8_hwc(m(x))))
    plots.plot_examples(rows, cols, path, title)
    log(f"wrote {path}")


def run_bbbc021(args, log) -> dict[str, Any]:
    from dg.tasks import bbbc021 as T

    rows, notes, cov, pictured = [], {}, [], False
    for f in T.folds(args.max_per_plate):
        if args.heldout and f["test_plate"] not in args.heldout:
            continue
        fold = engine.Fold("bbbc021", f["test_plate"], f["train_x"], f["train_y"], f["test_x"], f["test_y"],
                           np.arange(len(f["test_y"])), pretransformed={"plate-zscore": (f["train_z"], f["test_z"])})
        build = methods_for(args.methods, f["contrimix_x"], f"bbbc021-{f['test_plate']}", args, notes, log,
                            recipe="fluorescence-lite", target=TARGET_DB["fluorescence"])
        cov += _coverage(fold, build, log)
        if not args.coverage_only:
            rows += engine.run_fold(fold, build, args.seeds, epochs=args.epochs, device=args.device_t,
                                    batch_size=args.batch_size, log=log, journal=args.journal)
        if not args.no_plot and not pictured:
            pictured = True
            pic = methods_for(args.methods, f["contrimix_x"], f"bbbc021-{f['test_plate']}", args, notes, log,
                              recipe="fluorescence-lite", target=TARGET_DB["fluorescence"], p=1.0,
                              picture=True)(0)
            examples_bbbc021(f, pic, args.out_dir / f"{args.stem}_examples.png", log)
    return {**T.describe(), "rows": rows, "coverage": cov, "notes": _public(notes)}


def examples_bbbc021(f: dict, methods: list[Method], path: Path, log, per_class: int = 3) -> None:
    """Crops of the training plates and of the test plate, DMSO and cycloheximide, before/after each method
    (channels DAPI, tubulin, actin shown as red, green, blue; p = 1)."""
    g = np.random.default_rng(0)
    cols, picks = [], []
    for side in ("train", "test"):
        for label, name in ((0, "DMSO"), (1, "CHX")):
            idx = g.choice(np.flatnonzero(f[f"{side}_y"] == label), per_class, replace=False)
            picks.append((side, idx))
            plate = f["test_plate"] if side == "test" else "+".join(f["train_plates"])
            cols += [f"{plate} {name}"] * per_class
    raw = np.concatenate([f[f"{side}_x"][i] for side, i in picks])
    zscored = np.concatenate([f[f"{side}_z"][i] for side, i in picks])  # plate-zscore's input: the z-scored crops
    _before_after(raw, methods, cols, path, log, "BBBC021 crops before/after each method (DAPI, tubulin, actin as R, "
                  "G, B; one draw, p = 1; batch donors come from these crops)",
                  pretransformed={"plate-zscore": zscored})


def run_hgsc(args, log) -> dict[str, Any]:
    from dg.renderers import RENDERERS
    from dg.tasks import hgsc as T

    rows, notes = [], {}
    for r in args.renderers or RENDERERS:
        for fold in T.folds(r, tuple(args.heldout) if args.heldout else None, args.max_per_split):
            build = methods_for(args.methods, fold.train_x, f"hgsc-{r}-{fold.heldout}", args, notes, log,
                                recipe="he-lite")
            rows += engine.run_fold(fold, build, args.seeds, epochs=args.epochs, device=args.device_t,
                                    batch_size=args.batch_size, log=log, journal=args.journal)
    return {**T.describe(), "rows": rows, "notes": _public(notes)}


def run_monuseg(args, log) -> dict[str, Any]:
    from dg import segmentation as S
    from dg.tasks import monuseg as T

    rows, notes = [], {}
    names = args.heldout or (T.DEV_SPLITS if args.dev else T.VARIANTS)
    for name in names:
        sp = T.split(name)
        crops = T.grid_crops(sp.train_x, args.crop)  # normalisation targets, peers' statistics, per-fold ContriMix
        log(f"[monuseg] {name}: {len(sp.train_x)} training tiles of sites {sorted(set(sp.train_sites.tolist()))} "
            f"({len(crops)} crops of {args.crop} px), {len(sp.test_x)} test tiles")
        build = methods_for(args.methods, crops, f"monuseg-{name}", args, notes, log)
        rows += S.run_split(sp, build, args.seeds, steps=args.steps, device=args.device_t,
                            batch_size=args.batch_size, crop=args.crop, log=log, journal=args.journal)
        if not args.no_plot and name == names[0]:
            pic = methods_for(args.methods, crops, f"monuseg-{name}", args, notes, log, p=1.0, picture=True)(0)
            examples_monuseg(sp, pic, args.out_dir / f"{args.stem}_examples.png", log)
        notes.setdefault("test_tiles", {})[name] = [  # the order of every row's tile_aji / tile_dice
            {"site": str(s), "organ": str(o), "slide": str(n)} for s, o, n in zip(sp.test_sites, sp.test_organs,
                                                                                 sp.test_names)]
    return {**T.describe(), "rows": rows, "notes": _public(notes)}


def examples_monuseg(sp, methods: list[Method], path: Path, log, n: int = 6, size: int = 160) -> None:
    """Crops of ``n`` test sites (one each, with their nuclei outlined in the input row) before/after each method
    (p = 1; batch donors come from these crops)."""
    g = np.random.default_rng(0)
    idx = np.linspace(0, len(sp.test_x) - 1, n).round().astype(int)
    crops, cols = [], []
    for i in idx:
        h, w = sp.test_mask[i].shape
        y, x = int(g.integers(0, h - size)), int(g.integers(0, w - size))
        crop = sp.test_x[i, y:y + size, x:x + size].copy()
        m = sp.test_mask[i, y:y + size, x:x + size]
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        crops.append((crop, edge))
        cols.append(f"{sp.test_sites[i]} {sp.test_organs[i]}")
    raw = np.stack([c for c, _ in crops])
    outlined = raw.copy()
    for k, (_, edge) in enumerate(crops):
        outlined[k][edge] = (0, 255, 0)
    _before_after(raw, methods, cols, path, log, "MoNuSeg test sites (never trained on) before/after each method (one "
                  "draw, p = 1); input row: nuclei outlined in green", input_row=outlined)


def run_stain_transfer(args, log) -> dict[str, Any]:
    from dg.tasks import stain_transfer as T

    models = {}
    for name in ("camelyon", "he"):
        m, label = load_bundled(name)
        if m is not None:
            models[name] = m
    return T.run(models, log)


def _heldouts(dataset: str, dev: bool = False) -> tuple[str, ...] | None:
    from dg.tasks import bbbc021, camelyon16, monuseg

    return {"camelyon16": camelyon16.DIRECTIONS, "bbbc021": bbbc021.MIXED_PLATES,
            "monuseg": monuseg.DEV_SPLITS if dev else monuseg.VARIANTS}.get(dataset)


def _ordered(args, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Journal rows in table order: registered held-out domains, then methods, then seeds."""
    helds = list(_heldouts(args.dataset, args.dev) or [])
    names = [*METHODS.get(args.dataset, []), *POST_HOC.get(args.dataset, [])]

    def key(r):
        return (helds.index(r["heldout"]) if r["heldout"] in helds else len(helds), r["heldout"],
                names.index(r["method"]) if r["method"] in names else len(names), r["method"], int(r["seed"]))

    return sorted(rows, key=key)


def _registered(args) -> dict[str, list]:
    """The registered methods and seeds of this invocation's protocol (--dev: its own, smaller one)."""
    if args.dev:
        return DEV
    return {"methods": POST_HOC[args.dataset] if args.post_hoc else METHODS[args.dataset],
            "seeds": (QUICK if args.quick else FULL)[args.dataset]["seeds"]}


def _completeness(args, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which runs of the registered protocol (every method x held-out domain x seed) are in ``rows``."""
    heldouts = list(_heldouts(args.dataset, args.dev) or dict.fromkeys(r["heldout"] for r in rows))
    registered = _registered(args)
    seeds, names = registered["seeds"], registered["methods"]
    have = {(r["heldout"], r["method"], int(r["seed"])) for r in rows}
    planned = [(h, m, s) for h in heldouts for m in names for s in seeds]
    missing = [f"{h} {m} seed {s}" for h, m, s in planned if (h, m, s) not in have]
    return {"runs_planned": len(planned), "runs_done": len(planned) - len(missing), "complete": not missing,
            "missing": missing}


def _journal_from_published(path: Path, settings: dict, out_dir: Path, stem: str, log) -> None:
    """Start a missing journal from the runs of the published result (``out_dir``/<stem>.json.gz, made under the
    same settings): a fresh checkout (or a GPU session) continues the protocol instead of redoing it. The journal
    itself lives under the git-ignored ``runs/``; the published file is committed. A post-hoc file also holds the
    registered rows it was paired with: only its own methods are taken."""
    pub = R.result_file(out_dir, stem)
    if pub is None:
        return
    res = R.read_json(pub)
    st = res.get("settings", {})
    same = res.get("mode") == settings["mode"] and all(st.get(k) == v for k, v in settings.items() if k != "mode")
    if not same or not res.get("rows"):
        log(f"{pub}: other settings or no runs; the journal starts empty")
        return
    own = set(POST_HOC.get(res.get("dataset"), ())) if res.get("post_hoc") else None
    rows = [r for r in res["rows"] if own is None or r["method"] in own]
    journal = engine.Journal(path, settings)
    for row in rows:
        journal.add(row)
    log(f"journal {path} started from the {len(rows)} runs published in {pub}")


def _public(notes: dict) -> dict:
    return {k: v for k, v in notes.items() if not k.startswith("_")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="camelyon16",
                   choices=["camelyon16", "bbbc021", "hgsc", "monuseg", "stain-transfer"])
    p.add_argument("--methods", nargs="+", default=None, help="subset of the dataset's methods (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="monuseg: segmenter training steps")
    p.add_argument("--crop", type=int, default=None, help="monuseg: training crop size (px at 0.5 um/px)")
    p.add_argument("--dev", action="store_true",
                   help="monuseg: the pre-registration splits (training sites only: official-dev, few-sites-dev), by "
                        "default with the methods and seed that chose the step count (DEV); writes dg_monuseg_dev*")
    p.add_argument("--heldout", nargs="+", default=None,
                   help="held-out domains (camelyon16: RUMC->UMCU / UMCU->RUMC; bbbc021: plates; hgsc: stains; "
                        "monuseg: the variants official / few-sites)")
    p.add_argument("--renderers", nargs="+", default=None, help="hgsc: renderers")
    p.add_argument("--max-per-plate", type=int, default=None, help="bbbc021: crops per plate")
    p.add_argument("--max-per-split", type=int, default=None, help="hgsc: nuclei per split")
    p.add_argument("--fold-steps", type=int, default=None, help="per-fold ContriMix: steps per training round")
    p.add_argument("--fold-max-steps", type=int, default=None, help="per-fold ContriMix: step cap")
    p.add_argument("--fold-dir", default=None,
                   help="cache of per-fold ContriMix models, loaded if present (default: WORK/<stem>/folds)")
    p.add_argument("--work", default=None,
                   help="resumable state (default runs/benchmarks for full runs; --quick keeps none unless given): "
                        "WORK/<stem>/runs.jsonl holds every finished run, so a killed benchmark restarted with the "
                        "same command continues where it stopped")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="CI-sized run: every method, one seed, few epochs")
    p.add_argument("--out", default=str(R.DOCS_DIR), help="output folder")
    p.add_argument("--name", default=None, help="output file stem (default dg_<dataset>[_quick])")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--from-journal", action="store_true",
                   help="train nothing: write the result files from the runs already journaled (e.g. to publish "
                        "a partial run; the files say what is missing); with --seeds, only the runs of those seeds "
                        "(the complete ones while others still run)")
    p.add_argument("--post-hoc", action="store_true",
                   help="camelyon16/bbbc021: the variants tried after the pre-registered run (POST_HOC), paired "
                        "against its rows; writes dg_<dataset>_posthoc*")
    p.add_argument("--coverage-only", action="store_true",
                   help="camelyon16/bbbc021: only the colour-coverage diagnostic (no classifiers); writes "
                        "<stem>_coverage.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "quick" if args.quick else "full"
    publish_seeds = args.seeds  # with --from-journal: publish only the runs of these seeds (None: all)
    if args.dev and args.dataset == "monuseg":  # the registered step-count choice, unless told otherwise
        args.methods, args.seeds = args.methods or DEV["methods"], args.seeds or DEV["seeds"]
    if args.dataset != "stain-transfer":
        for k, v in (QUICK if args.quick else FULL)[args.dataset].items():
            if getattr(args, k, None) is None:
                setattr(args, k, v)
        if args.post_hoc and args.dataset not in POST_HOC:
            raise SystemExit(f"--post-hoc applies to --dataset {' or '.join(POST_HOC)}")
        known = POST_HOC[args.dataset] if args.post_hoc else METHODS[args.dataset]
        args.methods = args.methods or known
        unknown = [m for m in args.methods if m not in known]
        if unknown:
            raise SystemExit(f"unknown methods {unknown} for {args.dataset}; known: {known}")
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    args.device_t = torch.device(args.device)
    # full fp32 on a GPU as on the CPU (no TF32 convolutions or matmuls): a journal may join runs of both
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    args.out_dir = Path(args.out)
    if args.dev and args.dataset != "monuseg":
        raise SystemExit("--dev applies to --dataset monuseg")
    registered_stem = f"dg_{args.dataset.replace('-', '_')}" + "_dev" * args.dev + ("" if mode == "full" else f"_{mode}")
    args.stem = args.name or registered_stem.replace(args.dataset.replace("-", "_"),
                                                     args.dataset.replace("-", "_") + "_posthoc" * args.post_hoc)
    if args.coverage_only:
        if args.dataset not in ("camelyon16", "bbbc021"):
            raise SystemExit("--coverage-only applies to --dataset camelyon16 or bbbc021")
        args.stem += "_coverage"
        args.no_plot = True
    keep = not (args.quick and args.work is None)
    work = Path(args.work or "runs/benchmarks") / args.stem
    if keep:
        args.fold_dir = args.fold_dir or str(work / "folds")
    affects = ("dataset", "mode", "epochs", "batch_size", "fold_steps", "fold_max_steps", "max_per_plate",
               "max_per_split")
    settings = {"mode": mode, **{k: getattr(args, k, None) for k in affects if k != "mode"},
                **{k: getattr(args, k) for k in ("steps", "crop") if getattr(args, k, None) is not None}}
    if keep and not args.quick:
        for stem in dict.fromkeys([args.stem, registered_stem] if args.post_hoc else [args.stem]):
            path = Path(args.work or "runs/benchmarks") / stem / "runs.jsonl"
            if not path.exists():
                _journal_from_published(path, settings, args.out_dir, stem, log=print)
    args.journal = None if not keep or args.coverage_only or args.dataset == "stain-transfer" else engine.Journal(
        work / "runs.jsonl", settings)
    if args.from_journal:
        if args.journal is None:
            raise SystemExit("--from-journal needs a journal: a full run, or --work with --quick")
        have = {r["method"] for r in args.journal.rows.values()}
        args.methods, args.seeds = [m for m in args.methods if m in have], []  # no method trains its fold model
        if publish_seeds is not None and not {r["seed"] for r in args.journal.rows.values()} >= set(publish_seeds):
            raise SystemExit(f"--from-journal --seeds {publish_seeds}: the journal has no run of seeds "
                             f"{sorted(set(publish_seeds) - {r['seed'] for r in args.journal.rows.values()})}")
    t0 = time.perf_counter()
    env = R.environment(["benchmarks/domain_generalization.py", *(argv if argv is not None else sys.argv[1:])])

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s {msg}", flush=True)

    runner = {"camelyon16": run_camelyon16, "bbbc021": run_bbbc021, "hgsc": run_hgsc, "monuseg": run_monuseg,
              "stain-transfer": run_stain_transfer}[args.dataset]
    result: dict[str, Any] = {"benchmark": "domain_generalization", "dataset": args.dataset, "mode": mode,
                              "environment": env,
                              "settings": {k: v for k, v in vars(args).items()
                                           if k not in ("device_t", "out_dir", "journal")},
                              "augmentation_p": AUG_P, "classifier": MODELS.get(args.dataset, MODELS["classification"])}
    result.update(runner(args, log))
    if args.journal is not None:  # runs of earlier invocations (other --methods / --seeds / --heldout) count too
        args.journal.reload()
        result["rows"] = _ordered(args, [r for r in args.journal.rows.values()
                                         if not args.from_journal or publish_seeds is None or r["seed"] in publish_seeds])
        for r in result["rows"]:  # publishing builds no method: describe each by what its runs recorded
            if (r.get("ran") or {}).get("note"):
                result.setdefault("notes", {}).setdefault("methods", {}).setdefault(
                    r["method"], {"name": r["method"], "kind": r["kind"], "package": r["ran"].get("package"),
                                  "note": r["ran"]["note"]})
        result["settings"]["seeds"] = _registered(args)["seeds"]
        result.update(_completeness(args, result["rows"]))
        if args.post_hoc:  # the registered runs, read only, to pair the variants with
            reg = Path(args.work or "runs/benchmarks") / registered_stem / "runs.jsonl"
            lines = engine.Journal.read(reg)
            result["post_hoc"] = True
            result["registered_rows_from"] = str(reg)
            result["rows"] = _ordered(args, lines + result["rows"])
            log(f"post-hoc: paired with {len(lines)} registered runs from {reg}")
        log(f"{result['runs_done']} of {result['runs_planned']} planned runs done"
            + ("" if result["complete"] else f"; missing, e.g. {result['missing'][:3]}"))
    metrics = METRICS.get(args.dataset, engine.CLASSIFICATION_METRICS)
    items = ITEMS.get(args.dataset, ("correct", "auroc"))
    if result.get("rows"):
        order = list(dict.fromkeys([*METHODS.get(args.dataset, []), *POST_HOC.get(args.dataset, []),
                                    *(r["method"] for r in result["rows"])]))
        result["summary"] = engine.summarise(result["rows"], order, metrics)
        result["paired_vs_erm"] = [d for it in items for d in engine.paired_table(result["rows"], "erm", item=it)]
        peers = [s for s in result["summary"] if not s["method"].startswith("contrimix") and s["method"] != "erm"]
        best = {}
        for s in peers:  # the best peer per held-out domain, by the mean of the primary metric
            if s["heldout"] not in best or s[f"{metrics[0]}_mean"] > best[s["heldout"]][f"{metrics[0]}_mean"]:
                best[s["heldout"]] = s
        result["primary_metric"] = metrics[0]
        result["best_peer"] = {h: s["method"] for h, s in best.items()}
        result["paired_vs_best_peer"] = [
            d for h, s in best.items() for it in items
            for d in engine.paired_table([r for r in result["rows"] if r["heldout"] == h], s["method"], item=it)
            if d["method"].startswith("contrimix")]
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = args.out_dir
    R.write_json(out / f"{args.stem}.json.gz", result)
    if result.get("coverage"):
        R.write_csv(out / (f"{args.stem}.csv" if args.coverage_only else f"{args.stem}_coverage.csv"),
                    result["coverage"])
    if result.get("rows"):
        R.write_csv(out / f"{args.stem}_summary.csv", result["summary"])
        R.write_csv(out / f"{args.stem}_paired.csv", result["paired_vs_erm"] + result["paired_vs_best_peer"])
        R.write_csv(out / f"{args.stem}_runs.csv", [{k: v for k, v in r.items() if k not in ("correct", "score", "label",
                                                                                         "tile_aji", "tile_dice")}
                                                     for r in result["rows"]])
        shown = (metrics[0], metrics[2]) if metrics == engine.CLASSIFICATION_METRICS else metrics
        print(R.markdown_table(result["summary"], ["heldout", "method", "kind", "seeds",
                                                   *(f"{m}_{k}" for m in shown for k in ("mean", "std"))]))
        if not args.no_plot:
            plots.plot_accuracy(result["summary"], [d for d in result["paired_vs_erm"]
                                                    if d.get("metric", metrics[0]) == metrics[0]],
                                out / f"{args.stem}.png", args.dataset, metric=metrics[0])
    log(f"wrote {out / (args.stem + '.json.gz')} ({result['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
