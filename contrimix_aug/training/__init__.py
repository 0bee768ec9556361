"""Training ContriMix models: the losses, a step API for your own loop, and the ``contrimix-aug train`` loop.

- :class:`ContriMixLoss`: one training step's objective (encode once, mix, generate, re-encode, score).
- :mod:`.losses`: the individual terms as pure functions, :class:`LossWeights` and the published presets.
- :func:`restain`: random re-staining of a batch (the same tissue in another stain) for the paired terms.
- :func:`train` / :class:`TrainConfig`: the resumable, DDP-aware loop; :func:`load_recipe` the shipped recipes.
"""

from .train_config import ARCHS, RECIPES, TrainConfig, default_recipe, load_config, load_recipe
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
from .restain import RestainConfig, restain

__all__ = [
    "ARCHS",
    "LOSS_PRESETS",
    "ContriMixLoss",
    "LossWeights",
    "RECIPES",
    "RestainConfig",
    "TrainConfig",
    "Trainer",
    "aggregate_cross_entropy",
    "attribute_consistency_loss",
    "attribute_repulsion_loss",
    "content_consistency_loss",
    "cross_entropy_per_view",
    "default_recipe",
    "group_by_image",
    "load_config",
    "load_recipe",
    "lr_factor",
    "restain",
    "self_reconstruction_loss",
    "train",
]
