"""Self-describing weights: one safetensors file holding tensors plus JSON metadata.

File layout (format ``contrimix_aug.weights/1``):
- tensors: the model's ``state_dict()`` and, if any, ``__bank__`` (N, C, K) attribute bank;
- metadata (str -> str): ``format``, ``config`` (JSON of :class:`~contrimix_aug.config.ModelConfig`),
  ``meta`` (JSON: name, version, channel order, value range, min size, training data, licence, metrics, ...),
  ``tensor_sha256`` (digest of all tensor bytes, checked on load).

Loading never unpickles. ``weights=`` anywhere in the library accepts a registry name, a file path,
a :class:`ContriMixWeights` or a :class:`~contrimix_aug.model.ContriMixModel`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import torch

from . import __version__
from ._io import atomic_write
from ._paths import weights_dir
from .config import ModelConfig
from .model import ContriMixModel

__all__ = [
    "ContriMixWeights",
    "WeightsError",
    "available_weights",
    "known_weights",
    "load_model",
    "load_weights",
    "resolve_weights",
    "save_weights",
    "DEFAULT_WEIGHTS",
]

FORMAT = "contrimix_aug.weights/1"
_BANK_KEY = "__bank__"
DEFAULT_WEIGHTS = "he"


class WeightsError(ValueError):
    """A weights file or name that cannot be used (missing, corrupted, mismatched)."""


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    bundled: bool
    how_to_get: str


_REGISTRY: dict[str, _Entry] = {}


def _register(entry: _Entry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"weights name {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry


_register(
    _Entry(
        "he",
        "H&E, 3 channels, trained with contrimix-aug train on the clear-terms real H&E sources (bundled default)",
        True,
        "It ships inside the package; reinstall contrimix_aug if the file is missing.",
    )
)
_register(
    _Entry(
        "fluorescence",
        "fluorescence nuclei, 1 channel, linear mode, trained on the real nuclei sources (bundled)",
        True,
        "It ships inside the package; reinstall contrimix_aug if the file is missing.",
    )
)
_register(
    _Entry(
        "camelyon",
        "the authors' Camelyon17-WILDS checkpoint (K=4, RGB, 96 px)",
        False,
        "Download a Camelyon17 ContriMix checkpoint from the authors' model zoo (MODELZOO.md of the ContriMix "
        "repository), then run `contrimix-aug import-checkpoint PATH --name camelyon --channel-order rgb`; or "
        "train one with `contrimix-aug train camelyon17:ROOT --out DIR` and copy DIR/weights.safetensors to {path}.",
    )
)
_register(
    _Entry(
        "tcga",
        "the authors' TCGA encoders checkpoint (K=16, 572 px)",
        False,
        "Download the TCGA ContriMix checkpoint from the authors' model zoo (MODELZOO.md of the ContriMix "
        "repository), then run `contrimix-aug import-checkpoint PATH --name tcga --channel-order rgb` "
        "(use --channel-order bgr if its colours come out swapped).",
    )
)


@dataclass
class ContriMixWeights:
    """Weights in memory: architecture config, tensors, attribute bank and metadata."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    bank: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def build(self) -> ContriMixModel:
        """A frozen, eval-mode :class:`ContriMixModel` with these weights (strict key match)."""
        model = ContriMixModel(self.config, bank=self.bank)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"{self.source}: tensors do not match the stored architecture: {err}") from None
        model.meta = dict(self.meta)  # type: ignore[attr-defined]
        return model.freeze()

    @classmethod
    def from_model(cls, model: ContriMixModel, meta: dict[str, Any] | None = None) -> "ContriMixWeights":
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        bank = model.bank.detach().cpu() if model.bank.numel() else None
        return cls(model.config, sd, bank, dict(meta or getattr(model, "meta", {}) or {}))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(
    weights: Union[ContriMixModel, ContriMixWeights], path: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write a weights file atomically (temp file + rename). Returns the path."""
    from safetensors.torch import save_file

    w = weights if isinstance(weights, ContriMixWeights) else ContriMixWeights.from_model(weights)
    full_meta = {
        "library_version": __version__,
        "channels": w.config.in_channels,
        "num_attributes": w.config.num_attributes,
        "channel_order": w.config.channel_order,
        "value_range": [0.0, 1.0],
        "min_size": 8,
        **w.meta,
        **(meta or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in w.state_dict.items()}
    if w.bank is not None and w.bank.numel():
        tensors[_BANK_KEY] = w.bank.detach().cpu().float().contiguous()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(w.config.to_dict(), sort_keys=True),
        "meta": json.dumps(full_meta, sort_keys=True, default=str),
        "tensor_sha256": _digest(tensors),
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str | os.PathLike) -> ContriMixWeights:
    """Read and verify a weights file (no unpickling). Raises :class:`WeightsError` on any problem."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read of the file: header, then each tensor
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(
            f"{path}: not a readable safetensors weights file ({err}). The file is truncated or corrupted: "
            "download, import or export it again."
        ) from None
    if metadata.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a contrimix_aug weights file (format {metadata.get('format')!r}, expected {FORMAT!r}). "
            "Convert the authors' .pth checkpoints with `contrimix-aug import-checkpoint`."
        )
    if _digest(tensors) != metadata.get("tensor_sha256"):
        raise WeightsError(f"{path}: tensor checksum mismatch: the file is corrupted. Download or export it again.")
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
        meta = json.loads(metadata.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise WeightsError(f"{path}: unreadable metadata ({err}); the file is corrupted.") from None
    bank = tensors.pop(_BANK_KEY, None)
    return ContriMixWeights(config, tensors, bank, meta, source=str(path))


def _bundled_path(name: str) -> Path:
    return Path(str(resources.files("contrimix_aug") / "weights" / f"{name}.safetensors"))


def _cache_path(name: str) -> Path:
    return weights_dir() / f"{name}.safetensors"


def _name_path(name: str) -> Path | None:
    for p in (_bundled_path(name), _cache_path(name)):
        if p.is_file():
            return p
    return None


def known_weights() -> dict[str, str]:
    """Registry names with a one-line description (available or not)."""
    return {n: e.description for n, e in _REGISTRY.items()}


def available_weights() -> list[str]:
    """Names that load now: bundled files, imported/trained files in the cache (``CONTRIMIX_AUG_HOME``)."""
    names = [n for n in _REGISTRY if _name_path(n) is not None]
    if weights_dir().is_dir():
        names += sorted(p.name[: -len(".safetensors")] for p in weights_dir().glob("*.safetensors"))
    return list(dict.fromkeys(names))


def resolve_weights(weights: Any = None) -> ContriMixWeights:
    """Turn a name, path, :class:`ContriMixWeights` or :class:`ContriMixModel` into :class:`ContriMixWeights`."""
    if weights is None:
        weights = DEFAULT_WEIGHTS
    if isinstance(weights, ContriMixWeights):
        return weights
    if isinstance(weights, ContriMixModel):
        return ContriMixWeights.from_model(weights)
    if isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (weights.endswith(".safetensors") or os.sep in weights or "/" in weights)
    ):
        return load_weights(weights)
    if not isinstance(weights, str):
        raise TypeError(
            f"weights: expected a name, a path, ContriMixWeights or ContriMixModel, got {type(weights).__name__}."
        )
    path = _name_path(weights)
    if path is not None:
        return load_weights(path)
    if weights in _REGISTRY:
        entry = _REGISTRY[weights]
        raise WeightsError(
            f"weights {weights!r} ({entry.description}) are not installed: no file at {_cache_path(weights)}. "
            + entry.how_to_get.format(path=_cache_path(weights))
        )
    raise WeightsError(
        f"unknown weights name {weights!r}. Available: {available_weights()}; known: {sorted(_REGISTRY)}. "
        "Pass a path to a .safetensors file to load your own."
    )


def load_model(weights: Any = None) -> ContriMixModel:
    """A frozen, eval-mode :class:`ContriMixModel`. ``None`` = the bundled H&E default."""
    if isinstance(weights, ContriMixModel):
        return weights
    return resolve_weights(weights).build()
