"""Pictures of the benchmark: accuracy per method with intervals, and example crops before/after each method."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["plot_accuracy", "plot_examples"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summary: list[dict[str, Any]], paired: list[dict[str, Any]], path: Path, title: str,
                  metric: str = "acc") -> Path:
    """One panel per held-out domain: mean ± std over seeds of ``metric`` per method (bars), and the paired
    difference to ERM with its 95 % bootstrap interval (right axis, dots)."""
    plt = _plt()
    helds = list(dict.fromkeys(s["heldout"] for s in summary))
    fig, axes = plt.subplots(1, len(helds), figsize=(max(6.0, 0.55 * len({s['method'] for s in summary})) *
                                                      len(helds), 4.8), squeeze=False)
    for ax, held in zip(axes[0], helds):
        rows = [s for s in summary if s["heldout"] == held]
        names = [r["method"] for r in rows]
        pos = np.arange(len(names))
        colours = ["#c44e52" if n.startswith("contrimix") else "#8c8c8c" if n == "erm" else "#4c72b0" for n in names]
        ax.bar(pos, [r[f"{metric}_mean"] for r in rows], yerr=[r[f"{metric}_std"] for r in rows], color=colours,
               capsize=3)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"held-out {metric} (mean ± std over seeds)")
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{title}: {held}", fontsize=9)
        diffs = {d["method"]: d for d in paired if d["heldout"] == held and d["versus"] == "erm"}
        ax2 = ax.twinx()
        for i, n in enumerate(names):
            if n in diffs:
                d = diffs[n]
                ax2.errorbar(i, d["diff"], yerr=[[d["diff"] - d["lo"]], [d["hi"] - d["diff"]]], fmt="o", color="k",
                             ms=3, capsize=2)
        ax2.axhline(0, color="k", lw=0.6, ls=":")
        ax2.set_ylabel("paired difference to ERM (95 % CI)", fontsize=8)
        lim = max([0.05] + [abs(v) for d in diffs.values() for v in (d["lo"], d["hi"])]) * 1.1
        ax2.set_ylim(-lim, lim)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(rows: Sequence[tuple[str, np.ndarray]], col_labels: Sequence[str], path: Path,
                  title: str = "") -> Path:
    """A grid: one row per (label, (n, H, W, 3) uint8 images), columns labelled ``col_labels``."""
    plt = _plt()
    n = len(col_labels)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.05 * n + 1.4, 1.05 * len(rows) + 0.4), squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(imgs[j] if imgs.shape[-1] == 3 else imgs[j][..., :3])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_labels[j], fontsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
