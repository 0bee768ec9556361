"""Stage 2: content and attribute encoders.

ContentEncoder:   (B, C, H, W) signal -> (B, K, H, W) content, full resolution.
AttributeEncoder: (B, C, H, W) signal -> (B, C, K) attributes, one matrix per image.
least_squares_attributes: (B, K, H, W) content, (B, C, H, W) signal -> (B, C, K), the parameter-free alternative.

With the default :class:`~contrimix_aug.config.ModelConfig` these are exactly the authors' k = 1 networks
(reflect padding, InstanceNorm(affine=False), LeakyReLU 0.01 / 0.2, LayerNorm head); parameter names
follow a flat layout that :mod:`contrimix_aug.authors_checkpoint` maps the authors' checkpoints onto.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model_config import ModelConfig

__all__ = ["ContentEncoder", "AttributeEncoder", "least_squares_attributes"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    pad = (k - 1) // 2 if stride == 1 else 1
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, padding_mode="reflect" if pad else "zeros", bias=bias)


def _pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1×1 convolution as one batched matmul on (B, C, H·W): (B, I, N) -> (B, O, N)."""
    o, i = conv.weight.shape[:2]
    w = conv.weight.view(1, o, i).expand(x.shape[0], o, i)
    if conv.bias is not None:
        return torch.baddbmm(conv.bias.view(1, o, 1), w, x)
    return torch.bmm(w, x)


def _instance_norm_flat(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm (no affine, biased variance) over the last dim of (B, C, N); equals F.instance_norm.

    Two reductions (mean, sum of squares via a norm) and one fused multiply-add: several times faster on
    CPU than Welford ``var_mean`` for the few-channel, many-pixel maps of the content encoder.
    """
    n = x.shape[2]
    mean = x.mean(2, keepdim=True)
    var = (torch.linalg.vector_norm(x, dim=2, keepdim=True).square() / n - mean * mean).clamp_min(0)
    rstd = torch.rsqrt(var + eps)
    return torch.addcmul(-mean * rstd, x, rstd)


class _ResBlock(nn.Module):
    """x + IN(conv(LReLU(IN(conv(x)))))."""

    def __init__(self, ch: int, k: int, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = _conv(ch, ch, k, bias=bias)
        self.conv2 = _conv(ch, ch, k, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(F.instance_norm(self.conv1(x)), 0.01)
        return x + F.instance_norm(self.conv2(y))


class ContentEncoder(nn.Module):
    """Per-pixel content (stain concentrations), full resolution.

    Conv(C->hidden) -> LReLU -> Conv(hidden->K') -> IN -> LReLU -> res blocks -> LReLU (optional),
    with K' = K (or K - 1 plus a constant-1 channel when ``config.content_constant``).

    Shape: (B, C, H, W) -> (B, K, H, W).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k = config.content_kernel
        kout = config.num_attributes - int(config.content_constant)
        self.conv_in = _conv(config.in_channels, config.content_hidden, k)
        bias = config.content_bias_before_norm  # every conv below feeds an InstanceNorm
        self.conv_mid = _conv(config.content_hidden, kout, k, bias=bias)
        self.blocks = nn.ModuleList(_ResBlock(kout, k, bias) for _ in range(config.content_res_blocks))

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        if self.config.content_kernel == 1:
            return self._forward_pointwise(signal)
        x = F.leaky_relu(self.conv_in(signal), 0.01)
        x = F.leaky_relu(F.instance_norm(self.conv_mid(x)), 0.01)
        for block in self.blocks:
            x = block(x)
        if self.config.content_activation == "leaky_relu":
            x = F.leaky_relu(x, 0.01)
        if self.config.content_constant:
            x = torch.cat([x, x.new_ones(x.shape[0], 1, *x.shape[2:])], dim=1)
        return x


    def _forward_pointwise(self, signal: torch.Tensor) -> torch.Tensor:
        """Same function for 1×1 kernels, as matmuls on (B, C, H·W): no im2col, no convolution overhead."""
        b, _, h, w = signal.shape
        x = signal.reshape(b, signal.shape[1], h * w)
        # in-place activations on fresh intermediates (not under autograd, where they would be saved)
        inplace = not torch.is_grad_enabled()
        x = F.leaky_relu(_pointwise(x, self.conv_in), 0.01, inplace=inplace)
        x = F.leaky_relu(_instance_norm_flat(_pointwise(x, self.conv_mid)), 0.01, inplace=inplace)
        for block in self.blocks:
            y = F.leaky_relu(_instance_norm_flat(_pointwise(x, block.conv1)), 0.01, inplace=inplace)
            x = x + _instance_norm_flat(_pointwise(y, block.conv2))
        if self.config.content_activation == "leaky_relu":
            x = F.leaky_relu(x, 0.01, inplace=inplace)
        if self.config.content_constant:
            x = torch.cat([x, x.new_ones(b, 1, h * w)], dim=1)
        return x.view(b, x.shape[1], h, w)


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

    Stem Conv4×4/s2 -> downsampling blocks -> global average pool -> head (1×1 conv to C·K
    -> [LayerNorm -> LReLU], or a two-layer MLP) -> view (B, C, K). With ``config.attr_stats`` the pooled
    features are joined by the full-resolution per-channel mean and standard deviation of the signal (and with
    ``config.attr_cov`` the cross-channel correlations) before the head. Inputs smaller than ``config.min_attr_size`` (or any input
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
        n_in = w[-1] + config.num_attr_stats
        if config.attr_head == "mlp":
            self.head_hidden = nn.Conv2d(n_in, config.attr_head_hidden, 1)
            n_in = config.attr_head_hidden
        self.head = nn.Conv2d(n_in, c * k, 1)
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
        # antialiased resizing has no half-precision CPU kernel: resize in float32 there
        x = signal.float() if signal.device.type == "cpu" and signal.dtype != torch.float64 else signal
        out = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=shrink)
        return out.to(signal.dtype)

    def prepare(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The two full-resolution reads: the resized copy and (with ``attr_stats``) the (B, 2C, 1, 1) statistics.

        Splitting them from :meth:`forward_prepared` lets callers stream a large batch through the
        full-resolution work in cache-sized chunks and run the small network once on the whole batch.
        """
        stats = None
        if self.config.attr_stats:
            flat = signal.float().flatten(2)
            n = flat.shape[2]
            mean = flat.mean(2, keepdim=True)
            unbias = n / max(n - 1, 1)
            if self.config.attr_cov:
                # one (C, N) x (N, C) product gives every second moment: variances and correlations
                second = torch.bmm(flat, flat.transpose(1, 2)) / n  # (B, C, C)
                cov = (second - mean * mean.transpose(1, 2)) * unbias
                var = cov.diagonal(dim1=1, dim2=2).unsqueeze(-1).clamp_min(0)
            else:
                sq = torch.linalg.vector_norm(flat, dim=2, keepdim=True).square() / n
                var = ((sq - mean * mean) * unbias).clamp_min(0)  # unbiased, as torch.var
            std = var.add(1e-6).sqrt()
            parts = [mean, std]
            if self.config.attr_cov:
                corr = cov / (std * std.transpose(1, 2))
                i, j = torch.triu_indices(flat.shape[1], flat.shape[1], 1, device=flat.device)
                parts.append(corr[:, i, j].unsqueeze(-1))
            stats = torch.cat(parts, dim=1).unsqueeze(-1).to(signal.dtype)
        return self.resize_input(signal), stats

    def forward_prepared(self, small: torch.Tensor, stats: torch.Tensor | None) -> torch.Tensor:
        """(B, C, h, w) resized signal (+ statistics) -> (B, C, K) attributes."""
        x = self.stem(small)
        for block in self.blocks:
            x = block(x)
        x = F.adaptive_avg_pool2d(x, 1)
        if stats is not None:
            x = torch.cat([x, stats.to(x.dtype)], dim=1)
        if self.config.attr_head == "mlp":
            x = F.leaky_relu(self.head_hidden(x), 0.2)
        x = self.head(x)
        if self.norm is not None:
            x = F.leaky_relu(self.norm(x), 0.01)
        return x.view(x.shape[0], self.config.in_channels, self.config.num_attributes)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.forward_prepared(*self.prepare(signal))


def least_squares_attributes(content: torch.Tensor, signal: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """The attribute matrix that best rebuilds each image's signal from its own content: A = S Cᵀ (C Cᵀ + λI)⁻¹.

    Two products over the pixels (C Cᵀ is K × K, S Cᵀ is C × K) and a K × K solve per image, in float32;
    λ = ``ridge`` times the mean diagonal of C Cᵀ keeps it well posed. Gradients flow to the content.

    Shape: content (B, K, H, W), signal (B, C, H, W) -> (B, C, K).
    """
    b, k = content.shape[:2]
    c = content.float().reshape(b, k, -1)
    s = signal.float().reshape(b, signal.shape[1], -1)
    gram = torch.bmm(c, c.transpose(1, 2))
    lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
    gram = gram + lam.view(b, 1, 1) * torch.eye(k, device=gram.device, dtype=gram.dtype)
    rhs = torch.bmm(c, s.transpose(1, 2))  # (B, K, C)
    return torch.linalg.solve(gram, rhs).transpose(1, 2).to(signal.dtype)
