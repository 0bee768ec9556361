"""Training configuration: :class:`TrainConfig`, a dataclass that round-trips through JSON/TOML files, and the
recipes shipped in the package (``contrimix_aug/recipes/NAME.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_config import ModelConfig
from .losses import LossWeights
from .restain import RestainConfig

__all__ = ["ARCHS", "RECIPES", "TrainConfig", "default_recipe", "load_config", "load_recipe"]

# Architecture presets; ``TrainConfig.model`` overrides any field on top.
ARCHS: dict[str, dict[str, Any]] = {
    # The authors' k = 1 networks, attributes from the full-resolution patch.
    "authors": {},
    # Same networks, attributes computed on a 64-px copy: E_a's cost no longer grows with the patch size.
    "fast": {"attr_input_size": 64},
}

_AMP = ("auto", "none", "bf16", "fp16")
FLUORESCENCE_DATA = ("rxrx1", "fluo-sources")  # dataset kinds that default to model.mode = "linear"
_SCHEDULES = ("cosine", "linear", "constant")
_DEVICES = ("auto", "cpu", "cuda")

# Fields that may change between a run and its resumption (the rest must match the checkpoint).
# ``device`` and ``amp`` may change too (a GPU run continued on a CPU, say): the run goes on correctly, but it
# is bit-identical to an uninterrupted one only when both stay the same.
RESUMABLE_CHANGES = frozenset(
    {"out", "steps", "checkpoint_every", "val_every", "log_every", "num_workers", "progress", "command",
     "device", "amp", "data_root"}
)


@dataclass
class TrainConfig:
    """Everything ``contrimix-aug train`` needs; every field can be set in a ``--config`` JSON/TOML file.

    Args:
        data: dataset spec for :func:`contrimix_aug.data.make_dataset` (a folder, ``he-sources``,
            ``he-sources:cmu1,skin``, ``fluo-sources``, ``camelyon17-tiles[:0,3,4]``, ``camelyon17:ROOT``,
            ``rxrx1:ROOT``).
        channels: image channels read from a folder: 3 (RGB), 1 (grey, e.g. a nuclear stain) or None (as stored).
        data_root: folder holding the labelled collections (``camelyon17-tiles``); default ``$CONTRIMIX_AUG_DATA``.
        out: output folder (checkpoint, metrics.json, weights.safetensors).
        steps: optimiser steps in total (a resumed run continues up to this number).
        batch_size: images per step **per process**; under torchrun the global batch is batch_size × world size.
        patch_size: side of the square training patches (random crops, random 90° rotations and flips).
        patch_scale: (low, high) range of the crop scale s (log-uniform): a region of s·patch_size px is cropped
            and resized to patch_size (antialiased), so the model sees the tissue at 1/high .. 1/low of its
            native resolution. (1, 1): plain crops.
        num_attributes: K.
        num_mixes: M, donor views per image.
        arch: architecture preset, one of :data:`ARCHS`.
        model: overrides of :class:`~contrimix_aug.config.ModelConfig` fields on top of ``arch``
            (e.g. ``{"content_kernel": 1, "attr_widths": [16, 32, 64, 128], "mode": "linear"}``).
            ``in_channels`` defaults to the data's channel count, ``mode`` to ``linear`` for fluorescence
            data (``rxrx1:``, ``fluo-sources``).
        loss: loss weights: a preset name (``tcga``, ``rxrx1``, ...) or a dict of :class:`LossWeights`
            fields (optionally with ``"preset"``). ``ce`` must be 0: ``train`` fits the encoders only.
        restain: :class:`~contrimix_aug.training.restain.RestainConfig` fields for the paired terms
            (``loss.pair_recon`` / ``loss.pair_content``).
        lr: peak learning rate. weight_decay: AdamW decoupled weight decay (really applied, fixing Q2).
        betas: AdamW betas. warmup_steps: linear warm-up from 0. schedule: ``cosine``, ``linear`` (decay
            to ``min_lr_ratio``·lr at the last step) or ``constant`` after the warm-up.
        grad_clip: max global gradient norm (0 = off).
        seed: model init, data order, crops and donors all derive from it.
        checkpoint_every / val_every / log_every: in steps (0 = only at the end).
        val_size: held-out images for validation (taken out of the training set).
        bank_size: attribute-bank entries exported with the weights (attributes of up to this many
            training images).
        amp: ``auto`` (bf16 on CUDA devices that support it, else off), ``none``, ``bf16`` or ``fp16`` (CUDA only).
        device: ``auto``, ``cpu`` or ``cuda``.
        num_workers: DataLoader worker processes (-1 = auto: 0 on machines with <= 2 cores).
        deterministic: ask torch for deterministic kernels (CUDA: slower; exact resume is only
            guaranteed on CPU, see docs/training.md).
        progress: show a tqdm progress bar.
        command: the command line that started the run (recorded in the weights' metadata).
    """

    data: str = ""
    out: str = ""
    channels: int | None = 3
    data_root: str = ""
    steps: int = 2000
    batch_size: int = 16
    patch_size: int = 96
    patch_scale: tuple[float, float] = (1.0, 1.0)
    num_attributes: int = 4
    num_mixes: int = 3
    arch: str = "authors"
    model: dict[str, Any] = field(default_factory=dict)
    loss: Any = "tcga"
    restain: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.5
    seed: int = 0
    checkpoint_every: int = 500
    val_every: int = 500
    log_every: int = 10
    val_size: int = 64
    bank_size: int = 512
    amp: str = "auto"
    device: str = "auto"
    num_workers: int = -1
    deterministic: bool = False
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.patch_scale = tuple(float(v) for v in self.patch_scale)  # type: ignore[assignment]
        self.restain = dict(self.restain or {})
        self.model = dict(self.model or {})

    # -- validation ----------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Check every field; raise ``ValueError`` naming the field and the allowed values. Returns self."""

        def bad(name: str, msg: str) -> None:
            raise ValueError(f"train config: {name}: {msg}")

        if not self.data:
            bad("data", "missing: give a folder of images or a dataset spec such as 'he-sources'.")
        if not self.out:
            bad("out", "missing: give an output folder (--out DIR).")
        for name, lo in (("steps", 1), ("batch_size", 1), ("patch_size", 8), ("num_attributes", 1),
                         ("num_mixes", 0), ("warmup_steps", 0), ("checkpoint_every", 0), ("val_every", 0),
                         ("log_every", 0), ("val_size", 0), ("bank_size", 0), ("seed", 0), ("num_workers", -1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                bad(name, f"expected an integer >= {lo}, got {v!r}.")
        if self.channels not in (1, 3, None):
            bad("channels", f"expected 1, 3 or None, got {self.channels!r}.")
        if self.num_mixes > 0 and self.batch_size < 2:
            bad("batch_size", "donors are other images of the batch, so it must be >= 2 when num_mixes > 0.")
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                bad(name, f"expected a finite number >= 0, got {v!r}.")
        if self.lr <= 0:
            bad("lr", f"must be > 0, got {self.lr}.")
        if len(self.patch_scale) != 2 or not 0 < self.patch_scale[0] <= self.patch_scale[1] < float("inf"):
            bad("patch_scale", f"expected (low, high) with 0 < low <= high, got {self.patch_scale!r}.")
        self.restain_config()
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", f"expected two numbers in [0, 1), got {self.betas!r}.")
        if self.schedule not in _SCHEDULES:
            bad("schedule", f"expected one of {_SCHEDULES}, got {self.schedule!r}.")
        if self.amp not in _AMP:
            bad("amp", f"expected one of {_AMP}, got {self.amp!r}.")
        if self.device not in _DEVICES:
            bad("device", f"expected one of {_DEVICES}, got {self.device!r}.")
        if self.arch not in ARCHS:
            bad("arch", f"expected one of {sorted(ARCHS)}, got {self.arch!r}.")
        if self.loss_weights().ce:
            bad("loss", "ce must be 0: `train` fits the encoders without labels. For joint training with a "
                        "classifier use contrimix_aug.training.ContriMixLoss in your own loop.")
        self.model_config(in_channels=int(self.model.get("in_channels", self.channels or 3)))
        return self

    # -- derived objects -----------------------------------------------------------------------------
    def loss_weights(self) -> LossWeights:
        if isinstance(self.loss, LossWeights):
            return self.loss
        if isinstance(self.loss, str):
            return LossWeights.preset(self.loss)
        if isinstance(self.loss, dict):
            return LossWeights.from_dict(self.loss)
        raise ValueError(f"train config: loss: expected a preset name or a table of weights, got {self.loss!r}.")

    def restain_config(self) -> RestainConfig:
        try:
            return RestainConfig.from_dict(self.restain)
        except (TypeError, ValueError) as err:
            raise ValueError(f"train config: {err}") from None

    def model_config(self, in_channels: int) -> ModelConfig:
        """The :class:`ModelConfig`: ``arch`` preset, ``num_attributes``, ``mode="linear"`` for fluorescence data
        (``rxrx1:``, ``fluo-sources``),
        then the ``model`` overrides (which win)."""
        fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"extra"}
        unknown = sorted(set(self.model) - fields)
        if unknown:
            raise ValueError(f"train config: model: unknown ModelConfig fields {unknown}; valid: {sorted(fields)}.")
        kw: dict[str, Any] = {"in_channels": in_channels, **ARCHS[self.arch], "num_attributes": self.num_attributes}
        if self.data.strip().lower().split(":", 1)[0] in FLUORESCENCE_DATA or in_channels != 3:
            kw["mode"] = "linear"  # fluorescence: additive mixing, no Beer–Lambert (as the reference did)
        kw.update(self.model)
        if "attr_widths" in kw:
            kw["attr_widths"] = tuple(kw["attr_widths"])
        try:
            cfg = ModelConfig(**kw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"train config: model: {err}") from None
        return cfg

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["patch_scale"] = list(self.patch_scale)
        if isinstance(self.loss, LossWeights):
            d["loss"] = self.loss.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"train config: unknown keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**d)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``--config`` file (``.json`` or ``.toml``) into a dict of :class:`TrainConfig` fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            import tomllib  # Python >= 3.11
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ValueError(f"{path}: reading TOML needs Python >= 3.11 or `pip install tomli`.") from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: invalid TOML: {err}") from None
    elif path.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON: {err}") from None
    else:
        raise ValueError(f"{path}: config files must end in .json or .toml.")
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a table/object of training settings at the top level.")
    return d


RECIPES = ("he-lite", "camelyon", "fluorescence-lite", "fluorescence-ls", "authors")
"""The recipes shipped in ``contrimix_aug/recipes`` (see its README)."""


def default_recipe(data: str, channels: int | None = 3) -> str:
    """The recipe ``contrimix-aug train`` uses without ``--config``: the shipped fluorescence recipe for 1-channel or
    fluorescence data, the shipped H&E one otherwise."""
    kind = data.strip().lower().split(":", 1)[0]
    return "fluorescence-lite" if channels == 1 or kind in FLUORESCENCE_DATA else "he-lite"


def load_recipe(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A recipe's settings: a shipped recipe by name (:data:`RECIPES`) or a ``.json`` / ``.toml`` file."""
    text = str(name_or_path)
    if text in RECIPES:
        from importlib import resources

        res = resources.files("contrimix_aug").joinpath("recipes", f"{text}.json")
        return json.loads(res.read_text(encoding="utf-8"))
    if os.path.exists(text) or text.endswith((".json", ".toml")):
        return load_config(text)
    raise ValueError(f"--config {text!r}: neither a shipped recipe ({', '.join(RECIPES)}) nor a .json/.toml file.")
