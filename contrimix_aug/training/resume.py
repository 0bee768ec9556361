"""Resume state of a training run (``OUT/checkpoint.safetensors``): one safetensors file, written atomically,
never unpickled. (Model weights for use are a different file: :mod:`contrimix_aug.weights`.)

Layout (format ``contrimix_aug.train-checkpoint/1``):
- tensors ``model/<name>``: the model's state_dict;
- tensors ``optim/<param index>/<key>``: per-parameter optimiser state (AdamW ``step``, ``exp_avg``, ``exp_avg_sq``);
- metadata ``state``: JSON with the step, the training config, optimiser hyper-parameters (param groups),
  GradScaler state, RNG seeds and sampler position, and the metric history.

The file is written to a temporary name in the same folder, flushed to disk, then renamed over the old
checkpoint with ``os.replace`` (atomic on POSIX and Windows): a kill at any moment leaves either the
previous checkpoint or the new one, never a partial file under the checkpoint's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "optimizer_to_tensors",
           "optimizer_from_tensors"]

CHECKPOINT_FORMAT = "contrimix_aug.train-checkpoint/1"


class CheckpointError(ValueError):
    """A training checkpoint that cannot be read or does not fit the run."""


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optim/<i>/<key>``) and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_tensors`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in rest.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write tensors + JSON state atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": CHECKPOINT_FORMAT, "state": json.dumps(state, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (tensors on CPU, state)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: unreadable training checkpoint ({err}).") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a contrimix_aug training checkpoint (format {metadata.get('format')!r})."
        )
    try:
        state = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint state ({err}).") from None
    return tensors, state
