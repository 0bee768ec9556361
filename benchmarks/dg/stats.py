"""Statistics of the benchmark tables: mean ± std over seeds, and paired differences with bootstrap intervals.

A paired difference compares two methods run with the same seeds on the same test items. Its 95 % interval
resamples both sources of variation (Camelyon17-WILDS-style reporting): seeds with replacement, then test items
with replacement (the same item resample for both methods, so the pairing is kept), 2,000 replicates by default.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["class_1_calls", "mean_std", "paired_bootstrap"]


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


def class_1_calls(rows: Sequence[dict], held: str) -> dict[str, float]:
    """method -> share of the test items of ``held`` its classifier calls class 1 (score > 0.5), mean over its runs
    (binary tasks: rows with a ``score`` list)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["heldout"] == held and r.get("score") is not None:
            by.setdefault(r["method"], []).append(sum(s > 0.5 for s in r["score"]) / len(r["score"]))
    return {m: sum(v) / len(v) for m, v in by.items()}
