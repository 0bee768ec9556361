"""The resume state file (training.resume): tensors plus JSON state, written atomically, read without unpickling."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from contrimix_aug.model import ContriMixModel
from contrimix_aug.training.resume import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)


def _trained_optimizer(model: ContriMixModel, real_tiles: torch.Tensor) -> torch.optim.AdamW:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x = real_tiles[:2, :, :24, :24]
    for _ in range(2):
        opt.zero_grad()
        (model(x) - x).abs().mean().backward()
        opt.step()
    return opt


def test_round_trip(tmp_path, tiny_config, real_tiles):
    model = ContriMixModel(tiny_config)
    opt = _trained_optimizer(model, real_tiles)
    tensors, rest = optimizer_to_tensors(opt)
    assert tensors and all(k.startswith("optim/") for k in tensors)
    assert {k.rsplit("/", 1)[1] for k in tensors} == {"step", "exp_avg", "exp_avg_sq"}
    json.dumps(rest)  # the rest is JSON
    path = save_checkpoint(tmp_path / "c.safetensors", {**{f"model/{k}": v for k, v in model.state_dict().items()},
                                                        **tensors}, {"step": 2, "note": "x"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == CHECKPOINT_FORMAT == "contrimix_aug.train-checkpoint/1"
    loaded, state = load_checkpoint(path)
    assert state == {"step": 2, "note": "x"}
    other = ContriMixModel(tiny_config)
    other.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model/")})
    opt2 = torch.optim.AdamW(other.parameters(), lr=5.0)
    optimizer_from_tensors(opt2, loaded, rest)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["state"][pid][k])), (pid, k)
    assert not list(tmp_path.glob(".*.tmp"))


def test_errors(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="unreadable training checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(1)}, str(other), metadata={"format": "contrimix_aug.weights/1"})
    with pytest.raises(CheckpointError, match="not a contrimix_aug training checkpoint"):
        load_checkpoint(other)
    no_state = tmp_path / "nostate.safetensors"
    save_file({"w": torch.zeros(1)}, str(no_state), metadata={"format": CHECKPOINT_FORMAT})
    with pytest.raises(CheckpointError, match="unreadable checkpoint state"):
        load_checkpoint(no_state)
    assert issubclass(CheckpointError, ValueError)
