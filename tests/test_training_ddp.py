"""Two CPU processes (gloo) train like one process whose step averages the two ranks' losses."""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from contrimix_aug.training import TrainConfig, Trainer, lr_factor
from contrimix_aug.training.data import TrainPatches, derive_seed

from test_training_loop import make_config

WORLD = 2
STEPS = 2


def _worker(rank: int, port: int, settings: dict, dump: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    trainer = Trainer(TrainConfig(**settings))
    trainer.run()
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{dump}/rank{rank}.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emulate(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """One process doing what DDP should: per step, each rank's batch and donors, gradients averaged."""
    t = Trainer(cfg)  # same seed -> same init; world size 1 here
    patches = TrainPatches(t.train_set, t.train_idx, cfg.patch_size, cfg.seed)
    for step in range(STEPS):
        t.optimizer.zero_grad()
        for rank in range(WORLD):
            images = torch.stack([patches[key] for key in t.stream.batch(step, cfg.batch_size, rank, WORLD)])
            t.generator.manual_seed(derive_seed(cfg.seed, "donors", rank, step))
            (t.loss_fn(images, generator=t.generator)[0] / WORLD).backward()
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip)
        for g in t.optimizer.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
        t.optimizer.step()
    return t.model.state_dict()


def test_two_process_ddp(tile_folder, tmp_path):
    cfg = make_config(tile_folder, tmp_path / "ddp", steps=STEPS, val_every=0, checkpoint_every=0)
    settings = {**cfg.to_dict(), "betas": tuple(cfg.betas)}
    # fork: the workers inherit the imported torch (a spawned one spends ~10 s importing on a busy runner);
    # _worker drops to one intra-op thread before any op, as DataLoader workers do, so OpenMP stays safe.
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a process that has (OpenMP) threads
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = mp.start_processes(_worker, args=(_free_port(), settings, str(tmp_path)), nprocs=WORLD, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # pragma: no cover
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 120 s")

    r0, r1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in range(WORLD))
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"replicas diverged at {name}"

    expected = _emulate(make_config(tile_folder, tmp_path / "single", steps=STEPS, val_every=0, checkpoint_every=0))
    for name, value in expected.items():
        torch.testing.assert_close(r0[name], value, rtol=1e-5, atol=1e-6, msg=name)

    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD and metrics["global_batch"] == WORLD * cfg.batch_size
    assert (tmp_path / "ddp" / "weights.safetensors").is_file()
    assert not (Path(tmp_path) / "single" / "weights.safetensors").exists()
