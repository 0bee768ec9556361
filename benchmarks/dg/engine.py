"""The domain-generalisation engine shared by the tasks: one fold (training domains -> held-out domain), every
method, every seed, the same classifier; then the summary table and the paired comparisons.

A fold gives training crops (x, y) and test crops (x, y, item id); test predictions are averaged over the crops of
an item (a patch) when items have several crops. Every run records per-item correctness and scores, so paired
differences with bootstrap intervals can be computed afterwards (:mod:`.stats`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import contrimix_aug

from . import classifier as CL
from .methods import Method, to_float
from .stats import mean_std, paired_auroc_bootstrap, paired_bootstrap

__all__ = ["CLASSIFICATION_METRICS", "Fold", "Journal", "paired_table", "record", "run_fold", "same_method",
           "summarise"]


@dataclass
class Fold:
    """One train -> test split. Arrays are (N, H, W, C) images (uint8, uint16 or float) and (N,) labels; ``test_item``
    groups test crops into items (patches); ``pretransformed`` maps a method name to its own (train_x, test_x)."""

    dataset: str
    heldout: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_item: np.ndarray
    num_classes: int = 2
    pretransformed: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class Journal:
    """Finished runs, one JSON line each, so a killed benchmark resumes where it stopped.

    The first line records the settings the runs were made with; a journal written under other settings is refused
    (delete it, or pass another ``--work``/``--name``). A run is keyed by (dataset, held-out domain, method, seed).
    """

    def __init__(self, path: str | Path, settings: dict[str, Any]) -> None:
        self.path = Path(path)
        self.settings_sha = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"settings_sha": self.settings_sha, "settings": settings}, default=str) + "\n"
        try:  # exclusive create: two processes sharing a journal (e.g. one per held-out domain) write one header
            with self.path.open("x") as f:
                f.write(header)
        except FileExistsError:
            lines = self._lines()
            if not lines or lines[0].get("settings_sha") != self.settings_sha:
                raise SystemExit(f"{self.path} holds runs made with other settings (settings "
                                 f"{lines[0].get('settings_sha') if lines else 'missing'}, now {self.settings_sha}); "
                                 "delete it to start afresh, or write elsewhere with --work/--name")
            for r in lines[1:]:
                self.rows[self.key(r)] = r

    @staticmethod
    def key(r: dict[str, Any]) -> tuple:
        return (r["dataset"], r["heldout"], r["method"], int(r["seed"]))

    def get(self, dataset: str, heldout: str, method: str, seed: int) -> dict[str, Any] | None:
        """The finished run, if any (re-reading the file first: another process may have finished it)."""
        key = (dataset, heldout, method, int(seed))
        if key not in self.rows:
            self.reload()
        return self.rows.get(key)

    def add(self, row: dict[str, Any]) -> None:
        self.rows[self.key(row)] = row
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        try:  # one write of one line: appends of concurrent processes do not interleave
            size = os.fstat(fd).st_size  # a line torn by a kill ends without a newline: do not append to it
            lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
            os.write(fd, lead + (json.dumps(row) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def reload(self) -> None:
        """Re-read the rows (another process may have added some)."""
        for r in self._lines()[1:]:
            self.rows[self.key(r)] = r

    @classmethod
    def read(cls, path: str | Path) -> list[dict[str, Any]]:
        """The finished runs of the journal at ``path``, read only (none if there is no file): one row per key, the
        last written, as a :class:`Journal` sees them (two processes may both have finished the same run)."""
        rows = {cls.key(r): r for r in _json_lines(Path(path))[1:]} if Path(path).is_file() else {}
        return list(rows.values())

    def _lines(self) -> list[dict[str, Any]]:
        return _json_lines(self.path)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for x in path.read_text().splitlines():
        try:
            out.append(json.loads(x))
        except json.JSONDecodeError:  # a line torn by a kill during its write: that run is simply redone
            continue
    return out


def run_fold(fold: Fold, methods: Callable[[int], list[Method]], seeds: Sequence[int], *, epochs: int,
             device: torch.device, batch_size: int, log: Callable[[str], None],
             joint: Callable[[int], Any] | None = None, journal: Journal | None = None) -> list[dict[str, Any]]:
    """Train and score every method of ``methods(seed)`` (and the joint protocol ``joint(seed)``, if given) for
    every seed. Returns one row per (method, seed) with item-level correctness and scores. Runs already in
    ``journal`` are taken from it (logged as resumed); new ones are appended to it as they finish."""
    rows: list[dict[str, Any]] = []
    train_x, test_x = to_float(fold.train_x), to_float(fold.test_x)
    train_y = torch.from_numpy(fold.train_y).long()
    for seed in seeds:
        ms = methods(seed)
        entries: list[tuple[Method | None, str]] = [(m, m.name) for m in ms]
        if joint is not None:
            entries.append((None, "contrimix-joint"))
        for m, name in entries:
            done = journal.get(fold.dataset, fold.heldout, name, seed) if journal is not None else None
            if done is not None:
                same_method(done, m)
                rows.append(done)
                log(f"[{fold.dataset}] {fold.heldout:12s} seed {seed} {name:22s} acc {done['acc']:.3f}  (resumed)")
                continue
            t0 = time.perf_counter()
            prepare = None
            hook = None
            if m is None:  # the authors' joint protocol
                hook = joint(seed)
                prepare = hook.prepare
                method = Method("contrimix-joint", "none", "batch", "contrimix_aug", "joint", _batch_fn=lambda x: x)
                xtr, xte = train_x, test_x
            elif name in fold.pretransformed:
                method = m
                xtr, xte = (to_float(a) for a in fold.pretransformed[name])
            elif m.kind == "normalise":
                method, xtr, xte = m, m.in_batches(train_x), m.in_batches(test_x)
            else:
                method, xtr, xte = m, train_x, test_x
            model = CL.train_classifier(xtr, train_y, fold.num_classes, method, epochs=epochs, seed=seed,
                                        device=device, bs=batch_size, step_hook=hook)
            logits = CL.predict_logits(model, xte, device, prepare=prepare)
            item_logits, items = CL.group_mean(logits, fold.test_item)
            item_y = np.array([fold.test_y[fold.test_item == i][0] for i in items])
            pred = item_logits.argmax(1).numpy()
            prob = torch.softmax(item_logits, 1)[:, 1].numpy() if fold.num_classes == 2 else None
            acc, bacc = CL.accuracy(pred, item_y, fold.num_classes)
            row = {"dataset": fold.dataset, "heldout": fold.heldout, "method": name,
                   "kind": "joint" if m is None else m.kind, "seed": seed, "acc": acc, "bacc": bacc,
                   "auroc": CL.auroc(prob, item_y) if prob is not None else float("nan"),
                   "crop_acc": float((logits.argmax(1).numpy() == fold.test_y).mean()),
                   "n_train": int(len(fold.train_y)), "n_test_items": int(len(items)),
                   "peer_failures": 0 if m is None else m.failures, "seconds": round(time.perf_counter() - t0, 1),
                   "correct": (pred == item_y).astype(int).tolist(),
                   # class-1 scores as float32 holds them (9 digits): the AUROC above, recomputable for paired
                   # intervals (runs before 2026-12-03 kept 4 decimals, whose ties change AUROC)
                   "score": [float(f"{v:.9g}") for v in prob] if prob is not None else None,
                   **({"label": item_y.astype(int).tolist()} if prob is not None else {})}
            if m is None:  # does the jointly trained ContriMix still render each hospital faithfully?
                from contrimix_aug.quality import reconstruction

                hook.model.eval()
                for side, xs in (("train", xtr), ("test", xte)):
                    row[f"{side}_recon_psnr_db"] = round(float(reconstruction(hook.model, xs)["psnr"].mean()), 2)
            record(row, rows, journal, log, f"acc {acc:.3f}  AUROC {row['auroc']:.3f}", m, device)
    return rows


def same_method(done: dict[str, Any], method: Method | None) -> None:
    """Refuse to resume a journaled run that recorded another method under the same name (the code changed what
    the name means: its settings, p, donors or bank), rather than mix the two in one table."""
    ran = (done.get("ran") or {}).get("note")
    if method is not None and ran is not None and ran != method.note:
        raise SystemExit(
            f"[{done['dataset']}] {done['heldout']} {done['method']} seed {done['seed']}: the journal's run ran "
            f"{ran!r}, this code builds {method.note!r}. Same name, another method: give the new one its own name "
            "(a post-hoc row), or start a fresh --work."
        )


def record(row: dict[str, Any], rows: list[dict[str, Any]], journal: Journal | None, log: Callable[[str], None],
           scores: str, method: Method | None = None, device: torch.device | str | None = None) -> None:
    """A finished run: kept in ``rows``, journaled (so a restart skips it), logged with its ``scores``. The row
    records what ran (the method's package and settings, this library's version): a published file may be written
    later, by newer code, and the journal may join runs of several machines."""
    row["ran"] = {"library": f"contrimix_aug {contrimix_aug.__version__}",
                  **({"device": torch.device(device).type} if device is not None else {}),
                  **({"package": method.package, "note": method.note} if method is not None else {})}
    rows.append(row)
    if journal is not None:
        journal.add(row)
    fails = row.get("peer_failures")
    log(f"[{row['dataset']}] {row['heldout']:12s} seed {row['seed']} {row['method']:28s} {scores}  "
        f"({row['seconds']:.1f}s{', peer failures %d' % fails if fails else ''})")


CLASSIFICATION_METRICS = ("acc", "bacc", "auroc", "crop_acc")


def summarise(rows: list[dict[str, Any]], methods: Sequence[str],
              metrics: Sequence[str] = CLASSIFICATION_METRICS) -> list[dict[str, Any]]:
    """Per dataset × held-out domain × method: mean ± std over seeds of each metric (classification: accuracy,
    balanced accuracy, AUROC, per-crop accuracy; segmentation: AJI, Dice)."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        for held in dict.fromkeys(r["heldout"] for r in rows if r["dataset"] == ds):
            for m in methods:
                rm = [r for r in rows if r["dataset"] == ds and r["heldout"] == held and r["method"] == m]
                if not rm:
                    continue
                row = {"dataset": ds, "heldout": held, "method": m, "kind": rm[0]["kind"], "seeds": len(rm)}
                for k in metrics:
                    row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r[k] for r in rm])
                out.append(row)
    return out


def _paired_auroc(mine: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, float] | None:
    """Paired AUROC difference of two methods' runs (same seeds, in order), or None when the runs cannot give it:
    no ``label`` list, other items, or scores that do not reproduce each run's recorded AUROC (4-decimal scores)."""
    runs = mine + ref
    if any(r.get("label") is None or r.get("score") is None for r in runs):
        return None
    labels = np.asarray(runs[0]["label"])
    if any(r["label"] != runs[0]["label"] for r in runs) or len({0, 1} & set(labels.tolist())) < 2:
        return None
    if any(abs(CL.auroc(np.asarray(r["score"]), labels) - r["auroc"]) > 1e-9 for r in runs):
        return None
    return paired_auroc_bootstrap(np.array([r["score"] for r in mine]), np.array([r["score"] for r in ref]), labels)


def paired_table(rows: list[dict[str, Any]], reference: str, *, exclude: Sequence[str] = (),
                 item: str = "correct") -> list[dict[str, Any]]:
    """Per dataset × held-out domain: every method against ``reference`` (paired over seeds and test items);
    ``item``: the rows' per-item score list (``correct``; segmentation: ``tile_aji`` / ``tile_dice``), or ``auroc``
    (binary tasks: from the rows' ``score`` and ``label`` lists; a pair whose runs lack them is left out)."""
    out = []
    keys = dict.fromkeys((r["dataset"], r["heldout"]) for r in rows)
    for ds, held in keys:
        rs = [r for r in rows if r["dataset"] == ds and r["heldout"] == held]
        ref = {r["seed"]: r for r in rs if r["method"] == reference}
        for m in dict.fromkeys(r["method"] for r in rs):
            if m == reference or m in exclude:
                continue
            mine = {r["seed"]: r for r in rs if r["method"] == m}
            seeds = sorted(set(ref) & set(mine))
            if not seeds:
                continue
            if item == "auroc":
                res = _paired_auroc([mine[s] for s in seeds], [ref[s] for s in seeds])
                if res is None:
                    continue
            else:
                res = paired_bootstrap(np.array([mine[s][item] for s in seeds]), np.array([ref[s][item] for s in seeds]))
            out.append({"dataset": ds, "heldout": held, "method": m, "versus": reference,
                        **({} if item == "correct" else {"metric": item.removeprefix("tile_")}), **res})
    return out
