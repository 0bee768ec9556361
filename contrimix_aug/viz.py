"""Pictures: tile grids and content × donor swap matrices (PIL only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .model import ContriMixModel

__all__ = ["to_uint8", "tile_grid", "swap_grid", "dataflow_figure"]


def to_uint8(images: torch.Tensor, *, rgb: bool = True) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, 3) uint8, rounded (``rgb=True``: for display, 1-channel images
    repeated to grey and extra channels dropped) or (N, H, W, C) uint8 with every channel (``rgb=False``)."""
    x = images.detach().float().clamp(0, 1).cpu()
    if rgb:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    return (x * 255).round().byte().permute(0, 2, 3, 1).numpy()


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


@torch.no_grad()
def dataflow_figure(model: ContriMixModel, image: torch.Tensor, donor: torch.Tensor | None = None):
    """One picture of the data flow for a (C, H, W) image: input, optical density, the K content maps,
    the attribute matrix (each column's colour as a swatch) and the reconstruction (and a swap if ``donor``).
    """
    from PIL import Image, ImageDraw

    dev = next(model.parameters()).device
    x = image.unsqueeze(0).to(dev)
    content, attrs = model.encode(x)
    rec = model.decode(content, attrs)
    k = content.shape[1]
    h, w = image.shape[-2:]
    od = model.image_to_signal(x)[0].mean(0, keepdim=True)
    maps = content[0]
    lo = maps.flatten(1).float().quantile(0.01, dim=1).view(-1, 1, 1)
    hi = maps.flatten(1).float().quantile(0.99, dim=1).view(-1, 1, 1)
    maps = ((maps - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1).unsqueeze(1)
    # attribute columns as colours: the transmittance of each column's OD vector (RGB models only)
    swatches = []
    if model.config.in_channels == 3 and model.config.mode == "absorbance":
        for j in range(k):
            col = attrs[0, :, j]
            rgb = model.signal_to_image(col.view(1, 3, 1, 1)).view(3)
            swatches.append(rgb.view(3, 1, 1).expand(3, h // 2, w // 2))
    tiles = [("input", x[0]), ("optical density", (od / od.max().clamp_min(1e-6)).expand(3, -1, -1))]
    tiles += [(f"content {j}", maps[j].expand(3, -1, -1)) for j in range(k)]
    tiles += [("reconstruction", rec[0])]
    if donor is not None:
        d_attrs = model.encode_attributes(donor.unsqueeze(0).to(dev))
        tiles += [("donor", donor.to(dev)), ("swap", model.decode(content, d_attrs)[0])]
    pad, top = 4, 14
    canvas = Image.new("RGB", (len(tiles) * (w + pad) + pad, top + h + pad + (h // 2 + top if swatches else 0)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, t) in enumerate(tiles):
        canvas.paste(Image.fromarray(to_uint8(t.unsqueeze(0).cpu())[0]), (pad + i * (w + pad), top))
        draw.text((pad + i * (w + pad), 1), label[: w // 6], fill="black")
    if swatches:
        y0 = top + h + pad + top
        draw.text((pad, y0 - top + 1), "attribute columns (stain colour of each content map)", fill="black")
        for j, s in enumerate(swatches):
            canvas.paste(Image.fromarray(to_uint8(s.unsqueeze(0).cpu())[0]), (pad + (2 + j) * (w + pad), y0))
    return canvas
