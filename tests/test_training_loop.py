"""The training loop on a folder of real H&E tiles: resume identity, atomic checkpoints, weight decay, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from contrimix_aug import load_weights
from contrimix_aug.training import ContriMixLoss, TrainConfig, Trainer, load_config, lr_factor, train
from contrimix_aug.training.checkpoint import CheckpointError, load_checkpoint


def make_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A tiny but real run: 32 px patches, K = 3, M = 2, a small attribute encoder."""
    settings = dict(
        data=str(data), out=str(out), steps=6, batch_size=4, patch_size=32, num_attributes=3, num_mixes=2,
        model={"content_hidden": 4, "attr_widths": [4, 8, 8]}, warmup_steps=2, checkpoint_every=3, val_every=3,
        log_every=1, val_size=4, bank_size=8, progress=False, num_workers=0, device="cpu", lr=3e-3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def test_resume_after_kill_is_bit_identical(tile_folder, tmp_path, monkeypatch):
    ref = train(make_config(tile_folder, tmp_path / "ref"))
    # The same run, killed in the middle of step 5 (after the step-3 checkpoint, with step 4 lost).
    original = ContriMixLoss.forward
    calls = {"n": 0}

    def dying_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ContriMixLoss, "forward", dying_forward)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(tile_folder, tmp_path / "killed"))
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.safetensors")[1]["step"] == 3
    monkeypatch.setattr(ContriMixLoss, "forward", original)

    trainer = Trainer(make_config(tile_folder, tmp_path / "killed"), resume=True)
    assert trainer.step == 3
    resumed = trainer.run()

    a, b = _tensors(ref.parent / "checkpoint.safetensors"), _tensors(resumed.parent / "checkpoint.safetensors")
    assert sorted(a) == sorted(b) and any(k.startswith("optim/") for k in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    wa, wb = load_weights(ref), load_weights(resumed)
    for name in wa.state_dict:
        assert torch.equal(wa.state_dict[name], wb.state_dict[name]), name
    assert torch.equal(wa.bank, wb.bank)
    # and training moved the weights at all
    init = Trainer(make_config(tile_folder, tmp_path / "init")).model.state_dict()
    assert not torch.equal(init["attribute_encoder.head.weight"], wa.state_dict["attribute_encoder.head.weight"])


def test_checkpoint_write_is_atomic(tile_folder, tmp_path, monkeypatch):
    cfg = make_config(tile_folder, tmp_path / "run", steps=3)
    trainer = Trainer(cfg)
    trainer.run()
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    good = ckpt.read_bytes()

    import safetensors.torch

    def partial_then_crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 1000)  # half-written file...
        raise OSError("disk full")  # ...then the writer dies

    monkeypatch.setattr(safetensors.torch, "save_file", partial_then_crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert ckpt.read_bytes() == good
    assert not list(ckpt.parent.glob(".checkpoint*.tmp"))  # the temp file is cleaned up

    # A writer killed outright (SIGKILL) leaves its temp file: it is never read, and removed on restart.
    monkeypatch.undo()
    stale = ckpt.parent / ".checkpoint.safetensors.abc123.tmp"
    stale.write_bytes(b"garbage")
    resumed = Trainer(cfg, resume=True)
    assert resumed.step == 3 and not stale.exists()


def test_weight_decay_is_applied(tile_folder, tmp_path):
    lr, wd = 1e-2, 0.5
    kw = dict(steps=1, warmup_steps=0, schedule="constant", lr=lr, grad_clip=0.0, val_every=0, checkpoint_every=0)
    init = Trainer(make_config(tile_folder, tmp_path / "init", **kw)).model.state_dict()
    runs = {}
    for decay in (0.0, wd):
        t = Trainer(make_config(tile_folder, tmp_path / f"wd{decay}", weight_decay=decay, **kw))
        assert t.optimizer.param_groups[0]["weight_decay"] == decay
        t.run()
        runs[decay] = t.model.state_dict()
    # AdamW: p <- p·(1 - lr·wd) - adam_update, so the two runs differ by exactly lr·wd·p0.
    for name, p0 in init.items():
        torch.testing.assert_close(runs[0.0][name] - runs[wd][name], lr * wd * p0, rtol=1e-4, atol=1e-7)


def test_export_and_metrics(tile_folder, tmp_path):
    path = train(make_config(tile_folder, tmp_path / "run", command="pytest"))
    w = load_weights(path)
    n_train = len(list(tile_folder.glob("*.png"))) - min(4, len(list(tile_folder.glob("*.png"))) // 5)
    assert w.bank is not None and w.bank.shape == (min(8, n_train), 3, 3)
    assert w.meta["training_data"] == str(tile_folder) and w.meta["seed"] == 0 and w.meta["steps"] == 6
    assert w.meta["command"] == "pytest" and w.meta["metrics"]["val"]["psnr"] > 0
    model = w.build()
    torch.testing.assert_close(model.bank, w.bank)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["step"] for r in metrics["history"]] == [1, 2, 3, 4, 5, 6]
    assert [v["step"] for v in metrics["validation"]] == [3, 6]
    v = metrics["final_val"]
    assert 0 < v["ssim"] <= 1 and math.isfinite(v["psnr"]) and v["images"] >= 1
    assert set(metrics["final_train"]) >= {"loss", "self_recon", "attr_cons", "cont_cons", "attr_repulsion", "psnr"}


def test_existing_checkpoint_needs_resume_and_same_settings(tile_folder, tmp_path):
    train(make_config(tile_folder, tmp_path / "run", steps=3))
    with pytest.raises(ValueError, match="--resume"):
        Trainer(make_config(tile_folder, tmp_path / "run", steps=3))
    with pytest.raises(CheckpointError, match="lr: 0.003 -> 0.01"):
        Trainer(make_config(tile_folder, tmp_path / "run", steps=3, lr=1e-2), resume=True)
    # more steps is fine: the run continues
    assert Trainer(make_config(tile_folder, tmp_path / "run", steps=5), resume=True).step == 3


def test_lr_factor():
    f = [lr_factor(s, 10, 2, "cosine") for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0
    assert f[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    assert lr_factor(9, 10, 0, "linear", 0.1) == pytest.approx(0.1 + 0.9 * (1 - 9 / 10))
    assert lr_factor(9, 10, 2, "constant") == 1.0


def test_config_files(tmp_path):
    (tmp_path / "c.toml").write_text(
        'data = "he-sources"\nsteps = 7\n[model]\ncontent_kernel = 1\nattr_widths = [8, 16]\n'
        '[loss]\npreset = "rxrx1"\nattr_cons = 0.2\n'
    )
    cfg = TrainConfig.from_dict({**load_config(tmp_path / "c.toml"), "out": str(tmp_path)}).validate()
    mc = cfg.model_config(in_channels=3)
    assert cfg.steps == 7 and mc.content_kernel == 1 and mc.attr_widths == (8, 16) and mc.num_attributes == 4
    assert cfg.loss_weights().attr_cons == 0.2 and cfg.loss_weights().self_recon == 0.9
    (tmp_path / "c.json").write_text(json.dumps({"data": "x", "out": "y", "arch": "fast", "num_attributes": 6}))
    mc = TrainConfig.from_dict(load_config(tmp_path / "c.json")).validate().model_config(in_channels=1)
    assert mc.attr_input_size == 64 and mc.num_attributes == 6 and mc.in_channels == 1


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"stepz": 3}, "unknown keys \\['stepz'\\]"),
        ({"model": {"kernel": 3}}, "unknown ModelConfig fields \\['kernel'\\]"),
        ({"model": {"mode": "log"}}, "mode must be"),
        ({"loss": "camelyon-joint"}, "ce must be 0"),
        ({"loss": "tcga2"}, "unknown loss preset"),
        ({"amp": "fp8"}, "amp: expected one of"),
        ({"batch_size": 1}, "must be >= 2 when num_mixes > 0"),
        ({"steps": 0}, "steps: expected an integer >= 1"),
        ({"lr": 0}, "lr: must be > 0"),
        ({"out": ""}, "out: missing"),
    ],
)
def test_config_errors(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({"data": "x", "out": "y", **settings}).validate()
