"""The ContriMix models of the benchmark: bundled weights, per-fold models trained on the training domains only
(with a quality gate), and the authors' joint protocol (ContriMix loss and classifier trained together).

Per-fold models are trained with :func:`contrimix_aug.training.train` on the training domains' images only, in
rounds, until their self-reconstruction PSNR on held-out training-domain images reaches ``target_db`` (the
bundled weights' measured quality) or the step cap is hit; the budget spent and the PSNR reached are recorded,
and a model that misses the target is reported as such. Models are cached in ``fold_dir`` under a name that
carries the recipe's hash, so a model trained under another recipe is never reused.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .methods import to_float

__all__ = ["JointObjective", "fold_model", "load_bundled"]


def load_bundled(name: str) -> tuple[Any, str]:
    """(model or None, label): a bundled weights name, labelled with what its metadata says it was trained on."""
    import contrimix_aug

    try:
        model = contrimix_aug.load_model(name)
    except Exception as err:  # noqa: BLE001 - missing weights
        return None, f"not run: weights {name!r} not available ({str(err).splitlines()[0][:160]})"
    meta = model.meta
    label = f"bundled weights {name!r}; trained on {meta.training_data if meta else 'unknown'}"
    return model, label


class _Images(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


def fold_model(key: str, images: np.ndarray, *, recipe: str, target_db: float, seed: int = 0, steps: int = 600,
               max_steps: int = 2400, patch: int | None = None, fold_dir: str | Path | None = None,
               overrides: dict[str, Any] | None = None, train: bool = True, log=print) -> tuple[Any, dict[str, Any]]:
    """A ContriMix model trained on ``images`` ((N, H, W, C) uint8/uint16/float) only, with a quality gate.

    Returns (model, info): info records the recipe, steps, training time (summed over resumed rounds), the
    held-out PSNR reached and whether it met ``target_db``. With ``train=False`` only a finished model in
    ``fold_dir`` is returned; else (None, info saying it is not trained) and nothing is trained.
    """
    import contrimix_aug
    from contrimix_aug.training import TrainConfig, Trainer, load_recipe

    settings = {**load_recipe(recipe), **(overrides or {})}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    fname = f"{key.replace('/', '-')}__{tag}.safetensors"
    if fold_dir and (Path(fold_dir) / fname).is_file():
        model = contrimix_aug.load_model(str(Path(fold_dir) / fname))
        info = dict(model.meta.extra.get("fold_info", {}), loaded_from=fname)
        log(f"per-fold ContriMix {key}: loaded {Path(fold_dir) / fname}")
        return model, info
    if not train:
        return None, {"recipe": recipe, "recipe_sha": tag, "not_trained": True}
    log(f"training the per-fold ContriMix on {len(images)} training-domain images ({key})")
    x = to_float(images)
    size = patch or min(x.shape[-2:])
    # with a fold_dir the training folder persists beside the cache, so a killed benchmark resumes the fold model
    work = Path(fold_dir) / f"{fname[: -len('.safetensors')]}.work" if fold_dir else Path(tempfile.mkdtemp(
        prefix="cmx_fold_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done, val = 0, float("nan")
    if (work / "checkpoint.safetensors").is_file():
        from contrimix_aug.training.resume import load_checkpoint

        _, state = load_checkpoint(work / "checkpoint.safetensors")
        done = int(state["step"])
        val = state["val_history"][-1]["psnr"] if state.get("val_history") else float("nan")
        log(f"  fold model {key}: resuming its training from step {done} ({work})")
    def trained() -> bool:  # a round has ended on target or on the step cap
        return bool(done) and (val >= target_db or done >= max_steps)

    while not (trained() and (work / "weights.safetensors").is_file()):
        if not trained():  # else: the last round's export is missing (killed after its checkpoint): redo it
            done = min(max_steps, steps if done == 0 else done + steps)
        cfg = TrainConfig.from_dict({
            **settings, "data": f"fold:{key}", "out": str(work), "steps": done, "patch_size": size, "seed": seed,
            "progress": False, "checkpoint_every": done, "val_every": done, "log_every": 0, "device": "auto",
            "val_size": min(64, max(4, len(x) // 10)), "bank_size": 256, "num_workers": 0,
            "channels": x.shape[1] if x.shape[1] in (1, 3) else None,
        })
        trainer = Trainer(cfg, resume=(work / "checkpoint.safetensors").is_file(), data=_Images(x))
        trainer.run()
        val = trainer.val_history[-1]["psnr"] if trainer.val_history else float("nan")
        log(f"  fold model {key}: {done} steps, held-out PSNR {val:.2f} dB (target {target_db:.2f})")
    model = contrimix_aug.load_model(str(work / "weights.safetensors"))
    train_s = time.perf_counter() - t0
    if (work / "checkpoint.safetensors").is_file():  # summed over every resumed round, not this call's share
        from contrimix_aug.training.resume import load_checkpoint

        train_s = float(load_checkpoint(work / "checkpoint.safetensors")[1].get("train_seconds", train_s))
    info = {"recipe": recipe, "recipe_sha": tag, "steps": done, "train_images": int(len(x)),
            "train_s": round(train_s, 1), "heldout_psnr_db": round(float(val), 2),
            "target_db": target_db, "target_met": bool(val >= target_db)}
    if fold_dir:
        Path(fold_dir).mkdir(parents=True, exist_ok=True)
        meta = model.meta.replace(extra={**model.meta.extra, "fold_info": info})
        contrimix_aug.save_weights(model, Path(fold_dir) / fname, meta=meta)
    return model, info


class JointObjective(nn.Module):
    """The authors' joint protocol as a classifier training step: the ContriMix loss (their Camelyon weights 0.1 /
    0.1 / 0.3 / 0 and cross-entropy 0.5) on a fresh ContriMix model trained together with the classifier, which sees
    the self-reconstruction and M = 4 re-renderings of every image. At test time the classifier sees the
    self-reconstruction (:meth:`prepare`), as in the paper."""

    def __init__(self, config_overrides: dict[str, Any] | None = None, *, recipe: str = "camelyon", num_mixes: int = 4,
                 seed: int = 0, in_channels: int = 3) -> None:
        super().__init__()
        from contrimix_aug import ContriMixModel
        from contrimix_aug.training import ContriMixLoss, LossWeights, TrainConfig, load_recipe

        settings = {**load_recipe(recipe), **(config_overrides or {}), "data": "joint", "out": "-"}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = ContriMixModel(TrainConfig.from_dict(settings).model_config(in_channels))
        self.loss = ContriMixLoss(self.model, LossWeights.preset("camelyon-joint"), num_mixes)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, classifier: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self.model.train()
        total, _, _ = self.loss(xb, generator=self.generator, classifier=classifier, labels=yb)
        return total

    @torch.no_grad()
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)
