"""The ``ContriMix`` batch transform (a kornia intensity augmentation) and ``ContriMixNormalize``.

Thin shells over :func:`contrimix_aug.functional.apply_contrimix`: they hold the frozen model, draw
parameters from their own ``torch.Generator`` and hand them to the functional core.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from typing import Any, Dict, Optional

import torch
from kornia.augmentation import IntensityAugmentationBase2D

from ._checks import check_image, check_image_values, check_probability, check_strength
from .functional import apply_contrimix, compute_bank
from .mixing import sample_bank_donors, sample_donors, sample_strength
from .model import ContriMixModel
from .weights import load_model

__all__ = ["ContriMix", "ContriMixNormalize"]

_DONOR_MODES = ("batch", "bank", "both")


def _mix_seed(*parts: int) -> int:
    digest = hashlib.sha256(b"contrimix_aug" + b"".join(int(p).to_bytes(16, "little", signed=True) for p in parts))
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def _prepare_bank(model: ContriMixModel, bank: Any) -> torch.Tensor | None:
    """None | (N, C, K) attributes | (N, C, H, W) reference images -> (N, C, K) float attributes."""
    if bank is None:
        return None
    if not isinstance(bank, torch.Tensor):
        raise TypeError(f"bank: expected a tensor of attributes (N, C, K) or images (N, C, H, W), got {type(bank)}.")
    c, k = model.config.in_channels, model.config.num_attributes
    if bank.ndim == 3 and tuple(bank.shape[1:]) == (c, k):
        return bank.detach().float().cpu()
    if bank.ndim == 4:
        return compute_bank(model, bank)
    raise ValueError(
        f"bank: expected attributes (N, {c}, {k}) or reference images (N, {c}, H, W), got {tuple(bank.shape)}."
    )


class _ContriMixBase(IntensityAugmentationBase2D):
    """Shared plumbing: weights, input checks, generator, kornia version independence."""

    def __init__(self, weights: Any, p: float, keepdim: bool, check_values: bool) -> None:
        super().__init__(p=check_probability(p), p_batch=1.0, same_on_batch=False, keepdim=keepdim)
        # A model passed in is copied: freezing it or replacing its bank must not change the caller's model
        # (which may still be training, or be shared with other transforms).
        model = copy.deepcopy(weights) if isinstance(weights, ContriMixModel) else load_model(weights)
        model.freeze()
        self.model: ContriMixModel = model
        self.check_values = bool(check_values)

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
        check_image(input, self.model.config.in_channels, name=type(self).__name__ + " input", allow_chw=True)
        x = input if input.ndim == 4 else input.unsqueeze(0)
        model_device = next(self.model.parameters()).device
        if x.device != model_device:
            raise ValueError(
                f"{type(self).__name__} input: the image is on {x.device} but the model is on {model_device}; "
                f"move the transform with aug.to({str(x.device)!r}) (or the image to {model_device})."
            )
        if self.check_values:
            check_image_values(x, name=type(self).__name__ + " input")
        if "donors" not in params or params["donors"].shape[0] != x.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: params were drawn for another batch size "
                f"({params['donors'].shape[0] if 'donors' in params else 'none'} vs {x.shape[0]}); "
                "replay params only on the batch they were drawn for."
            )
        with torch.no_grad():
            out = self._render(x, params)
        if self.keepdim and len(ori_shape) == 3:
            return out.squeeze(0)
        return out

    def forward(self, input: torch.Tensor, params: Optional[Dict[str, torch.Tensor]] = None, **kwargs: Any):  # type: ignore[override]
        check_image(input, self.model.config.in_channels, name=type(self).__name__ + " input", allow_chw=True)
        return super().forward(input, params=params, **kwargs)

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> "_ContriMixBase":
        super().train(mode)
        self.model.eval()  # the model is frozen; it has no train-time behaviour
        return self


class ContriMix(_ContriMixBase):
    r"""ContriMix augmentation: each selected image keeps its content and takes the attributes (stain look)
    of a different image of the batch, or of an attribute bank. No domain labels.

    Args:
        weights: registry name (``"he"``, ``"fluorescence"``, ``"camelyon"``, ...), path to a ``.safetensors``
            file, :class:`~contrimix_aug.ContriMixWeights` or :class:`~contrimix_aug.ContriMixModel`.
            ``None`` = the bundled H&E default.
        p: probability that an image is re-rendered.
        strength: α in [0, 1], or a (low, high) range sampled per image: attributes become
            (1 - α)·own + α·donor.
        donors: ``"batch"`` (other images of the batch; a batch of one falls back to the bank), ``"bank"``
            (the attribute bank), or ``"both"`` (uniform over the other images and the bank).
        bank: attribute bank to use instead of the one stored in the weights: (N, C, K) attributes or
            (N, C, H, W) reference images in [0, 1].
        seed: seed of the instance's own generator (reproducible; never touches torch's global RNG).
        generator: a ``torch.Generator`` to draw from instead (``seed`` must then be None).
        keepdim: a (C, H, W) input comes back as (C, H, W) (default True; kornia's default is False).
        check_values: check each batch for NaN/Inf and values outside [0, 1] (one host sync per call).

    Shape:
        - Input: (B, C, H, W) or (C, H, W), float in [0, 1] (fp32, fp16, bf16, fp64), any device.
        - Output: same shape, dtype and device.

    ``.eval()`` does not switch the augmentation off (kornia's convention; augmentations apply in both
    modes): apply it only in the training pipeline. The model inside is always frozen and in eval mode.
    Parameters of the last call are in ``self._params``; ``aug(x, params=aug._params)`` replays them exactly.

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
        donors: str = "batch",
        bank: torch.Tensor | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        keepdim: bool = True,
        check_values: bool = True,
    ) -> None:
        if donors not in _DONOR_MODES:
            raise ValueError(f"donors: expected one of {_DONOR_MODES}, got {donors!r}.")
        if generator is not None and seed is not None:
            raise ValueError("pass either seed= or generator=, not both.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}.")
        super().__init__(weights, p, keepdim, check_values)
        self.strength = check_strength(strength)
        self.donors = donors
        own_bank = _prepare_bank(self.model, bank)
        if own_bank is not None:
            self.model.bank = own_bank.to(self.model.bank.device)
        if donors == "bank" and self.model.bank.shape[0] == 0:
            raise ValueError(
                "donors='bank' needs an attribute bank, and these weights carry none: pass bank=reference images "
                "(N, C, H, W) or attributes (N, C, K)."
            )
        if generator is None:
            self._seed = secrets.randbits(63) if seed is None else int(seed)
            generator = torch.Generator().manual_seed(self._seed)
        else:
            self._seed = generator.initial_seed()
        self.generator = generator
        self._worker_key: tuple[int, int] | None = None
        self.flags = {"strength": self.strength, "donors": donors}

    def __repr__(self) -> str:
        lo, hi = self.strength
        s = lo if lo == hi else self.strength
        c = self.model.config
        return (
            f"ContriMix(p={self.p}, strength={s}, donors={self.donors!r}, C={c.in_channels}, "
            f"K={c.num_attributes}, bank={self.model.bank.shape[0]}, keepdim={self.keepdim})"
        )

    # -- randomness ------------------------------------------------------------------------------------
    def _stream(self) -> torch.Generator:
        """The generator; inside a DataLoader worker it is re-seeded once from (seed, the worker's torch seed)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker_key != (info.id, info.seed):
            self._worker_key = (info.id, info.seed)
            self.generator = torch.Generator(device=self.generator.device).manual_seed(
                _mix_seed(self._seed, info.seed)
            )
        return self.generator

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state = dict(state)
        gen = state.pop("generator")
        state["_generator_state"] = (str(gen.device), gen.get_state())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        device, gstate = state.pop("_generator_state")
        super().__setstate__(state)
        self.generator = torch.Generator(device=device)
        self.generator.set_state(gstate)

    def forward_parameters(self, batch_shape: Any) -> Dict[str, torch.Tensor]:
        """Draw (B,) ``batch_prob`` (selection), ``donors``, ``from_bank`` and ``strength`` on the CPU."""
        b = int(batch_shape[0])
        g = self._stream()
        n_bank = int(self.model.bank.shape[0])
        selected = torch.rand(b, generator=g, device=g.device) < self.p
        mode = self.donors
        if mode == "batch" and b < 2:
            if n_bank == 0:
                raise ValueError(
                    "ContriMix: a single image (or a batch of one) has no other image to take attributes from, and "
                    "the weights carry no attribute bank. Pass bank=reference images, or use batches of 2 or more."
                )
            mode = "bank"
        if mode == "both" and n_bank == 0:
            mode = "batch"
        if mode == "batch":
            donors = sample_donors(b, 1, generator=g)[0]
            from_bank = torch.zeros(b, dtype=torch.bool, device=g.device)
        elif mode == "bank":
            donors = sample_bank_donors(n_bank, b, 1, generator=g)[0]
            from_bank = torch.ones(b, dtype=torch.bool, device=g.device)
        else:
            r = torch.randint(0, b - 1 + n_bank, (b,), generator=g, device=g.device)
            from_bank = r >= (b - 1)
            own = torch.arange(b, device=g.device)
            batch_idx = r + (r >= own).long()
            donors = torch.where(from_bank, r - (b - 1), batch_idx)
        strength = sample_strength(b, *self.strength, generator=g)
        return {
            "batch_prob": selected.float(),
            "donors": donors,
            "from_bank": from_bank,
            "strength": strength,
            "forward_input_shape": torch.tensor(tuple(batch_shape), dtype=torch.long),
        }

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        from_bank = params["from_bank"]
        return apply_contrimix(
            self.model,
            x,
            params["donors"],
            params["strength"],
            selected=params["batch_prob"] > 0.5,
            from_bank=from_bank if bool(from_bank.any()) else None,
        )


class ContriMixNormalize(_ContriMixBase):
    r"""ContriMix as a learned stain normaliser: every image is re-rendered with one fixed attribute matrix.

    Args:
        weights: as for :class:`ContriMix`.
        target: None (the centre, i.e. mean, of the weights' attribute bank), reference image(s)
            (C, H, W) or (N, C, H, W) in [0, 1] (their mean attributes), or an attribute matrix (C, K).
        keepdim, check_values: as for :class:`ContriMix`.

    Shape: (B, C, H, W) or (C, H, W) -> same. Deterministic.
    """

    def __init__(self, weights: Any = None, target: torch.Tensor | None = None, keepdim: bool = True,
                 check_values: bool = True) -> None:
        super().__init__(weights, 1.0, keepdim, check_values)
        c, k = self.model.config.in_channels, self.model.config.num_attributes
        if target is None:
            if self.model.bank.shape[0] == 0:
                raise ValueError("ContriMixNormalize: the weights carry no attribute bank; pass target=reference image(s).")
            t = self.model.bank.float().mean(0)
        elif not isinstance(target, torch.Tensor):
            raise TypeError(f"target: expected a tensor, got {type(target).__name__}.")
        elif tuple(target.shape) == (c, k):
            t = target.detach().float()
        elif target.ndim in (3, 4):
            imgs = target if target.ndim == 4 else target.unsqueeze(0)
            t = compute_bank(self.model, imgs).mean(0)
        else:
            raise ValueError(f"target: expected ({c}, {k}) attributes or image(s) ({c}, H, W), got {tuple(target.shape)}.")
        self.register_buffer("target", t.to(self.model.bank.device))

    def forward_parameters(self, batch_shape: Any) -> Dict[str, torch.Tensor]:
        b = int(batch_shape[0])
        return {
            "batch_prob": torch.ones(b),
            "donors": torch.zeros(b, dtype=torch.long),
            "forward_input_shape": torch.tensor(tuple(batch_shape), dtype=torch.long),
        }

    def _render(self, x: torch.Tensor, params: Dict[str, torch.Tensor]) -> torch.Tensor:
        b = x.shape[0]
        return apply_contrimix(self.model, x, params["donors"], torch.ones(b), target=self.target)
