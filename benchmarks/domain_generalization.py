#!/usr/bin/env python
"""Domain generalisation benchmark: ContriMix against stain normalisation and stain/colour augmentation.

Datasets (``--dataset``):

* ``hgsc`` (default, part of ``embedded``): leave-one-stain-out classification of the real, labelled HGSC nuclei
  (connective / inflammatory / neoplastic, 48 px crops, spatial split), re-rendered in the stains of four other real
  sources by two independent renderers (``beer-lambert`` stain-matrix swap, ``lab-cdf`` colour-distribution match;
  see ``_data.py``). Colour-only, semi-synthetic shift: results are labelled so.
* ``sources`` (part of ``embedded``): label-free measures on the real sources themselves: for each left-out source,
  how well each method's augmented (or normalised) training set covers its colour statistics (k-NN distance); how
  identifiable the sources stay from colour statistics after the method; how well structure is preserved.
* ``camelyon17 --root DIR``: the official WILDS protocol (train centres 0/3/4, OOD validation centre 1 for model
  selection, test centre 2), small CNN or ``--backbone densenet121`` (needs torchvision).
* ``folder --root DIR``: ``DIR/<domain>/<class>/*.png`` (or ``--csv FILE`` with columns path,label,domain),
  leave-one-domain-out.

Every method is trained only on the training domains: normalisation targets are fitted on training-domain images,
and the per-fold ContriMix (``contrimix-fold``) is trained with ``contrimix_aug.training.train`` on training-domain
images only. ``contrimix-pretrained`` uses ``--weights`` (default: the bundled ``he`` weights when installed); its
training data is printed from the weights' metadata and may include the held-out stain's source.

Outputs (``--out``, default ``docs/benchmarks/``): ``dg_<dataset>.json`` (environment, settings, every run),
``dg_<dataset>_summary.csv``, ``dg_<dataset>_per_domain.csv``, ``dg_<dataset>.png``.

Run ``python benchmarks/domain_generalization.py --quick`` for a CI-sized smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _data as D  # noqa: E402

ALL_METHODS = [
    *C.PEER_NAMES,
    "contrimix-pretrained",
    "contrimix-fold",
    "contrimix-normalise",
]
QUICK_METHODS = ["erm", "torchstain-macenko", "hestain-preset", "hed-jitter", "contrimix-pretrained", "contrimix-fold"]
TINY_METHODS = ["erm", "torchstain-reinhard", "hed-jitter"]
AUG_P = 0.5  # every augmentation (peers and ContriMix) is applied with the same per-image probability


# ------------------------------------------------------------------------------------------------------------------
# classifier
# ------------------------------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """conv-BN-ReLU ×2 per stage, max-pool between stages, global average pool, linear head."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5).mean((2, 3)))


def make_backbone(name: str, num_classes: int) -> nn.Module:
    if name == "small":
        return SmallCNN(num_classes)
    if name == "densenet121":
        try:
            import torchvision
        except ImportError as err:  # torchvision is not a dependency of contrimix_aug
            raise SystemExit("--backbone densenet121 needs torchvision (pip install torchvision)") from err
        return torchvision.models.densenet121(weights=None, num_classes=num_classes)
    raise SystemExit(f"unknown backbone {name!r}")


def accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(accuracy, balanced accuracy)."""
    acc = float((pred == y).mean()) if len(y) else float("nan")
    recalls = [float((pred[y == c] == c).mean()) for c in range(num_classes) if (y == c).any()]
    return acc, float(np.mean(recalls)) if recalls else float("nan")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, device: torch.device, bs: int = 256) -> np.ndarray:
    model.eval()
    out = [model(x[i : i + bs].to(device)).argmax(1).cpu() for i in range(0, len(x), bs)]
    return torch.cat(out).numpy() if out else np.zeros(0, int)


def apply_in_chunks(method: C.Method, x: torch.Tensor, bs: int = 128) -> torch.Tensor:
    return torch.cat([method(x[i : i + bs]) for i in range(0, len(x), bs)]) if len(x) else x


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    method: C.Method,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    backbone: str = "small",
    bs: int = 64,
    lr: float = 2e-3,
    on_epoch: Callable[[nn.Module, int], None] | None = None,
) -> nn.Module:
    """Train on (x, y) float/long tensors; ``method`` augments each batch when it is an augmentation."""
    torch.manual_seed(seed)
    model = make_backbone(backbone, num_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * math.ceil(len(x) / bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:
                continue
            xb, yb = x[idx], y[idx]
            if method.kind == "augment":
                xb = method(xb)
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps:
                sched.step()
            step += 1
        if on_epoch is not None:
            on_epoch(model, _)
    return model


# ------------------------------------------------------------------------------------------------------------------
# ContriMix models
# ------------------------------------------------------------------------------------------------------------------
def pretrained_model(weights: str | None) -> tuple[Any, str]:
    """(model or None, label). Never calls untrained weights "pretrained": the label comes from the metadata."""
    import contrimix_aug

    try:
        model = contrimix_aug.load_model(weights)
    except Exception as err:  # noqa: BLE001 - missing bundled weights, bad path
        return None, f"not run: weights {weights or 'he'!r} not available ({str(err).splitlines()[0][:160]})"
    meta = dict(getattr(model, "meta", {}) or {})
    data = meta.get("training_data", "unknown (no metadata)")
    label = f"weights {weights or 'he (bundled)'}; trained on: {data}"
    if data == "he-sources":
        try:
            from contrimix_aug.data import HE_SOURCES

            label += (f" ({', '.join(HE_SOURCES)}): these include the real sources of every stain the HGSC nuclei "
                      "are rendered in and every left-out source, so contrimix-pretrained is NOT a clean held-out "
                      "comparison; contrimix-fold is")
        except ImportError:
            pass
    if meta.get("steps") is not None:
        label += f"; steps {meta.get('steps')}"
    return model, label


_FOLD_CACHE: dict[tuple, tuple[Any, dict]] = {}


@torch.no_grad()
def _recon_psnr(model, images: np.ndarray, n: int = 64) -> float:
    """Self-reconstruction PSNR (dB) of a ContriMix model on up to ``n`` of its training images (quality check)."""
    x = to_float(images[:n])
    y = model.decode(*model.encode(x))
    mse = float(((y - x) ** 2).mean())
    return round(10 * math.log10(1.0 / max(mse, 1e-12)), 2)


def train_fold_model(key: tuple, images: np.ndarray, *, steps: int, seed: int, patch: int, workdir: Path,
                     fold_dir: str | None = None):
    """Train a ContriMix model on ``images`` (uint8 N×H×W×3, training domains only) with contrimix_aug.training.

    With ``fold_dir``, a model already saved there for this fold (``<key>.safetensors``, e.g. trained on a GPU with
    ``--folds-only``) is loaded instead, and a newly trained one is saved there.
    """
    if key in _FOLD_CACHE:
        return _FOLD_CACHE[key]
    import contrimix_aug

    recipe = C.ROOT / "configs" / "he-lite.json"
    if not recipe.is_file():
        raise FileNotFoundError(f"contrimix-fold needs the shipped recipe {recipe}; run the benchmark from a "
                                "checkout of the repository.")
    # the recipe's hash is in the name: a model saved under an older recipe is never reused
    tag = hashlib.sha256(recipe.read_bytes()).hexdigest()[:8]
    fname = "__".join(str(k).replace("/", "-") for k in key[:-1]) + f"__{tag}.safetensors"
    if fold_dir and (Path(fold_dir) / fname).is_file():
        model = contrimix_aug.load_model(str(Path(fold_dir) / fname))
        meta = dict(getattr(model, "meta", {}) or {})
        info = dict(meta.get("fold_info", {}), loaded_from=fname)
        info["self_recon_psnr_db"] = _recon_psnr(model, images)
        _FOLD_CACHE[key] = (model, info)
        return model, info
    from PIL import Image

    from contrimix_aug.training import TrainConfig, train

    d = Path(tempfile.mkdtemp(prefix="fold_", dir=workdir))
    (d / "img").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(np.ascontiguousarray(im)).save(d / "img" / f"{i:05d}.png")
    t0 = time.perf_counter()
    # the architecture and loss of the shipped "he" weights, with this fold's data and budget
    from contrimix_aug.training import load_config

    base: dict[str, Any] = dict(load_config(recipe))
    base.update(
        data=str(d / "img"),
        out=str(d / "out"),
        steps=steps,
        patch_size=patch,
        warmup_steps=min(100, max(1, steps // 10)),
        seed=seed,
        progress=False,
        checkpoint_every=0,
        val_every=0,
        log_every=0,
        val_size=min(32, max(2, len(images) // 20)),
        bank_size=256,
        device="auto",
    )
    cfg = TrainConfig(**base)
    path = train(cfg)
    model = contrimix_aug.load_model(path)
    meta = dict(getattr(model, "meta", {}) or {})
    m = meta.get("metrics", {}) or {}
    info = {
        "steps": steps,
        "train_images": int(len(images)),
        "train_s": round(time.perf_counter() - t0, 1),
        "device": str(m.get("device")) if isinstance(m, dict) else None,
        "final_val": m.get("final_val") if isinstance(m, dict) else None,
    }
    info["self_recon_psnr_db"] = _recon_psnr(model, images)
    if fold_dir:
        from contrimix_aug.weights import save_weights

        save_weights(model, Path(fold_dir) / fname, meta={"fold_info": info})
    _FOLD_CACHE[key] = (model, info)
    return model, info


def build_methods(peer_names, cmx_names, target_np, seed, pretrained, plabel, fold_model, fold_info, notes):
    """The peers and the ContriMix variants for one seed; records skipped ContriMix variants in ``notes``."""
    ms = C.build_peers(peer_names, list(target_np), seed=seed, p=AUG_P)
    cm, skipped = contrimix_methods(cmx_names, pretrained=pretrained, pretrained_label=plabel,
                                    fold_model=fold_model, fold_info=fold_info,
                                    target_imgs=to_float(target_np), seed=seed)
    notes.setdefault("skipped", {}).update(skipped)
    return ms + cm


def contrimix_methods(
    wanted: Sequence[str],
    *,
    pretrained: Any,
    pretrained_label: str,
    fold_model: Any,
    fold_info: dict | None,
    target_imgs: torch.Tensor,
    seed: int,
) -> tuple[list[C.Method], dict[str, str]]:
    out, skipped = [], {}
    for n in wanted:
        if n == "contrimix-pretrained":
            if pretrained is None:
                skipped[n] = pretrained_label
            else:
                out.append(C.contrimix_augment(n, pretrained, seed=seed, p=AUG_P,
                                               note=f"ContriMix(p={AUG_P}, donors='batch'); {pretrained_label}"))
        elif n in ("contrimix-fold", "contrimix-normalise"):
            if fold_model is None:
                skipped[n] = "not run: --fold-steps 0 or contrimix_aug.training unavailable"
                continue
            fi = f"trained on the training domains only: {fold_info}"
            if n == "contrimix-fold":
                out.append(C.contrimix_augment(n, fold_model, seed=seed, p=AUG_P,
                                               note=f"ContriMix(p={AUG_P}, donors='batch'); {fi}"))
            else:
                out.append(C.contrimix_normalise(n, fold_model, target_imgs,
                                                 note=f"ContriMixNormalize, target = mean attributes of "
                                                      f"{len(target_imgs)} training-domain images; {fi}"))
    return out, skipped


def to_float(a: np.ndarray) -> torch.Tensor:
    return C.from_uint8_hwc(a)


# ------------------------------------------------------------------------------------------------------------------
# generic leave-one-domain-out engine (in-memory data)
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class DomainData:
    train_x: np.ndarray  # uint8 N×H×W×3
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def run_lodo(
    tag: str,
    domains: dict[str, DomainData],
    heldouts: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    args: argparse.Namespace,
    num_classes: int,
    pretrained: Any,
    pretrained_label: str,
    log: Callable[[str], None],
) -> tuple[list[dict], dict[str, Any]]:
    device = torch.device(args.device)
    rows: list[dict] = []
    notes: dict[str, Any] = {}
    peer_names = [m for m in methods if not m.startswith("contrimix")]
    cmx_names = [m for m in methods if m.startswith("contrimix")]
    for held in heldouts:
        train_doms = [d for d in domains if d != held]
        tx = np.concatenate([domains[d].train_x for d in train_doms])
        ty = np.concatenate([domains[d].train_y for d in train_doms])
        ood_x, ood_y = domains[held].test_x, domains[held].test_y
        id_x = np.concatenate([domains[d].test_x for d in train_doms])
        id_y = np.concatenate([domains[d].test_y for d in train_doms])
        rng = np.random.default_rng(0)
        target_np = tx[rng.choice(len(tx), min(64, len(tx)), replace=False)]
        fold_model, fold_info = None, None
        if any(n in cmx_names for n in ("contrimix-fold", "contrimix-normalise")) and (args.fold_steps > 0 or args.fold_dir):
            log(f"[{tag}] held-out {held}: training ContriMix on {len(tx)} training-domain images "
                f"({args.fold_steps} steps)")
            fold_model, fold_info = train_fold_model(
                (tag, held, args.fold_steps), tx, steps=args.fold_steps, seed=0, patch=tx.shape[1],
                workdir=Path(args.workdir), fold_dir=args.fold_dir,
            )
            notes.setdefault("contrimix_fold", {})[held] = fold_info
        if args.folds_only:
            continue
        tx_t, ty_t = to_float(tx), torch.from_numpy(ty).long()
        ood_t, id_t = to_float(ood_x), to_float(id_x)
        for seed in seeds:
            ms = C.build_peers(peer_names, list(target_np), seed=seed, p=AUG_P)
            cm, skipped = contrimix_methods(
                cmx_names, pretrained=pretrained, pretrained_label=pretrained_label, fold_model=fold_model,
                fold_info=fold_info, target_imgs=to_float(target_np), seed=seed,
            )
            for k, v in skipped.items():
                notes.setdefault("skipped", {})[k] = v
            ordered = {m.name: m for m in ms + cm}
            for name in methods:
                m = ordered.get(name)
                if m is None:
                    continue
                notes.setdefault("methods", {})[name] = m.describe()
                t0 = time.perf_counter()
                if m.kind == "normalise":
                    xtr, xood, xid = apply_in_chunks(m, tx_t), apply_in_chunks(m, ood_t), apply_in_chunks(m, id_t)
                else:
                    xtr, xood, xid = tx_t, ood_t, id_t
                model = train_classifier(xtr, ty_t, num_classes, m, epochs=args.epochs, seed=seed, device=device,
                                         backbone=args.backbone, bs=args.batch_size)
                a_ood, b_ood = accuracy(predict(model, xood, device), ood_y, num_classes)
                a_id, b_id = accuracy(predict(model, xid, device), id_y, num_classes)
                dt = time.perf_counter() - t0
                rows.append({
                    "dataset": tag, "heldout": held, "method": name, "kind": m.kind, "seed": seed,
                    "acc_ood": a_ood, "bacc_ood": b_ood, "acc_id": a_id, "bacc_id": b_id,
                    "n_train": len(tx), "n_ood": len(ood_y), "n_id": len(id_y),
                    "peer_failures": m.failures, "seconds": round(dt, 2),
                })
                log(f"[{tag}] held-out {held:9s} seed {seed} {name:22s} OOD acc {a_ood:.3f}  ID acc {a_id:.3f}"
                    f"  ({dt:.1f}s{', peer failures %d' % m.failures if m.failures else ''})")
    return rows, notes


def summarise(rows: list[dict], methods: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(summary per dataset×method: mean ± std over seeds of the mean over held-out domains; per-domain table)."""
    summary, per_domain = [], []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == ds]
        for m in methods:
            rm = [r for r in rs if r["method"] == m]
            if not rm:
                continue
            seeds = sorted({r["seed"] for r in rm})
            per_seed = {k: [float(np.mean([r[k] for r in rm if r["seed"] == s])) for s in seeds]
                        for k in ("acc_ood", "bacc_ood", "acc_id", "bacc_id")}
            row = {"dataset": ds, "method": m, "kind": rm[0]["kind"], "seeds": len(seeds),
                   "heldouts": len({r["heldout"] for r in rm})}
            for k, v in per_seed.items():
                row[f"{k}_mean"], row[f"{k}_std"] = C.mean_std(v)
            summary.append(row)
            for h in dict.fromkeys(r["heldout"] for r in rm):
                rh = [r for r in rm if r["heldout"] == h]
                d = {"dataset": ds, "heldout": h, "method": m, "seeds": len(rh)}
                for k in ("acc_ood", "bacc_ood", "acc_id"):
                    d[f"{k}_mean"], d[f"{k}_std"] = C.mean_std([r[k] for r in rh])
                per_domain.append(d)
    return summary, per_domain


# ------------------------------------------------------------------------------------------------------------------
# dataset: HGSC nuclei rendered in other stains
# ------------------------------------------------------------------------------------------------------------------
def hgsc_domains(renderer: str, domains: Sequence[str], max_per_split: int | None) -> dict[str, DomainData]:
    nuc = D.load_nuclei()
    tr, te = nuc.split == "train", nuc.split == "test"
    itr, ite = np.flatnonzero(tr), np.flatnonzero(te)
    if max_per_split:
        rng = np.random.default_rng(0)
        itr = np.sort(rng.choice(itr, min(max_per_split, len(itr)), replace=False))
        ite = np.sort(rng.choice(ite, min(max_per_split, len(ite)), replace=False))
    out = {}
    for d in domains:
        crops = D.domain_crops(renderer, d)
        out[d] = DomainData(crops[itr], nuc.labels[itr], crops[ite], nuc.labels[ite])
    return out


def run_hgsc(args, methods, seeds, pretrained, plabel, log) -> dict[str, Any]:
    nuc = D.load_nuclei()
    rows, notes = [], {}
    doms = ["hgsc", *args.stains]
    held = args.heldout or doms
    for r in args.renderers:
        rr, nn_ = run_lodo(f"hgsc/{r}", hgsc_domains(r, doms, args.max_per_split), held, methods, seeds, args,
                           len(nuc.class_names), pretrained, plabel, log)
        rows += rr
        notes[r] = nn_
    summary, per_domain = summarise(rows, methods)
    return {
        "task": "leave-one-stain-out nucleus classification (connective / inflammatory / neoplastic)",
        "shift": "colour-only, semi-synthetic: the same real HGSC nuclei re-rendered in other real sources' stains",
        "labels": "histolytics hgsc_nest type raster (silver standard: the lab's segmentation pipeline output)",
        "split": "spatial: top-left + bottom-right quadrants train, the other two test; 24 px guard band",
        "n_nuclei": {"train": int((nuc.split == 'train').sum()), "test": int((nuc.split == 'test').sum())},
        "class_counts": {s: np.bincount(nuc.labels[nuc.split == s], minlength=3).tolist() for s in ("train", "test")},
        "class_names": list(nuc.class_names),
        "domains": doms,
        "renderers": list(args.renderers),
        "rows": rows,
        "summary": summary,
        "per_domain": per_domain,
        "notes": notes,
    }


# ------------------------------------------------------------------------------------------------------------------
# dataset: real sources, label-free
# ------------------------------------------------------------------------------------------------------------------
def _knn_dist(query: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    k = min(k, ref.shape[0])
    return np.sort(d, axis=1)[:, :k].mean(1)


def _knn_loo_bacc(f: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nn_idx = np.argsort(d, axis=1)[:, :k]
    votes = np.zeros((len(y), y.max() + 1))
    for j in range(k):
        np.add.at(votes, (np.arange(len(y)), y[nn_idx[:, j]]), 1)
    pred = votes.argmax(1)
    return accuracy(pred, y, int(y.max() + 1))[1]


def _apply_views(m: C.Method, x: torch.Tensor, views: int, seed: int, bs: int = 32) -> torch.Tensor:
    """``views`` passes of method ``m`` over x in shuffled batches (so in-batch donors mix sources)."""
    outs = []
    g = torch.Generator().manual_seed(seed)
    for _ in range(views):
        perm = torch.randperm(len(x), generator=g)
        y = torch.empty_like(x)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            y[idx] = m(x[idx])
        outs.append(y)
    return torch.cat(outs)


def run_sources(args, methods, seeds, pretrained, plabel, log) -> dict[str, Any]:
    tiles = D.source_tiles(args.tiles_per_source, size=96, seed=0)
    doms = list(tiles)
    x_all = {d: to_float(v) for d, v in tiles.items()}
    f_raw = {d: D.colour_features(v) for d, v in x_all.items()}
    scale = np.concatenate(list(f_raw.values())).std(0) + 1e-6
    seed = seeds[0]
    peer_names = [m for m in methods if not m.startswith("contrimix")]
    cmx_names = [m for m in methods if m.startswith("contrimix")]
    cover_rows, ident_rows, struct_rows, notes = [], [], [], {}
    # coverage of each left-out source
    for held in doms:
        train_doms = [d for d in doms if d != held]
        tx = torch.cat([x_all[d] for d in train_doms])
        tnp = np.concatenate([tiles[d] for d in train_doms])
        target_np = tnp[np.random.default_rng(0).choice(len(tnp), min(64, len(tnp)), replace=False)]
        fold_model, fold_info = None, None
        if any(n in cmx_names for n in ("contrimix-fold", "contrimix-normalise")) and (args.fold_steps > 0 or args.fold_dir):
            log(f"[sources] left-out {held}: training ContriMix on {len(tnp)} tiles ({args.fold_steps} steps)")
            fold_model, fold_info = train_fold_model(("sources", held, args.fold_steps), tnp, steps=args.fold_steps,
                                                     seed=0, patch=96, workdir=Path(args.workdir),
                                                     fold_dir=args.fold_dir)
            notes.setdefault("contrimix_fold", {})[held] = fold_info
        if args.folds_only:
            continue
        methods = build_methods(peer_names, cmx_names, target_np, seed, pretrained, plabel, fold_model, fold_info,
                                notes)
        for m in methods:
            if m.kind == "normalise":
                ftr = D.colour_features(apply_in_chunks(m, tx))
                fho = D.colour_features(apply_in_chunks(m, x_all[held]))
            elif m.kind == "augment":
                ftr = D.colour_features(torch.cat([tx, _apply_views(m, tx, args.views, seed)]))
                fho = f_raw[held]
            else:
                ftr = D.colour_features(tx)
                fho = f_raw[held]
            dist = _knn_dist(fho / scale, ftr / scale, k=5)
            cover_rows.append({"dataset": "sources", "heldout": held, "method": m.name, "kind": m.kind,
                               "knn_dist_median": float(np.median(dist)), "knn_dist_mean": float(dist.mean()),
                               "n_train_features": len(ftr), "n_heldout": len(fho)})
            log(f"[sources] left-out {held:9s} {m.name:22s} colour k-NN distance median {np.median(dist):.3f}")
    # identifiability and structure, all sources together (normalisers fitted on all tiles)
    xs = torch.cat([x_all[d] for d in doms])
    ys = np.concatenate([np.full(len(x_all[d]), i) for i, d in enumerate(doms)])
    allnp = np.concatenate([tiles[d] for d in doms])
    target_np = allnp[np.random.default_rng(0).choice(len(allnp), min(64, len(allnp)), replace=False)]
    ms = C.build_peers(peer_names, list(target_np), seed=seed, p=AUG_P)
    fold_model, fold_info = None, None
    if any(n in cmx_names for n in ("contrimix-fold", "contrimix-normalise")) and (args.fold_steps > 0 or args.fold_dir):
        fold_model, fold_info = train_fold_model(("sources", "all", args.fold_steps), allnp, steps=args.fold_steps,
                                                 seed=0, patch=96, workdir=Path(args.workdir),
                                                     fold_dir=args.fold_dir)
        notes.setdefault("contrimix_fold", {})["all"] = fold_info
    if args.folds_only:
        return {"notes": notes}
    cm, _ = contrimix_methods(cmx_names, pretrained=pretrained, pretrained_label=plabel, fold_model=fold_model,
                              fold_info=fold_info, target_imgs=to_float(target_np), seed=seed)
    for m in ms + cm:
        notes.setdefault("methods", {})[m.name] = m.describe()
        out = apply_in_chunks(m, xs) if m.kind != "augment" else _apply_views(m, xs, 1, seed)
        bacc = _knn_loo_bacc(D.colour_features(out) / scale, ys)
        s = D.structure_scores(xs, out)
        changed = (out - xs).abs().flatten(1).amax(1) > 1.5 / 255
        row = {"dataset": "sources", "method": m.name, "kind": m.kind, "source_id_bacc": bacc,
               "chance": 1.0 / len(doms), "fraction_changed": float(changed.float().mean())}
        ident_rows.append(row)
        srow = {"dataset": "sources", "method": m.name, "kind": m.kind}
        for k, v in s.items():
            # structure over the images the method actually changed (augmentations leave 1 - p untouched)
            vv = v[changed.numpy()] if changed.any() else v
            srow[k] = float(np.mean(vv))
        struct_rows.append(srow)
        log(f"[sources] {m.name:22s} source-identification balanced acc {bacc:.3f} (chance {1/len(doms):.2f}); "
            f"SSIM-OD {srow['ssim_od']:.3f}  SSIM-H {srow['ssim_h']:.3f}  nucleus Dice {srow['dice_nuclei']:.3f}")
    cover_summary = []
    for m in dict.fromkeys(r["method"] for r in cover_rows):
        rm = [r["knn_dist_median"] for r in cover_rows if r["method"] == m]
        mu, sd = C.mean_std(rm)
        cover_summary.append({"method": m, "knn_dist_mean_over_heldouts": mu, "std_over_heldouts": sd})
    return {
        "task": "label-free: colour coverage of each left-out real source, source identifiability, structure",
        "shift": "real: each source is a different lab/scanner/stain (one image each; hgsc = nest + stroma)",
        "sources": {d: list(D.SOURCE_DOMAINS[d]) for d in doms},
        "tiles_per_source": args.tiles_per_source,
        "views": args.views,
        "features": "CIELAB mean and std over tissue pixels, z-scored with the raw tiles' pooled std",
        "coverage": cover_rows,
        "coverage_summary": cover_summary,
        "identifiability": ident_rows,
        "structure": struct_rows,
        "notes": notes,
    }


# ------------------------------------------------------------------------------------------------------------------
# datasets: Camelyon17-WILDS and a user folder
# ------------------------------------------------------------------------------------------------------------------
def _stack(ds, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in idx:
        img, meta = ds[int(i)]
        xs.append(C.to_uint8_hwc(img))
        ys.append(int(meta["label"]) if isinstance(meta, dict) else int(meta))
    return np.stack(xs), np.asarray(ys)


def run_camelyon(args, methods, seeds, pretrained, plabel, log) -> dict[str, Any]:
    """Official WILDS split; subsample with --max-per-split to fit memory/CPU (full: --max-per-split 0)."""
    from contrimix_aug.data import Camelyon17Dataset

    if not args.root:
        raise SystemExit("--dataset camelyon17 needs --root DIR (the folder holding camelyon17_v1.0/)")
    splits = {s: Camelyon17Dataset(args.root, s) for s in ("train", "id_val", "val", "test")}
    rng = np.random.default_rng(0)
    data = {}
    for s, ds in splits.items():
        n = len(ds) if not args.max_per_split else min(len(ds), args.max_per_split)
        idx = np.sort(rng.choice(len(ds), n, replace=False))
        data[s] = _stack(ds, idx)
        log(f"[camelyon17] {s}: {n} of {len(ds)} patches")
    device = torch.device(args.device)
    tx, ty = data["train"]
    target_np = tx[rng.choice(len(tx), min(64, len(tx)), replace=False)]
    peer_names = [m for m in methods if not m.startswith("contrimix")]
    cmx_names = [m for m in methods if m.startswith("contrimix")]
    fold_model, fold_info = None, None
    if any(n in cmx_names for n in ("contrimix-fold", "contrimix-normalise")) and (args.fold_steps > 0 or args.fold_dir):
        fold_model, fold_info = train_fold_model(("camelyon17", args.fold_steps), tx, steps=args.fold_steps, seed=0,
                                                 patch=96, workdir=Path(args.workdir))
    rows, notes = [], {"contrimix_fold": fold_info}
    tx_t, ty_t = to_float(tx), torch.from_numpy(ty).long()
    for seed in seeds:
        methods = build_methods(peer_names, cmx_names, target_np, seed, pretrained, plabel, fold_model, fold_info,
                                notes)
        for m in methods:
            notes.setdefault("methods", {})[m.name] = m.describe()
            prep = (lambda a: apply_in_chunks(m, to_float(a))) if m.kind == "normalise" else to_float
            xtr = apply_in_chunks(m, tx_t) if m.kind == "normalise" else tx_t
            # model selection on the OOD validation centre (centre 1), as in WILDS: keep the best epoch
            best = {"acc": -1.0, "state": None}

            def select(model: nn.Module, _ep: int) -> None:
                v = accuracy(predict(model, prep(data["val"][0]), device), data["val"][1], 2)[0]
                if v > best["acc"]:
                    best["acc"] = v
                    best["state"] = {k: t.detach().clone() for k, t in model.state_dict().items()}

            model = train_classifier(xtr, ty_t, 2, m, epochs=args.epochs, seed=seed, device=device,
                                     backbone=args.backbone, bs=args.batch_size, on_epoch=select)
            model.load_state_dict(best["state"])
            res = {s: accuracy(predict(model, prep(data[s][0]), device), data[s][1], 2)[0] for s in ("id_val", "val", "test")}
            rows.append({"dataset": "camelyon17", "heldout": "center2", "method": m.name, "kind": m.kind, "seed": seed,
                         "acc_ood": res["test"], "bacc_ood": float("nan"), "acc_id": res["id_val"],
                         "bacc_id": float("nan"), "acc_val_ood": res["val"], "n_train": len(tx)})
            log(f"[camelyon17] seed {seed} {m.name:22s} test (centre 2) {res['test']:.3f}  OOD val {res['val']:.3f}"
                f"  ID val {res['id_val']:.3f}")
    summary, per_domain = summarise(rows, methods)
    return {"task": "Camelyon17-WILDS tumour classification, official split", "rows": rows, "summary": summary,
            "per_domain": per_domain, "notes": notes}


def _folder_items(args) -> list[tuple[str, str, str]]:
    """[(path, label, domain)] from --csv or DIR/<domain>/<class>/*."""
    import csv

    from contrimix_aug.data.datasets import IMAGE_EXTENSIONS

    if args.csv:
        with open(args.csv, newline="") as f:
            rows = list(csv.DictReader(f))
        base = Path(args.csv).parent if not args.root else Path(args.root)
        return [(str(base / r["path"]), r["label"], r["domain"]) for r in rows]
    root = Path(args.root)
    items = []
    for dom in sorted(p for p in root.iterdir() if p.is_dir()):
        for cls in sorted(p for p in dom.iterdir() if p.is_dir()):
            for f in sorted(cls.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    items.append((str(f), cls.name, dom.name))
    return items


def run_folder(args, methods, seeds, pretrained, plabel, log) -> dict[str, Any]:
    from contrimix_aug.data.datasets import read_image

    if not args.root and not args.csv:
        raise SystemExit("--dataset folder needs --root DIR (DIR/<domain>/<class>/*.png) or --csv FILE")
    items = _folder_items(args)
    if not items:
        raise SystemExit(f"no images found under {args.root or args.csv}")
    classes = sorted({c for _, c, _ in items})
    doms = sorted({d for _, _, d in items})
    if len(doms) < 2:
        raise SystemExit(f"need at least two domains, found {doms}")
    size = args.size
    rng = np.random.default_rng(0)
    by_dom: dict[str, DomainData] = {}
    for d in doms:
        its = [it for it in items if it[2] == d]
        xs = []
        for p, _, _ in its:
            a = read_image(p, 3)
            a = np.asarray(a)
            if a.dtype != np.uint8:
                a = np.clip(a * (255 if a.max() <= 1 else 1), 0, 255).astype(np.uint8)
            h, w = a.shape[:2]
            if min(h, w) < size:
                raise SystemExit(f"{p}: smaller than --size {size}")
            y0, x0 = (h - size) // 2, (w - size) // 2
            xs.append(a[y0 : y0 + size, x0 : x0 + size])
        x = np.stack(xs)
        y = np.asarray([classes.index(c) for _, c, _ in its])
        perm = rng.permutation(len(y))
        cut = int(len(y) * 0.8)
        by_dom[d] = DomainData(x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]])
        log(f"[folder] domain {d}: {len(y)} images")
    rows, notes = run_lodo("folder", by_dom, args.heldout or doms, methods, seeds, args, len(classes), pretrained,
                           plabel, log)
    summary, per_domain = summarise(rows, methods)
    return {"task": f"leave-one-domain-out classification ({len(classes)} classes: {classes})",
            "split": "random 80/20 within each domain (your folder carries no spatial information)",
            "domains": doms, "rows": rows, "summary": summary, "per_domain": per_domain, "notes": notes}


# ------------------------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = []
    if "hgsc" in result:
        for r in result["hgsc"]["renderers"]:
            rs = [s for s in result["hgsc"]["summary"] if s["dataset"] == f"hgsc/{r}"]
            panels.append((f"HGSC nuclei, {r} (semi-synthetic)", rs, "acc_ood", "held-out-stain accuracy"))
    for key in ("camelyon17", "folder"):
        if key in result:
            panels.append((key, result[key]["summary"], "acc_ood", "held-out accuracy"))
    if "sources" in result:
        panels.append(("real sources: colour coverage", result["sources"]["coverage_summary"], None, None))
        panels.append(("real sources: source identification", result["sources"]["identifiability"], None, None))
        panels.append(("real sources: structure (nucleus-mask Dice)", result["sources"]["structure"], "dice", None))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, rows, key, ylabel) in zip(axes[0], panels):
        names = [r["method"] for r in rows]
        pos = np.arange(len(names))
        if key == "dice":
            ax.bar(pos, [r["dice_nuclei"] for r in rows],
                   color=["#c44e52" if n.startswith("contrimix") else "#4c72b0" for n in names])
            ax.set_ylabel("Dice of Otsu nucleus masks,\noriginal vs output (higher = kept)")
            ax.set_ylim(0, 1)
        elif key:
            mu = [r[f"{key}_mean"] for r in rows]
            sd = [r[f"{key}_std"] for r in rows]
            ax.bar(pos, mu, yerr=sd, color=["#c44e52" if n.startswith("contrimix") else "#4c72b0" for n in names],
                   capsize=3)
            ax.scatter(pos, [r["acc_id_mean"] for r in rows], marker="_", s=200, color="k", zorder=3,
                       label="in-domain")
            ax.set_ylabel(ylabel + "\n(bars; in-domain: black dashes)")
            ax.set_ylim(0, 1)
        elif "knn_dist_mean_over_heldouts" in rows[0]:
            ax.bar(pos, [r["knn_dist_mean_over_heldouts"] for r in rows],
                   yerr=[r["std_over_heldouts"] for r in rows], capsize=3,
                   color=["#c44e52" if n.startswith("contrimix") else "#4c72b0" for n in names])
            ax.set_ylabel("k-NN colour distance\n(lower = left-out source covered)")
        else:
            ax.bar(pos, [r["source_id_bacc"] for r in rows],
                   color=["#c44e52" if n.startswith("contrimix") else "#4c72b0" for n in names])
            ax.axhline(rows[0]["chance"], color="k", ls=":", lw=1)
            ax.set_ylabel("source-ID balanced acc.\n(lower = more invariant; dotted = chance)")
            ax.set_ylim(0, 1)
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_renderings(path: Path, n: int = 6) -> Path | None:
    """Example crops: native HGSC and each stain, both renderers (what the classifier sees)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    nuc = D.load_nuclei()
    idx = np.flatnonzero(nuc.split == "test")[:: max(1, (nuc.split == "test").sum() // n)][:n]
    cols = [("native", "hgsc")] + [(r, s) for r in D.RENDERERS for s in D.STAIN_TARGETS]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.1 * len(cols), 1.15 * n))
    for j, (r, s) in enumerate(cols):
        crops = D.domain_crops("beer-lambert" if r == "native" else r, s)
        for i, k in enumerate(idx):
            ax = axes[i, j]
            ax.imshow(crops[k])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{s}\n{r}" if r != "native" else "hgsc\nnative", fontsize=6)
            if j == 0:
                ax.set_ylabel(nuc.class_names[nuc.labels[k]][:8], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_tables(result: dict[str, Any]) -> str:
    out = []
    for key in ("hgsc", "camelyon17", "folder"):
        if key not in result:
            continue
        rows = [{"dataset": s["dataset"], "method": s["method"], "kind": s["kind"],
                 "OOD acc": f"{s['acc_ood_mean']:.3f} ± {s['acc_ood_std']:.3f}",
                 "OOD bal.acc": f"{s['bacc_ood_mean']:.3f} ± {s['bacc_ood_std']:.3f}",
                 "ID acc": f"{s['acc_id_mean']:.3f} ± {s['acc_id_std']:.3f}", "seeds": s["seeds"],
                 "held-out": s["heldouts"]} for s in result[key]["summary"]]
        out.append(C.markdown_table(rows))
    if "sources" in result:
        src = result["sources"]
        cov = {r["method"]: r for r in src["coverage_summary"]}
        st = {r["method"]: r for r in src["structure"]}
        rows = [{"method": r["method"], "kind": r["kind"],
                 "k-NN colour dist. to left-out source": cov.get(r["method"], {}).get("knn_dist_mean_over_heldouts"),
                 "source-ID bal.acc": r["source_id_bacc"], "SSIM OD": st[r["method"]]["ssim_od"],
                 "SSIM H": st[r["method"]]["ssim_h"], "nucleus Dice": st[r["method"]]["dice_nuclei"]}
                for r in src["identifiability"]]
        out.append(C.markdown_table(rows))
    text = "\n".join(out)
    print(text)
    return text


# ------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="embedded", choices=["embedded", "hgsc", "sources", "camelyon17", "folder"])
    p.add_argument("--root", help="dataset folder (camelyon17, folder)")
    p.add_argument("--csv", help="folder dataset: CSV with columns path,label,domain")
    p.add_argument("--size", type=int, default=96, help="folder dataset: centre crop size")
    p.add_argument("--methods", nargs="+", default=None, help=f"subset of {ALL_METHODS}")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--renderers", nargs="+", default=list(D.RENDERERS), choices=list(D.RENDERERS))
    p.add_argument("--stains", nargs="+", default=list(D.STAIN_TARGETS), help="target stains (real source ids)")
    p.add_argument("--heldout", nargs="+", default=None, help="held-out domains (default: all)")
    p.add_argument("--max-per-split", type=int, default=None, help="subsample train/test items per domain")
    p.add_argument("--tiles-per-source", type=int, default=None)
    p.add_argument("--views", type=int, default=None, help="augmented views per tile (sources coverage)")
    p.add_argument("--weights", default=None, help="ContriMix weights for contrimix-pretrained (name or path)")
    p.add_argument("--fold-steps", type=int, default=None,
                   help="training steps of the per-fold ContriMix (0 = skip contrimix-fold/-normalise)")
    p.add_argument("--fold-dir", default=None,
                   help="load per-fold ContriMix weights from here if present, save newly trained ones here")
    p.add_argument("--folds-only", action="store_true",
                   help="only train (and save to --fold-dir) the per-fold ContriMix models, then exit")
    p.add_argument("--batch-size", type=int, default=16, help="classifier batch size")
    p.add_argument("--backbone", default="small", choices=["small", "densenet121"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="CI-sized run (a few minutes on 2 CPU cores)")
    p.add_argument("--tiny", action="store_true", help="test-sized run (under a minute)")
    p.add_argument("--out", default=str(C.DOCS_DIR), help="output folder")
    p.add_argument("--name", default=None, help="output file stem (default dg_<dataset>[_quick|_tiny])")
    p.add_argument("--workdir", default=None, help="scratch folder for per-fold ContriMix training")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    defaults = {
        # sized for 2 CPU cores (about an hour per renderer); raise --epochs/--max-per-split/--fold-steps on a GPU
        "full": dict(methods=ALL_METHODS, seeds=[0, 1, 2], epochs=4, tiles_per_source=32, views=2, fold_steps=20,
                     max_per_split=160),
        "quick": dict(methods=QUICK_METHODS, seeds=[0, 1], epochs=3, tiles_per_source=16, views=1, fold_steps=4,
                      max_per_split=160),
        "tiny": dict(methods=TINY_METHODS, seeds=[0], epochs=1, tiles_per_source=8, views=1, fold_steps=0,
                     max_per_split=64),
    }[mode]
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if mode != "full" and args.heldout is None and args.dataset in ("embedded", "hgsc"):
        args.heldout = ["cmu1"]
    if mode == "tiny" and args.renderers == list(D.RENDERERS):
        args.renderers = ["beer-lambert"]
    if args.folds_only and not args.fold_dir:
        raise SystemExit("--folds-only needs --fold-dir")
    unknown = [m for m in args.methods if m not in ALL_METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {ALL_METHODS}")
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cmx_dg_")
        args.workdir = tmp.name
    t0 = time.perf_counter()
    env = C.environment(["benchmarks/domain_generalization.py", *(argv if argv is not None else sys.argv[1:])])

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s {msg}", flush=True)

    pretrained, plabel = (None, "not requested")
    if "contrimix-pretrained" in args.methods:
        pretrained, plabel = pretrained_model(args.weights)
        log(f"contrimix-pretrained: {plabel}")
    result: dict[str, Any] = {
        "benchmark": "domain_generalization",
        "mode": mode,
        "environment": env,
        "settings": {k: v for k, v in vars(args).items() if k not in ("workdir",)},
        "augmentation_p": AUG_P,
        "classifier": f"SmallCNN(16-32-64-128), AdamW lr 2e-3 one-cycle, batch {args.batch_size}, {args.epochs} epochs, last epoch "
        "(no model selection)"
        if args.backbone == "small" else "DenseNet-121 (torchvision, random init)",
        "contrimix_pretrained": plabel,
        "vahadane_normaliser": C.vahadane_normaliser_status(),
    }
    if args.dataset in ("embedded", "hgsc"):
        result["hgsc"] = run_hgsc(args, args.methods, args.seeds, pretrained, plabel, log)
    if args.dataset in ("embedded", "sources"):
        result["sources"] = run_sources(args, args.methods, args.seeds, pretrained, plabel, log)
    if args.folds_only:
        log(f"--folds-only: per-fold ContriMix models are in {args.fold_dir}")
        C.write_json(Path(args.fold_dir) / "folds.json", result)
        return 0
    if args.dataset == "camelyon17":
        result["camelyon17"] = run_camelyon(args, args.methods, args.seeds, pretrained, plabel, log)
    if args.dataset == "folder":
        result["folder"] = run_folder(args, args.methods, args.seeds, pretrained, plabel, log)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    stem = args.name or f"dg_{args.dataset}" + ("" if mode == "full" else f"_{mode}")
    result["tables_markdown"] = print_tables(result)
    C.write_json(out / f"{stem}.json", result)
    for key in ("hgsc", "camelyon17", "folder"):
        if key in result:
            C.write_csv(out / f"{stem}_{key}_summary.csv", result[key]["summary"])
            C.write_csv(out / f"{stem}_{key}_per_domain.csv", result[key]["per_domain"])
            C.write_csv(out / f"{stem}_{key}_runs.csv", result[key]["rows"])
    if "sources" in result:
        C.write_csv(out / f"{stem}_sources_coverage.csv", result["sources"]["coverage"])
        C.write_csv(out / f"{stem}_sources_identifiability.csv", result["sources"]["identifiability"])
        C.write_csv(out / f"{stem}_sources_structure.csv", result["sources"]["structure"])
    if not args.no_plot:
        plot(result, out / f"{stem}.png")
        if "hgsc" in result and mode == "full":
            plot_renderings(out / "hgsc_renderings.png")
    log(f"wrote {out / (stem + '.json')} ({result['wall_seconds']} s)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
