"""Why a method generalises or not: does its augmented (or normalised) training set cover the test domain's look?

Features of a crop: H&E (3 channels): CIELAB mean and standard deviation over its tissue pixels; fluorescence: each
channel's mean and standard deviation of log intensity. Features are z-scored with the raw training and test crops'
pooled spread. Coverage of the test domain: for each test crop, the distance to its nearest training-set feature
vector after the method (augmentations: the raw training crops plus ``views`` augmented passes in shuffled batches;
normalisers: both sides normalised), summarised by the median over test crops. Lower = the test domain's look was
already seen in training. Reported next to the accuracy tables, never used to choose anything.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from contrimix_aug.quality import stain_features

from .methods import Method, to_float

__all__ = ["colour_features", "coverage"]


def colour_features(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [0, 1] -> (B, 2C) features: CIELAB mean/std over tissue (C = 3), else per-channel
    mean/std of log intensity (:func:`contrimix_aug.quality.stain_features`, the one implementation)."""
    return stain_features(x).numpy()


def _augmented(m: Method, x: torch.Tensor, g: torch.Generator, bs: int = 32) -> torch.Tensor:
    perm = torch.randperm(len(x), generator=g)  # shuffled batches, so in-batch donors mix the training crops
    y = torch.empty_like(x)
    for i in range(0, len(x), bs):
        idx = perm[i : i + bs]
        y[idx] = m(x[idx])
    return y


def coverage(methods: Sequence[Method], train_x: np.ndarray, test_x: np.ndarray, *, heldout: str = "",
             pretransformed: dict | None = None, views: int = 2, max_crops: int = 600, seed: int = 0) -> list[dict]:
    """One row per method: median / mean nearest-neighbour feature distance from test crops to the training set.

    ``train_x``/``test_x``: (N, H, W, C) arrays; at most ``max_crops`` of each are used (a fixed random subset).
    ``pretransformed`` maps a method name to its own (train_x, test_x) (e.g. per-plate z-scoring)."""
    rng = np.random.default_rng(seed)
    pick = lambda a: np.sort(rng.choice(len(a), min(len(a), max_crops), replace=False))  # noqa: E731
    i_tr, i_te = pick(train_x), pick(test_x)
    tr, te = to_float(train_x[i_tr]), to_float(test_x[i_te])
    f_tr, f_te = colour_features(tr), colour_features(te)
    scale = np.concatenate([f_tr, f_te]).std(0) + 1e-6
    g = torch.Generator().manual_seed(seed)
    rows = []
    for m in methods:
        if pretransformed and m.name in pretransformed:
            a_x, b_x = pretransformed[m.name]
            a, b = colour_features(to_float(a_x[i_tr])), colour_features(to_float(b_x[i_te]))
        elif m.kind == "normalise":
            a, b = colour_features(m.in_batches(tr, 64)), colour_features(m.in_batches(te, 64))
        elif m.kind == "augment":
            a = np.concatenate([f_tr] + [colour_features(_augmented(m, tr, g)) for _ in range(views)])
            b = f_te
        else:
            a, b = f_tr, f_te
        d = np.sqrt((((b[:, None, :] - a[None, :, :]) / scale) ** 2).sum(-1)).min(1)
        rows.append({"heldout": heldout, "method": m.name, "kind": m.kind,
                     "nn_distance_median": round(float(np.median(d)), 4), "nn_distance_mean": round(float(d.mean()), 4),
                     "n_train_features": int(len(a)), "n_test": int(len(b))})
    return rows
