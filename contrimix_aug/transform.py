"""The ``ContriMix`` batch transform (a kornia intensity augmentation) and ``ContriMixNormalize``.

Thin shells over the functional core: they hold a frozen copy of the model, draw parameters with
:func:`contrimix_aug.mixing.sample_mix_params` from their own ``torch.Generator`` and hand them to
:func:`contrimix_aug.functional.apply_contrimix` (or :func:`~contrimix_aug.functional.normalize`).
A single tensor takes kornia's path; a torchvision v2 sample (several inputs, a tuple / list / dict, a
``tv_tensors.Image``) goes through :mod:`contrimix_aug._torchvision`, which imports torchvision only then.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any, Dict, Optional

import torch
from kornia.augmentation import IntensityAugmentationBase2D

from ._checks import check_image, check_probability, check_strength, clamped_values
from ._seeding import derive_seed
from ._torchvision import apply_to_sample, is_kornia_params, is_sample_call
from .bank import compute_bank, resolve_bank
from .functional import apply_contrimix, normalize
from .mixing import DEFAULT_DONORS, DONOR_MODES, MixParams, check_spread, sample_bank_attributes, sample_mix_params, sample_strength
from .model import ContriMixModel
from .weights import DEFAULT_WEIGHTS, load_model

__all__ = ["ContriMix", "ContriMixNormalize"]


class _ContriMixBase(IntensityAugmentationBase2D):
    """Shared plumbing: a frozen copy of the weights, input checks, kornia version independence, torchvision v2
    samples, gradients w.r.t. the input, state dicts."""

    def __init__(self, weights: Any, p: float, keepdim: bool, check_values: bool, state_dict_weights: bool,
                 same_on_batch: bool = False, render_guard: bool = True) -> None:
        if not isinstance(same_on_batch, bool):
            raise TypeError(f"same_on_batch: expected True or False, got {same_on_batch!r}.")
        if not isinstance(render_guard, bool):
            raise TypeError(f"render_guard: expected True or False, got {render_guard!r}.")
        super().__init__(p=check_probability(p), p_batch=1.0, same_on_batch=same_on_batch, keepdim=keepdim)
        self.model: ContriMixModel = load_model(weights, copy=True)
        self.weights_label = _weights_label(weights, self.model)
        self.check_values = bool(check_values)
        self.state_dict_weights = bool(state_dict_weights)
        self.render_guard = render_guard
        # The frozen weights are not the user's to checkpoint: nn.Sequential(ContriMix(...), net).state_dict()
        # holds only the net, unless state_dict_weights=True.
        self._register_state_dict_hook(_drop_model_keys)
        self.register_load_state_dict_pre_hook(_fill_model_keys)

    @property
    def params(self) -> Dict[str, torch.Tensor]:
        """Parameters of the last call (kornia's ``_params``); ``aug(x, params=aug.params)`` replays it exactly."""
        return self._params

    # kornia calls transform_inputs from forward (standalone) and from AugmentationSequential, on every
    # version (0.7 .. 0.9); overriding it means we always see the full batch, whatever p is.
    def transform_inputs(  # type: ignore[override]
        self,
        input: torch.Tensor,
        params: Optional[Dict[str, torch.Tensor]],
        flags: Optional[Dict[str, Any]] = None,
        transform: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        params = self._params if params is None else params
        ori_shape = input.shape
        name = type(self).__name__ + " input"
        check_image(input, self.model.config.in_channels, name=name, allow_chw=True, min_size=self.model.min_size)
        x = input if input.ndim == 4 else input.unsqueeze(0)
        model_device = next(self.model.parameters()).device
        if x.device != model_device:
            raise ValueError(
                f"{type(self).__name__} input: the image is on {x.device} but the model is on {model_device}; "
                f"move the transform with aug.to({str(x.device)!r}), or the image with x.to({str(model_device)!r})."
            )
        if self.check_values:  # a small overshoot (interpolation, jitter) is clamped, not refused
            x = clamped_values(x, name=name, value_range=self.model.value_range)
        if "donors" not in params or params["donors"].shape[0] != x.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: params were drawn for another batch size "
                f"({params['donors'].shape[0] if 'donors' in params else 'none'} vs {x.shape[0]}); "
                "replay params only on the batch they were drawn for."
            )
        # gradients flow to an input that requires them (the model's own parameters stay frozen)
        with contextlib.nullcontext() if x.requires_grad else torch.no_grad():
            out = self._render(x, params)
        if self.keepdim and len(ori_shape) == 3:
            return out.squeeze(0)
        return out

    def forward(  # type: ignore[override]
        self, input: Any, *rest: Any, params: Optional[Dict[str, torch.Tensor]] = None, **kwargs: Any
    ) -> Any:
        """Render one image tensor (kornia), or the images of a torchvision v2 sample.

        ``aug(x)`` / ``aug(x, params=aug.params)`` / ``aug(x, aug.params)``: x is (C, H, W) or (B, C, H, W),
        kornia's path. ``aug(img, mask, ...)``, ``aug((img, target))``, ``aug({"image": img, "mask": mask})``, a
        ``tv_tensors.Image``: a torchvision v2 sample (:mod:`contrimix_aug._torchvision`): its images are
        re-rendered with one draw and keep their type; every other leaf comes back untouched.
        """
        if len(rest) == 1 and params is None and (rest[0] is None or is_kornia_params(rest[0])):
            params, rest = rest[0], ()  # kornia's positional spelling: aug(x, params)
        if is_sample_call(input, rest):
            if kwargs:
                raise TypeError(f"{type(self).__name__}: keyword arguments {sorted(kwargs)} apply to kornia's single "
                                "tensor call only, not to a torchvision sample.")
            return apply_to_sample(self, (input, *rest), params)
        self._check_tensor(input)
        return super().forward(input, params=params, **kwargs)

    def _check_tensor(self, x: Any) -> None:
        check_image(x, self.model.config.in_channels, name=type(self).__name__ + " input", allow_chw=True,
                    min_size=self.model.min_size)

    def _forward_tensor(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        """kornia's forward on one plain (C, H, W) or (B, C, H, W) tensor with given params (records them)."""
        return super().forward(x, params=params)

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "_ContriMixBase":
        super().train(mode)
        self.model.eval()  # the model is frozen; it has no train-time behaviour
        return self


def _weights_label(weights: Any, model: ContriMixModel) -> str:
    """How a repr names the weights: the name or path the user passed, else the object's kind and stored name."""
    if weights is None:
        return repr(DEFAULT_WEIGHTS)
    if isinstance(weights, (str, os.PathLike)):
        return repr(os.fspath(weights))
    name = model.meta.name if model.meta is not None else None
    return f"<{type(weights).__name__}{' ' + repr(name) if name else ''}>"


def _drop_model_keys(module: _ContriMixBase, state_dict: Dict[str, Any], prefix: str, local_metadata: Any) -> None:
    if not module.state_dict_weights:
        for key in [k for k in state_dict if k.startswith(prefix + "model.")]:
            del state_dict[key]


def _fill_model_keys(module: _ContriMixBase, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    # a state dict saved without the frozen weights loads (strictly) into a pipeline that holds them
    if not module.state_dict_weights:
        for key, value in module.model.state_dict().items():
            state_dict.setdefault(prefix + "model." + key, value)


class ContriMix(_ContriMixBase):
    r"""ContriMix augmentation: each selected image keeps its content and takes the attributes (stain look)
    of a different image of the batch, of an attribute bank, or new ones sampled around the bank. No domain labels.

    Args:
        weights: registry name (``"camelyon"``, ``"he"``, ``"fluorescence"``, ...; any case), path to a
            ``.safetensors`` file or a training output folder, :class:`~contrimix_aug.ContriMixWeights` or
            :class:`~contrimix_aug.ContriMixModel` (copied). ``None`` = the bundled H&E default (``"he"``).
        p: probability that an image is re-rendered.
        strength: α in [0, 1], or a (low, high) range sampled per image: attributes become
            (1 - α)·own + α·donor.
        donors: ``"sampled"`` (the default, None, chosen on development data by the rule in docs/weights.md: new
            attribute matrices drawn around the bank, stains no reference image had: a random blend of 3 bank
            entries, scaled from the bank centre by ``spread``; :func:`~contrimix_aug.mixing.sample_bank_attributes`;
            single images and batches alike; weights without a bank fall back to ``"batch"``), ``"batch"`` (other
            images of the batch; a batch of one falls back to the bank), ``"bank"`` (the attribute bank), or
            ``"both"`` (uniform over the other images and the bank).
        spread: with ``donors="sampled"`` only: the sampled matrices' standard deviation relative to the bank's:
            None = 0.7 (the default chosen with it: blends of real stains, inside the convex hull of a bank of more
            than 50 entries), 1 = as varied as the bank's own entries, 0 = the bank centre, <= 1/κ (≈ 0.707 for a
            large bank; :func:`~contrimix_aug.mixing.sampled_reach`) = inside the hull, > 1 = further out
            (nothing is clamped).
        bank: donors to use instead of the bank stored in the weights: (N, C, K) attributes, (N, C, H, W)
            reference images in [0, 1], or numpy reference images (:func:`contrimix_aug.bank.resolve_bank`).
        seed: seed of the instance's own generator (reproducible; never touches torch's global RNG).
        generator: a ``torch.Generator`` to draw from instead (``seed`` must then be None).
        keepdim: a (C, H, W) input comes back as (C, H, W) (default True; kornia's default is False).
        check_values: check each batch for NaN/Inf and values outside [0, 1] (one host sync per call); values
            at most :data:`~contrimix_aug._checks.VALUE_TOLERANCE` (0.15) outside are clamped, not refused.
        state_dict_weights: include the frozen weights in ``state_dict()`` (default False: a pipeline's
            checkpoint holds only what it trains).
        same_on_batch: one draw for the whole batch (kornia's flag): every image is selected or none, and the
            selected ones all take the same donor and strength (with ``donors="batch"`` the donor image itself is
            re-rendered with its own attributes, i.e. reconstructed; with ``"sampled"`` one sampled matrix).
        render_guard: glass stays glass and no pixel is darker than real tissue
            (:func:`~contrimix_aug.optical_density.limit_render`; absorbance-mode weights only, linear-mode
            (fluorescence) weights are unaffected); False: the authors' unguarded render.

    Shape:
        - Input: (B, C, H, W) or (C, H, W), float in [0, 1] (fp32, fp16, bf16, fp64), any device; or a
          torchvision v2 sample (``aug(img, mask)``, ``aug({"image": img, "mask": mask})``, nested): its images
          ((C, H, W) or (B, C, H, W) plain tensors or ``tv_tensors.Image``, found as v2 does) are re-rendered with
          one draw and keep their type; masks, boxes, keypoints, labels and anything else pass through untouched.
        - Output: same shape, dtype and device (the same structure for a sample).

    ``.eval()`` does not switch the augmentation off (kornia's convention; augmentations apply in both
    modes): apply it only in the training pipeline. The model inside is always frozen and in eval mode.
    Parameters of the last call are in ``self.params``; ``aug(x, params=aug.params)`` replays them exactly.
    Gradients flow through the rendering to an input that requires grad (the model's parameters stay frozen).

    Reproducing a run: pass ``seed=`` (``seed=None`` draws a fresh one per instance). With ``num_workers=0`` that
    is all. In a ``DataLoader`` worker the generator is re-seeded once from (seed, the worker's torch seed), under
    any multiprocessing start method (fork, spawn, forkserver); the DataLoader draws the workers' torch seeds
    (``base_seed + worker_id``, anew each epoch) from its ``generator=``, or without one from torch's global RNG, as
    torch documents. So fix that too: ``DataLoader(..., generator=torch.Generator().manual_seed(0))``, or
    ``torch.manual_seed(0)`` before iterating. The same seed and generator give identical batches; another
    generator seed gives other draws.

    Example:
        >>> import contrimix_aug as ca, torch
        >>> m = ca.ContriMixModel(ca.ModelConfig(attr_widths=(8, 8, 8)))
        >>> aug = ContriMix(weights=m, p=1.0, seed=0)
        >>> aug(torch.rand(4, 3, 32, 32) * 0.5 + 0.4).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        weights: Any = None,
        p: float = 0.5,
        strength: float | tuple[float, float] = 1.0,
        donors: str | None = None,
        bank: Any = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        keepdim: bool = True,
        check_values: bool = True,
        state_dict_weights: bool = False,
        same_on_batch: bool = False,
        spread: float | None = None,
        render_guard: bool = True,
    ) -> None:
        default = donors is None and spread is None  # the default policy; without a bank: batch donors (below)
        donors = DEFAULT_DONORS if donors is None else donors
        if donors not in DONOR_MODES:
            raise ValueError(f"donors: expected one of {DONOR_MODES}, got {donors!r}.")
        spread = check_spread(spread, donors)
        if generator is not None and seed is not None:
            raise ValueError("pass either seed= or generator=, not both (seed=3 is generator=torch.Generator()"
                             ".manual_seed(3)).")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}; pass e.g. "
                            "generator=torch.Generator().manual_seed(0), or seed=0.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}; pass e.g. seed=0.")
        super().__init__(weights, p, keepdim, check_values, state_dict_weights, same_on_batch, render_guard)
        self.strength = check_strength(strength)
        self.donors = donors
        own_bank = resolve_bank(self.model, bank)
        if own_bank is not None:
            self.model.bank = own_bank.to(self.model.bank.device)
        if default and self.model.bank.shape[0] == 0:  # nothing to sample around: other images of the batch
            self.donors, donors, spread = "batch", "batch", None
        if donors in ("bank", "sampled") and self.model.bank.shape[0] == 0:
            raise ValueError(
                f"donors={donors!r} needs an attribute bank, and these weights carry none: pass bank=reference "
                "images (N, C, H, W) or attributes (N, C, K)."
            )
        self.spread = spread
        if generator is None:
            self._seed = secrets.randbits(63) if seed is None else int(seed)
            generator = torch.Generator().manual_seed(self._seed)
        else:
            self._seed = generator.initial_seed()
        self.generator = generator
        self._worker_key: tuple[int, int] | None = None
        self.flags = {"strength": self.strength, "donors": donors}
        if donors == "sampled":
            self.flags["spread"] = spread

    def __repr__(self) -> str:
        lo, hi = self.strength
        s = lo if lo == hi else self.strength
        c = self.model.config
        same = ", same_on_batch=True" if self.same_on_batch else ""
        same += "" if self.render_guard else ", render_guard=False"
        spread = f", spread={self.spread}" if self.donors == "sampled" else ""
        return (
            f"ContriMix(weights={self.weights_label}, p={self.p}, donors={self.donors!r}{spread}, strength={s}{same}, "
            f"C={c.in_channels}, K={c.num_attributes}, bank={self.model.bank.shape[0]}, keepdim={self.keepdim})"
        )

    # -- randomness ------------------------------------------------------------------------------------
    def _stream(self) -> torch.Generator:
        """The generator; inside a DataLoader worker it is re-seeded once from (seed, the worker's torch seed)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker_key != (info.id, info.seed):
            self._worker_key = (info.id, info.seed)
            self.generator = torch.Generator(device=self.generator.device).manual_seed(
                derive_seed(self._seed, "worker", int(info.seed))
            )
        return self.generator

    def __getstate__(self) -> Dict[str, Any]:
        # A torch.Generator does not pickle; its state travels as plain bytes (no shared-memory tensor, so the
        # transform crosses into DataLoader workers under fork, spawn and forkserver alike).
        state = dict(super().__getstate__())
        gen = state.pop("generator")
        state["_generator_state"] = (str(gen.device), bytes(gen.get_state().numpy().tobytes()))
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        device, gstate = state.pop("_generator_state")
        super().__setstate__(state)
        self.generator = torch.Generator(device=device)
        self.generator.set_state(torch.frombuffer(bytearray(gstate), dtype=torch.uint8))

    def forward_parameters(self, batch_shape: Any) -> Dict[str, torch.Tensor]:
        """Draw the (B,) :class:`~contrimix_aug.mixing.MixParams` of this call (kornia's parameter dict)."""
        b, bank = int(batch_shape[0]), self.model.bank
        if self.same_on_batch and b > 1:
            params = _one_draw_for_the_batch(b, self.p, self.strength, self.donors, bank, self._stream(), self.spread)
        else:
            params = sample_mix_params(b, p=self.p, strength=self.strength, donors=self.donors, bank=bank,
                                       spread=self.spread, generator=self._stream())
        return {**params.to_dict(), "forward_input_shape": torch.tensor(tuple(batch_shape), dtype=torch.long)}

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        return apply_contrimix(self.model, x, MixParams.from_dict(params), render_guard=self.render_guard,
                               check_values=False)  # forward() checked (or was told not to)


def _one_draw_for_the_batch(b: int, p: float, strength: tuple[float, float], donors: str, bank: torch.Tensor,
                            generator: torch.Generator, spread: float | None = None) -> MixParams:
    """``same_on_batch``: one selection, one donor and one strength for all B >= 2 images.

    The donor is uniform over the B images (``"batch"``), the bank (``"bank"``) or both (``"both"``; the batch
    alone when the bank is empty), or one sampled attribute matrix (``"sampled"``). Draw order: selection, donor,
    strength."""
    dev = generator.device
    bank_size = int(bank.shape[0])
    selected = torch.rand(1, generator=generator, device=dev) < p
    if donors == "sampled":
        if bank_size == 0:
            raise ValueError("donors='sampled' needs an attribute bank, and there is none: pass bank=reference "
                             "images (N, C, H, W) or attributes (N, C, K).")
        attrs = sample_bank_attributes(bank, 1, spread, generator=generator)
        alpha = sample_strength(1, *strength, generator=generator)
        return MixParams(selected.expand(b).clone(), torch.full((b,), -1, dtype=torch.long, device=dev),
                         torch.zeros(b, dtype=torch.bool, device=dev), alpha.expand(b).clone(),
                         attrs.expand(b, -1, -1).clone())
    mode = "batch" if donors == "both" and bank_size == 0 else donors
    if mode == "bank" and bank_size == 0:
        raise ValueError("donors='bank' needs an attribute bank, and there is none: pass bank=reference images "
                         "(N, C, H, W) or attributes (N, C, K).")
    if mode == "batch":
        donor = torch.randint(0, b, (1,), generator=generator, device=dev)
        from_bank = torch.zeros(1, dtype=torch.bool, device=dev)
    elif mode == "bank":
        donor = torch.randint(0, bank_size, (1,), generator=generator, device=dev)
        from_bank = torch.ones(1, dtype=torch.bool, device=dev)
    else:
        r = torch.randint(0, b + bank_size, (1,), generator=generator, device=dev)
        from_bank = r >= b
        donor = torch.where(from_bank, r - b, r)
    alpha = sample_strength(1, *strength, generator=generator)
    return MixParams(*(t.expand(b).clone() for t in (selected, donor, from_bank, alpha)))


class ContriMixNormalize(_ContriMixBase):
    r"""ContriMix as a learned stain normaliser: every image is re-rendered with one fixed attribute matrix.

    Args:
        weights: as for :class:`ContriMix`.
        target: None (the centre, i.e. mean, of the weights' attribute bank), reference image(s)
            (C, H, W) or (N, C, H, W) in [0, 1] (their mean attributes), or an attribute matrix (C, K).
        keepdim, check_values, state_dict_weights: as for :class:`ContriMix`.
        render_guard: glass stays glass and no pixel is darker than real tissue
            (:func:`~contrimix_aug.optical_density.limit_render`; absorbance-mode weights only); False: the authors'
            unguarded render.

    Shape: (B, C, H, W) or (C, H, W) -> same, or a torchvision v2 sample as for :class:`ContriMix` (its images
    normalised, every other leaf untouched). Deterministic; gradients flow to an input that requires grad.
    """

    def __init__(self, weights: Any = None, target: torch.Tensor | None = None, keepdim: bool = True,
                 check_values: bool = True, state_dict_weights: bool = False, render_guard: bool = True) -> None:
        super().__init__(weights, 1.0, keepdim, check_values, state_dict_weights, render_guard=render_guard)
        c, k = self.model.config.in_channels, self.model.config.num_attributes
        if target is None:
            if self.model.bank.shape[0] == 0:
                raise ValueError("ContriMixNormalize: the weights carry no attribute bank; pass target=reference image(s).")
            t = self.model.bank.float().mean(0)
            self.target_kind = f"bank centre ({self.model.bank.shape[0]})"
        elif not isinstance(target, torch.Tensor):
            raise TypeError(f"target: expected a tensor, got {type(target).__name__}.")
        elif tuple(target.shape) == (c, k):
            t = target.detach().float()
            self.target_kind = f"attributes ({c}, {k})"
        elif target.ndim in (3, 4):
            refs = target if target.ndim == 4 else target.unsqueeze(0)
            t = compute_bank(self.model, refs).mean(0)
            self.target_kind = f"reference images ({refs.shape[0]})"
        else:
            raise ValueError(f"target: expected ({c}, {k}) attributes or image(s) ({c}, H, W), got {tuple(target.shape)}.")
        self.register_buffer("target", t.to(self.model.bank.device), persistent=False)

    def __repr__(self) -> str:
        c = self.model.config
        return (f"ContriMixNormalize(weights={self.weights_label}, target=<{self.target_kind}>, C={c.in_channels}, "
                f"K={c.num_attributes}, keepdim={self.keepdim}{'' if self.render_guard else ', render_guard=False'})")

    def forward_parameters(self, batch_shape: Any) -> Dict[str, torch.Tensor]:
        b = int(batch_shape[0])
        return {
            "batch_prob": torch.ones(b),
            "donors": torch.zeros(b, dtype=torch.long),
            "forward_input_shape": torch.tensor(tuple(batch_shape), dtype=torch.long),
        }

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        return normalize(self.model, x, self.target, render_guard=self.render_guard, check_values=False)
