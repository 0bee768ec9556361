"""ContriMixModel: the content encoder, attribute encoder and generator behind one ``encode``/``decode`` pair."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._checks import check_image
from .encoders import AttributeEncoder, ContentEncoder, least_squares_attributes
from .generator import generate
from .model_config import ModelConfig
from .optical_density import from_signal, to_signal
from .weights_meta import WeightsMeta

__all__ = ["ContriMixModel"]


class ContriMixModel(nn.Module):
    """ContriMix content/attribute model (image -> OD -> encoders -> generator -> OD -> image).

    Args:
        config: the architecture; the default is the authors' K = 4 network.
        bank: optional (N, C, K) attribute bank (attribute matrices of reference images).
        meta: what the weights say about themselves (set when loaded from a file; ``None`` for a fresh model).

    Shapes: images (B, C, H, W) in [0, 1], always given in RGB order (channels are flipped internally when
    the weights expect BGR); content (B, K, H, W); attributes (B, C, K).
    """

    meta: WeightsMeta | None

    def __init__(self, config: ModelConfig | None = None, bank: torch.Tensor | None = None,
                 meta: WeightsMeta | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.content_encoder = ContentEncoder(self.config)
        # least-squares attributes have no network: the matrix is solved from the image's own content
        self.attribute_encoder = AttributeEncoder(self.config) if self.config.attributes == "encoder" else None
        c, k = self.config.in_channels, self.config.num_attributes
        if bank is None:
            bank = torch.zeros(0, c, k)
        if bank.ndim != 3 or tuple(bank.shape[1:]) != (c, k):
            raise ValueError(f"bank: expected (N, {c}, {k}), got {tuple(bank.shape)}.")
        self.register_buffer("bank", bank.detach().float().clone(), persistent=False)
        self.meta = meta

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def min_size(self) -> int:
        """Smallest tile side the input checks accept (from the weights' metadata; 8 px by default)."""
        return self.meta.min_size if self.meta is not None else 8

    @property
    def value_range(self) -> tuple[float, float]:
        """Range of input values the checks accept (from the weights' metadata; [0, 1] by default)."""
        return self.meta.value_range if self.meta is not None else (0.0, 1.0)

    # -- stages --------------------------------------------------------------------------------------
    def order(self, x: torch.Tensor) -> torch.Tensor:
        """RGB <-> the weights' channel order (a flip for BGR weights, the identity otherwise). Shape (..., C, H, W)."""
        return x.flip(-3) if self.config.channel_order == "bgr" else x

    def image_to_signal(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) in RGB order -> encoder input signal (OD, in the weights' channel order)."""
        return to_signal(self.order(image), self.config.mode)

    def signal_to_image(self, signal: torch.Tensor) -> torch.Tensor:
        """Generated signal (B, C, H, W) in the weights' channel order -> image in [0, 1], RGB order."""
        return self.order(from_signal(signal, self.config.mode))

    def attributes_of(self, signal: torch.Tensor, content: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) signal -> (B, C, K) attributes: the attribute encoder, or (``config.attributes ==
        "least_squares"``) the least-squares fit of the signal on its content (computed here when not given)."""
        if self.attribute_encoder is not None:
            return self.attribute_encoder(signal)
        content = self.content_encoder(signal) if content is None else content
        return least_squares_attributes(content, signal, self.config.attr_ridge)

    def encode_signal(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) signal (OD) in the weights' channel order -> (content, attributes)."""
        content = self.content_encoder(signal)
        return content, self.attributes_of(signal, content)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, C, H, W) in [0, 1] -> content (B, K, H, W), attributes (B, C, K)."""
        check_image(image, self.config.in_channels, min_size=self.min_size)
        return self.encode_signal(self.image_to_signal(image))

    def encode_attributes(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) in [0, 1] -> attributes (B, C, K) only (with an attribute encoder, the full-resolution
        content net is skipped)."""
        check_image(image, self.config.in_channels, min_size=self.min_size)
        return self.attributes_of(self.image_to_signal(image))

    def decode_signal(self, content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Content (B, K, H, W), attributes (B, C, K) -> generated signal (B, C, H, W), unclipped."""
        return generate(content, attributes)

    def decode(self, content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Content (B, K, H, W), attributes (B, C, K) -> image (B, C, H, W) in [0, 1], RGB order."""
        return self.signal_to_image(generate(content, attributes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Self-reconstruction: decode(*encode(image))."""
        return self.decode(*self.encode(image))

    # -- freezing --------------------------------------------------------------------------------------
    def freeze(self) -> "ContriMixModel":
        """Eval mode and ``requires_grad=False`` on every parameter; returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def frozen_copy(self) -> "ContriMixModel":
        """A frozen deep copy: freezing it, moving it or replacing its bank never touches this model (which may
        still be training, or be shared with other transforms)."""
        return copy.deepcopy(self).freeze()

    def extra_repr(self) -> str:
        c = self.config
        name = f"{self.meta.name!r}, " if self.meta is not None else ""
        return (
            f"{name}C={c.in_channels}, K={c.num_attributes}, mode={c.mode}, order={c.channel_order}, "
            f"params={self.num_params:,}, bank={self.bank.shape[0]}"
        )
