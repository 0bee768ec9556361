"""Functional core: the whole data flow (image -> OD -> encoders -> mixing -> generator -> image) as plain
functions of a model and explicit parameters. The modules in :mod:`contrimix_aug.transform` are thin shells
around :func:`apply_contrimix`; :func:`mix` is the authors' training-time batch expansion.
"""

from __future__ import annotations

import torch

from ._checks import check_image, check_image_values
from .mixing import gather_attributes, mix_attributes, sample_donors, sample_strength
from .model import ContriMixModel

__all__ = ["apply_contrimix", "mix", "compute_bank", "normalize"]


def _model_dtype(model: ContriMixModel) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def _as_rows(mask: torch.Tensor) -> torch.Tensor | None:
    """Indices of True rows when the mask lives on the CPU (no device sync); None otherwise."""
    if mask.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    return mask.nonzero().flatten()


def _like(out: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Give ``out`` the memory format of ``image`` (channels_last stays channels_last)."""
    if image.ndim == 4 and not image.is_contiguous() and image.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def apply_contrimix(
    model: ContriMixModel,
    image: torch.Tensor,
    donors: torch.Tensor,
    strength: torch.Tensor,
    selected: torch.Tensor | None = None,
    from_bank: torch.Tensor | None = None,
    bank: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Re-render selected images with (interpolated) donor attributes. Draws no random numbers.

    Args:
        model: the (frozen) ContriMix model.
        image: (B, C, H, W) in [0, 1], any float dtype.
        donors: (B,) long, donor row in the batch (or in ``bank`` where ``from_bank``).
        strength: (B,) α in [0, 1]; attributes become (1 - α)·own + α·donor.
        selected: (B,) bool, which images are re-rendered (default: all); the others are returned unchanged.
        from_bank: (B,) bool, donors that index ``bank`` instead of the batch.
        bank: (N, C, K) attribute bank (default: ``model.bank``).
        target: (C, K) fixed donor attributes for every image (normalisation); overrides donors.

    Returns:
        (B, C, H, W), same dtype, device and memory format (channels_last stays channels_last) as ``image``.

    When the parameters live on the CPU (the default), only what is needed is encoded (content of the selected
    images; attributes of their donors, and their own only where α < 1), in chunks of about 128k pixels on a CPU so
    that the full-resolution maps stay in cache. There is no per-image Python loop.
    """
    b = image.shape[0]
    dev = image.device
    cdtype = _model_dtype(model)
    sel = torch.ones(b, dtype=torch.bool) if selected is None else selected.bool()
    if bank is None and model.bank.numel():
        bank = model.bank
    rows = _as_rows(sel)
    if rows is None:
        return _apply_dense(model, image, donors, strength, sel if selected is not None else None,
                            from_bank, bank, target)
    if rows.numel() == 0:
        return image.clone()
    # Parameters known on the host: encode only what is needed, in cache-sized chunks on the CPU.
    batch_donor = torch.zeros(b, dtype=torch.bool) if target is not None else (
        ~from_bank.cpu() if from_bank is not None else torch.ones(b, dtype=torch.bool))
    # own attributes matter only where α < 1 (at α = 1 the donor's replace them exactly); donors' always do
    need = sel & (strength.cpu() < 1)
    need[donors.cpu()[sel & batch_donor]] = True
    need_rows = need.nonzero().flatten()
    c_, k_ = model.config.in_channels, model.config.num_attributes
    attrs = torch.zeros(b, c_, k_, device=dev, dtype=cdtype)
    if need_rows.numel():
        # pass 1: the attribute encoder's full-resolution reads chunk by chunk, its small network once
        enc = model.attribute_encoder
        small, stats = [], []
        for c in _chunks(need_rows, image):
            sm, st = enc.prepare(model._signal(image.index_select(0, c.to(dev)).to(cdtype)))
            small.append(sm)
            stats.append(st)
        attrs_need = enc.forward_prepared(torch.cat(small), None if stats[0] is None else torch.cat(stats))
        attrs.index_copy_(0, need_rows.to(dev), attrs_need.to(cdtype))
    # pass 2: content and rendering of the selected images, chunk by chunk
    out = image.clone() if rows.numel() < b else torch.empty_like(image, memory_format=torch.contiguous_format)
    for c in _chunks(rows, image):
        cd = c.to(dev)
        own = attrs.index_select(0, cd)
        donor_attrs = _donor_attributes(attrs, donors[c].to(dev), None if from_bank is None else from_bank[c].to(dev),
                                        bank, target)
        mixed = mix_attributes(own, donor_attrs, strength[c].to(dev))
        content = model.content_encoder(model._signal(image.index_select(0, cd).to(cdtype)))
        out.index_copy_(0, cd, model.decode(content, mixed).to(image.dtype))
    return _like(out, image)


def _donor_attributes(attrs, donors, from_bank, bank, target):
    """(n, C, K) donor attributes of n images: the fixed ``target``, or ``donors`` into ``attrs`` / ``bank``."""
    if target is not None:
        return target.to(attrs).expand(donors.shape[0], *target.shape)
    return gather_attributes(attrs, donors, bank, from_bank)


_CPU_CHUNK_PIXELS = 1 << 17  # about 128k pixels: the full-resolution maps of a chunk stay in the CPU caches


def _chunks(rows: torch.Tensor, image: torch.Tensor) -> list[torch.Tensor]:
    """Split row indices into chunks of about ``_CPU_CHUNK_PIXELS`` pixels on the CPU; one chunk elsewhere."""
    if image.device.type != "cpu":
        return [rows]
    per = max(1, _CPU_CHUNK_PIXELS // max(1, image.shape[-1] * image.shape[-2]))
    return list(rows.split(per))


def _apply_dense(model, image, donors, strength, selected, from_bank, bank, target):
    """All rows at once, parameters on the device (no host sync), or under torch.compile."""
    dev = image.device
    content, attrs = model.encode(image.to(_model_dtype(model)))
    donor_attrs = _donor_attributes(attrs, donors.to(dev), None if from_bank is None else from_bank.to(dev),
                                    bank, target)
    mixed = mix_attributes(attrs, donor_attrs, strength.to(dev))
    rendered = model.decode(content, mixed).to(image.dtype)
    if selected is None:
        return _like(rendered, image)
    return _like(torch.where(selected.to(dev).view(-1, 1, 1, 1), rendered, image), image)


@torch.no_grad()
def compute_bank(model: ContriMixModel, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Attribute bank from reference images: (N, C, H, W) in [0, 1] -> (N, C, K)."""
    check_image(images, model.config.in_channels, name="bank images")
    check_image_values(images, name="bank images")
    dtype = _model_dtype(model)
    dev = next(model.parameters()).device
    return torch.cat(
        [model.encode_attributes(chunk.to(dev, dtype)).float() for chunk in images.split(batch_size)]
    ).cpu()


def mix(
    model: ContriMixModel,
    image: torch.Tensor,
    num_mixes: int = 1,
    *,
    generator: torch.Generator | None = None,
    strength: float = 1.0,
    exclude_self: bool = True,
) -> torch.Tensor:
    """The authors' batch expansion: self-reconstruction first, then ``num_mixes`` re-renderings per image.

    Args:
        image: (B, C, H, W) in [0, 1], B >= 2 when ``exclude_self``.

    Returns:
        ((M + 1)·B, C, H, W): rows [0, B) are self-reconstructions, rows [m·B, (m+1)·B) use donors of mix m.
        Labels follow with ``labels.repeat(M + 1)``.
    """
    check_image(image, model.config.in_channels)
    check_image_values(image)
    b = image.shape[0]
    content, attrs = model.encode(image.to(_model_dtype(model)))
    donors = sample_donors(b, num_mixes, generator=generator, device=image.device, exclude_self=exclude_self)
    alpha = sample_strength(b, strength, strength, generator=generator).to(attrs)
    all_attrs = [attrs] + [mix_attributes(attrs, attrs[d.to(attrs.device)], alpha) for d in donors]
    m1 = num_mixes + 1
    content_rep = content.unsqueeze(0).expand(m1, *content.shape).reshape(m1 * b, *content.shape[1:])
    return model.decode(content_rep, torch.cat(all_attrs)).to(image.dtype)


def normalize(model: ContriMixModel, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Learned stain normalisation: re-render every image with one fixed attribute matrix ``target`` (C, K)."""
    b = image.shape[0]
    zeros = torch.zeros(b, dtype=torch.long)
    return apply_contrimix(model, image, zeros, torch.ones(b), target=target)
