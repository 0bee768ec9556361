"""contrimix_aug: ContriMix as a drop-in, label-free stain augmentation for microscopy."""

from ._version import __version__  # noqa: E402

from .model_config import ModelConfig, authors_config  # noqa: E402
from .model import ContriMixModel  # noqa: E402
from .transform import ContriMix, ContriMixNormalize  # noqa: E402
from .bank import select_bank  # noqa: E402
from . import functional  # noqa: E402
from .weights import (  # noqa: E402
    ContriMixWeights,
    WeightsError,
    available_weights,
    load_model,
    load_weights,
    save_weights,
    weights_path,
)
from .weights_meta import WeightsMeta  # noqa: E402

__all__ = [
    "__version__",
    "ModelConfig",
    "authors_config",
    "ContriMixModel",
    "ContriMix",
    "ContriMixNormalize",
    "select_bank",
    "functional",
    "ContriMixWeights",
    "WeightsError",
    "available_weights",
    "load_model",
    "load_weights",
    "save_weights",
    "weights_path",
    "WeightsMeta",
]
