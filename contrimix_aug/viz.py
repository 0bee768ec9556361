"""Pictures: tile grids and content × donor swap matrices (PIL only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .model import ContriMixModel

__all__ = ["to_uint8", "tile_grid", "swap_grid"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, 3) uint8 (1-channel images are repeated to grey)."""
    x = images.detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x[:, :3] * 255).round().byte().permute(0, 2, 3, 1).numpy()


def tile_grid(
    rows: Sequence[torch.Tensor],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 2,
    scale: int = 1,
):
    """Lay out rows of (N, C, H, W) images as one PIL image, with optional text labels.

    All images must share H and W; rows may have different lengths.
    """
    from PIL import Image, ImageDraw

    tiles = [to_uint8(r) for r in rows]
    h, w = tiles[0].shape[1:3]
    h, w = h * scale, w * scale
    ncol = max(t.shape[0] for t in tiles)
    left = 8 + 7 * max((len(s) for s in row_labels), default=0) if row_labels else 0
    top = 16 if col_labels else 0
    canvas = Image.new("RGB", (left + ncol * (w + pad) + pad, top + len(tiles) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        y = top + pad + r * (h + pad)
        if row_labels:
            draw.text((4, y + h // 2 - 5), row_labels[r], fill="black")
        for c, tile in enumerate(row):
            im = Image.fromarray(tile)
            if scale != 1:
                im = im.resize((w, h), Image.NEAREST)
            canvas.paste(im, (left + pad + c * (w + pad), y))
    if col_labels:
        for c, s in enumerate(col_labels):
            draw.text((left + pad + c * (w + pad) + 2, 2), s, fill="black")
    return canvas


@torch.no_grad()
def swap_grid(model: ContriMixModel, contents: torch.Tensor, donors: torch.Tensor,
              content_labels: Sequence[str] | None = None, donor_labels: Sequence[str] | None = None):
    """Rows: content images; first column: the input; then one column per donor's attributes.

    Shape: contents (R, C, H, W), donors (D, C, H', W') in [0, 1] -> PIL image of R × (D + 1) tiles,
    with the donors themselves shown as a header row.
    """
    dev = next(model.parameters()).device
    content, _ = model.encode(contents.to(dev))
    attrs = model.encode_attributes(donors.to(dev))
    r, d = contents.shape[0], donors.shape[0]
    rows = [torch.cat([torch.ones_like(donors[:1]), donors])] if donors.shape[-2:] == contents.shape[-2:] else []
    for i in range(r):
        out = model.decode(content[i : i + 1].expand(d, *content.shape[1:]), attrs)
        rows.append(torch.cat([contents[i : i + 1].to(dev), out]).cpu())
    labels = None
    if content_labels is not None:
        labels = (["donors"] if rows and len(rows) > r else []) + list(content_labels)
    cols = None if donor_labels is None else ["input"] + list(donor_labels)
    return tile_grid(rows, labels, cols)
