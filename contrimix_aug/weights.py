"""Self-describing weights: one safetensors file per model, loaded by registry name (:mod:`.weights_registry`),
file, folder or object.

File layout (format ``contrimix_aug.weights/1``):
- tensors: the model's ``state_dict()`` and ``__bank__`` (N, C, K), the attribute bank;
- metadata (str -> str): ``format``, ``config`` (JSON of :class:`~contrimix_aug.model_config.ModelConfig`),
  ``meta`` (JSON of :class:`~contrimix_aug.weights_meta.WeightsMeta`, validated on save and on load),
  ``tensor_sha256`` (digest of all tensor bytes, checked on load).

Loading never unpickles. ``weights=`` anywhere in the library accepts a registry name (any case; close misspellings
get a suggestion), a ``.safetensors`` path, a training output folder (its ``weights.safetensors``), a
:class:`ContriMixWeights` or a :class:`~contrimix_aug.model.ContriMixModel`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch

from ._io import atomic_write
from ._version import __version__
from .model import ContriMixModel
from .model_config import ModelConfig
from .weights_meta import WeightsMeta, WeightsMetaError
from .weights_registry import (
    DEFAULT_WEIGHTS,
    REGISTRY,
    RegisteredWeights,
    available_weights,
    bundled_path,
    cache_path,
    cached_names,
    canonical_name,
    weights_path,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "REGISTRY",
    "ContriMixWeights",
    "RegisteredWeights",
    "WeightsError",
    "available_weights",
    "load_model",
    "load_weights",
    "resolve_weights",
    "save_weights",
    "weights_path",
]

FORMAT = "contrimix_aug.weights/1"
_BANK_KEY = "__bank__"
TRAINING_OUTPUT = "weights.safetensors"  # what `contrimix-aug train` writes into its --out folder


class WeightsError(ValueError):
    """A weights file or name that cannot be used (missing, corrupted, mismatched)."""


@dataclass
class ContriMixWeights:
    """Weights in memory: architecture config, tensors, attribute bank and metadata."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    bank: torch.Tensor | None
    meta: WeightsMeta
    source: str = "<memory>"

    def build(self) -> ContriMixModel:
        """A frozen, eval-mode :class:`ContriMixModel` with these weights (strict key match)."""
        model = ContriMixModel(self.config, bank=self.bank, meta=self.meta)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"{self.source}: tensors do not match the stored architecture: {err}") from None
        return model.freeze()

    @classmethod
    def from_model(cls, model: ContriMixModel, meta: WeightsMeta | None = None) -> "ContriMixWeights":
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        bank = model.bank.detach().cpu() if model.bank.numel() else None
        meta = meta or model.meta or _fresh_meta(model)
        return cls(model.config, sd, bank, meta)


def _fresh_meta(model: ContriMixModel) -> WeightsMeta:
    return WeightsMeta(name="unnamed", modality="he" if model.config.mode == "absorbance" else "fluorescence",
                       library_version=__version__, num_params=model.num_params)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(weights: Union[ContriMixModel, ContriMixWeights], path: str | os.PathLike,
                 meta: WeightsMeta | None = None) -> Path:
    """Write a weights file atomically (temp file + rename); ``meta`` replaces the weights' own. Returns the path.

    The parameter count in the metadata is set from the tensors, and the library version to this one.
    """
    from safetensors.torch import save_file

    w = weights if isinstance(weights, ContriMixWeights) else ContriMixWeights.from_model(weights)
    m = meta or w.meta
    if not isinstance(m, WeightsMeta):
        raise TypeError(f"save_weights: meta must be a WeightsMeta, got {type(m).__name__}.")
    num_params = sum(v.numel() for k, v in w.state_dict.items())
    m = m.replace(num_params=num_params, library_version=__version__)
    tensors = {k: v.detach().cpu().contiguous() for k, v in w.state_dict.items()}
    if w.bank is not None and w.bank.numel():
        tensors[_BANK_KEY] = w.bank.detach().cpu().float().contiguous()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(w.config.to_dict(), sort_keys=True),
        "meta": json.dumps(m.to_dict(), sort_keys=True, default=str),
        "tensor_sha256": _digest(tensors),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str | os.PathLike) -> ContriMixWeights:
    """Read and verify a weights file (no unpickling). Raises :class:`WeightsError` on any problem."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        if (path / TRAINING_OUTPUT).is_file():
            path = path / TRAINING_OUTPUT
        else:
            found = sorted(p.name for p in path.glob("*.safetensors"))
            raise WeightsError(
                f"{path} is a folder without {TRAINING_OUTPUT} (the file `contrimix-aug train` exports)"
                + (f"; it holds {found}: pass one of them (checkpoint.safetensors is a resume state, not weights)."
                   if found else "; pass the path of a .safetensors weights file.")
            )
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read of the file: header, then each tensor
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if _is_torch_checkpoint(path):
            raise WeightsError(
                f"{path}: a PyTorch checkpoint (torch.save, .pth), not a contrimix_aug weights file (it is never "
                "unpickled here). If it is one of the ContriMix authors' checkpoints, convert it once with "
                f"`contrimix-aug import-checkpoint {path} --name NAME`, then pass weights=\"NAME\"."
            ) from None
        raise WeightsError(
            f"{path}: not a readable safetensors weights file ({err}). The file is truncated or corrupted: "
            "download, import or export it again."
        ) from None
    if metadata.get("format") != FORMAT:
        hint = (" This is a training checkpoint (resume state): pass the folder or its weights.safetensors."
                if "train-checkpoint" in str(metadata.get("format")) else
                " Convert the authors' .pth checkpoints with `contrimix-aug import-checkpoint`.")
        raise WeightsError(
            f"{path}: not a contrimix_aug weights file (format {metadata.get('format')!r}, expected {FORMAT!r})."
            + hint
        )
    if _digest(tensors) != metadata.get("tensor_sha256"):
        raise WeightsError(f"{path}: tensor checksum mismatch: the file is corrupted. Download or export it again.")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        raw = json.loads(metadata.get("meta", "{}"))
        meta = WeightsMeta.from_dict(raw, strict="modality" in raw)  # files before the schema: mapped
    except (KeyError, json.JSONDecodeError, TypeError, WeightsMetaError) as err:
        raise WeightsError(f"{path}: unreadable metadata ({err}); the file is corrupted.") from None
    bank = tensors.pop(_BANK_KEY, None)
    num_params = sum(t.numel() for t in tensors.values())
    if meta.num_params and meta.num_params != num_params:
        raise WeightsError(f"{path}: metadata says {meta.num_params} parameters, the tensors hold {num_params}.")
    return ContriMixWeights(config, tensors, bank, meta, source=str(path))


_TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl")


def _is_torch_checkpoint(path: Path) -> bool:
    """A ``torch.save`` file, by its first bytes: a zip archive (torch >= 1.6) or a pickle (the legacy format).
    Asked only of files that safetensors could not read."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in (b"PK\x03\x04", b"\x80\x02\x8a\x0a")  # zip; legacy: pickle protocol 2 + torch's magic number


def resolve_weights(weights: Any = None) -> ContriMixWeights:
    """Turn a name, path, folder, :class:`ContriMixWeights` or :class:`ContriMixModel` into :class:`ContriMixWeights`."""
    if weights is None:
        weights = DEFAULT_WEIGHTS
    if isinstance(weights, ContriMixWeights):
        return weights
    if isinstance(weights, ContriMixModel):
        return ContriMixWeights.from_model(weights)
    if isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (weights.endswith((".safetensors",) + _TORCH_SUFFIXES) or os.sep in weights
                                      or "/" in weights or os.path.isdir(weights))
    ):
        return load_weights(weights)
    if not isinstance(weights, str):
        raise TypeError(
            f"weights: expected a name, a path, ContriMixWeights or ContriMixModel, got {type(weights).__name__}."
        )
    path = weights_path(weights)
    if path is not None:
        return load_weights(path)
    entry = REGISTRY.get(canonical_name(weights))
    if entry is not None:
        if entry.bundled:
            raise WeightsError(f"the bundled weights {entry.name!r} are missing from {bundled_path(entry.name)}; "
                               "reinstall contrimix_aug.")
        raise WeightsError(
            f"weights {entry.name!r} ({entry.description}) are not installed: no file at {cache_path(entry.name)}. "
            + entry.how_to_get
        )
    known = list(dict.fromkeys(list(REGISTRY) + cached_names()))
    close = difflib.get_close_matches(weights.lower(), [n.lower() for n in known], n=3, cutoff=0.6)
    close = [n for n in known if n.lower() in close]
    raise WeightsError(
        f"unknown weights name {weights!r}." + (f" Did you mean {' or '.join(map(repr, close))}?" if close else "")
        + f" Available now: {available_weights()}; known: {known}. Pass a path to a .safetensors file to load your own."
    )


def load_model(weights: Any = None, *, copy: bool = False) -> ContriMixModel:
    """A frozen, eval-mode :class:`ContriMixModel`. ``None`` = the bundled default (``he``).

    A :class:`ContriMixModel` passed in is returned as is, or, with ``copy=True``, as a frozen copy (what the
    transforms hold, so that freezing, moving or re-banking never touches the caller's model).
    """
    if isinstance(weights, ContriMixModel):
        return weights.frozen_copy() if copy else weights
    return resolve_weights(weights).build()
