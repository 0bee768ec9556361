"""The training loop on a folder of real H&E tiles: resume identity (also from checkpoints of older versions), atomic
checkpoints, weight decay, export, the size check before step 0, batch-job logging and Ctrl-C. (Settings and recipes:
test_training_train_config.py; the CLI and its exit codes: test_cli.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrimix_aug import ContriMix, load_weights
from contrimix_aug.training import ContriMixLoss, TrainConfig, Trainer, lr_factor, train
from contrimix_aug.training.resume import CheckpointError, load_checkpoint, save_checkpoint


def make_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """A tiny but real run: 32 px patches, K = 3, M = 2, a small attribute encoder."""
    settings = dict(
        data=str(data), out=str(out), steps=6, batch_size=4, patch_size=32, num_attributes=3, num_mixes=2,
        model={"content_hidden": 4, "attr_widths": [4, 8, 8]}, warmup_steps=2, checkpoint_every=3, val_every=3,
        log_every=1, val_size=4, bank_size=8, progress=False, num_workers=0, device="cpu", lr=3e-3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _read(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


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
    assert w.meta.training_data == str(tile_folder) and w.meta.training["seed"] == 0 and w.meta.training["steps"] == 6
    assert w.meta.training["command"] == "pytest" and w.meta.training["metrics"]["val"]["psnr"] > 0
    assert w.meta.name == "run" and w.meta.modality == "he" and w.meta.num_params == w.build().num_params
    assert w.meta.bank_source == f"central patches of {w.bank.shape[0]} training images"
    model = w.build()
    torch.testing.assert_close(model.bank, w.bank)
    # the output folder is itself a weights= argument
    tiles = torch.stack([_read(p)[:, :32, :32] for p in sorted(tile_folder.glob("*.png"))[:3]])
    out = ContriMix(weights=tmp_path / "run", p=1.0, seed=0)(tiles)
    assert torch.equal(out, ContriMix(weights=path, p=1.0, seed=0)(tiles)) and not torch.equal(out, tiles)
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


def test_checkpoint_of_an_older_version_resumes_with_defaults(tile_folder, tmp_path):
    """Settings added after a checkpoint was written (channels, data_root, patch_scale, restain) count as their
    defaults: a run checkpointed by an older version resumes."""
    cfg = make_config(tile_folder, tmp_path / "run", steps=3)
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    tensors, state = load_checkpoint(ckpt)
    for key in ("channels", "data_root", "patch_scale", "restain"):
        del state["config"][key]
    save_checkpoint(ckpt, tensors, state)
    resumed = Trainer(make_config(tile_folder, tmp_path / "run", steps=4), resume=True)
    assert resumed.step == 3
    resumed.run()
    assert load_checkpoint(ckpt)[1]["step"] == 4
    # ... but a setting that differs from its default in the new run still refuses the resume
    tensors, state = load_checkpoint(ckpt)
    del state["config"]["patch_scale"]
    save_checkpoint(ckpt, tensors, state)
    with pytest.raises(CheckpointError, match=r"patch_scale: \[1.0, 1.0\] -> \[1.0, 2.0\]"):
        Trainer(make_config(tile_folder, tmp_path / "run", steps=5, patch_scale=(1.0, 2.0)), resume=True)


@pytest.mark.parametrize("val_size", [0, 5])
def test_small_image_fails_before_any_step(tile_folder, tmp_path, monkeypatch, val_size):
    """A folder with one 64 px image among 128 px ones: Trainer construction fails, naming the file, whether the
    image falls in the training or the validation split."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    tiles = [_read(p) for p in sorted(tile_folder.glob("*.png"))]
    big = [t for t in tiles if min(t.shape[-2:]) >= 128]
    assert big, "tests/fixtures needs real tiles of at least 128 px"
    for i in range(5):
        Image.fromarray(_to_u8(big[i % len(big)][:, i * 20 : i * 20 + 128, :128])).save(folder / f"tile_{i}.png")
    Image.fromarray(_to_u8(tiles[0][:, :64, :64])).save(folder / "small_one.png")
    steps = []

    def no_step(self, *args, **kwargs):
        steps.append(1)
        raise AssertionError("a training step ran")

    monkeypatch.setattr(ContriMixLoss, "forward", no_step)
    from contrimix_aug.training.stream import split_indices

    small = sorted(p.name for p in folder.glob("*.png")).index("small_one.png")
    # a seed whose split puts the small image where this case wants it (train for val_size 0, else validation)
    seed = next(s for s in range(100) if (small in split_indices(6, val_size, s)[1]) == (val_size > 0))
    role = "validation" if val_size else "training"
    with pytest.raises(ValueError) as err:
        Trainer(make_config(folder, tmp_path / "out", patch_size=96, val_size=val_size, seed=seed))
    msg = str(err.value)
    assert str(folder / "small_one.png") in msg and f"{role} image of 64×64 px is smaller than the patch size 96" in msg
    assert "--patch-size" in msg and steps == []
    assert not (tmp_path / "out" / "checkpoint.safetensors").exists()
    Trainer(make_config(folder, tmp_path / "out2", patch_size=64, val_size=val_size, seed=seed))  # fits


def test_no_progress_prints_a_line_per_validation_and_checkpoint(tile_folder, tmp_path, capsys):
    train(make_config(tile_folder, tmp_path / "run", steps=6, val_every=2, checkpoint_every=3, progress=False))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("contrimix-aug train: step ")]
    steps = [int(ln.split("step ")[1].split("/")[0]) for ln in lines]
    assert steps == [2, 3, 4, 6], lines  # validations at 2, 4, 6; checkpoints at 3, 6: one line each
    assert all("/6: loss " in ln and "train PSNR" in ln and "img/s" in ln for ln in lines)
    assert [("val PSNR" in ln, "checkpoint saved" in ln) for ln in lines] == [
        (True, False), (False, True), (True, False), (True, True)]


def test_keyboard_interrupt_says_where_the_checkpoint_is(tile_folder, tmp_path, monkeypatch, capsys):
    original = ContriMixLoss.forward
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ContriMixLoss, "forward", interrupted)
    cfg = make_config(tile_folder, tmp_path / "run", command="contrimix-aug train DATA --out OUT")
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    err = capsys.readouterr().err
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    assert f"interrupted at step 4; the last checkpoint (step 3) is {ckpt}" in err
    assert "Continue with: contrimix-aug train DATA --out OUT --resume" in err
    # interrupted before the first checkpoint: it says so
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        train(make_config(tile_folder, tmp_path / "early", checkpoint_every=5))
    err = capsys.readouterr().err
    assert "interrupted at step 4, before the first checkpoint: nothing was kept" in err
    assert "--checkpoint-every" in err and not (tmp_path / "early" / "checkpoint.safetensors").exists()
