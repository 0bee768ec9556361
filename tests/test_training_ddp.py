"""Two CPU processes (gloo, fork) train like one process whose step averages the two ranks' losses: with the tiny
test architecture and with the shipped recipes (he-lite on real H&E tiles, fluorescence-lite on a folder of grey
PNGs made from the bundled real fluorescence tiles, read with channels=1). Every parameter must get a gradient
(DDP refuses otherwise) and the replicas must stay identical."""

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
from PIL import Image
from safetensors.torch import load_file, save_file

from contrimix_aug import load_weights
from contrimix_aug._seeding import derive_seed
from contrimix_aug.training import TrainConfig, Trainer, load_recipe, lr_factor
from contrimix_aug.training.stream import TrainPatches

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
    patches = TrainPatches(t.train_set, t.train_idx, cfg.patch_size, cfg.seed, cfg.patch_scale)
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



def _recipe_config(recipe: str, data: Path, out: Path, **overrides) -> TrainConfig:
    """A shipped recipe, cut down to a couple of small steps (the architecture and loss stay the recipe's)."""
    settings = {**load_recipe(recipe), "data": str(data), "out": str(out), "steps": STEPS, "batch_size": 4,
                "val_every": 0, "checkpoint_every": 0, "val_size": 2, "bank_size": 4, "num_workers": 0,
                "device": "cpu", "progress": False, "warmup_steps": 1, **overrides}
    return TrainConfig(**settings)


def _configs(kind: str, tile_folder: Path, grey_folder: Path, out: Path) -> TrainConfig:
    if kind == "tiny":
        return make_config(tile_folder, out, steps=STEPS, val_every=0, checkpoint_every=0)
    if kind == "he-lite":
        return _recipe_config("he-lite", tile_folder, out)
    return _recipe_config("fluorescence-lite", grey_folder, out, channels=1)


@pytest.mark.parametrize("kind", ["tiny", "he-lite", "fluorescence-lite"])
def test_two_process_ddp(kind, tile_folder, grey_folder, tmp_path):
    cfg = _configs(kind, tile_folder, grey_folder, tmp_path / "ddp")
    settings = {**cfg.to_dict(), "betas": tuple(cfg.betas)}
    # fork: the workers inherit the imported torch (a spawned one spends ~10 s importing on a busy runner);
    # _worker drops to one intra-op thread before any op, as DataLoader workers do, so OpenMP stays safe.
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a process that has (OpenMP) threads
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = mp.start_processes(_worker, args=(_free_port(), settings, str(tmp_path)), nprocs=WORLD, join=False,
                                 start_method="fork")
    deadline = time.monotonic() + 180
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # pragma: no cover
            for p in ctx.processes:
                p.kill()
            pytest.fail("DDP workers did not finish within 180 s")

    r0, r1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in range(WORLD))
    assert r0.keys() == r1.keys()
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"replicas diverged at {name}"

    single = _configs(kind, tile_folder, grey_folder, tmp_path / "single")
    expected = _emulate(single)
    for name, value in expected.items():
        torch.testing.assert_close(r0[name], value, rtol=1e-5, atol=1e-6, msg=name)
    init = Trainer(_configs(kind, tile_folder, grey_folder, tmp_path / "init")).model.state_dict()
    assert any(not torch.equal(init[k], r0[k]) for k in init), "training did not move the weights"

    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD and metrics["global_batch"] == WORLD * cfg.batch_size
    w = load_weights(tmp_path / "ddp" / "weights.safetensors")
    channels = 1 if kind == "fluorescence-lite" else 3
    assert w.config.in_channels == channels and w.meta.training["world_size"] == WORLD
    if kind != "tiny":
        assert w.config.content_bias_before_norm is False  # the recipes' lean convolutions
        assert w.config.mode == ("linear" if channels == 1 else "absorbance")
    assert not (Path(tmp_path) / "single" / "weights.safetensors").exists()


@pytest.mark.parametrize("recipe", ["he-lite", "camelyon"])
def test_torchrun_with_a_shipped_recipe(recipe, tile_folder, tmp_path):
    """The command of the report, through torchrun and the CLI: two processes, a shipped recipe, a few steps."""
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "contrimix_aug.cli", "train", str(tile_folder), "--out", str(out), "--steps", "3", "--batch-size", "4",
           "--config", recipe, "--patch-size", "32", "--device", "cpu", "--no-progress", "--num-workers", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if res.returncode != 0 and "terminate called without an active exception" in res.stderr:
        # seen once (2026-12-03, a full-suite run on the 2-core CI machine; 4 later runs passed): a worker aborts
        # in C++ teardown after its last step (rank 1, SIGABRT), not in our code; one retry on a fresh folder and
        # port, never more
        out = tmp_path / "retry"
        cmd[cmd.index("--master_port") + 1], cmd[cmd.index("--out") + 1] = str(_free_port()), str(out)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert load_weights(out / "weights.safetensors").meta.training["world_size"] == 2
