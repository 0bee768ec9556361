"""The segmenter every method is scored with on nuclei segmentation (MoNuSeg), its training loop and the per-tile
metrics (Dice, AJI).

One network, one optimiser and one schedule for every method: a small U-Net (two conv-BN-ReLU per stage, max-pool
down, bilinear up + skip), AdamW with a one-cycle schedule, a fixed number of steps and no model selection (the
last step is scored). Each step draws random crops from the training tiles with a random flip / 90° rotation (the
same geometry for every method), then the method's colour augmentation (training only) or nothing; normalisers
are applied once to every training and test tile. Test tiles are predicted whole.

Metrics per test tile: Dice of the binary nuclei mask, and the aggregated Jaccard index (AJI, Kumar et al., IEEE
TMI 2017) of the predicted instances (connected components of the predicted mask) against the annotated instances.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .engine import record, same_method
from .methods import Method, to_float

__all__ = ["UNet", "aji", "dice", "instances_from_mask", "predict_masks", "train_segmenter"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: (B, 3, H, W) in [0, 1] -> (B, 1, H, W) nuclei logits; H and W multiples of 2^(stages - 1)."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x - 0.5
        for i, blk in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2)
            h = blk(h)
            skips.append(h)
        for blk, skip in zip(self.up, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = blk(torch.cat([h, skip], 1))
        return self.head(h)


def _random_crops(x: torch.Tensor, m: torch.Tensor, n: int, size: int, g: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random (size × size) crops of random tiles, each flipped / rotated by a multiple of 90° at random.
    x: (T, C, H, W) float, m: (T, 1, H, W) float -> (n, C, size, size), (n, 1, size, size)."""
    t, _, h, w = x.shape
    tile = torch.randint(0, t, (n,), generator=g)
    ys = torch.randint(0, h - size + 1, (n,), generator=g)
    xs = torch.randint(0, w - size + 1, (n,), generator=g)
    rot = torch.randint(0, 4, (n,), generator=g)
    flip = torch.randint(0, 2, (n,), generator=g)
    xb, mb = [], []
    for i in range(n):
        a = x[tile[i], :, ys[i]:ys[i] + size, xs[i]:xs[i] + size]
        b = m[tile[i], :, ys[i]:ys[i] + size, xs[i]:xs[i] + size]
        if flip[i]:
            a, b = a.flip(-1), b.flip(-1)
        k = int(rot[i])
        xb.append(torch.rot90(a, k, (-2, -1)))
        mb.append(torch.rot90(b, k, (-2, -1)))
    return torch.stack(xb), torch.stack(mb)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice (the usual nuclei-segmentation loss)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    soft_dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + soft_dice.mean()


def train_segmenter(x: torch.Tensor, masks: torch.Tensor, method: Method, *, steps: int, seed: int,
                    device: torch.device, batch_size: int = 8, crop: int = 128, lr: float = 2e-3,
                    widths: Sequence[int] = (16, 32, 64, 128)) -> nn.Module:
    """Train on tiles x (T, 3, H, W) float in [0, 1] with masks (T, H, W) bool. ``method`` augments each batch of
    crops when it is an augmentation (normalisers have already been applied to ``x``)."""
    torch.manual_seed(seed)
    model = UNet(x.shape[1], widths).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    m = masks.float().unsqueeze(1)
    model.train()
    for _ in range(steps):
        xb, mb = _random_crops(x, m, batch_size, crop, g)
        if method.kind == "augment":
            with torch.no_grad():
                xb = method(xb)
        xb, mb = xb.to(device), mb.to(device)
        loss = _loss(model(xb), mb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def predict_masks(model: nn.Module, x: torch.Tensor, device: torch.device, multiple: int = 8) -> np.ndarray:
    """(T, H, W) bool nuclei masks of whole tiles x (T, 3, H, W) (reflect-padded to a multiple of ``multiple``)."""
    model.eval()
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    out = []
    for i in range(len(x)):
        xi = F.pad(x[i : i + 1], (0, pw, 0, ph), mode="reflect").to(device)
        out.append((model(xi)[0, 0, :h, :w] > 0).cpu().numpy())
    return np.stack(out)


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice of two (H, W) bool masks (1.0 when both are empty)."""
    s = int(pred.sum()) + int(target.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(pred, target).sum()) / s


def instances_from_mask(mask: np.ndarray, min_area: int = 8) -> np.ndarray:
    """(H, W) int32 instance map: 4-connected components of a bool mask, components under ``min_area`` px dropped."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n:
        area = np.bincount(lab.ravel())
        keep = area >= min_area
        keep[0] = False
        remap = np.zeros(n + 1, np.int32)
        remap[keep] = np.arange(1, int(keep.sum()) + 1)
        lab = remap[lab]
    return lab.astype(np.int32)


def aji(pred: np.ndarray, target: np.ndarray) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017) of (H, W) instance maps (0 = background).

    Each annotated nucleus G is matched to the predicted instance S of highest IoU with it: C += |G ∩ S|,
    U += |G ∪ S| (U += |G| when no prediction touches it); every predicted instance matched to none adds its area
    to U. AJI = C / U (1.0 when both maps are empty)."""
    t = np.unique(target.ravel(), return_inverse=True)[1].reshape(target.shape)
    p = np.unique(pred.ravel(), return_inverse=True)[1].reshape(pred.shape)
    has_bg_t, has_bg_p = bool((target == 0).any()), bool((pred == 0).any())
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    inter = np.bincount((t * np_ + p).ravel(), minlength=nt * np_).reshape(nt, np_).astype(np.int64)
    area_t, area_p = inter.sum(1), inter.sum(0)
    gt_ids = np.arange(1 if has_bg_t else 0, nt)
    pr_ids = np.arange(1 if has_bg_p else 0, np_)
    if not len(gt_ids):
        return 1.0 if not len(pr_ids) else 0.0
    ii = inter[np.ix_(gt_ids, pr_ids)]
    union = area_t[gt_ids, None] + area_p[None, pr_ids] - ii
    iou = np.where(union > 0, ii / np.maximum(union, 1), 0.0)
    c, u = 0, 0
    used = np.zeros(len(pr_ids), bool)
    for k in range(len(gt_ids)):
        if len(pr_ids) and ii[k].max() > 0:
            j = int(iou[k].argmax())
            c += int(ii[k, j])
            u += int(union[k, j])
            used[j] = True
        else:
            u += int(area_t[gt_ids[k]])
    u += int(area_p[pr_ids[~used]].sum())
    return c / u if u else 1.0



def run_split(split, methods, seeds, *, steps: int, device: torch.device, batch_size: int, crop: int, log,
              journal=None, dataset: str = "monuseg") -> list[dict]:
    """Train and score every method of ``methods(seed)`` for every seed on one train -> test split of tiles
    (:class:`dg.tasks.monuseg.Split`). Returns one row per (method, seed) with per-tile Dice and AJI; runs already in
    ``journal`` are taken from it, new ones appended as they finish."""
    rows = []
    train_x, test_x = to_float(split.train_x), to_float(split.test_x)
    train_m = torch.from_numpy(split.train_mask)
    for seed in seeds:
        for m in methods(seed):
            done = journal.get(dataset, split.name, m.name, seed) if journal is not None else None
            if done is not None:
                same_method(done, m)
                rows.append(done)
                log(f"[{dataset}] {split.name:10s} seed {seed} {m.name:28s} AJI {done['aji']:.3f}  (resumed)")
                continue
            t0 = time.perf_counter()
            xtr, xte = (m.in_batches(train_x), m.in_batches(test_x)) if m.kind == "normalise" else (train_x, test_x)
            model = train_segmenter(xtr, train_m, m, steps=steps, seed=seed, device=device, batch_size=batch_size,
                                    crop=crop)
            pred = predict_masks(model, xte, device)
            tile_dice = [dice(p, t) for p, t in zip(pred, split.test_mask)]
            tile_aji = [aji(instances_from_mask(p), i) if i is not None else float("nan")
                        for p, i in zip(pred, split.test_inst)]
            row = {"dataset": dataset, "heldout": split.name, "method": m.name, "kind": m.kind, "seed": seed,
                   "dice": float(np.mean(tile_dice)), "aji": float(np.nanmean(tile_aji)),
                   "n_train_tiles": int(len(train_x)), "n_test_tiles": int(len(test_x)),
                   "peer_failures": m.failures, "seconds": round(time.perf_counter() - t0, 1),
                   "tile_dice": [round(v, 5) for v in tile_dice], "tile_aji": [round(v, 5) for v in tile_aji]}
            record(row, rows, journal, log, f"AJI {row['aji']:.3f}  Dice {row['dice']:.3f}", m, device)
    return rows
