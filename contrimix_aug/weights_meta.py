"""What a weights file says about itself: :class:`WeightsMeta`, a declared schema validated on save and load.

The architecture lives in :class:`~contrimix_aug.model_config.ModelConfig` (channels, K, channel order, mode are
read from there, never stored twice); everything else a user or a loader needs is here. Unknown keys are
refused on save (a typo must not slip into a shipped file); files written before the schema existed are read
through :meth:`WeightsMeta.from_dict` (their keys are mapped, anything unmapped is kept in ``extra``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODALITIES", "WeightsMeta", "WeightsMetaError"]

MODALITIES = ("he", "fluorescence", "other")
"""What a model was trained on: brightfield H&E, fluorescence, or anything else."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class WeightsMetaError(ValueError):
    """Metadata that does not follow the schema (names the field and what is allowed)."""


@dataclass(frozen=True)
class WeightsMeta:
    """Metadata of a weights file.

    Args:
        name: short name (``he``, ``camelyon``; letters, digits, ``.``, ``_``, ``-``).
        modality: one of :data:`MODALITIES`.
        library_version: contrimix_aug version that wrote the file.
        num_params: parameter count of the model (checked against the tensors on load).
        value_range: (low, high) the input checks accept (images in [0, 1]).
        min_size: smallest tile side in px the input checks accept.
        training_data: what the model was trained on (a dataset spec, a collection, "authors' checkpoint").
        um_per_px: (low, high) resolution range of the training crops in µm/px, or None when unknown.
        licence: terms of the weights and of the training images.
        bank_source: what the attribute bank stored with the weights holds ("" when there is none).
        bank_labs: the lab of every bank entry, as ordered runs ``((lab, count), ...)``: the first ``count``
            entries come from the first lab, and so on (empty when the bank's labs are not recorded; when given,
            the counts add up to the bank's size). :meth:`bank_entry_labs` expands them.
        never_seen: what neither the weights' training nor their bank ever used ({collection: what}; e.g. the
            held-out labs of a benchmark), so that a user knows on which labs a measurement is clean.
        card: path of the model card in the repository ("" when there is none).
        training: how it was trained (command, seed, steps, batch, loss weights, config, hardware, ...).
        quality: measured quality (summary of the model card).
        extra: anything else (e.g. the source file and sha256 of an imported checkpoint).
    """

    name: str
    modality: str
    library_version: str
    num_params: int
    value_range: tuple[float, float] = (0.0, 1.0)
    min_size: int = 8
    training_data: str = ""
    um_per_px: tuple[float, float] | None = None
    licence: str = ""
    bank_source: str = ""
    bank_labs: tuple[tuple[str, int], ...] = ()
    never_seen: dict[str, str] = field(default_factory=dict)
    card: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> None:
            raise WeightsMetaError(f"weights metadata: {name}: {msg}")

        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            bad("name", f"expected letters, digits, '.', '_' or '-', got {self.name!r}.")
        if self.modality not in MODALITIES:
            bad("modality", f"expected one of {MODALITIES}, got {self.modality!r}.")
        if isinstance(self.num_params, bool) or not isinstance(self.num_params, int) or self.num_params < 0:
            bad("num_params", f"expected an integer >= 0, got {self.num_params!r}.")
        try:
            lo, hi = (float(v) for v in self.value_range)
        except (TypeError, ValueError):
            bad("value_range", f"expected (low, high), got {self.value_range!r}.")
        if not lo < hi:
            bad("value_range", f"expected low < high, got {self.value_range!r}.")
        object.__setattr__(self, "value_range", (lo, hi))
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 1:
            bad("min_size", f"expected an integer >= 1, got {self.min_size!r}.")
        if self.um_per_px is not None:
            try:
                a, b = (float(v) for v in self.um_per_px)
            except (TypeError, ValueError):
                bad("um_per_px", f"expected (low, high) or None, got {self.um_per_px!r}.")
            if not 0 < a <= b:
                bad("um_per_px", f"expected 0 < low <= high, got {self.um_per_px!r}.")
            object.__setattr__(self, "um_per_px", (a, b))
        try:
            runs = tuple((lab, count) for lab, count in self.bank_labs)
        except (TypeError, ValueError):
            bad("bank_labs", f"expected ((lab, count), ...), got {self.bank_labs!r}.")
        for lab, count in runs:
            if not isinstance(lab, str) or not lab or isinstance(count, bool) or not isinstance(count, int) \
                    or count < 1:
                bad("bank_labs", f"expected (lab name, count >= 1) pairs, got {(lab, count)!r}.")
        object.__setattr__(self, "bank_labs", runs)
        if not isinstance(self.never_seen, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.never_seen.items()):
            bad("never_seen", f"expected a dict of strings, got {self.never_seen!r}.")
        for name in ("library_version", "training_data", "licence", "bank_source", "card"):
            if not isinstance(getattr(self, name), str):
                bad(name, f"expected a string, got {type(getattr(self, name)).__name__}.")
        for name in ("training", "quality", "extra"):
            if not isinstance(getattr(self, name), dict):
                bad(name, f"expected a dict, got {type(getattr(self, name)).__name__}.")

    def bank_entry_labs(self) -> list[str]:
        """The lab of each bank entry, in bank order (``[]`` when :attr:`bank_labs` is empty)."""
        return [lab for lab, count in self.bank_labs for _ in range(count)]

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["value_range"] = list(self.value_range)
        d["bank_labs"] = [list(r) for r in self.bank_labs]
        d["um_per_px"] = None if self.um_per_px is None else list(self.um_per_px)
        return d

    def replace(self, **changes: Any) -> "WeightsMeta":
        """A copy with ``changes`` (validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise WeightsMetaError(f"weights metadata: unknown fields {unknown}; valid: {self.field_names()}.")
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> "WeightsMeta":
        """Build from a dict. ``strict``: unknown keys are an error; otherwise (files written before the schema)
        the legacy keys are mapped and anything unknown goes to ``extra``."""
        d = dict(d)
        known = set(cls.field_names())
        if strict:
            unknown = sorted(set(d) - known)
            if unknown:
                raise WeightsMetaError(f"weights metadata: unknown fields {unknown}; valid: {sorted(known)}.")
            return cls(**d)
        return cls(**_from_legacy(d, known))


# keys of files written before the schema (library 0.1)
_LEGACY_TRAINING = ("command", "seed", "steps", "patch_size", "num_mixes", "loss_weights", "world_size",
                    "global_batch", "train_config", "hardware", "metrics")
_LEGACY_DERIVED = ("channels", "num_attributes", "channel_order")  # stored in the architecture config


def _from_legacy(d: dict[str, Any], known: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: d.pop(k) for k in list(d) if k in known and k not in ("training", "extra")}
    training = dict(d.pop("training", {}) or {})
    extra = dict(d.pop("extra", {}) or {})
    for k in _LEGACY_TRAINING:
        if k in d:
            training[k] = d.pop(k)
    for k in _LEGACY_DERIVED:
        d.pop(k, None)
    bank = d.pop("bank", None)
    if isinstance(bank, dict) and "bank_source" not in out:
        out["bank_source"] = str(bank.get("source", ""))
    data = str(out.get("training_data", ""))
    out.setdefault("modality", "fluorescence" if data.startswith(("fluo", "rxrx1")) else "he")
    out.setdefault("name", "unnamed")
    out.setdefault("library_version", "0.1.0")
    out.setdefault("num_params", 0)
    extra.update(d)
    out["training"], out["extra"] = training, extra
    return out
