"""Functional core: the whole data flow (image -> OD -> encoders -> mixing -> generator -> image) as plain
functions of a model and explicit parameters.

* :func:`contrimix`: draw parameters (:func:`~contrimix_aug.mixing.sample_mix_params`) and apply them;
* :func:`apply_contrimix`: apply a :class:`~contrimix_aug.mixing.MixParams` record (draws nothing); the
  kornia/torchvision module and the albumentations adapter are thin shells around it;
* :func:`normalize`: every image re-rendered with one fixed attribute matrix;
* :func:`mix` and :func:`render_views`: the authors' training-time expansion (self-reconstruction plus M
  re-renderings per image), which the training objective uses too.

The augmentation renders (:func:`contrimix`, :func:`apply_contrimix`, :func:`normalize`) take ``render_guard``
(default True): in absorbance mode (H&E) the generated optical density goes through
:func:`~contrimix_aug.optical_density.limit_render` against the source image's own before it becomes an image, so
glass stays glass and no pixel is darker than real tissue; False gives the authors' unguarded render. Linear-mode
(fluorescence) weights are rendered as before either way. :func:`mix` and :func:`render_views` stay unguarded
(their renders feed the training loss, which is defined on the authors' render).
"""

from __future__ import annotations

import torch

from ._checks import check_image, check_image_values, check_probability, check_strength, clamped_values
from .mixing import MixParams, gather_attributes, mix_attributes, sample_donors, sample_mix_params, sample_strength
from .model import ContriMixModel
from .optical_density import limit_render

__all__ = ["apply_contrimix", "contrimix", "mix", "normalize", "render_views"]


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


def contrimix(
    model: ContriMixModel,
    image: torch.Tensor,
    *,
    p: float = 1.0,
    strength: tuple[float, float] = (1.0, 1.0),
    donors: str = "batch",
    bank: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    spread: float | None = None,
    render_guard: bool = True,
    check_values: bool = True,
) -> torch.Tensor:
    """Draw the parameters of one call and apply them: the functional form of :class:`~contrimix_aug.ContriMix`.

    Its defaults are those of the draw (``p=1``, ``donors="batch"``), not the transform's: pass ``p=0.5,
    donors="sampled", spread=0.7`` for what ``ContriMix(weights=...)`` does by default.

    Args:
        model: a (frozen) model. image: (B, C, H, W) in [0, 1]. bank: (N, C, K) attributes (default the model's).
        p, strength, donors, generator, spread: as for :func:`~contrimix_aug.mixing.sample_mix_params`
            (``donors="sampled"``: new attribute matrices around the bank, ``spread`` their standard deviation
            relative to the bank's).
        render_guard: glass stays glass and no pixel is darker than real tissue
            (:func:`~contrimix_aug.optical_density.limit_render`; 3-channel absorbance (H&E) weights only); False:
            the authors' unguarded render.
        check_values: as for ``ContriMix``: refuse NaN/Inf and values outside [0, 1] with a fix, clamp overshoots
            of at most 0.15 (one host sync); False checks only type and shape.

    Returns:
        (B, C, H, W), same dtype, device and memory format as ``image``.
    """
    image = _checked(model, image, check_values)
    p, strength = check_probability(p), check_strength(strength)
    bank = model.bank if bank is None else bank
    params = sample_mix_params(image.shape[0], p=p, strength=strength, donors=donors, bank=bank, spread=spread,
                               generator=generator)
    return apply_contrimix(model, image, params, bank=bank, render_guard=render_guard, check_values=False)


def _checked(model: ContriMixModel, image: torch.Tensor, check_values: bool) -> torch.Tensor:
    """``image`` after the public API's checks: a float (B, C, H, W) tensor the weights take; with ``check_values``
    finite values in the weights' range (an overshoot of at most 1 % of it clamped)."""
    check_image(image, model.config.in_channels, min_size=model.min_size)
    return clamped_values(image, value_range=model.value_range) if check_values else image


def apply_contrimix(model: ContriMixModel, image: torch.Tensor, params: MixParams,
                    bank: torch.Tensor | None = None, *, render_guard: bool = True,
                    check_values: bool = True) -> torch.Tensor:
    """Re-render the selected images with (interpolated) donor attributes. Draws no random numbers.

    Args:
        model: the (frozen) ContriMix model.
        image: (B, C, H, W) in [0, 1], any float dtype.
        params: who is re-rendered, with whose attributes, how strongly (:class:`MixParams`, (B,) each); with
            ``params.donor_attributes`` (sampled donors) image i takes ``donor_attributes[i]`` (no bank needed).
        bank: (N, C, K) attribute bank the bank donors index (default: ``model.bank``).
        render_guard: glass stays glass and no pixel is darker than real tissue
            (:func:`~contrimix_aug.optical_density.limit_render`, against each selected image's own optical
            density; 3-channel absorbance (H&E) weights only, fluorescence weights are unaffected); False: the
            authors' unguarded render.
        check_values: refuse NaN/Inf and values outside [0, 1] with a fix, clamp overshoots of at most 0.15 (one
            host sync); False (what the transforms pass, having checked already) checks only type and shape.

    Returns:
        (B, C, H, W), same dtype, device and memory format (channels_last stays channels_last) as ``image``.

    When the parameters live on the CPU (the default), only what is needed is encoded (content of the selected
    images; attributes of their donors, and their own only where α < 1), in chunks of about 128k pixels on a CPU so
    that the full-resolution maps stay in cache. There is no per-image Python loop. Unselected images come back
    bit-identical.
    """
    image = _checked(model, image, check_values)
    if params.batch_size != image.shape[0]:
        raise ValueError(
            f"apply_contrimix: params were drawn for a batch of {params.batch_size}, the image batch has "
            f"{image.shape[0]}; replay params only on the batch they were drawn for."
        )
    if params.donor_attributes is not None:  # explicit donors: a per-image table, indexed like a bank by row
        rows = torch.arange(params.batch_size, device=params.donors.device)
        return _render(model, image, rows, params.strength, params.selected, torch.ones_like(params.from_bank),
                       params.donor_attributes, None, render_guard)
    if params.donors.device.type == "cpu" and not torch.compiler.is_compiling() and bool((params.donors < 0).any()):
        raise ValueError("apply_contrimix: donors of -1 mark sampled donors, and the params carry no "
                         "donor_attributes; replay the whole params dict a ContriMix call recorded.")
    bank = model.bank if bank is None else bank
    if torch.compiler.is_compiling():  # no host sync (graph break) under torch.compile: gather handles any mask
        from_bank = params.from_bank if bank.shape[0] else None
    else:
        from_bank = params.from_bank if bool(params.from_bank.any()) else None
    if from_bank is not None and bank.shape[0] == 0:
        raise ValueError("apply_contrimix: the params take donors from a bank, and there is none.")
    if from_bank is not None and not torch.compiler.is_compiling() and params.donors.device.type == "cpu" and \
            int(params.donors[from_bank.cpu()].max()) >= bank.shape[0]:
        raise ValueError(f"apply_contrimix: the params take donor {int(params.donors[from_bank.cpu()].max())} of a "
                         f"bank of {bank.shape[0]} entries; replay params with the bank they were drawn with.")
    return _render(model, image, params.donors, params.strength, params.selected, from_bank, bank, None,
                   render_guard)


def normalize(model: ContriMixModel, image: torch.Tensor, target: torch.Tensor, *,
              render_guard: bool = True, check_values: bool = True) -> torch.Tensor:
    """Learned stain normalisation: re-render every image with one fixed attribute matrix ``target`` (C, K).

    ``render_guard``: glass stays glass and no pixel is darker than real tissue
    (:func:`~contrimix_aug.optical_density.limit_render`; 3-channel absorbance (H&E) weights only); False: the
    authors' unguarded render.
    ``check_values``: as for :func:`apply_contrimix`.
    """
    image = _checked(model, image, check_values)
    b = image.shape[0]
    c, k = model.config.in_channels, model.config.num_attributes
    if tuple(target.shape) != (c, k):
        raise ValueError(f"normalize: target must be a ({c}, {k}) attribute matrix, got {tuple(target.shape)}.")
    return _render(model, image, torch.zeros(b, dtype=torch.long), torch.ones(b), torch.ones(b, dtype=torch.bool),
                   None, None, target, render_guard)


def _guarded(model: ContriMixModel, render_guard: bool) -> bool:
    """Whether the render goes through :func:`limit_render`: asked for, and the weights render 3-channel optical
    density (H&E: the guard's glass band and cap are calibrated on summed RGB optical density of real labs)."""
    if not isinstance(render_guard, bool):
        raise TypeError(f"render_guard: expected True or False, got {render_guard!r}.")
    return render_guard and model.config.mode == "absorbance" and model.config.in_channels == 3


def _decode(model: ContriMixModel, content: torch.Tensor, attributes: torch.Tensor,
            source_signal: torch.Tensor | None) -> torch.Tensor:
    """Content and attributes -> image; with ``source_signal`` (the rendered images' own signal, the weights'
    channel order) the generated optical density is first limited against it (:func:`limit_render`)."""
    if source_signal is None:
        return model.decode(content, attributes)
    signal = model.decode_signal(content, attributes)
    return model.signal_to_image(limit_render(signal, source_signal))


def _render(model, image, donors, strength, selected, from_bank, bank, target, render_guard=True):
    guard = _guarded(model, render_guard)
    b = image.shape[0]
    dev = image.device
    cdtype = _model_dtype(model)
    sel = selected.bool()
    rows = _as_rows(sel)
    if rows is None:
        return _render_dense(model, image, donors, strength, sel, from_bank, bank, target, guard)
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
    contents: dict[int, torch.Tensor] = {}  # least-squares attributes: the content of a row, computed once
    if need_rows.numel() and model.attribute_encoder is not None:
        # pass 1: the attribute encoder's full-resolution reads chunk by chunk, its small network once
        enc = model.attribute_encoder
        small, stats = [], []
        for c in _chunks(need_rows, image):
            sm, st = enc.prepare(model.image_to_signal(image.index_select(0, c.to(dev)).to(cdtype)))
            small.append(sm)
            stats.append(st)
        attrs_need = enc.forward_prepared(torch.cat(small), None if stats[0] is None else torch.cat(stats))
        attrs.index_copy_(0, need_rows.to(dev), attrs_need.to(cdtype))
    elif need_rows.numel():
        # pass 1: content of the rows whose attributes are needed, then their least-squares attributes
        for c in _chunks(need_rows, image):
            signal = model.image_to_signal(image.index_select(0, c.to(dev)).to(cdtype))
            content = model.content_encoder(signal)
            attrs.index_copy_(0, c.to(dev), model.attributes_of(signal, content).to(cdtype))
            if bool(sel[c].any()):
                contents.update({int(r): content[i] for i, r in enumerate(c.tolist()) if sel[r]})
    # pass 2: content and rendering of the selected images, chunk by chunk
    out = image.clone() if rows.numel() < b else torch.empty_like(image, memory_format=torch.contiguous_format)
    for c in _chunks(rows, image):
        cd = c.to(dev)
        own = attrs.index_select(0, cd)
        donor_attrs = _donor_attributes(attrs, donors[c].to(dev), None if from_bank is None else from_bank[c].to(dev),
                                        bank, target)
        mixed = mix_attributes(own, donor_attrs, strength[c].to(dev))
        signal = None
        if contents and all(int(r) in contents for r in c.tolist()):
            content = torch.stack([contents.pop(int(r)) for r in c.tolist()])
        else:
            signal = model.image_to_signal(image.index_select(0, cd).to(cdtype))
            content = model.content_encoder(signal)
        if guard and signal is None:
            signal = model.image_to_signal(image.index_select(0, cd).to(cdtype))
        out.index_copy_(0, cd, _decode(model, content, mixed, signal if guard else None).to(image.dtype))
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


def _render_dense(model, image, donors, strength, selected, from_bank, bank, target, guard=False):
    """All rows at once, parameters on the device (no host sync), or under torch.compile."""
    dev = image.device
    x = image.to(_model_dtype(model))
    check_image(x, model.config.in_channels, min_size=model.min_size)  # as model.encode does
    signal = model.image_to_signal(x)
    content, attrs = model.encode_signal(signal)
    donor_attrs = _donor_attributes(attrs, donors.to(dev), None if from_bank is None else from_bank.to(dev),
                                    bank, target)
    mixed = mix_attributes(attrs, donor_attrs, strength.to(dev))
    rendered = _decode(model, content, mixed, signal if guard else None).to(image.dtype)
    return _like(torch.where(selected.to(dev).view(-1, 1, 1, 1), rendered, image), image)


def render_views(model: ContriMixModel, content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Every image's content with each of its V attribute matrices, in one batched matmul (gradients flow).

    Args:
        content: (B, K, H, W). attributes: (V, B, C, K), view-major (view 0 usually the image's own).

    Returns:
        (V, B, C, H, W) generated *signals* (optical density in absorbance mode, unclipped, the weights' channel
        order); :meth:`ContriMixModel.signal_to_image` turns them into images.
    """
    v, b, c, k = attributes.shape
    h, w = content.shape[-2:]
    stacked = attributes.transpose(0, 1).reshape(b, v * c, k)  # (B, V·C, K) @ (B, K, H·W)
    gen = model.decode_signal(content, stacked).view(b, v, c, h, w)
    return gen.transpose(0, 1)


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
    check_image(image, model.config.in_channels, min_size=model.min_size)
    check_image_values(image, value_range=model.value_range)
    b = image.shape[0]
    content, attrs = model.encode(image.to(_model_dtype(model)))
    donors = sample_donors(b, num_mixes, generator=generator, device=image.device, exclude_self=exclude_self)
    alpha = sample_strength(b, strength, strength, generator=generator).to(attrs)
    stack = torch.stack([attrs] + [mix_attributes(attrs, attrs[d.to(attrs.device)], alpha) for d in donors])
    views = render_views(model, content, stack)
    return model.signal_to_image(views.reshape(-1, *views.shape[2:])).to(image.dtype)
