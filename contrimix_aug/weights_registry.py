"""The registry of the weights names users type, and where each name's file is: bundled with the package, or in the
weights cache (``$CONTRIMIX_AUG_HOME/weights``). Reads file headers only; building models is :mod:`.weights`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from safetensors import safe_open

from ._paths import weights_dir

__all__ = ["DEFAULT_WEIGHTS", "REGISTRY", "RegisteredWeights", "available_weights", "bundled_path", "cache_path",
           "cached_names", "canonical_name", "weights_for_channels", "weights_path"]

DEFAULT_WEIGHTS = "he"


@dataclass(frozen=True)
class RegisteredWeights:
    """One row of the weights registry.

    Attributes:
        name: the name users type (matched case-insensitively).
        modality: ``"he"`` or ``"fluorescence"``.
        description: one line.
        bundled: the file ships inside the package (else it is imported or trained into the weights cache).
        how_to_get: for names that are not bundled, what to do (in words a user can follow).
        um_per_px: (low, high) training resolution range, or None when unknown.
        card: the model card in the repository ("" when there is none).
    """

    name: str
    modality: str
    description: str
    bundled: bool
    how_to_get: str = ""
    um_per_px: tuple[float, float] | None = None
    card: str = ""


REGISTRY: dict[str, RegisteredWeights] = {
    w.name: w
    for w in (
        RegisteredWeights(
            "he", "he", "H&E, K = 8, trained label-free on 6 real H&E images of 5 labs (about 0.5 µm/px)",
            True, um_per_px=(0.5, 0.5), card="docs/weights/he.md"),
        RegisteredWeights(
            "camelyon", "he", "H&E lymph node, K = 8, trained label-free on the CAMELYON17 tiles of the "
            "Camelyon17-WILDS training hospitals 0, 3, 4 at 0.25-1 µm/px", True, um_per_px=(0.25, 1.0),
            card="docs/weights/camelyon.md"),
        RegisteredWeights(
            "fluorescence", "fluorescence", "1-channel nuclear stains, linear mode, K = 4, trained on 3 real "
            "fluorescence sources", True, card="docs/weights/fluorescence.md"),
        RegisteredWeights(
            "camelyon-authors", "he", "the authors' Camelyon17-WILDS checkpoint (K = 4, RGB, 96 px)", False,
            "Download a Camelyon17 ContriMix checkpoint (.pth) from the model zoo of the authors' repository "
            "(MODELZOO.md on the 'histogan' branch of gitlab.com/huutan86/intraminibatch_permutation_drit; a public "
            "copy is github.com/Cristian-Mattace/ContriMix), then run "
            "`contrimix-aug import-checkpoint FILE.pth --name camelyon-authors`.", (1.0, 1.0)),
        RegisteredWeights(
            "tcga", "he", "the authors' TCGA encoders checkpoint (K = 16, 572 px)", False,
            "Download the TCGA ContriMix checkpoint (.pth) from the model zoo of the authors' repository (MODELZOO.md "
            "on the 'histogan' branch of gitlab.com/huutan86/intraminibatch_permutation_drit), then run "
            "`contrimix-aug import-checkpoint FILE.pth --name tcga` (add --channel-order bgr if its colours come "
            "out swapped)."),
    )
}
"""Every name the library knows, bundled or not (:func:`available_weights` lists what loads now)."""


def bundled_path(name: str) -> Path:
    """Where the bundled file of ``name`` lives inside the installed package."""
    return Path(str(resources.files("contrimix_aug") / "assets" / "weights" / f"{name}.safetensors"))


def cache_path(name: str) -> Path:
    """Where an imported or trained file of ``name`` lives in the weights cache."""
    return weights_dir() / f"{name}.safetensors"


def canonical_name(name: str) -> str:
    """The registered or cached spelling of ``name`` (names match case-insensitively)."""
    for n in list(REGISTRY) + cached_names():
        if n.lower() == name.lower():
            return n
    return name


def cached_names() -> list[str]:
    d = weights_dir()
    return sorted(p.name[: -len(".safetensors")] for p in d.glob("*.safetensors")) if d.is_dir() else []


def weights_path(name: str) -> Path | None:
    """The file ``load_model(name)`` reads: bundled with the package first, then in the weights cache
    (``$CONTRIMIX_AUG_HOME/weights``); None when there is none."""
    name = canonical_name(name)
    entry = REGISTRY.get(name)
    candidates = [bundled_path(name)] if entry is not None and entry.bundled else []
    candidates.append(cache_path(name))
    return next((p for p in candidates if p.is_file()), None)


def available_weights() -> list[str]:
    """Names that load now: bundled files, then imported or trained files in the weights cache."""
    names = [n for n in REGISTRY if weights_path(n) is not None]
    return list(dict.fromkeys(names + cached_names()))


def weights_for_channels(channels: int) -> list[str]:
    """Names of the weights that load now (:func:`available_weights`) and take ``channels`` channels.

    Reads only the header of each file (used on the error path of the channel check)."""
    try:
        names = []
        for name in available_weights():
            path = weights_path(name)
            if path is None:
                continue
            with safe_open(str(path), framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
            if int(config.get("in_channels", 3)) == channels:
                names.append(name)
        return names
    except Exception:  # noqa: BLE001 - a hint must never hide the error it decorates
        return []
