"""Stage 4: the generator, Â[b, c, h, w] = Σ_k attributes[b, c, k] · content[b, k, h, w] (parameter-free, k = 1)."""

from __future__ import annotations

import torch

__all__ = ["generate"]


def generate(content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Mix per-pixel content with per-image attribute matrices (a batched matmul).

    Args:
        content: (B, K, H, W).
        attributes: (B, C, K).

    Returns:
        (B, C, H, W) signal (optical density in absorbance mode).

    >>> generate(torch.ones(2, 4, 5, 6), torch.ones(2, 3, 4)).shape
    torch.Size([2, 3, 5, 6])
    """
    b, k, h, w = content.shape
    if attributes.shape[0] != b or attributes.shape[-1] != k:
        raise ValueError(
            f"generate: content {tuple(content.shape)} and attributes {tuple(attributes.shape)} disagree; "
            "expected content (B, K, H, W) and attributes (B, C, K) with the same B and K."
        )
    out = torch.bmm(attributes.to(content.dtype), content.reshape(b, k, h * w))
    return out.view(b, attributes.shape[1], h, w)
