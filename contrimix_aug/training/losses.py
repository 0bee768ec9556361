"""ContriMix training losses as pure functions, plus the loss weights of the published recipes.

Shape vocabulary: B images, M mixes per image (so M + 1 *views* per image: view 0 is the
self-reconstruction, views 1..M carry a donor's attributes), C channels, K attributes, H × W pixels.
Stacks of views are **view-major**: ``(M + 1, B, ...)``, or flattened ``((M + 1)·B, ...)`` with index
``m·B + b``, which is the order the reference code concatenates them in.

Every function returns a float32 scalar (inputs are upcast, so they are safe under bf16/fp16 autocast)
and lets gradients flow into all of its inputs: the method detaches nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import check_nonnegative

__all__ = [
    "LossWeights",
    "LOSS_PRESETS",
    "CE_AGGREGATIONS",
    "self_reconstruction_loss",
    "attribute_consistency_loss",
    "content_consistency_loss",
    "attribute_repulsion_loss",
    "group_by_image",
    "aggregate_cross_entropy",
    "cross_entropy_per_view",
]

CE_AGGREGATIONS = ("mean", "max", "augreg")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the five ContriMix terms. The defaults are the TCGA encoder recipe (K = 16, M = 3).

    Args:
        self_recon: self-reconstruction, :func:`self_reconstruction_loss`.
        attr_cons: attribute consistency, :func:`attribute_consistency_loss`.
        cont_cons: content consistency, :func:`content_consistency_loss`.
        attr_repulsion: attribute repulsion ("attribute similarity" in the reference),
            :func:`attribute_repulsion_loss`.
        ce: classification cross-entropy on all M + 1 views (joint training only).
        pair_recon: paired cross-reconstruction (not in the authors' method): each image ``x`` and a random
            re-staining ``x'`` of it (:mod:`.restain`) swap attributes, and ``decode(content(x), attributes(x'))``
            must reproduce ``x'`` (and the other way round), :func:`self_reconstruction_loss` of both.
        pair_content: paired content invariance (not in the authors' method): ``content(x) = content(x')``,
            :func:`content_consistency_loss`.

    A term whose weight is 0 is not computed (except the self-reconstruction, which is always reported).
    """

    self_recon: float = 0.6
    attr_cons: float = 0.1
    cont_cons: float = 0.2
    attr_repulsion: float = 0.05
    ce: float = 0.0
    pair_recon: float = 0.0
    pair_content: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_nonnegative(getattr(self, f.name), f"LossWeights.{f.name}"))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LossWeights":
        """Build from a dict; ``{"preset": name, ...}`` starts from a preset and overrides the given keys."""
        d = dict(d)
        base = cls.preset(d.pop("preset")) if "preset" in d else cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"loss weights: unknown keys {unknown}; valid keys: {sorted(known)} and 'preset'.")
        return dataclasses.replace(base, **d)

    @classmethod
    def preset(cls, name: str) -> "LossWeights":
        """One of :data:`LOSS_PRESETS`: ``tcga``, ``camelyon-joint``, ``rxrx1``, ``rxrx1-ddp``."""
        try:
            return LOSS_PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown loss preset {name!r}; choose one of {sorted(LOSS_PRESETS)}.") from None


LOSS_PRESETS: dict[str, LossWeights] = {
    # TCGA encoders (the released general-purpose checkpoint): K = 16, M = 3.
    "tcga": LossWeights(0.6, 0.1, 0.2, 0.05, 0.0),
    # Camelyon17-WILDS, encoders trained jointly with the classifier: K = 4-5, M = 4.
    "camelyon-joint": LossWeights(0.1, 0.1, 0.3, 0.0, 0.5),
    # RxRx1-WILDS encoders (fluorescence, linear mode), single-node DP script: K = 10, M = 3.
    "rxrx1": LossWeights(0.90, 0.04, 0.05, 0.01, 0.0),
    # RxRx1-WILDS encoders, DDP script.
    "rxrx1-ddp": LossWeights(0.65, 0.01, 0.30, 0.04, 0.0),
}


def _per_image_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise q-quantile of (B, N) with linear interpolation (numpy's default), via ``kthvalue``.

    ``torch.quantile`` refuses inputs above 2**24 elements (e.g. 30 patches of 572 px); ``kthvalue`` has no
    such limit and, like ``quantile``, passes gradients to the selected elements.
    """
    n = x.shape[1]
    pos = q * (n - 1)
    lo = int(pos)
    frac = pos - lo
    v_lo = x.kthvalue(lo + 1, dim=1).values
    if frac == 0.0 or lo + 1 >= n:
        return v_lo
    v_hi = x.kthvalue(lo + 2, dim=1).values
    return v_lo + frac * (v_hi - v_lo)


def self_reconstruction_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    *,
    l1_weight: float = 0.8,
    quantile_weight: float = 0.2,
    q: float = 0.9,
) -> torch.Tensor:
    """Self-reconstruction error in image space.

    L_sr = 0.8 · mean_{b,c,h,w} |x̂ − x| + 0.2 · max_b Q_q(|x̂_b − x_b|), where Q_q is the q-quantile
    (linear interpolation) of the C·H·W absolute errors of image b: the worst image's tail error.

    Args:
        reconstruction: x̂, the decoded self-reconstruction in [0, 1].
        target: x, the original images in the same channel order.
        l1_weight, quantile_weight, q: the mix; the defaults are the reference's.

    Shape:
        (B, C, H, W), (B, C, H, W) -> ().
    """
    if reconstruction.shape != target.shape:
        raise ValueError(
            f"self_reconstruction_loss: shapes differ, {tuple(reconstruction.shape)} vs {tuple(target.shape)}."
        )
    err = (reconstruction.float() - target.float()).abs()
    loss = l1_weight * err.mean()
    if quantile_weight:
        loss = loss + quantile_weight * _per_image_quantile(err.flatten(1), q).max()
    return loss


def attribute_consistency_loss(re_attributes: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Mean |E_a(Â) − z_a|: re-encoded attributes of every generated view against the ones it was made with.

    Args:
        re_attributes: E_a of the generated views.
        attributes: the attribute matrices the views were generated with (own for view 0, donors' after).

    Shape:
        (..., C, K), same shape -> (). Typically (M + 1, B, C, K).
    """
    if re_attributes.shape != attributes.shape:
        raise ValueError(
            f"attribute_consistency_loss: shapes differ, {tuple(re_attributes.shape)} vs {tuple(attributes.shape)}."
        )
    return (re_attributes.float() - attributes.float()).abs().mean()


def content_consistency_loss(re_content: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Mean |E_c(Â^{(m)}) − z_c| over all views m: every view must keep the content of its source image.

    Args:
        re_content: E_c of the generated views, view-major.
        content: z_c of the original images (broadcast over the views, never copied).

    Shape:
        (M + 1, B, K, H, W) or ((M + 1)·B, K, H, W), and (B, K, H, W) -> ().
    """
    b = content.shape[0]
    if re_content.ndim == content.ndim:
        if re_content.shape[0] % b:
            raise ValueError(
                f"content_consistency_loss: {re_content.shape[0]} views are not a multiple of the batch {b}."
            )
        re_content = re_content.view(-1, *content.shape)
    if tuple(re_content.shape[1:]) != tuple(content.shape):
        raise ValueError(
            f"content_consistency_loss: expected re_content (M+1, {', '.join(map(str, content.shape))}), "
            f"got {tuple(re_content.shape)}."
        )
    return (re_content.float() - content.float().unsqueeze(0)).abs().mean()


def attribute_repulsion_loss(attributes: torch.Tensor, tau: float = 0.1, eps: float = 1e-6) -> torch.Tensor:
    """Push apart the M + 1 attribute matrices that each image's views were generated with.

    L_as = 1 / (B·(M+1)²) · Σ_b Σ_{i≠j} exp(−d(v_{i,b}, v_{j,b}) / τ), with v = vec(z_a) ∈ R^{C·K} and
    d(u, v) = sqrt(‖u − v‖² + eps²) (a Euclidean distance that stays differentiable at 0, e.g. when two
    mixes of an image drew the same donor). The diagonal i = j is left out of the sum but, as in the
    reference, counted in the (M+1)² of the normaliser.

    Args:
        attributes: view-major attribute stack: own attributes at view 0, donors' at 1..M.
        tau: temperature τ (0.1 in the reference).
        eps: smoothing of the distance.

    Shape:
        (M + 1, B, C, K) -> ().
    """
    if attributes.ndim != 4:
        raise ValueError(f"attribute_repulsion_loss: expected (M+1, B, C, K), got {tuple(attributes.shape)}.")
    v = attributes.float().flatten(2).transpose(0, 1)  # (B, M+1, C·K)
    views = v.shape[1]
    d2 = (v.unsqueeze(2) - v.unsqueeze(1)).square().sum(-1)  # (B, M+1, M+1)
    sim = torch.exp(-torch.sqrt(d2 + eps * eps) / tau)
    off_diag = ~torch.eye(views, dtype=torch.bool, device=v.device)
    return (sim * off_diag).sum() / (v.shape[0] * views * views)


def group_by_image(per_view: torch.Tensor, num_views: int) -> torch.Tensor:
    """View-major per-sample values ((M+1)·B,) -> (B, M+1): row b holds the M + 1 views of image b.

    This is ``reshape(M + 1, B).T``. The reference used ``reshape(-1, M + 1)``, which groups views of
    *different* images together (its MAX/AUGREG bug, Q4).
    """
    if per_view.ndim != 1 or per_view.shape[0] % num_views:
        raise ValueError(
            f"group_by_image: expected a flat ((M+1)·B,) tensor with M+1 = {num_views}, got {tuple(per_view.shape)}."
        )
    return per_view.reshape(num_views, -1).T


def aggregate_cross_entropy(
    per_view: torch.Tensor, num_views: int, mode: str = "mean", augreg_weight: float = 10.0
) -> torch.Tensor:
    """Aggregate per-sample cross-entropies of all views into one loss.

    ``mean``: mean over everything. ``max``: mean over images of the worst view. ``augreg``: mean plus
    ``augreg_weight`` · mean over images of the (unbiased) variance across the image's views (0 when M = 0).

    Args:
        per_view: per-sample losses, view-major (index m·B + b), e.g. ``F.cross_entropy(..., reduction="none")``
            on ``torch.cat(views)`` with ``labels.repeat(M + 1)``.
        num_views: M + 1.
        mode: one of :data:`CE_AGGREGATIONS`.

    Shape:
        ((M + 1)·B,) -> ().
    """
    if mode not in CE_AGGREGATIONS:
        raise ValueError(f"aggregate_cross_entropy: mode must be one of {CE_AGGREGATIONS}, got {mode!r}.")
    per_view = per_view.float()
    if mode == "mean":
        return per_view.mean()
    groups = group_by_image(per_view, num_views)
    if mode == "max":
        return groups.max(dim=1).values.mean()
    reg = groups.var(dim=1).mean() if num_views > 1 else per_view.new_zeros(())
    return groups.mean() + augreg_weight * reg


def cross_entropy_per_view(logits: torch.Tensor, labels: torch.Tensor, num_views: int) -> torch.Tensor:
    """Per-sample cross-entropy of view-major logits against the labels of the B images, repeated per view.

    Shape:
        ((M + 1)·B, classes), (B,) class indices or (B, classes) probabilities -> ((M + 1)·B,).
    """
    reps = (num_views,) + (1,) * (labels.ndim - 1)
    return F.cross_entropy(logits.float(), labels.repeat(reps), reduction="none")
