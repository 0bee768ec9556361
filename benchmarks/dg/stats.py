"""Statistics of the benchmark tables: mean ± std over seeds, and paired differences with bootstrap intervals.

A paired difference compares two methods run with the same seeds on the same test items. Its 95 % interval
resamples both sources of variation (Camelyon17-WILDS-style reporting): seeds with replacement, then test items
with replacement (the same item resample for both methods, so the pairing is kept), 2,000 replicates by default.
AUROC is not a mean over items, so its paired interval resamples the items of each class apart (every replicate has
both classes) and recomputes the AUROC of every resampled seed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["class_1_calls", "mean_std", "paired_auroc_bootstrap", "paired_bootstrap"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value; NaN for none), ignoring NaN/None."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, replicates: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Difference of mean per-item scores, method a minus method b, with a seeds × items bootstrap interval.

    Args:
        correct_a, correct_b: (S, N) per-seed, per-item scores (1/0 for correct/wrong, or any per-item value) of
            the two methods, the same S seeds and N test items in the same order. Items without a score (NaN in
            any seed of either method, e.g. a tile without an instance map has no AJI) are left out.

    Returns:
        ``diff`` (mean over seeds of the per-seed mean difference), ``lo``/``hi`` (the ``level`` percentile
        interval), ``seeds_a_better`` (seeds where a scored higher), ``seeds`` (S).
    """
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired_bootstrap: expected two (seeds, items) arrays of one shape, got {a.shape}, {b.shape}")
    d = a - b
    d = d[:, np.isfinite(d).all(0)]  # items that have a score in every run of both methods
    s, n = d.shape
    if n == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "seeds_a_better": 0, "seeds": int(s)}
    rng = np.random.default_rng(seed)
    reps = np.empty(replicates)
    for r in range(replicates):
        si = rng.integers(0, s, s)
        ni = rng.integers(0, n, n)
        reps[r] = d[np.ix_(si, ni)].mean()
    tail = (1 - level) / 2
    per_seed = d.mean(1)
    return {"diff": float(per_seed.mean()), "lo": float(np.quantile(reps, tail)),
            "hi": float(np.quantile(reps, 1 - tail)), "seeds_a_better": int((per_seed > 0).sum()), "seeds": int(s)}


def paired_auroc_bootstrap(score_a: np.ndarray, score_b: np.ndarray, labels: np.ndarray, *, replicates: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Difference of AUROC (class 1 positive, ties count one half), method a minus method b, with a seeds × items
    bootstrap interval: seeds with replacement, then the positive and the negative items each with replacement.

    Args:
        score_a, score_b: (S, N) per-seed, per-item class-1 scores of the two methods (same seeds and items).
        labels: (N,) 0/1 labels of the items; both classes present.

    Returns:
        as :func:`paired_bootstrap`: ``diff`` (mean over seeds of the per-seed AUROC difference), ``lo``/``hi``,
        ``seeds_a_better``, ``seeds``.
    """
    a, b, y = np.asarray(score_a, float), np.asarray(score_b, float), np.asarray(labels)
    if a.shape != b.shape or a.ndim != 2 or y.shape != a.shape[1:]:
        raise ValueError(f"paired_auroc_bootstrap: expected two (seeds, items) arrays of one shape and (items,) "
                         f"labels, got {a.shape}, {b.shape}, {y.shape}")
    pos, neg = y == 1, y == 0
    if not pos.any() or not neg.any() or not (pos | neg).all():
        raise ValueError("paired_auroc_bootstrap: labels must be 0/1 with both classes present")

    def ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """per seed: the negatives' sort order (S, Q), and for each positive how many sorted negatives lie below it
        and below or level with it (S, P): a weighted AUROC is then two cumulative sums away."""
        order = np.argsort(x[:, neg], 1, kind="stable")
        srt = np.take_along_axis(x[:, neg], order, 1)
        p = x[:, pos]
        below = np.stack([np.searchsorted(srt[i], p[i], "left") for i in range(len(x))])
        level_ = np.stack([np.searchsorted(srt[i], p[i], "right") for i in range(len(x))])
        return order, below, level_

    def auroc(rk: tuple[np.ndarray, np.ndarray, np.ndarray], wp: np.ndarray, wq: np.ndarray) -> np.ndarray:
        """(S,) AUROC of every seed with item weights wp (P,) and wq (Q,), each summing to 1."""
        order, below, level_ = rk
        cum = np.concatenate([np.zeros((len(order), 1)), np.cumsum(wq[order], 1)], 1)
        lo, hi = np.take_along_axis(cum, below, 1), np.take_along_axis(cum, level_, 1)
        return (lo + 0.5 * (hi - lo)) @ wp

    ra, rb = ranks(a), ranks(b)
    s, n_pos, n_neg = a.shape[0], int(pos.sum()), int(neg.sum())
    flat_p, flat_q = np.full(n_pos, 1 / n_pos), np.full(n_neg, 1 / n_neg)
    per_seed = auroc(ra, flat_p, flat_q) - auroc(rb, flat_p, flat_q)
    rng = np.random.default_rng(seed)
    reps = np.empty(replicates)
    for r in range(replicates):
        si = rng.integers(0, s, s)
        wp = np.bincount(rng.integers(0, n_pos, n_pos), minlength=n_pos) / n_pos
        wq = np.bincount(rng.integers(0, n_neg, n_neg), minlength=n_neg) / n_neg
        reps[r] = (auroc(ra, wp, wq) - auroc(rb, wp, wq))[si].mean()
    tail = (1 - level) / 2
    return {"diff": float(per_seed.mean()), "lo": float(np.quantile(reps, tail)),
            "hi": float(np.quantile(reps, 1 - tail)), "seeds_a_better": int((per_seed > 0).sum()), "seeds": int(s)}


def class_1_calls(rows: Sequence[dict], held: str) -> dict[str, float]:
    """method -> share of the test items of ``held`` its classifier calls class 1 (score > 0.5), mean over its runs
    (binary tasks: rows with a ``score`` list)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["heldout"] == held and r.get("score") is not None:
            by.setdefault(r["method"], []).append(sum(s > 0.5 for s in r["score"]) / len(r["score"]))
    return {m: sum(v) / len(v) for m, v in by.items()}
