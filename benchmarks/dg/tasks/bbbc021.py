"""BBBC021 DMSO vs cycloheximide, leave one plate out: a real batch shift in high-content screening.

Data (``contrimix_aug.data.load_bbbc021``): 7,774 real single-cell crops of MCF-7 cells, 68×68 px, three channels
(DAPI, tubulin, actin), 16-bit, from six plates (experimental batches). Plates 27801, 27821 and 27861 hold both
classes; each is the test plate once, and the classifier trains on the crops of the other two (balanced domains;
the three DMSO-only plates would turn plate identity into a label shortcut). ContriMix's label-free training may
use the crops of every plate except the test plate.

Inputs: the central 64 px of each crop. Intensities are divided per channel by the 99.9th percentile of the
training plates' pixels and clipped to [0, 1] (every method sees this), except ``plate-zscore``, the standard of
high-content screening, which z-scores every channel with the statistics of the crop's own plate (the test
plate's statistics come from its own unlabelled crops) and maps z to 0.5 + z / 8 (clipped).
"""

from __future__ import annotations

import functools

import numpy as np

from contrimix_aug.data import load_bbbc021

__all__ = ["MIXED_PLATES", "describe", "folds", "plate_zscore", "scale"]

MIXED_PLATES = ("27801", "27821", "27861")
SIZE = 64


@functools.lru_cache(maxsize=1)
def _data():
    d = load_bbbc021(progress=False)
    off = (68 - SIZE) // 2
    return d, d.images[:, off:off + SIZE, off:off + SIZE].astype(np.float32)


def scale(train: np.ndarray) -> np.ndarray:
    """Per-channel 99.9th percentile of the training crops' pixels (the fixed intensity scale)."""
    return np.percentile(train.reshape(-1, train.shape[-1]), 99.9, axis=0).astype(np.float32)


def plate_zscore(x: np.ndarray, plates: np.ndarray, all_x: np.ndarray, all_plates: np.ndarray) -> np.ndarray:
    """Each crop z-scored per channel with its plate's statistics (all crops of that plate), mapped to [0, 1]."""
    out = np.empty_like(x)
    for p in np.unique(plates):
        ref = all_x[all_plates == p].reshape(-1, x.shape[-1])
        mu, sd = ref.mean(0), ref.std(0) + 1e-6
        sel = plates == p
        out[sel] = np.clip(0.5 + (x[sel] - mu) / sd / 8.0, 0, 1)
    return out


def folds(max_per_plate: int | None = None, seed: int = 0) -> list[dict]:
    """One dict per test plate: train/test crops (float in [0, 1], fixed scale), labels, plates, the plate-z-scored
    versions, and the label-free ContriMix training crops (every plate but the test plate)."""
    d, x = _data()
    rng = np.random.default_rng(seed)
    out = []
    for test in MIXED_PLATES:
        train_plates = [p for p in MIXED_PLATES if p != test]
        tr = np.flatnonzero(np.isin(d.plates, train_plates))
        te = np.flatnonzero(d.plates == test)
        if max_per_plate:
            tr = np.sort(np.concatenate([rng.choice(np.flatnonzero(d.plates == p), min(max_per_plate,
                         int((d.plates == p).sum())), replace=False) for p in train_plates]))
            te = np.sort(rng.choice(te, min(max_per_plate, len(te)), replace=False))
        s = scale(x[tr])
        unl = np.flatnonzero(d.plates != test)
        out.append({
            "test_plate": test, "train_plates": train_plates,
            "train_x": np.clip(x[tr] / s, 0, 1), "train_y": d.labels[tr],
            "test_x": np.clip(x[te] / s, 0, 1), "test_y": d.labels[te],
            "train_z": plate_zscore(x[tr], d.plates[tr], x, d.plates),
            "test_z": plate_zscore(x[te], d.plates[te], x, d.plates),
            "contrimix_x": np.clip(x[unl] / s, 0, 1), "scale": s.tolist(),
        })
    return out


def describe() -> dict:
    d, _ = _data()
    counts = {p: {"DMSO": int(((d.plates == p) & (d.labels == 0)).sum()),
                  "cycloheximide": int(((d.plates == p) & (d.labels == 1)).sum())} for p in sorted(set(d.plates))}
    return {
        "task": "BBBC021 DMSO vs cycloheximide (mechanism 'Protein synthesis'), leave one plate out",
        "shift": "real: plates are experimental batches of one screen",
        "inputs": f"central {SIZE} px of each 68 px crop, 3 channels (DAPI, tubulin, actin), per-channel 99.9th "
                  "percentile of the training plates = 1 (plate-zscore: the plate's own statistics)",
        "metrics": "per-crop accuracy and AUROC (cycloheximide positive) on the test plate",
        "plates": counts,
    }
