"""The training loop behind ``contrimix-aug train``: single process or ``torchrun`` (DDP), resumable bit for bit.

Reproducibility design: everything random is *derived* from ``(seed, purpose, rank, step/position)`` rather
than carried in generator state — model init, the held-out split, the epoch orders, each patch's crop,
rotation and flip, and each step's donor draw (a ``torch.Generator`` re-seeded every step). A checkpoint
therefore pins the whole future of a run with the step number, the model, the optimiser and the GradScaler.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .._version import __version__
from .._io import atomic_write, remove_stale_temp_files
from .._seeding import derive_seed
from ..bank import compute_bank
from ..model import ContriMixModel
from ..quality import psnr, reconstruction
from ..weights import save_weights
from ..weights_meta import WeightsMeta
from .contrimix_loss import ContriMixLoss
from .resume import CheckpointError, load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from .stream import (
    IndexStream,
    StepBatches,
    TrainPatches,
    center_patch,
    check_image_sizes,
    image_of,
    open_datasets,
    split_indices,
)
from .train_config import RESUMABLE_CHANGES, TrainConfig

__all__ = ["Trainer", "train", "lr_factor"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHECKPOINT_NAME = "checkpoint.safetensors"
WEIGHTS_NAME = "weights.safetensors"
METRICS_NAME = "metrics.json"


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at (0-based) ``step``: linear warm-up to 1, then the decay ``schedule``.

    Warm-up: (step + 1) / warmup_steps. Then with t = (step − warmup) / (steps − warmup) in [0, 1):
    ``cosine`` m + (1 − m)·(1 + cos πt)/2, ``linear`` m + (1 − m)·(1 − t), ``constant`` 1, with
    m = ``min_lr_ratio``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    t = (step - warmup_steps) / max(1, steps - warmup_steps)
    decay = 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


def _setup(device_pref: str) -> tuple[_Dist, torch.device]:
    """Device and process group from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch sees no CUDA device; use --device cpu.")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), torch.device("cuda" if use_cuda else "cpu")
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    d = _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)
    return d, device


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    cuda = device.type == "cuda"
    if amp == "none" or (amp == "auto" and not cuda):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if amp == "fp16":
        if not cuda:
            raise ValueError("amp: fp16 needs a CUDA device; use --amp bf16 or none on CPU.")
        return torch.float16
    if cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("amp: this GPU has no bf16 support; use --amp fp16.")
    return torch.bfloat16


def _due(every: int, done: int, total: int) -> bool:
    return done == total or (every > 0 and done % every == 0)


PROGRESS_LINE_MIN_STEPS = 10
"""Without a progress bar, a log line comes at least this many steps apart (besides validations and checkpoints)."""


def progress_line_every(log_every: int) -> int:
    """Steps between the log lines of a run without a progress bar (``--no-progress``): ``log_every``, or its
    smallest multiple of at least :data:`PROGRESS_LINE_MIN_STEPS` steps (``log_every = 1`` keeps a fine metrics
    history without a line per step); 0 when ``log_every`` is 0 (lines at validations and checkpoints only)."""
    if log_every <= 0:
        return 0
    return log_every * math.ceil(PROGRESS_LINE_MIN_STEPS / log_every)


class Trainer:
    """One training run. ``Trainer(config).run()`` is :func:`train`; the attributes are there to inspect.

    Attributes:
        model: the :class:`ContriMixModel` being trained (unwrapped).
        loss_fn: its :class:`ContriMixLoss` (wrapped in DDP as ``net`` under torchrun).
        optimizer: AdamW with the configured weight decay.
        step: optimiser steps done.
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, data: Any = None) -> None:
        self._data = data
        cfg = self.config = config.validate()
        self.out = Path(cfg.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.dist, self.device = _setup(cfg.device)
        try:
            self._build(resume)
        except BaseException:
            if self.dist.owns_group:
                torch.distributed.destroy_process_group()
            raise

    def _build(self, resume: bool) -> None:
        cfg = self.config
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        if self._data is not None:  # images in memory (a Dataset of (C, H, W) tensors): a seeded held-out split
            self.train_set = self.val_set = self._data
            self.train_idx, self.val_idx = split_indices(len(self._data), cfg.val_size, cfg.seed)
        else:
            self.train_set, self.train_idx, self.val_set, self.val_idx = open_datasets(
                cfg.data, patch_size=cfg.patch_size, seed=cfg.seed, val_size=cfg.val_size,
                progress=cfg.progress and self.dist.rank == 0, channels=cfg.channels,
                data_root=cfg.data_root or None,
            )
        if not self.train_idx:
            raise ValueError(f"data {cfg.data!r}: no training images left.")
        check_image_sizes(self.train_set, self.train_idx, cfg.patch_size)  # before step 0, naming the file
        check_image_sizes(self.val_set, self.val_idx, cfg.patch_size, role="validation")
        self.model_config = cfg.model_config(in_channels=image_of(self.train_set[self.train_idx[0]]).shape[0])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(cfg.seed, "init"))
            self.model = ContriMixModel(self.model_config)
        self.model.to(self.device)
        self.loss_fn = ContriMixLoss(self.model, cfg.loss_weights(), cfg.num_mixes, restain=cfg.restain_config())
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.generator = torch.Generator(device=self.device)
        self.stream = IndexStream(len(self.train_idx), cfg.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self._val_cache: torch.Tensor | None = None
        self._train_seconds = 0.0
        self.last_checkpoint_step: int | None = None

        if self.checkpoint_path.is_file():
            if not resume:
                raise ValueError(
                    f"{self.out} already holds a training checkpoint; pass --resume to continue it, "
                    "or choose another --out."
                )
            self._load_checkpoint()
        elif resume:
            self._note(f"--resume: no checkpoint in {self.out}, starting from step 0.")
        if self.dist.rank == 0:
            remove_stale_temp_files(self.checkpoint_path)

        self.net: torch.nn.Module = self.loss_fn
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The only buffer is the (empty, unused in training) attribute bank: no per-step buffer sync.
            ddp_args = inspect.signature(DistributedDataParallel).parameters
            no_sync = "forward_sync_buffers" if "forward_sync_buffers" in ddp_args else "broadcast_buffers"
            self.net = DistributedDataParallel(self.loss_fn, device_ids=ids, **{no_sync: False})

    # -- helpers -------------------------------------------------------------------------------------
    def _note(self, msg: str) -> None:
        if self.dist.rank == 0:
            print(f"contrimix-aug train: {msg}", file=sys.stderr)

    def _loader(self) -> DataLoader:
        cfg = self.config
        workers = cfg.num_workers
        if workers < 0:
            cores = os.cpu_count() or 1
            workers = 0 if cores <= 2 else min(8, cores // (2 * self.dist.world_size) or 1)
        patches = TrainPatches(self.train_set, self.train_idx, cfg.patch_size, cfg.seed, cfg.patch_scale)
        batches = StepBatches(self.stream, self.step, cfg.steps, cfg.batch_size, self.dist.rank, self.dist.world_size)
        return DataLoader(
            patches, batch_sampler=batches, num_workers=workers, pin_memory=self.device.type == "cuda"
        )

    def _central_patches(self, dataset: Any, indices: list[int]) -> torch.Tensor:
        return torch.stack([center_patch(image_of(dataset[i]), self.config.patch_size) for i in indices])

    # -- checkpoints ---------------------------------------------------------------------------------
    def _state(self, optimizer_rest: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        position = self.step * cfg.batch_size * self.dist.world_size
        return {
            "step": self.step,
            "config": cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
            "world_size": self.dist.world_size,
            "optimizer": optimizer_rest,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {
                "scheme": "derived: donors seeded by (seed, rank, step); patches by (seed, stream position); "
                "epoch order by (seed, epoch)",
                "seed": cfg.seed,
                "stream_position": position,
                "epoch": position // len(self.train_idx),
            },
            "history": self.history,
            "val_history": self.val_history,
            "train_seconds": self._train_seconds,
            "library_version": __version__,
            "torch_version": torch.__version__,
        }

    def save_checkpoint(self) -> Path:
        """Write ``out/checkpoint.safetensors`` (rank 0 only; call on every rank under torchrun)."""
        self.dist.barrier()
        if self.dist.rank == 0:
            tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
            opt_tensors, opt_rest = optimizer_to_tensors(self.optimizer)
            save_checkpoint(self.checkpoint_path, {**tensors, **opt_tensors}, self._state(opt_rest))
            self._write_metrics()
        self.last_checkpoint_step = self.step
        self.dist.barrier()
        return self.checkpoint_path

    def _load_checkpoint(self) -> None:
        tensors, state = load_checkpoint(self.checkpoint_path)
        # settings added after the checkpoint was written count as their defaults
        saved = {**TrainConfig().to_dict(), **state["config"]}
        now = self.config.to_dict()
        diff = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
            started = saved.get("command") or ""
            again = f" It was started with: {started}; resume with that command" + (
                "" if "--resume" in started.split() else " and --resume") + "." if started else ""
            raise CheckpointError(
                f"{self.checkpoint_path}: the checkpoint was made with other settings ({detail}); resume with "
                f"the same settings or start a new run in another --out.{again}"
            )
        if state["world_size"] != self.dist.world_size:
            raise CheckpointError(
                f"{self.checkpoint_path}: saved with {state['world_size']} process(es), resumed with "
                f"{self.dist.world_size}; the global batch and data order would change. Use the same world size."
            )
        if state["step"] > self.config.steps:
            raise CheckpointError(
                f"{self.checkpoint_path}: already at step {state['step']} > --steps {self.config.steps}."
            )
        model_sd = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(model_sd, strict=True)
        optimizer_from_tensors(self.optimizer, tensors, state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.val_history = list(state.get("val_history", []))
        self._train_seconds = float(state.get("train_seconds", 0.0))
        self.last_checkpoint_step = self.step
        self._note(f"resumed from {self.checkpoint_path} at step {self.step}.")

    # -- evaluation and export -----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Self-reconstruction PSNR (dB) and SSIM on the held-out images' central patches (fp32)."""
        if not self.val_idx:
            return None
        if self._val_cache is None:
            self._val_cache = self._central_patches(self.val_set, self.val_idx)
        was_training = self.model.training
        self.model.eval()
        scores = reconstruction(self.model, self._val_cache, self.config.batch_size)
        self.model.train(was_training)
        return {"psnr": scores["psnr"].mean().item(), "ssim": scores["ssim"].mean().item(), "images": len(self.val_idx)}

    @torch.no_grad()
    def attribute_bank(self) -> torch.Tensor:
        """(N, C, K) attributes of the central patches of up to ``bank_size`` training images (seeded sample)."""
        cfg = self.config
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "bank"))
        order = torch.randperm(len(self.train_idx), generator=g)[: cfg.bank_size].tolist()
        chosen = [self.train_idx[i] for i in order]
        if not chosen:
            return torch.zeros(0, self.model_config.in_channels, self.model_config.num_attributes)
        was_training = self.model.training
        self.model.eval()
        try:  # the package's one bank encoder (contrimix_aug.bank), on the central patches
            return compute_bank(self.model, self._central_patches(self.train_set, chosen), batch_size=cfg.batch_size)
        finally:
            self.model.train(was_training)

    def _metrics(self) -> dict[str, Any]:
        cfg = self.config
        images = self.step * cfg.batch_size * self.dist.world_size
        return {
            "steps": self.step,
            "epochs": images / len(self.train_idx),
            "world_size": self.dist.world_size,
            "global_batch": cfg.batch_size * self.dist.world_size,
            "train_images": len(self.train_idx),
            "val_images": len(self.val_idx),
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "none",
            "train_seconds": round(self._train_seconds, 3),
            "images_per_second": round(images / self._train_seconds, 2) if self._train_seconds else None,
            "final_train": self.history[-1] if self.history else None,
            "final_val": self.val_history[-1] if self.val_history else None,
            "history": self.history,
            "validation": self.val_history,
            "config": cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
        }

    def _write_metrics(self) -> None:
        text = json.dumps(self._metrics(), indent=1, sort_keys=True)
        atomic_write(self.out / METRICS_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def export(self) -> Path:
        """Write ``out/weights.safetensors`` with the attribute bank and the run's metadata (rank 0)."""
        cfg = self.config
        self.model.bank = self.attribute_bank().to(self.model.bank.device)
        lo, hi = cfg.patch_scale
        um = getattr(self.train_set, "um_per_px", None)
        name = self.out.name if _NAME_RE.match(self.out.name) else "trained"
        meta = WeightsMeta(
            name=name,
            modality="fluorescence" if self.model_config.mode == "linear" else "he",
            library_version=__version__,
            num_params=self.model.num_params,
            training_data=cfg.data,
            um_per_px=(um * lo, um * hi) if isinstance(um, (int, float)) else None,
            bank_source=f"central patches of {int(self.model.bank.shape[0])} training images",
            training={
                "command": cfg.command, "seed": cfg.seed, "steps": self.step, "patch_size": cfg.patch_size,
                "num_mixes": cfg.num_mixes, "loss_weights": cfg.loss_weights().to_dict(),
                "world_size": self.dist.world_size, "global_batch": cfg.batch_size * self.dist.world_size,
                "train_config": cfg.to_dict(),
                "metrics": {"val": self.val_history[-1] if self.val_history else None,
                            "train": self.history[-1] if self.history else None},
            },
        )
        return save_weights(self.model, self.out / WEIGHTS_NAME, meta=meta)

    # -- the loop ------------------------------------------------------------------------------------
    def _log(self, sums: torch.Tensor, count: int, keys: list[str], lr: float, tick: float) -> dict[str, float]:
        """Average the accumulated statistics (over ranks too), one host sync; time the interval since ``tick``."""
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(sums)
            sums = sums / self.dist.world_size
        values = (sums / max(count, 1)).tolist()
        elapsed = time.perf_counter() - tick
        self._train_seconds += elapsed
        images = count * self.config.batch_size * self.dist.world_size
        row = {"step": self.step, "lr": lr, **{k: round(v, 6) for k, v in zip(keys, values)},
               "images_per_second": round(images / elapsed, 2)}
        self.history.append(row)
        return row

    def run(self) -> Path:
        """Train up to ``config.steps``, validating and checkpointing on schedule; export; return the weights path."""
        cfg = self.config
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                       disable=not cfg.progress or self.dist.rank != 0)
            autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                        else nullcontext())
            params = list(self.model.parameters())
            keys: list[str] = []
            sums: torch.Tensor | None = None
            count = 0
            lr = cfg.lr
            self.model.train()
            tick = time.perf_counter()
            for images in self._loader():
                images = images.to(self.device, non_blocking=True)
                lr = cfg.lr * lr_factor(self.step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.generator.manual_seed(derive_seed(cfg.seed, "donors", self.dist.rank, self.step))
                with autocast:
                    total, terms, aux = self.net(images, generator=self.generator)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(total).backward()
                    self.scaler.unscale_(self.optimizer)
                else:
                    total.backward()
                if cfg.grad_clip:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                else:
                    grad_norm = torch.zeros((), device=self.device)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.step += 1

                with torch.no_grad():  # accumulate on device: no host sync until a log step
                    stat = torch.stack([total.detach().float(), *(v.detach().float() for v in terms.values()),
                                        psnr(aux["reconstruction"], images).mean(), grad_norm.float()])
                del total, aux  # the generated views stay alive otherwise, through the next forward
                if sums is None:
                    keys = ["loss", *terms, "psnr", "grad_norm"]
                    sums = torch.zeros_like(stat)
                sums += stat
                count += 1
                bar.update(1)
                if not any(_due(every, self.step, cfg.steps)
                           for every in (cfg.log_every, cfg.val_every, cfg.checkpoint_every)):
                    continue
                row = self._log(sums, count, keys, lr, tick)
                sums.zero_()
                count = 0
                bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}")
                val = None
                if _due(cfg.val_every, self.step, cfg.steps) and self.dist.rank == 0:
                    val = self.validate()
                    if val is not None:
                        self.val_history.append({"step": self.step, **val})
                        bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr']:.2f}",
                                        val_psnr=f"{val['psnr']:.2f}")
                if _due(cfg.checkpoint_every, self.step, cfg.steps):
                    self.save_checkpoint()
                if not cfg.progress and (val is not None or _due(cfg.checkpoint_every, self.step, cfg.steps)
                                         or _due(progress_line_every(cfg.log_every), self.step, cfg.steps)):
                    # batch jobs (no bar): one line at a fixed step interval and per validation or checkpoint
                    vtxt = f", val PSNR {val['psnr']:.2f} dB" if val is not None else ""
                    ctxt = ", checkpoint saved" if _due(cfg.checkpoint_every, self.step, cfg.steps) else ""
                    self._note(f"step {self.step}/{cfg.steps}: loss {row['loss']:.4f}, train PSNR {row['psnr']:.2f} dB"
                               f"{vtxt}, {row['images_per_second']:.1f} img/s{ctxt}")
                tick = time.perf_counter()
            bar.close()
            path = self.out / WEIGHTS_NAME
            if self.dist.rank == 0:
                path = self.export()
                self._write_metrics()
            self.dist.barrier()
            return path
        except KeyboardInterrupt:
            bar.close()
            if self.last_checkpoint_step is None:
                self._note(f"interrupted at step {self.step}, before the first checkpoint: nothing was kept. "
                           f"Checkpoints are written every {cfg.checkpoint_every} steps (--checkpoint-every).")
            else:
                again = cfg.command or "contrimix-aug train ..."
                self._note(f"interrupted at step {self.step}; the last checkpoint (step {self.last_checkpoint_step}) is "
                           f"{self.checkpoint_path}. Continue with: {again}{'' if '--resume' in again else ' --resume'}")
            raise
        finally:
            if self.dist.owns_group:
                torch.distributed.destroy_process_group()


def train(config: TrainConfig, *, resume: bool = False, data: Any = None) -> Path:
    """Train a ContriMix model as ``config`` says; returns the path of the exported ``weights.safetensors``.

    ``data``: train on these images instead of ``config.data`` (any ``Dataset`` whose items are (C, H, W) float
    tensors in [0, 1], or (image, ...) tuples); ``config.data`` then only names them in the metadata.

    With ``resume=True`` an existing ``out/checkpoint.safetensors`` is continued (same settings required;
    ``steps`` may grow); without it an existing checkpoint is an error, so runs are never overwritten.
    """
    return Trainer(config, resume=resume, data=data).run()
