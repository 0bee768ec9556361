"""ContriMixModel: the content encoder, attribute encoder and generator behind one ``encode``/``decode`` pair."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_image
from .config import ModelConfig
from .encoders import AttributeEncoder, ContentEncoder
from .generator import generate
from .optical_density import from_signal, to_signal

__all__ = ["ContriMixModel"]


class ContriMixModel(nn.Module):
    """ContriMix content/attribute model (image -> OD -> encoders -> generator -> OD -> image).

    Args:
        config: the architecture; the default is the authors' K = 4 network.
        bank: optional (N, C, K) attribute bank (attribute matrices of reference images).

    Shapes: images (B, C, H, W) in [0, 1], always given in RGB order (channels are flipped internally when
    the weights expect BGR); content (B, K, H, W); attributes (B, C, K).
    """

    def __init__(self, config: ModelConfig | None = None, bank: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.content_encoder = ContentEncoder(self.config)
        self.attribute_encoder = AttributeEncoder(self.config)
        c, k = self.config.in_channels, self.config.num_attributes
        if bank is None:
            bank = torch.zeros(0, c, k)
        if bank.ndim != 3 or tuple(bank.shape[1:]) != (c, k):
            raise ValueError(f"bank: expected (N, {c}, {k}), got {tuple(bank.shape)}.")
        self.register_buffer("bank", bank.detach().float().clone(), persistent=False)

    # -- helpers -------------------------------------------------------------------------------------
    def _order(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3) if self.config.channel_order == "bgr" else x

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- stages --------------------------------------------------------------------------------------
    def _signal(self, image: torch.Tensor) -> torch.Tensor:
        """Image in RGB order -> encoder input signal (OD, in the weights' channel order)."""
        return to_signal(self._order(image), self.config.mode)

    def encode_signal(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) signal (OD) in the weights' channel order -> (content, attributes)."""
        return self.content_encoder(signal), self.attribute_encoder(signal)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B, C, H, W) in [0, 1] -> content (B, K, H, W), attributes (B, C, K)."""
        check_image(image, self.config.in_channels)
        return self.encode_signal(self._signal(image))

    def encode_attributes(self, image: torch.Tensor) -> torch.Tensor:
        """Image (B, C, H, W) in [0, 1] -> attributes (B, C, K) only (skips the full-resolution content net)."""
        check_image(image, self.config.in_channels)
        return self.attribute_encoder(self._signal(image))

    def decode_signal(self, content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Content (B, K, H, W), attributes (B, C, K) -> generated signal (B, C, H, W), unclipped."""
        return generate(content, attributes)

    def decode(self, content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Content (B, K, H, W), attributes (B, C, K) -> image (B, C, H, W) in [0, 1], RGB order."""
        return self._order(from_signal(generate(content, attributes), self.config.mode))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Self-reconstruction: decode(*encode(image))."""
        return self.decode(*self.encode(image))

    def freeze(self) -> "ContriMixModel":
        """Eval mode and ``requires_grad=False`` on every parameter; returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"C={c.in_channels}, K={c.num_attributes}, mode={c.mode}, order={c.channel_order}, "
            f"params={self.num_params:,}, bank={self.bank.shape[0]}"
        )
