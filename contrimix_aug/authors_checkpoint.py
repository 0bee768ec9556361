"""Import the authors' ContriMix training checkpoints (``.pth``) as contrimix_aug weights files.

The authors' training code saves ``{"algorithm": state_dict, "epoch": int, "best_val_metric": ...}``. The
``algorithm`` state dict holds four networks under ``_models_by_names.<net>.module.``: ``backbone`` (the
classifier, ignored), ``cont_enc`` (content encoder), ``attr_enc`` (attribute encoder) and ``im_gen``
(the generator, parameter-free at k = 1 and therefore empty). Only the k = 1 architecture is supported,
which is the one every published script trains.

Key mapping (authors -> contrimix_aug), strict in both directions:

============================================  =====================================
``cont_enc.module._model.0._model.0``         ``content_encoder.conv_in``
``cont_enc.module._model.1._model.0``         ``content_encoder.conv_mid``
``cont_enc.module._model.{2,3}._model.0``     ``content_encoder.blocks.{0,1}.conv1``
``cont_enc.module._model.{2,3}._model.3``     ``content_encoder.blocks.{0,1}.conv2``
``attr_enc.module._model.0``                  ``attribute_encoder.stem``
``attr_enc.module._model.{i}._forward_block.0``  ``attribute_encoder.blocks.{i-1}.conv1`` (i = 1..5)
``attr_enc.module._model.{i}._forward_block.2``  ``attribute_encoder.blocks.{i-1}.conv2``
``attr_enc.module._model.{i}._skip_block.1``     ``attribute_encoder.blocks.{i-1}.skip``
``attr_enc.module._model.7``                  ``attribute_encoder.head``
``attr_enc.module._model.8``                  ``attribute_encoder.norm`` (LayerNorm)
============================================  =====================================

each with ``.weight`` and ``.bias``. K is read from the tensor shapes and must agree between the two
encoders. Files are read with ``torch.load(weights_only=True, map_location="cpu")``: CUDA-saved
checkpoints load on CPU-only machines, and nothing but tensors, containers and plain numbers (numpy
scalars included) is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from ._io import sha256_file
from ._paths import weights_dir
from .model import ContriMixModel
from .model_config import ModelConfig
from .weights import REGISTRY, ContriMixWeights, WeightsError, load_weights, save_weights
from .weights_meta import WeightsMeta

__all__ = ["KNOWN_TRAINING_RESOLUTION", "convert_authors_state_dict", "import_authors_checkpoint"]

_NAMESPACE = "_models_by_names."
_WRAPPER = "module."
_IGNORED_NETS = ("backbone",)

#: Training patch size of the authors' published runs, by import name.
KNOWN_TRAINING_RESOLUTION = {"camelyon-authors": 96, "tcga": 572}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _content_map() -> dict[str, str]:
    layers = {
        "_model.0._model.0": "conv_in",
        "_model.1._model.0": "conv_mid",
        "_model.2._model.0": "blocks.0.conv1",
        "_model.2._model.3": "blocks.0.conv2",
        "_model.3._model.0": "blocks.1.conv1",
        "_model.3._model.3": "blocks.1.conv2",
    }
    return {f"{a}.{p}": f"content_encoder.{b}.{p}" for a, b in layers.items() for p in ("weight", "bias")}


def _attribute_map() -> dict[str, str]:
    layers = {"_model.0": "stem", "_model.7": "head", "_model.8": "norm"}
    for i in range(5):
        layers[f"_model.{i + 1}._forward_block.0"] = f"blocks.{i}.conv1"
        layers[f"_model.{i + 1}._forward_block.2"] = f"blocks.{i}.conv2"
        layers[f"_model.{i + 1}._skip_block.1"] = f"blocks.{i}.skip"
    return {f"{a}.{p}": f"attribute_encoder.{b}.{p}" for a, b in layers.items() for p in ("weight", "bias")}


_MAPS = {"cont_enc": _content_map(), "attr_enc": _attribute_map()}


def _full_key(net: str, tail: str) -> str:
    return f"{_NAMESPACE}{net}.{_WRAPPER}{tail}"


def _split_networks(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Group the algorithm state dict by network, strip the DP/DDP ``module.`` infix, reject unknown keys."""
    nets: dict[str, dict[str, Any]] = {"cont_enc": {}, "attr_enc": {}, "im_gen": {}}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if not isinstance(key, str) or not key.startswith(_NAMESPACE):
            unknown.append(str(key))
            continue
        net, _, tail = key[len(_NAMESPACE) :].partition(".")
        if net in _IGNORED_NETS:
            continue
        if net not in nets:
            unknown.append(key)
            continue
        tail = tail.removeprefix(_WRAPPER)
        if tail in nets[net]:
            raise WeightsError(f"authors' checkpoint: key {key!r} appears twice (with and without 'module.').")
        nets[net][tail] = value
    if unknown:
        raise WeightsError(
            f"authors' checkpoint: unexpected keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''} "
            f"({len(unknown)} in all): expected only '{_NAMESPACE}{{backbone,cont_enc,attr_enc,im_gen}}.module.*'. "
            "Is this a ContriMix checkpoint saved by the authors' training code?"
        )
    return nets


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def _infer_sizes(content: dict[str, Any], attr: dict[str, Any]) -> tuple[int, int]:
    """(C, K) from the shapes, cross-checked between the content and the attribute encoder."""
    c_in = content["_model.0._model.0.weight"]
    c_mid = content["_model.1._model.0.weight"]
    a_stem = attr["_model.0.weight"]
    a_head = attr["_model.7.weight"]
    for name, net, t in (
        ("_model.0._model.0.weight", "cont_enc", c_in),
        ("_model.1._model.0.weight", "cont_enc", c_mid),
        ("_model.0.weight", "attr_enc", a_stem),
        ("_model.7.weight", "attr_enc", a_head),
    ):
        if t.ndim != 4:
            raise WeightsError(
                f"authors' checkpoint: {_full_key(net, name)!r} should be a 4-D conv weight, got shape {_shape(t)}."
            )
    channels, k_content = c_in.shape[1], c_mid.shape[0]
    if a_stem.shape[1] != channels:
        raise WeightsError(
            f"authors' checkpoint: the content encoder takes {channels} channels "
            f"({_full_key('cont_enc', '_model.0._model.0.weight')} {_shape(c_in)}) but the attribute encoder takes "
            f"{a_stem.shape[1]} "
            f"({_full_key('attr_enc', '_model.0.weight')} {_shape(a_stem)})."
        )
    ck = a_head.shape[0]
    if ck % channels != 0 or ck // channels != k_content:
        raise WeightsError(
            f"authors' checkpoint: K mismatch: the content encoder has K={k_content} "
            f"({_full_key('cont_enc', '_model.1._model.0.weight')} {_shape(c_mid)}) but the attribute encoder head "
            f"outputs {ck} = {channels}·K values ({_full_key('attr_enc', '_model.7.weight')} {_shape(a_head)}), "
            f"i.e. K={ck / channels:g}. The two encoders come from different models."
        )
    return channels, k_content


def convert_authors_state_dict(
    state_dict: Mapping[str, Any],
    channel_order: str = "rgb",
    *,
    mode: str = "absorbance",
    meta: Mapping[str, Any] | None = None,
) -> ContriMixWeights:
    """Map the authors' ``algorithm`` state dict onto :class:`~contrimix_aug.ContriMixModel` weights.

    Args:
        state_dict: the ``"algorithm"`` entry of the authors' checkpoint (tensors on any device).
        channel_order: channel order the checkpoint was trained on, ``"rgb"`` or ``"bgr"``; inputs to the
            imported model are always RGB and flipped internally for ``"bgr"``.
        mode: ``"absorbance"`` (H&E: Camelyon, TCGA) or ``"linear"`` (fluorescence: RxRx1).
        meta: extra metadata stored with the weights.

    Returns:
        :class:`~contrimix_aug.ContriMixWeights` (float32, CPU) with the authors' architecture and K read from
        the tensor shapes.

    Raises:
        WeightsError: a missing, extra, misshaped, non-tensor or non-finite tensor (named), a K mismatch between
            the encoders, or generator parameters (k > 1 models).
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order: expected 'rgb' or 'bgr', got {channel_order!r}.")
    if mode not in ("absorbance", "linear"):
        raise ValueError(f"mode: expected 'absorbance' or 'linear', got {mode!r}.")
    if not isinstance(state_dict, Mapping):
        raise WeightsError(f"authors' checkpoint: expected a state dict (mapping), got {type(state_dict).__name__}.")
    nets = _split_networks(state_dict)
    if nets["im_gen"]:
        raise WeightsError(
            f"authors' checkpoint: the generator has parameters ({sorted(nets['im_gen'])[:4]}): this is a k > 1 "
            "model, and only the k = 1 architecture of the published scripts is supported."
        )
    missing: list[str] = []
    extra: list[str] = []
    for net, mapping in _MAPS.items():
        missing += [_full_key(net, k) for k in mapping if k not in nets[net]]
        extra += [_full_key(net, k) for k in nets[net] if k not in mapping]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if extra:
            parts.append(f"unexpected keys {extra}")
        raise WeightsError(
            "authors' checkpoint: " + " and ".join(parts) + ". Only the authors' k = 1 "
            "ContentEncoder/AttributeEncoder layout is supported (no spectral norm, no k = 2/4 variants)."
        )
    for net in _MAPS:
        for key, v in nets[net].items():
            where = f"authors' checkpoint: {_full_key(net, key)!r}"
            if not isinstance(v, torch.Tensor):
                raise WeightsError(f"{where} is a {type(v).__name__}, not a tensor.")
            if not v.is_floating_point():
                raise WeightsError(f"{where} has dtype {v.dtype}, not floating point.")
    channels, k = _infer_sizes(nets["cont_enc"], nets["attr_enc"])
    try:
        config = ModelConfig(in_channels=channels, num_attributes=k, mode=mode, channel_order=channel_order)
    except ValueError as err:
        raise WeightsError(f"authors' checkpoint (C={channels}, K={k}): {err}") from None
    template = ContriMixModel(config).state_dict()
    converted: dict[str, torch.Tensor] = {}
    misshaped: list[str] = []
    for net, mapping in _MAPS.items():
        for theirs, ours in mapping.items():
            t = nets[net][theirs]
            if _shape(t) != _shape(template[ours]):
                misshaped.append(f"{_full_key(net, theirs)}: got {_shape(t)}, expected {_shape(template[ours])}")
                continue
            t = t.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
            if not bool(torch.isfinite(t).all()):
                raise WeightsError(f"authors' checkpoint: {_full_key(net, theirs)!r} contains NaN or Inf values.")
            converted[ours] = t
    if misshaped:
        raise WeightsError(
            f"authors' checkpoint: tensors with the wrong shape for the authors' architecture at C={channels}, "
            f"K={k}: " + "; ".join(misshaped)
        )
    if set(converted) != set(template):  # the maps above cover the model exactly; guard against drift
        raise WeightsError(f"internal: key map does not cover the model: {sorted(set(template) ^ set(converted))}")
    num_params = sum(t.numel() for t in converted.values())
    meta_d = dict(meta or {})
    info = WeightsMeta(
        name=str(meta_d.pop("name", "authors")),
        modality="he" if mode == "absorbance" else "fluorescence",
        library_version=__version__,
        num_params=num_params,
        training_data="authors' checkpoint",
        licence="the authors' (their repository states MIT in its pyproject)",
        extra={"architecture": "authors' k=1 ContentEncoder/AttributeEncoder (parameter-free generator)", **meta_d},
    )
    return ContriMixWeights(config, converted, None, info, source="<authors' checkpoint>")


# -- reading the .pth file --------------------------------------------------------------------------------


def _numpy_scalar_globals() -> list[Any]:
    """The globals a pickled numpy scalar needs (``best_val_metric`` may be one); nothing executable."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    out: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    out.append(np.dtype)
    out += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)]
    return out


def _unsafe_globals(src: Path, err: Exception) -> list[str]:
    """Names of the non-tensor globals the file needs ([] when it is simply unreadable)."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(src)))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files: fall back on the error text
        found = []
    if not found:
        m = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if m:
            found = [m.group(1)]
    return found


def _load_pth(src: Path) -> Any:
    """``torch.load(weights_only=True, map_location="cpu")``; numpy scalars allowed; anything else refused."""

    def unreadable(err: Exception) -> WeightsError:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        marker = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln), None)
        if marker is not None and marker + 1 < len(lines):
            detail = lines[marker + 1]  # torch puts the actual reason on the line after this marker
        else:
            detail = lines[0] if lines else ""
        return WeightsError(
            f"{src}: not a readable PyTorch checkpoint ({type(err).__name__}: {detail[:200]}). The file is "
            "truncated, corrupted, or not a torch.save file."
        )

    try:
        return torch.load(str(src), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        first = err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        raise unreadable(err) from None
    unsafe = _unsafe_globals(src, first)
    if not unsafe:
        raise unreadable(first) from None
    from torch.serialization import safe_globals

    try:
        with safe_globals(_numpy_scalar_globals()):
            return torch.load(str(src), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError):
        pass
    raise WeightsError(
        f"{src}: the checkpoint contains pickled Python objects ({', '.join(unsafe[:6])}) besides tensors. "
        "contrimix_aug only reads tensors and plain containers (torch.load(weights_only=True)) and will not unpickle "
        "arbitrary objects. Re-save just the state dict, e.g. torch.save({'algorithm': ckpt['algorithm']}, "
        "'clean.pth'), in an environment you trust."
    ) from None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith(".safetensors"):
        raise ValueError(
            f"name: expected a plain weights name such as 'tcga' or 'camelyon' (letters, digits, '.', '_', '-'; "
            f"no path, no extension), got {name!r}."
        )
    entry = next((e for n, e in REGISTRY.items() if n.lower() == name.lower()), None)
    if entry is not None and entry.bundled:
        raise ValueError(f"name: {name!r} is a weights file bundled with contrimix_aug; choose another name "
                         "(the authors' Camelyon17 checkpoint imports as 'camelyon-authors').")


def import_authors_checkpoint(
    src: str | os.PathLike,
    name: str,
    channel_order: str = "rgb",
    dest_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    *,
    mode: str = "absorbance",
    training_resolution: int | None = None,
    bank_images: str | os.PathLike | None = None,
) -> Path:
    """Convert an authors' ``.pth`` checkpoint into ``DEST/NAME.safetensors``, with an attribute bank.

    Args:
        src: the checkpoint (``{"algorithm": state_dict, "epoch": ..., ...}`` or the bare algorithm state dict).
        name: weights name; with the default ``dest_dir`` the result loads with ``load_model(name)``.
        channel_order: ``"rgb"`` or ``"bgr"``, the channel order the checkpoint was trained on.
        dest_dir: output folder, default ``contrimix_aug._paths.weights_dir()`` (``$CONTRIMIX_AUG_HOME/weights``).
        overwrite: replace an existing file of that name.
        mode: ``"absorbance"`` (H&E) or ``"linear"`` (fluorescence).
        training_resolution: training patch size stored in the metadata; default from the name
            (``camelyon-authors`` 96, ``tcga`` 572), else unknown.
        bank_images: folder of reference images whose attributes become the bank (donors for single images, the
            default :class:`~contrimix_aug.ContriMixNormalize` target); default: the real tiles bundled with the
            package for the checkpoint's channel count (H&E: cmu1 + skin; 1 channel: dsb nuclei).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        FileExistsError: the destination exists and ``overwrite`` is False.
        WeightsError: the file is not a loadable authors' checkpoint (see :func:`convert_authors_state_dict`).
    """
    _check_name(name)
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order: expected 'rgb' or 'bgr', got {channel_order!r}.")
    src = Path(src).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"checkpoint {str(src)!r} does not exist.")
    dest = Path(dest_dir).expanduser() if dest_dir is not None else weights_dir()
    path = dest / f"{name}.safetensors"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --force) to replace it.")
    digest = sha256_file(src)
    ckpt = _load_pth(src)
    if isinstance(ckpt, Mapping) and "algorithm" in ckpt:
        state_dict = ckpt["algorithm"]
    elif isinstance(ckpt, Mapping) and any(isinstance(k, str) and k.startswith(_NAMESPACE) for k in ckpt):
        state_dict = ckpt
    else:
        keys = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise WeightsError(
            f"{src}: not an authors' ContriMix checkpoint: expected a dict with an 'algorithm' state dict, got {keys}."
        )
    resolution = training_resolution if training_resolution is not None else KNOWN_TRAINING_RESOLUTION.get(name)
    meta: dict[str, Any] = {
        "name": name,
        "source_file": src.name,
        "source_sha256": digest,
        "training_resolution": resolution,
    }
    epoch = ckpt.get("epoch") if isinstance(ckpt, Mapping) else None
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        meta["epoch"] = epoch
    try:
        weights = convert_authors_state_dict(state_dict, channel_order, mode=mode, meta=meta)
    except WeightsError as err:
        raise WeightsError(f"{src}: {err}") from None
    model = weights.build()
    bank, bank_source = _reference_bank(model, bank_images)
    weights.bank = bank
    weights.meta = weights.meta.replace(bank_source=bank_source)
    save_weights(weights, path)
    try:
        load_weights(path).build()  # read back: checksum + strict load
    except WeightsError:
        path.unlink(missing_ok=True)
        raise
    return path


def _reference_bank(model: ContriMixModel, folder: str | os.PathLike | None) -> tuple[torch.Tensor, str]:
    """(N, C, K) attributes of reference images and a description of them."""
    from .bank import resolve_bank
    from .data.readers import IMAGE_EXTENSIONS, read_image
    from .data.readers import load_demo_tiles

    c = model.config.in_channels
    if folder is None:
        tiles, ids = load_demo_tiles(modality="he" if c == 3 else "fluorescence")
        if tiles.shape[-1] != c:
            raise ValueError(f"no bundled reference tiles for {c}-channel models; pass bank_images=DIR.")
        return resolve_bank(model, tiles), f"{len(ids)} real tiles bundled with contrimix_aug ({', '.join(sorted(set(ids)))})"
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"bank_images: {str(root)!r} is not a folder of images.")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"bank_images: no images ({', '.join(IMAGE_EXTENSIONS)}) in {root}.")
    images = [read_image(p, 3 if c == 3 else None) for p in paths]
    return resolve_bank(model, images), f"{len(paths)} reference images of {root.name}/"
