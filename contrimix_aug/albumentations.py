"""ContriMix as an albumentations ``ImageOnlyTransform``, :class:`AlbumentationsContriMix` (numpy H×W×C images,
one image per call).

A single image has no batch to take attributes from, so donors always come from an attribute bank: the
one stored with the weights, or one built from reference images passed as ``bank=``; its entries
(``donors="bank"``) or new attribute matrices sampled around them (``donors="sampled"``, with ``spread``).

Randomness comes from albumentations' per-transform generators (``self.random_generator``,
``self.py_random``), which ``A.Compose(seed=...)`` seeds; the donor index and strength are drawn in
:meth:`AlbumentationsContriMix.get_params`, so ``get_applied_params()`` and ``A.ReplayCompose`` replay a call exactly.

Importing this module needs albumentations >= 2.0 (``pip install "contrimix_aug[albumentations]"``); the rest
of ``contrimix_aug`` never imports it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

try:
    import albumentations as A
    from albumentations.core.transforms_interface import BaseTransformInitSchema
except ImportError as _err:  # pragma: no cover - tests/test_albumentations.py imports a probe copy
    raise ImportError(
        "contrimix_aug.albumentations needs the albumentations package (>= 2.0), which is not installed: "
        'pip install "contrimix_aug[albumentations]". The kornia/torch transform contrimix_aug.ContriMix works without it.'
    ) from _err

from pydantic import field_validator

from ._checks import check_strength, clamped_values
from .bank import resolve_bank
from .functional import apply_contrimix
from .mixing import DEFAULT_DONORS, MixParams, check_spread, sample_mix_params
from .model import ContriMixModel
from .weights import DEFAULT_WEIGHTS, load_model

__all__ = ["AlbumentationsContriMix"]

if int(A.__version__.split(".")[0]) < 2:  # pragma: no cover - only albumentations 2.x is installed in CI
    raise ImportError(
        f"contrimix_aug.albumentations needs albumentations >= 2.0, found {A.__version__}: "
        'pip install -U "albumentations>=2".'
    )

_CHUNK = 32  # images rendered per model call in apply_to_images
_DONOR_MODES = ("bank", "sampled")  # one image per call: no batch donors


def _model_device(model: ContriMixModel) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _hwc_to_tensor(arr: np.ndarray, name: str, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """uint8 (0-255) or float32 (inside the weights' ``value_range``) numpy -> float32 tensor, same layout."""
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    if arr.dtype == np.float32:
        x = torch.from_numpy(np.ascontiguousarray(arr))
        return clamped_values(x, name=name, value_range=value_range)  # a small overshoot is clamped
    hint = {
        np.dtype(np.uint16): "img.astype(np.float32) / 65535 (16-bit data)",
        np.dtype(np.float64): "img.astype(np.float32) (values in [0, 1])",
    }.get(arr.dtype, "img.astype(np.float32) / img.max() (values scaled to [0, 1])")
    raise TypeError(
        f"{name}: expected a uint8 (0-255) or float32 ([0, 1]) image, got dtype {arr.dtype}. Convert with {hint}."
    )


class AlbumentationsContriMix(A.ImageOnlyTransform):
    """ContriMix stain augmentation for albumentations pipelines (donor attributes from a bank).

    The image keeps its content (stain concentrations) and is re-rendered with the attributes (stain look) of
    a donor drawn uniformly from the attribute bank, or (``donors="sampled"``) of a new attribute matrix sampled
    around the bank. Masks, bounding boxes and keypoints pass through ``A.Compose`` unchanged.

    Args:
        weights: registry name, path to a ``.safetensors`` file, :class:`~contrimix_aug.ContriMixWeights` or
            :class:`~contrimix_aug.ContriMixModel`; ``None`` = the bundled H&E default.
        p: probability of applying the transform.
        strength: α in [0, 1], or a (low, high) range sampled per call: attributes become
            (1 - α)·own + α·donor.
        donors: ``"sampled"`` (the default, as for :class:`~contrimix_aug.ContriMix`: stains no reference image
            had, a random blend of 3 bank entries scaled from the bank centre by ``spread``;
            :func:`~contrimix_aug.mixing.sample_bank_attributes`) or ``"bank"`` (a bank entry).
        spread: with ``donors="sampled"`` only: the sampled matrices' standard deviation relative to the bank's:
            None = 0.7 (the default chosen with it), 1 = as varied as the bank, 0 = the bank centre, <= 1/κ (≈ 0.707
            for a large bank) = inside the bank's convex hull.
        bank: donors to use instead of the weights' bank: reference images (N, H, W, C) numpy (uint8 or float32),
            a list of (H, W, C) numpy images (any sizes), (N, C, H, W) float tensor in [0, 1], or
            precomputed attributes (N, C, K) tensor.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...). A model passed in is copied before being moved.
        render_guard: glass stays glass and no pixel is darker than real tissue
            (:func:`~contrimix_aug.optical_density.limit_render`; absorbance-mode weights only, linear-mode
            (fluorescence) weights are unaffected); False: the authors' unguarded render.

    Targets:
        image, images (a stack shares one donor and strength: albumentations gives a stack one params dict,
        as for every other transform; the stack is rendered in batched model calls), volume.

    Image types:
        uint8 (H, W, C) -> uint8 (rounded, not truncated); float32 (H, W, C) in [0, 1] -> float32 (values up to
        0.15 outside [0, 1] are clamped, further out refused).
        With single-channel weights, (H, W) -> (H, W) and (H, W, 1) -> (H, W, 1).

    Example:
        >>> import albumentations as A, numpy as np, torch, contrimix_aug as ca
        >>> m = ca.ContriMixModel(ca.ModelConfig(attr_widths=(8, 8, 8)), bank=torch.rand(4, 3, 4))
        >>> t = A.Compose([AlbumentationsContriMix(weights=m, p=1.0)], seed=0)
        >>> out = t(image=np.full((32, 32, 3), 200, np.uint8))["image"]
        >>> out.shape, out.dtype
        ((32, 32, 3), dtype('uint8'))
    """

    class InitSchema(BaseTransformInitSchema):
        weights: Any = None
        strength: Any = 1.0
        donors: Any = DEFAULT_DONORS
        spread: Any = None
        bank: Any = None
        device: Any = "cpu"
        render_guard: Any = True

        @field_validator("strength")
        @classmethod
        def _strength(cls, v: Any) -> tuple[float, float]:
            try:
                return check_strength(tuple(v) if isinstance(v, list) else v)
            except TypeError as err:  # pydantic only turns ValueError into a validation error
                raise ValueError(str(err)) from None

        @field_validator("donors")
        @classmethod
        def _donors(cls, v: Any) -> str:
            if v not in _DONOR_MODES:
                raise ValueError(f"donors: expected one of {_DONOR_MODES} (a single image has no batch to take "
                                 f"donors from), got {v!r}.")
            return v

        @field_validator("spread")
        @classmethod
        def _spread(cls, v: Any) -> float | None:
            try:
                return None if v is None else check_spread(v)
            except TypeError as err:  # pydantic only turns ValueError into a validation error
                raise ValueError(str(err)) from None

        @field_validator("render_guard")
        @classmethod
        def _render_guard(cls, v: Any) -> bool:
            if not isinstance(v, bool):
                raise ValueError(f"render_guard: expected True or False, got {v!r}.")
            return v

        @field_validator("device")
        @classmethod
        def _device(cls, v: Any) -> str:
            try:
                return str(torch.device(v))
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {v!r} ({err}).")

        def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
            # pydantic's model_dump would turn a ContriMixWeights dataclass into a plain dict; albumentations
            # passes this dump to __init__, so hand the validated objects over as they are.
            return {name: getattr(self, name) for name in type(self).model_fields}

    def __init__(
        self,
        weights: Any = None,
        p: float = 0.5,
        strength: float | tuple[float, float] = 1.0,
        bank: Any = None,
        device: str | torch.device = "cpu",
        donors: str = DEFAULT_DONORS,
        spread: float | None = None,
        render_guard: bool = True,
    ) -> None:
        super().__init__(p=p)
        if not isinstance(render_guard, bool):
            raise TypeError(f"render_guard: expected True or False, got {render_guard!r}.")
        if donors not in _DONOR_MODES:
            raise ValueError(f"donors: expected one of {_DONOR_MODES} (a single image has no batch to take donors "
                             f"from), got {donors!r}.")
        self.weights = weights
        self.strength = check_strength(strength)
        self.donors = donors
        self.spread = check_spread(spread, donors)
        self.render_guard = render_guard
        self.device = str(torch.device(device))
        self.bank = bank
        self._model: ContriMixModel = load_model(weights, copy=True).to(torch.device(self.device))
        own = resolve_bank(self._model, bank)
        self._bank = (self._model.bank if own is None else own).float().to(_model_device(self._model))
        if self._bank.shape[0] == 0:
            raise ValueError(
                "ContriMix (albumentations): a single image has no batch to take attributes from, so donors come "
                "from an attribute bank, and these weights carry none. Pass bank=reference images "
                "((N, H, W, C) numpy or a list of (H, W, C) images) or attributes ((N, C, K) tensor)."
            )

    # -- setup -------------------------------------------------------------------------------------------
    @property
    def model(self) -> ContriMixModel:
        """The frozen model used for rendering."""
        return self._model

    # -- albumentations API ------------------------------------------------------------------------------
    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("weights", "strength", "donors", "spread", "bank", "device", "render_guard")

    def get_params(self) -> dict[str, Any]:
        """Donor index into the bank and strength α (:func:`~contrimix_aug.mixing.sample_mix_params`, drawing from
        a generator seeded by albumentations' own per-transform RNG, so ``A.Compose(seed=...)`` and replay work).
        With ``donors="sampled"`` the donor is -1 and ``donor_attributes`` holds the sampled (C, K) matrix as
        nested lists of floats (exact for float32, and JSON-friendly for ``A.ReplayCompose``)."""
        g = torch.Generator().manual_seed(int(self.random_generator.integers(0, 2**63 - 1)))
        params = sample_mix_params(1, p=1.0, strength=self.strength, donors=self.donors, bank=self._bank,
                                   spread=self.spread, generator=g)
        out: dict[str, Any] = {"donor": int(params.donors[0]), "strength": float(params.strength[0])}
        if params.donor_attributes is not None:
            out["donor_attributes"] = params.donor_attributes[0].tolist()
        return out

    def apply(self, img: np.ndarray, donor: int = 0, strength: float = 1.0, donor_attributes: Any = None,
              **params: Any) -> np.ndarray:
        x, squeeze_c = self._to_bchw(img, "image", stack=False)
        out = self._render(x, donor, strength, donor_attributes)
        return self._from_bchw(out, img, squeeze_c, stack=False)

    def apply_to_images(self, images: np.ndarray, donor: int = 0, strength: float = 1.0, donor_attributes: Any = None,
                        **params: Any) -> np.ndarray:
        if isinstance(images, (list, tuple)):
            images = np.stack(images)
        x, squeeze_c = self._to_bchw(images, "images", stack=True)
        out = torch.cat([self._render(chunk, donor, strength, donor_attributes) for chunk in x.split(_CHUNK)])
        return self._from_bchw(out, images, squeeze_c, stack=True)

    def __repr__(self) -> str:
        w = self.weights
        if w is None or isinstance(w, (str, os.PathLike)):
            w_s = repr(DEFAULT_WEIGHTS if w is None else os.fspath(w))
        else:
            name = self._model.meta.name if self._model.meta is not None else None
            w_s = f"<{type(w).__name__}{' ' + repr(name) if name else ''}>"
        lo, hi = self.strength
        c = self._model.config
        spread = f", spread={self.spread}" if self.donors == "sampled" else ""
        return (
            f"AlbumentationsContriMix(weights={w_s}, p={self.p}, donors={self.donors!r}{spread}, "
            f"strength={lo if lo == hi else self.strength}, bank={self._bank.shape[0]}, C={c.in_channels}, "
            f"K={c.num_attributes}, device={self.device!r}{'' if self.render_guard else ', render_guard=False'})"
        )

    # -- conversions ---------------------------------------------------------------------------------------
    def _to_bchw(self, arr: Any, name: str, *, stack: bool) -> tuple[torch.Tensor, bool]:
        """(H, W[, C]) or, with ``stack``, (N, H, W[, C]) numpy -> float32 (N, C, H, W) on the model's device."""
        c = self._model.config.in_channels
        if not isinstance(arr, np.ndarray):
            raise TypeError(
                f"ContriMix {name}: expected a numpy array ({'N, ' if stack else ''}H, W, C), "
                f"got {type(arr).__name__}."
            )
        spatial = 3 if stack else 2
        if arr.ndim == spatial:  # no channel axis: single-channel image
            if c != 1:
                raise ValueError(
                    f"ContriMix {name}: got a single-channel image of shape {arr.shape}, but the weights expect "
                    f"{c} channels (H, W, {c}). Use weights trained for 1 channel (e.g. 'fluorescence')."
                )
            arr4 = arr[..., None]
            squeeze_c = True
        elif arr.ndim == spatial + 1:
            arr4 = arr
            squeeze_c = False
            if arr.shape[-1] != c:
                hint = " It looks channels-first: use np.transpose(img, (1, 2, 0))." if arr.shape[-3] == c else ""
                raise ValueError(
                    f"ContriMix {name}: the weights expect {c} channel(s), got {arr.shape[-1]} (shape {arr.shape}). "
                    f"albumentations images are (H, W, C).{hint}"
                )
        else:
            want = f"(N, H, W, {c})" if stack else f"(H, W, {c})" + (" or (H, W)" if c == 1 else "")
            raise ValueError(f"ContriMix {name}: expected {want}, got a {arr.ndim}-D array of shape {arr.shape}.")
        low = self._model.min_size  # the weights' metadata, as in the kornia/torchvision module
        if arr4.shape[-3] < low or arr4.shape[-2] < low:
            raise ValueError(f"ContriMix {name}: images must be at least {low}×{low} px (these weights' min_size), "
                             f"got {arr4.shape[-3]}×{arr4.shape[-2]}.")
        if stack and arr4.shape[0] == 0:
            raise ValueError(f"ContriMix {name}: the stack is empty (shape {arr.shape}).")
        x = _hwc_to_tensor(arr4, f"ContriMix {name}", self._model.value_range)
        x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)
        return x.to(_model_device(self._model), non_blocking=True), squeeze_c

    @staticmethod
    def _from_bchw(out: torch.Tensor, like: np.ndarray, squeeze_c: bool, *, stack: bool) -> np.ndarray:
        """float (N, C, H, W) in [0, 1] -> numpy in the layout and dtype of ``like``."""
        out = out.permute(0, 2, 3, 1)
        if not stack:
            out = out[0]
        if squeeze_c:
            out = out[..., 0]
        if like.dtype == np.uint8:
            out = out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        else:
            out = out.clamp(0.0, 1.0).float()
        return np.ascontiguousarray(out.cpu().numpy())

    @torch.inference_mode()
    def _render(self, x: torch.Tensor, donor: int, strength: float, donor_attributes: Any = None) -> torch.Tensor:
        n = x.shape[0]
        if donor_attributes is not None:  # a sampled donor: its (C, K) matrix travels in the params
            c, k = self._model.config.in_channels, self._model.config.num_attributes
            attrs = torch.as_tensor(np.asarray(donor_attributes, dtype=np.float32))
            if tuple(attrs.shape) != (c, k) or not bool(torch.isfinite(attrs).all()):
                raise ValueError(f"ContriMix: donor_attributes must be a finite ({c}, {k}) matrix, got shape "
                                 f"{tuple(attrs.shape)}; replay the params this transform recorded.")
            params = MixParams(torch.ones(n, dtype=torch.bool), torch.full((n,), -1, dtype=torch.long),
                               torch.zeros(n, dtype=torch.bool), torch.full((n,), float(strength)),
                               attrs.expand(n, c, k))
            return apply_contrimix(self._model, x, params, render_guard=self.render_guard, check_values=False)
        if not 0 <= int(donor) < self._bank.shape[0]:
            raise ValueError(
                f"ContriMix: donor {donor} is outside the attribute bank (size {self._bank.shape[0]}); "
                "replayed params must come from a transform with the same bank."
            )
        params = MixParams(torch.ones(n, dtype=torch.bool), torch.full((n,), int(donor), dtype=torch.long),
                           torch.ones(n, dtype=torch.bool), torch.full((n,), float(strength)))
        return apply_contrimix(self._model, x, params, bank=self._bank, render_guard=self.render_guard,
                               check_values=False)
