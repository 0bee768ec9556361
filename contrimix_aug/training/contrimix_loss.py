"""One ContriMix training step as an ``nn.Module``: encode once, mix, generate, re-encode, score."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import nn

from .._checks import check_image
from ..functional import render_views
from ..mixing import sample_donors
from ..model import ContriMixModel
from ..optical_density import from_signal
from .restain import RestainConfig, restain
from .losses import (
    CE_AGGREGATIONS,
    LossWeights,
    aggregate_cross_entropy,
    attribute_consistency_loss,
    attribute_repulsion_loss,
    content_consistency_loss,
    cross_entropy_per_view,
    self_reconstruction_loss,
)

__all__ = ["ContriMixLoss"]


class ContriMixLoss(nn.Module):
    """The ContriMix objective for a batch, usable in any training loop (wrap it in DDP as a whole).

    Per call: the originals go through both encoders **once** (the reference encoded them twice, Q3);
    M donors per image are drawn among the *other* images of the batch; all (M + 1)·B views are generated
    by one batched matmul (view 0 = self-reconstruction, view m = own content with donor m's attributes);
    the generated signals are re-encoded in **one** batch of (M + 1)·B for the consistency terms; an
    optional classifier sees all views in image space for joint training.

    Args:
        model: the :class:`~contrimix_aug.ContriMixModel` to train (a submodule: ``parameters()`` includes it).
        weights: :class:`LossWeights` (default: the TCGA encoder recipe). Terms of weight 0 are skipped.
        num_mixes: M, donor views per image (0 = self-reconstruction only).
        exclude_self: draw donors among the other images only (the reference allowed self-donation).
        freeze_encoders: the reference's BACKBONE mode: the model's parameters get ``requires_grad=False``,
            the encoders run under ``no_grad``, no ContriMix term is computed and the total is the
            classification loss alone (unweighted). Needs a classifier.
        ce_aggregation: ``"mean"`` (reference default), ``"max"`` or ``"augreg"``, grouped per image
            (the reference's grouping bug Q4 is fixed).
        classifier_input: what the classifier sees as view 0: ``"reconstruction"`` (reference default:
            the self-reconstruction) or ``"original"`` (the input image).
        tau: temperature of the attribute repulsion.
        restain: strength of the random re-staining behind the paired terms (``weights.pair_recon`` /
            ``weights.pair_content``); default :class:`~contrimix_aug.training.restain.RestainConfig`.

    Returns of ``forward``:
        ``(total, terms, aux)``: ``total`` a scalar to backpropagate; ``terms`` a dict of unweighted scalar
        tensors (keys ``self_recon`` always, ``attr_cons``, ``cont_cons``, ``attr_repulsion``, ``ce`` when
        computed); ``aux`` a dict with ``donors`` (M, B), ``content`` (B, K, H, W), ``attributes``
        (B, C, K), ``signals`` (M + 1, B, C, H, W) generated signals (with graph), ``reconstruction``
        (B, C, H, W) detached self-reconstruction in [0, 1] RGB, and ``logits`` ((M + 1)·B, classes,
        view-major; ``logits[:B]`` are the view-0 predictions) when a classifier ran.
        No value is read back to the host: logging is up to the caller.

    Gradients flow exactly as in the method: nothing is detached, so the targets of the consistency
    terms (z_c, z_a and the donor attributes) receive gradients too.

    Example:
        >>> from contrimix_aug import ContriMixModel, ModelConfig
        >>> loss_fn = ContriMixLoss(ContriMixModel(ModelConfig(attr_widths=(8, 16))), num_mixes=2)
        >>> total, terms, aux = loss_fn(torch.rand(4, 3, 16, 16), generator=torch.Generator().manual_seed(0))
        >>> total.backward()
        >>> sorted(terms), tuple(aux["signals"].shape)
        (['attr_cons', 'attr_repulsion', 'cont_cons', 'self_recon'], (3, 4, 3, 16, 16))
    """

    def __init__(
        self,
        model: ContriMixModel,
        weights: LossWeights | None = None,
        num_mixes: int = 3,
        *,
        exclude_self: bool = True,
        freeze_encoders: bool = False,
        ce_aggregation: str = "mean",
        classifier_input: str = "reconstruction",
        tau: float = 0.1,
        restain: RestainConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, ContriMixModel):
            raise TypeError(f"ContriMixLoss: model must be a ContriMixModel, got {type(model).__name__}.")
        if isinstance(num_mixes, bool) or not isinstance(num_mixes, int) or num_mixes < 0:
            raise ValueError(f"ContriMixLoss: num_mixes must be an int >= 0, got {num_mixes!r}.")
        if ce_aggregation not in CE_AGGREGATIONS:
            raise ValueError(f"ContriMixLoss: ce_aggregation must be one of {CE_AGGREGATIONS}, got {ce_aggregation!r}.")
        if classifier_input not in ("reconstruction", "original"):
            raise ValueError(
                f"ContriMixLoss: classifier_input must be 'reconstruction' or 'original', got {classifier_input!r}."
            )
        if not tau > 0:
            raise ValueError(f"ContriMixLoss: tau must be > 0, got {tau!r}.")
        self.model = model
        self.weights = weights if weights is not None else LossWeights()
        if not isinstance(self.weights, LossWeights):
            raise TypeError(f"ContriMixLoss: weights must be LossWeights, got {type(self.weights).__name__}.")
        self.num_mixes = num_mixes
        self.exclude_self = exclude_self
        self.freeze_encoders = freeze_encoders
        self.ce_aggregation = ce_aggregation
        self.classifier_input = classifier_input
        self.tau = float(tau)
        self.restain = restain if restain is not None else RestainConfig()
        if (self.weights.pair_recon or self.weights.pair_content) and model.config.in_channels != 3:
            raise ValueError("ContriMixLoss: the paired re-staining terms need 3-channel (RGB) models; set "
                             "pair_recon = pair_content = 0 for this model.")
        if freeze_encoders:
            model.requires_grad_(False)

    def extra_repr(self) -> str:
        return (
            f"num_mixes={self.num_mixes}, weights={self.weights}, exclude_self={self.exclude_self}, "
            f"freeze_encoders={self.freeze_encoders}, ce_aggregation={self.ce_aggregation!r}"
        )

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        classifier: Callable[[torch.Tensor], torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        """Compute the loss for a batch of images (B, C, H, W) in [0, 1], RGB; see the class docstring.

        Args:
            images: the batch; B >= 2 when ``num_mixes > 0`` (donors are other images).
            generator: ``torch.Generator`` for the donor draw (any device; the global RNG when None).
            classifier: joint training: a callable (N, C, H, W) images in [0, 1] RGB -> (N, classes) logits.
            labels: (B,) class indices or (B, classes) probabilities, with ``classifier``.
        """
        w = self.weights
        model = self.model
        cfg = model.config
        check_image(images, cfg.in_channels)
        if classifier is None:
            if self.freeze_encoders:
                raise ValueError("ContriMixLoss: freeze_encoders=True trains only a classifier; pass classifier=.")
            if w.ce > 0:
                raise ValueError(f"ContriMixLoss: weights.ce={w.ce} but no classifier was passed; pass classifier= "
                                 "and labels=, or use LossWeights(ce=0).")
        else:
            if labels is None:
                raise ValueError("ContriMixLoss: a classifier needs labels=.")
            if w.ce == 0 and not self.freeze_encoders:
                raise ValueError("ContriMixLoss: a classifier was passed but weights.ce == 0, so it would not train; "
                                 "set LossWeights(ce=...) > 0.")
        b, c, h, wd = images.shape
        views = self.num_mixes + 1
        k = cfg.num_attributes
        train_model = not self.freeze_encoders

        target = model.order(images)
        with nullcontext() if train_model else torch.no_grad():
            content, attributes = model.encode_signal(model.image_to_signal(images))
            if self.num_mixes:
                donors = sample_donors(
                    b, self.num_mixes, generator=generator, device=images.device, exclude_self=self.exclude_self
                ).to(images.device)
                stack = torch.cat([attributes.unsqueeze(0), attributes[donors]])  # (V, B, C, K)
            else:
                donors = torch.zeros(0, b, dtype=torch.long, device=images.device)
                stack = attributes.unsqueeze(0)
            signals = render_views(model, content, stack)  # (V, B, C, H, W), one batched matmul
            gen = signals.transpose(0, 1)  # image-major (B, V, C, H, W) for the re-encoding
            recon = from_signal(signals[0], cfg.mode)

        terms: dict[str, torch.Tensor] = {}
        with nullcontext() if train_model and w.self_recon else torch.no_grad():
            terms["self_recon"] = self_reconstruction_loss(recon, target)
        if train_model and (w.attr_cons or w.cont_cons):
            flat = gen.reshape(b * views, c, h, wd)  # image-major, one batch of (M + 1)·B
            lstsq = model.attribute_encoder is None  # least-squares attributes are solved from the content
            re_content_flat = model.content_encoder(flat) if w.cont_cons or lstsq else None
            if w.attr_cons:
                re_attr = model.attributes_of(flat, re_content_flat).view(b, views, c, k)
                terms["attr_cons"] = attribute_consistency_loss(re_attr, stack.transpose(0, 1))
            if w.cont_cons:
                re_content = re_content_flat.view(b, views, k, h, wd)
                terms["cont_cons"] = content_consistency_loss(re_content.transpose(0, 1), content)
        if train_model and w.attr_repulsion and self.num_mixes:
            terms["attr_repulsion"] = attribute_repulsion_loss(stack, self.tau)
        if train_model and (w.pair_recon or w.pair_content):
            # the same tissue in a random other stain: content must agree, attributes must carry the stain
            other_rgb = restain(images, self.restain, generator=generator)
            other = model.order(other_rgb)
            content2, attributes2 = model.encode_signal(model.image_to_signal(other_rgb))
            if w.pair_recon:
                swapped = torch.stack([torch.cat([attributes2, attributes])])  # (1, 2B, C, K)
                cross = from_signal(render_views(model, torch.cat([content, content2]), swapped)[0], cfg.mode)
                terms["pair_recon"] = self_reconstruction_loss(cross, torch.cat([other, target]))
            if w.pair_content:
                terms["pair_content"] = content_consistency_loss(content2.unsqueeze(0), content)

        aux: dict[str, Any] = {
            "donors": donors,
            "content": content,
            "attributes": attributes,
            "signals": signals,
            "reconstruction": model.order(recon).detach(),
        }
        if classifier is not None:
            if self.classifier_input == "original":
                mixed = from_signal(signals[1:].reshape(self.num_mixes * b, c, h, wd), cfg.mode)
                inputs = torch.cat([target, mixed])
            else:
                inputs = from_signal(signals.reshape(views * b, c, h, wd), cfg.mode)
            logits = classifier(model.order(inputs))
            terms["ce"] = aggregate_cross_entropy(
                cross_entropy_per_view(logits, labels, views), views, self.ce_aggregation
            )
            aux["logits"] = logits

        if self.freeze_encoders:
            total = terms["ce"]
        else:
            total = sum(getattr(w, name) * value for name, value in terms.items() if getattr(w, name))
            if not isinstance(total, torch.Tensor):  # every weight is 0
                total = terms["self_recon"] * 0.0
        return total, terms, aux
