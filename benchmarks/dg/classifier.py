"""The classifier every method is scored with, its training loop, and the per-item metrics.

One classifier, one optimiser and one schedule for every method: a small CNN (one conv-BN-ReLU per stage, max-pool
between stages, global average pool, linear head), AdamW with a one-cycle schedule, a fixed number of epochs and no
model selection (the last epoch is scored). Augmentations are applied to each training batch with the method's
own probability; normalisers are applied to every training and test image.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .methods import Method

__all__ = ["SmallCNN", "accuracy", "auroc", "group_mean", "predict_logits", "train_classifier"]


class SmallCNN(nn.Module):
    """one conv-BN-ReLU per stage, max-pool between stages, global average pool, linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5).mean((2, 3)))


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    method: Method,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    bs: int = 32,
    lr: float = 2e-3,
    widths: Sequence[int] = (16, 32, 64, 128),
    step_hook: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """Train on (x, y): float (N, C, H, W) in [0, 1] and long (N,). ``method`` augments each batch when it is an
    augmentation. ``step_hook(model, xb, yb) -> loss`` replaces the plain cross-entropy (the joint protocol)."""
    torch.manual_seed(seed)
    model = SmallCNN(num_classes, x.shape[1], widths).to(device)
    params = list(model.parameters()) + list(getattr(step_hook, "parameters", lambda: [])())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
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
                with torch.no_grad():
                    xb = method(xb)
            xb, yb = xb.to(device), yb.to(device)
            loss = step_hook(model, xb, yb) if step_hook is not None else F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps:
                sched.step()
            step += 1
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device, bs: int = 256,
                   prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(N, classes) logits on the CPU; ``prepare`` maps each input batch first (e.g. a self-reconstruction)."""
    model.eval()
    out = []
    for i in range(0, len(x), bs):
        xb = x[i : i + bs].to(device)
        out.append(model(prepare(xb) if prepare is not None else xb).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def group_mean(logits: torch.Tensor, groups: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Average the logits of items that share a group id (the crops of one patch): ((G, classes), (G,) ids)."""
    ids, inv = np.unique(groups, return_inverse=True)
    inv_t = torch.from_numpy(inv)
    sums = torch.zeros(len(ids), logits.shape[1]).index_add_(0, inv_t, logits)
    counts = torch.bincount(inv_t, minlength=len(ids)).float().unsqueeze(1)
    return sums / counts, ids


def accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(accuracy, balanced accuracy)."""
    acc = float((pred == y).mean()) if len(y) else float("nan")
    recalls = [float((pred[y == c] == c).mean()) for c in range(num_classes) if (y == c).any()]
    return acc, float(np.mean(recalls)) if recalls else float("nan")


def auroc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the positive class 1 (Mann-Whitney U with tie correction)."""
    score, y = np.asarray(score, float), np.asarray(y)
    pos, neg = score[y == 1], score[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
