"""``contrimix-aug train`` on a small folder of real H&E tiles, and its argument errors."""

from __future__ import annotations

import json

import pytest

from contrimix_aug import load_weights
from contrimix_aug.cli import main
from contrimix_aug.training.checkpoint import load_checkpoint


TINY = {"model": {"content_hidden": 4, "attr_widths": [4, 8, 8]}, "num_workers": 0, "val_size": 2,
        "log_every": 1, "warmup_steps": 1}


@pytest.fixture
def tiny_config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _args(folder, out, cfg, *extra):
    return ["train", str(folder), "--out", str(out), "--config", str(cfg), "--batch-size", "4", "--patch-size",
            "32", "--num-attributes", "3", "--num-mixes", "2", "--device", "cpu", "--no-progress", *extra]


def test_smoke_and_resume(tile_folder, tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tile_folder, out, tiny_config_file, "--steps", "2", "--seed", "5", "--checkpoint-every",
                      "1")) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out / "weights.safetensors")
    w = load_weights(printed)
    assert w.config.num_attributes == 3 and w.config.attr_widths == (4, 8, 8) and w.meta["seed"] == 5
    assert w.meta["command"].startswith(f"contrimix-aug train {tile_folder} --out {out}")
    assert w.bank is not None and w.bank.shape[1:] == (3, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["final_val"]["psnr"] > 0

    # running again without --resume refuses to overwrite; with --resume and more steps it continues
    assert main(_args(tile_folder, out, tiny_config_file, "--steps", "3", "--seed", "5")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_args(tile_folder, out, tiny_config_file, "--steps", "3", "--seed", "5", "--resume")) == 0
    assert load_checkpoint(out / "checkpoint.safetensors")[1]["step"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (["--steps", "ten"], "argument --steps: expected an integer, got 'ten'"),
        (["--arch", "resnet"], "invalid choice: 'resnet'"),
        (["--loss", "imagenet"], "invalid choice: 'imagenet'"),
        (["--lr", "-1"], "argument --lr: expected a finite number >= 0, got -1"),
    ],
)
def test_bad_flags_exit_with_usage(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--out", str(tmp_path / "o"), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--out", "x"], "DATA is missing"),
        (["train", "{tmp}"], "--out DIR is missing"),
        (["train", "{tmp}/nowhere", "--out", "{tmp}/o"], "unknown dataset spec"),
        (["train", "{tmp}", "--out", "{tmp}/o", "--config", "{tmp}/missing.toml"], "does not exist"),
        (["train", "{tmp}", "--out", "{tmp}/o", "--config", "{tmp}/bad.json"], "unknown keys ['epochs']"),
        (["train", "{tmp}", "--out", "{tmp}/o", "--batch-size", "1"], "must be >= 2 when num_mixes > 0"),
    ],
)
def test_bad_settings_give_clear_errors(argv, message, tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"epochs": 3}')
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("contrimix-aug train: error:") and message in err
