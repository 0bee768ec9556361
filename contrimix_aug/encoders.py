"""Stage 2: content and attribute encoders.

ContentEncoder:   (B, C, H, W) signal -> (B, K, H, W) content, full resolution.
AttributeEncoder: (B, C, H, W) signal -> (B, C, K) attributes, one matrix per image.

With the default :class:`~contrimix_aug.config.ModelConfig` these are exactly the authors' k = 1 networks
(reflect padding, InstanceNorm(affine=False), LeakyReLU 0.01 / 0.2, LayerNorm head); parameter names
follow a flat layout that :mod:`contrimix_aug.checkpoint` maps the authors' checkpoints onto.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["ContentEncoder", "AttributeEncoder"]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    pad = (k - 1) // 2 if stride == 1 else 1
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, padding_mode="reflect" if pad else "zeros")


class _ResBlock(nn.Module):
    """x + IN(conv(LReLU(IN(conv(x)))))."""

    def __init__(self, ch: int, k: int) -> None:
        super().__init__()
        self.conv1 = _conv(ch, ch, k)
        self.conv2 = _conv(ch, ch, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(F.instance_norm(self.conv1(x)), 0.01)
        return x + F.instance_norm(self.conv2(y))


class ContentEncoder(nn.Module):
    """Per-pixel content (stain concentrations), full resolution.

    Conv(C->hidden) -> LReLU -> Conv(hidden->K') -> IN -> LReLU -> res blocks -> LReLU,
    with K' = K (or K - 1 plus a constant-1 channel when ``config.content_constant``).

    Shape: (B, C, H, W) -> (B, K, H, W).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k = config.content_kernel
        kout = config.num_attributes - int(config.content_constant)
        self.conv_in = _conv(config.in_channels, config.content_hidden, k)
        self.conv_mid = _conv(config.content_hidden, kout, k)
        self.blocks = nn.ModuleList(_ResBlock(kout, k) for _ in range(config.content_res_blocks))

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv_in(signal), 0.01)
        x = F.leaky_relu(F.instance_norm(self.conv_mid(x)), 0.01)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(x, 0.01)
        if self.config.content_constant:
            x = torch.cat([x, x.new_ones(x.shape[0], 1, *x.shape[2:])], dim=1)
        return x


class _DownBlock(nn.Module):
    """Residual 2× downsampling (MDMM style): [conv3 -> LReLU(0.2) -> conv3 -> avgpool] + [avgpool -> conv1]."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cin, 3)
        self.conv2 = _conv(cin, cout, 3)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.avg_pool2d(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 2)
        return main + self.skip(F.avg_pool2d(x, 2))


class AttributeEncoder(nn.Module):
    """One C×K attribute matrix per image (stain vectors as columns).

    Stem Conv4×4/s2 -> downsampling blocks -> global average pool -> 1×1 conv to C·K
    -> [LayerNorm -> LReLU] -> view (B, C, K). With ``config.attr_stats`` the pooled features are joined by the
    full-resolution per-channel mean and standard deviation of the signal before the head. Inputs smaller than ``config.min_attr_size`` (or any input
    when ``config.attr_input_size`` is set) are resized first (bilinear, antialiased when shrinking).

    Shape: (B, C, H, W) -> (B, C, K).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        w = config.attr_widths
        c, k = config.in_channels, config.num_attributes
        self.stem = nn.Conv2d(c, w[0], 4, stride=2, padding=1, padding_mode="reflect")
        self.blocks = nn.ModuleList(_DownBlock(a, b) for a, b in zip(w[:-1], w[1:]))
        self.head = nn.Conv2d(w[-1] + (2 * c if config.attr_stats else 0), c * k, 1)
        self.norm = nn.LayerNorm([c * k, 1, 1]) if config.attr_head == "layernorm" else None

    def resize_input(self, signal: torch.Tensor) -> torch.Tensor:
        """Resize to ``attr_input_size`` (if set) or up to the minimum size; otherwise return as is."""
        size = self.config.attr_input_size
        h, w = signal.shape[-2:]
        if size is None:
            m = self.config.min_attr_size
            if h >= m and w >= m:
                return signal
            target = (max(h, m), max(w, m))
        else:
            if (h, w) == (size, size):
                return signal
            target = (size, size)
        shrink = target[0] < h or target[1] < w
        return F.interpolate(signal, size=target, mode="bilinear", align_corners=False, antialias=shrink)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.resize_input(signal))
        for block in self.blocks:
            x = block(x)
        x = F.adaptive_avg_pool2d(x, 1)
        if self.config.attr_stats:
            var, mean = torch.var_mean(signal.float(), dim=(2, 3), keepdim=True)
            x = torch.cat([x, mean.to(x.dtype), var.add(1e-6).sqrt().to(x.dtype)], dim=1)
        x = self.head(x)
        if self.norm is not None:
            x = F.leaky_relu(self.norm(x), 0.01)
        return x.view(x.shape[0], self.config.in_channels, self.config.num_attributes)
