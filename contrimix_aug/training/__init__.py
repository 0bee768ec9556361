"""Training ContriMix models: the losses, a step API for your own loop, and the ``contrimix-aug train`` loop.

- :class:`ContriMixLoss`: one training step's objective (encode once, mix, generate, re-encode, score).
- :mod:`.losses`: the individual terms as pure functions, :class:`LossWeights` and the published presets.
- :func:`train` / :class:`TrainConfig`: the resumable, DDP-aware loop; :func:`psnr` / :func:`ssim` metrics.
"""

from .config import ARCHS, TrainConfig, load_config
from .contrimix_loss import ContriMixLoss
from .loop import Trainer, lr_factor, train
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
    "ARCHS",
    "LOSS_PRESETS",
    "ContriMixLoss",
    "LossWeights",
    "TrainConfig",
    "Trainer",
    "aggregate_cross_entropy",
    "attribute_consistency_loss",
    "attribute_repulsion_loss",
    "content_consistency_loss",
    "cross_entropy_per_view",
    "group_by_image",
    "load_config",
    "lr_factor",
    "psnr",
    "self_reconstruction_loss",
    "ssim",
    "train",
]
