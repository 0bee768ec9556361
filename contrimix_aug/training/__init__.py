"""Training ContriMix models: the losses and a step API for your own loop.

- :class:`ContriMixLoss`: one training step's objective (encode once, mix, generate, re-encode, score).
- :mod:`.losses`: the individual terms as pure functions, :class:`LossWeights` and the published presets.
- :func:`psnr` / :func:`ssim`: reconstruction metrics.
"""

from .contrimix_loss import ContriMixLoss
from .losses import (
    LOSS_PRESETS,
    LossWeights,
    aggregate_cross_entropy,
    attribute_consistency_loss,
    attribute_repulsion_loss,
    content_consistency_loss,
    cross_entropy_per_view,
    group_by_image,
    self_reconstruction_loss,
)
from .metrics import psnr, ssim

__all__ = [
    "LOSS_PRESETS",
    "ContriMixLoss",
    "LossWeights",
    "aggregate_cross_entropy",
    "attribute_consistency_loss",
    "attribute_repulsion_loss",
    "content_consistency_loss",
    "cross_entropy_per_view",
    "group_by_image",
    "psnr",
    "self_reconstruction_loss",
    "ssim",
]
