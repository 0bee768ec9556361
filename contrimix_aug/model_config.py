"""The architecture of a ContriMix model (:class:`ModelConfig`), stored with the weights (``to_dict``/``from_dict``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelConfig", "AUTHORS_CONFIG", "authors_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`~contrimix_aug.ContriMixModel`.

    Args:
        in_channels: C, image channels (3 for H&E, any for fluorescence).
        num_attributes: K, attribute vectors per image (columns of the C×K attribute matrix), constant channel included.
        mode: ``"absorbance"`` (Beer–Lambert, brightfield) or ``"linear"`` (fluorescence, no log).
        content_hidden: width of the content encoder's first conv (8 in the authors' net).
        content_kernel: conv kernel of the content encoder (3 = authors, 1 = per-pixel).
        content_res_blocks: residual InstanceNorm blocks in the content encoder (2 = authors).
        content_bias_before_norm: the convolutions that feed an InstanceNorm have a bias (authors: True). The
            normalisation removes any per-channel constant, so these biases cannot change the output; False
            leaves them out (the shipped recipes), which also keeps every parameter in use under DDP.
        content_activation: last activation of the content encoder: ``"leaky_relu"`` (authors) or ``"none"``
            (the content may be negative, so no information is lost to the slope-0.01 tail). Not in the authors' net.
        content_constant: if True the last content channel is a constant 1, so the generator gets a per-image
            offset column (the background optical density). Not in the authors' net.
        attributes: how an image's attribute matrix is obtained: ``"encoder"`` (authors: the attribute encoder
            network below) or ``"least_squares"`` (no parameters: the matrix that best rebuilds the image's signal
            from its own content maps, A = S Cᵀ (C Cᵀ + λI)⁻¹ over the image's pixels, with λ = ``attr_ridge`` times
            the mean diagonal of C Cᵀ). Not in the authors' net.
        attr_ridge: relative ridge λ of the least-squares attributes.
        attr_widths: attribute-encoder widths: a 4×4/s2 stem to ``attr_widths[0]``, then one downsampling
            residual block per further width. The authors use (16, 32, 64, 128, 256, 512): minimum input 64 px.
        attr_input_size: if set, attributes are computed on a copy resized to this square size (cheap and
            resolution independent); None = native resolution, smaller inputs upsampled to the minimum.
        attr_stats: if True the head also sees the per-channel mean and standard deviation of the
            full-resolution signal (exact global statistics even when attributes are computed on a small copy).
            Not in the authors' net.
        attr_cov: with ``attr_stats``, also the C(C-1)/2 cross-channel correlation coefficients of the signal.
            Not in the authors' net.
        attr_head: ``"layernorm"`` (authors: 1×1 conv -> LayerNorm -> LeakyReLU), ``"linear"`` (1×1 conv only) or
            ``"mlp"`` (1×1 conv to ``attr_head_hidden`` -> LeakyReLU 0.2 -> 1×1 conv). Not in the authors' net.
        attr_head_hidden: width of the ``"mlp"`` head's hidden layer.
        channel_order: channel order the weights expect, ``"rgb"`` or ``"bgr"``; inputs are always RGB and
            are flipped internally.
    """

    in_channels: int = 3
    num_attributes: int = 4
    mode: str = "absorbance"
    content_hidden: int = 8
    content_kernel: int = 3
    content_res_blocks: int = 2
    content_bias_before_norm: bool = True
    content_activation: str = "leaky_relu"
    content_constant: bool = False
    attributes: str = "encoder"
    attr_ridge: float = 1e-3
    attr_widths: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    attr_input_size: int | None = None
    attr_stats: bool = False
    attr_cov: bool = False
    attr_head: str = "layernorm"
    attr_head_hidden: int = 64
    channel_order: str = "rgb"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"ModelConfig: {msg}")

        if self.in_channels < 1:
            bad(f"in_channels must be >= 1, got {self.in_channels}")
        if self.num_attributes < 1 + int(self.content_constant):
            bad(f"num_attributes must be >= {1 + int(self.content_constant)}, got {self.num_attributes}")
        if self.mode not in ("absorbance", "linear"):
            bad(f"mode must be 'absorbance' or 'linear', got {self.mode!r}")
        if self.content_kernel not in (1, 3, 5):
            bad(f"content_kernel must be 1, 3 or 5, got {self.content_kernel}")
        if self.content_activation not in ("leaky_relu", "none"):
            bad(f"content_activation must be 'leaky_relu' or 'none', got {self.content_activation!r}")
        if self.content_hidden < 1 or self.content_res_blocks < 0:
            bad("content_hidden must be >= 1 and content_res_blocks >= 0")
        if len(self.attr_widths) < 1 or any(int(w) < 1 for w in self.attr_widths):
            bad(f"attr_widths must be a non-empty tuple of positive ints, got {self.attr_widths}")
        if self.attributes not in ("encoder", "least_squares"):
            bad(f"attributes must be 'encoder' or 'least_squares', got {self.attributes!r}")
        if not self.attr_ridge > 0:
            bad(f"attr_ridge must be > 0, got {self.attr_ridge}")
        if self.attr_head not in ("layernorm", "linear", "mlp"):
            bad(f"attr_head must be 'layernorm', 'linear' or 'mlp', got {self.attr_head!r}")
        if self.attr_head_hidden < 1:
            bad(f"attr_head_hidden must be >= 1, got {self.attr_head_hidden}")
        if self.attr_cov and not self.attr_stats:
            bad("attr_cov=True needs attr_stats=True (the correlations are statistics of the signal)")
        if self.channel_order not in ("rgb", "bgr"):
            bad(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if self.channel_order == "bgr" and self.in_channels != 3:
            bad("channel_order='bgr' needs in_channels=3")
        if self.attr_input_size is not None and self.attr_input_size < self.min_attr_size:
            bad(f"attr_input_size must be >= {self.min_attr_size} for attr_widths {self.attr_widths}")
        object.__setattr__(self, "attr_widths", tuple(int(w) for w in self.attr_widths))

    @property
    def num_attr_stats(self) -> int:
        """Number of per-image signal statistics the attribute head sees: 2C (+ C(C-1)/2 with ``attr_cov``)."""
        c = self.in_channels
        return (2 * c + (c * (c - 1) // 2 if self.attr_cov else 0)) if self.attr_stats else 0

    @property
    def min_attr_size(self) -> int:
        """Smallest side the attribute encoder accepts natively: 2 ** len(attr_widths) (64 for the authors)."""
        return 2 ** len(self.attr_widths)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attr_widths"] = list(self.attr_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"ModelConfig: unknown keys {sorted(unknown)}; the weights were written by a newer contrimix_aug. "
                "Upgrade with `pip install -U contrimix_aug`."
            )
        d = dict(d)
        if "attr_widths" in d:
            d["attr_widths"] = tuple(d["attr_widths"])
        return cls(**d)


def authors_config(num_attributes: int = 4, channel_order: str = "rgb") -> ModelConfig:
    """The authors' exact architecture (k = 1): K = 4 for Camelyon17, 16 for TCGA."""
    return ModelConfig(num_attributes=num_attributes, channel_order=channel_order)


AUTHORS_CONFIG = authors_config()
