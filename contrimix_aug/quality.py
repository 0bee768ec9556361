"""Quality measures, one definition per name, used by training validation, model cards and benchmarks alike.

Image measures (per image; images (B, C, H, W) in [0, 1]):

- :func:`psnr`, :func:`ssim`: peak signal-to-noise ratio and structural similarity (11 px Gaussian window);
- :func:`od_luminance`: mean optical density over channels, rescaled per image by its 1st-99th percentile to
  [0, 1] (intensity instead of optical density for ``linear`` fluorescence models);
- :func:`structure_ssim`: SSIM of the OD luminance maps of two images (structure kept under a re-rendering);
- :func:`colour_stats`: per-channel mean and standard deviation of the optical density (2·C numbers);
- :func:`nucleus_dice`: Dice of Otsu haematoxylin masks (fixed Ruifrok basis) of two H&E images;
- :func:`sliced_wasserstein`, :func:`gap_closed`: distance between tissue-pixel optical-density distributions,
  and the share of the colour gap from an image to a reference that a re-rendering closes (1 = the reference's
  colours reproduced, 0 = unchanged).

Stain plausibility (H&E renders; images (B, 3, H, W) in [0, 1]):

- :func:`stain_features`: CIELAB mean and standard deviation over the tissue pixels (6 numbers per image; for
  other channel counts the per-channel mean/std of log intensity), the colour features of the benchmarks'
  coverage diagnostic too;
- :class:`PlausibilityReference`: features of real crops of many labs, their z-scaling and a distance threshold
  calibrated leave-one-lab-out (each real crop's distance to its nearest crop of *another* lab; the threshold is
  the 95th percentile, so real crops of a lab the reference never saw pass about 95 %);
  :func:`load_plausibility_reference` loads the one shipped with the package (labs that no benchmark holds out);
- :func:`plausible`: whether an image's features lie within the threshold of some real crop;
- :func:`render_artefacts`: per-pixel failures of a re-rendering: background (glass in the input) that comes out
  coloured, near-black pixels, clipped channels.

Model measures: :func:`reconstruction` (PSNR/SSIM of ``model(x)``), :func:`swap_report` (structure kept and colour
moved towards the donor), :func:`stain_transfer` (with the same tissue in another stain as donor: gap closed and
content agreement).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .model import ContriMixModel
from .optical_density import T_MIN_UINT8, rgb_to_hed, rgb_to_od
from .tissue import tissue_mask_tensor

__all__ = [
    "ARTEFACT_THRESHOLDS",
    "PlausibilityReference",
    "SwapReport",
    "colour_stats",
    "gap_closed",
    "load_plausibility_reference",
    "nucleus_dice",
    "od_luminance",
    "plausible",
    "psnr",
    "reconstruction",
    "render_artefacts",
    "sliced_wasserstein",
    "ssim",
    "stain_features",
    "stain_transfer",
    "structure_ssim",
    "swap_report",
]


def _signal(image: torch.Tensor, mode: str) -> torch.Tensor:
    """Optical density (floor: the darkest 8-bit value) in absorbance mode, the intensity in linear mode."""
    return rgb_to_od(image.float(), T_MIN_UINT8) if mode == "absorbance" else image.float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10·log10(range² / MSE), in dB (MSE floored at 1e-10).

    Shape:
        (B, C, H, W), (B, C, H, W) -> (B,).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"psnr: expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}."
        )
    mse = (x.float() - y.float()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    return (g / g.sum()).float()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over channels and valid pixels.

    Local statistics use a separable ``window_size`` Gaussian window of std ``sigma`` without padding
    (only windows fully inside the image count); C1 = (k1·range)², C2 = (k2·range)².

    Shape:
        (B, C, H, W), (B, C, H, W) -> (B,), with H, W >= ``window_size``.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ssim: expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}."
        )
    b, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: images must be at least {window_size}×{window_size} px, got {h}×{w}.")
    g = _gaussian_window(window_size, sigma, x.device)
    gh = g.view(1, 1, window_size, 1).expand(c * 5, 1, window_size, 1)
    gw = g.view(1, 1, 1, window_size).expand(c * 5, 1, 1, window_size)
    x, y = x.float(), y.float()
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one depthwise pass for all five moments
    stats = F.conv2d(F.conv2d(stats, gh, groups=c * 5), gw, groups=c * 5)
    mx, my, exx, eyy, exy = stats.split(c, dim=1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def od_luminance(image: torch.Tensor, mode: str = "absorbance") -> torch.Tensor:
    """(B, C, H, W) image -> (B, 1, H, W) mean optical density (intensity in ``linear`` mode), rescaled per
    image by its 1st-99th percentile."""
    lum = _signal(image, mode).mean(1, keepdim=True)
    flat = lum.flatten(1)
    lo = flat.quantile(0.01, dim=1).view(-1, 1, 1, 1)
    hi = flat.quantile(0.99, dim=1).view(-1, 1, 1, 1)
    return ((lum - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)


def structure_ssim(a: torch.Tensor, b: torch.Tensor, mode: str = "absorbance") -> torch.Tensor:
    """SSIM of the OD luminance maps of two image batches: (B, C, H, W) x2 -> (B,)."""
    return ssim(od_luminance(a, mode), od_luminance(b, mode))


def colour_stats(image: torch.Tensor, mode: str = "absorbance") -> torch.Tensor:
    """(B, C, H, W) -> (B, 2·C): per-channel mean and standard deviation of the optical density
    (of the intensity in ``linear`` mode)."""
    od = _signal(image, mode).flatten(2)
    std, mean = torch.std_mean(od, dim=2)
    return torch.cat([mean, std], 1)


@torch.no_grad()
def reconstruction(model: ContriMixModel, images: torch.Tensor, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Per-image reconstruction PSNR (dB) and SSIM: {"psnr": (N,), "ssim": (N,)}."""
    dev = next(model.parameters()).device
    ps, ss = [], []
    for x in images.split(batch_size):
        x = x.to(dev)
        r = model(x)
        ps.append(psnr(r, x).cpu())
        ss.append(ssim(r, x).cpu())
    return {"psnr": torch.cat(ps), "ssim": torch.cat(ss)}


@dataclass
class SwapReport:
    """Per-swap measures: structure SSIM (input vs output) and whether colour moved towards the donor."""

    structure: torch.Tensor  # (N,)
    closer_to_donor: torch.Tensor  # (N,) bool
    donor_distance: torch.Tensor  # (N,) colour-stat distance output -> donor
    source_distance: torch.Tensor  # (N,) colour-stat distance output -> source

    def summary(self) -> dict[str, float]:
        return {
            "structure_ssim_mean": float(self.structure.mean()),
            "structure_ssim_min": float(self.structure.min()),
            "closer_to_donor": float(self.closer_to_donor.float().mean()),
            "n": int(self.structure.numel()),
        }


@torch.no_grad()
def swap_report(model: ContriMixModel, sources: torch.Tensor, donors: torch.Tensor, batch_size: int = 64) -> SwapReport:
    """Render each ``sources[i]`` with the attributes of ``donors[i]`` (full strength) and measure it.

    Shape: sources (N, C, H, W), donors (N, C, H', W') -> :class:`SwapReport` of N swaps.
    """
    if sources.shape[0] != donors.shape[0]:
        raise ValueError(f"swap_report: need as many donors as sources, got {sources.shape[0]} and {donors.shape[0]}.")
    dev = next(model.parameters()).device
    mode = model.config.mode
    st, cl, dd, ds = [], [], [], []
    for xs, xd in zip(sources.split(batch_size), donors.split(batch_size)):
        xs, xd = xs.to(dev), xd.to(dev)
        content, _ = model.encode(xs)
        out = model.decode(content, model.encode_attributes(xd))
        st.append(structure_ssim(out, xs, mode).cpu())
        co, cs, cd = colour_stats(out, mode), colour_stats(xs, mode), colour_stats(xd, mode)
        d_don, d_src = (co - cd).norm(dim=1), (co - cs).norm(dim=1)
        dd.append(d_don.cpu())
        ds.append(d_src.cpu())
        cl.append((d_don < d_src).cpu())
    return SwapReport(torch.cat(st), torch.cat(cl), torch.cat(dd), torch.cat(ds))


def _otsu(v: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Per-row Otsu threshold of (B, N) values in [0, 1]."""
    idx = (v.clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(v.shape[0], bins, device=v.device).scatter_add_(1, idx, torch.ones_like(v))
    p = hist / hist.sum(1, keepdim=True)
    centers = torch.linspace(0, 1, bins, device=v.device)
    w0 = p.cumsum(1)
    mu = (p * centers).cumsum(1)
    between = (mu[:, -1:] * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    return centers[between.argmax(1)]


def nucleus_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dice of the Otsu nucleus masks (haematoxylin of the fixed Ruifrok basis, 0-2.5 OD scaled to [0, 1]) of two
    H&E batches: (B, 3, H, W) x2 -> (B,). 1 = the same nuclei."""
    ha = (rgb_to_hed(a.float())[:, 0] / 2.5).clamp(0, 1).flatten(1)
    hb = (rgb_to_hed(b.float())[:, 0] / 2.5).clamp(0, 1).flatten(1)
    ma, mb = ha > _otsu(ha)[:, None], hb > _otsu(hb)[:, None]
    return 2 * (ma & mb).sum(1).float() / (ma.sum(1) + mb.sum(1)).clamp_min(1).float()


def _directions(channels: int, n: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(channels, n, generator=g, dtype=torch.float64)
    return (d / d.norm(dim=0, keepdim=True)).to(device)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, directions: int = 64, seed: int = 0) -> torch.Tensor:
    """Sliced 1-Wasserstein distance between two point sets (N, D) and (M, D): the mean over ``directions`` fixed
    random unit directions of the W1 distance of the projections (quantile matching on 256 levels).

    Shape: (N, D), (M, D) -> () float64.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"sliced_wasserstein: expected (N, D) and (M, D) point sets, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}.")
    d = _directions(a.shape[1], directions, seed, a.device)
    return (_quantiles(a.double() @ d) - _quantiles(b.double().to(a.device) @ d)).abs().mean()


def _quantiles(p: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """(levels, D) quantiles (linear interpolation, numpy's default) of every column of (N, D), by one sort."""
    s = p.sort(dim=0).values
    pos = torch.linspace(0, p.shape[0] - 1, levels, dtype=torch.float64, device=p.device)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=p.shape[0] - 1)
    frac = (pos - lo).unsqueeze(1)
    return s[lo] * (1 - frac) + s[hi] * frac


def gap_closed(source: torch.Tensor, reference: torch.Tensor, output: torch.Tensor,
               mask: torch.Tensor | None = None, max_pixels: int = 4096) -> torch.Tensor:
    """Share of the colour gap from ``source`` to ``reference`` that ``output`` closes, per image:
    1 - SW(OD(output), OD(reference)) / SW(OD(source), OD(reference)), with SW the :func:`sliced_wasserstein`
    distance of the tissue pixels' optical densities (1 = the reference's colour distribution reproduced, 0 = no
    change, < 0 = further away). All three show the same tissue, so one mask (default: the source's tissue) serves;
    at most ``max_pixels`` evenly spaced tissue pixels per image enter the distances.

    Shape: (B, 3, H, W) x3 [, (B, H, W) bool] -> (B,) float64.
    """
    if not (source.shape == reference.shape == output.shape) or source.ndim != 4:
        raise ValueError(f"gap_closed: expected three (B, C, H, W) batches of one shape, got {tuple(source.shape)}, "
                         f"{tuple(reference.shape)}, {tuple(output.shape)}.")
    if mask is None:
        mask = tissue_mask_tensor(source) if source.shape[1] == 3 else torch.ones(source.shape[0], *source.shape[2:],
                                                                                    dtype=torch.bool)
    out = []
    for s, r, o, m in zip(source, reference, output, mask.to(source.device)):
        if not bool(m.any()):
            m = torch.ones_like(m)
        idx = m.flatten().nonzero().flatten()
        idx = idx[torch.linspace(0, len(idx) - 1, min(len(idx), max_pixels)).round().long()]
        ps, pr, po = (rgb_to_od(t.float(), T_MIN_UINT8).flatten(1).T[idx] for t in (s, r, o))
        base = sliced_wasserstein(ps, pr)
        out.append(1.0 - sliced_wasserstein(po, pr) / base.clamp_min(1e-9))
    return torch.stack(out).cpu()


@torch.no_grad()
def stain_transfer(model: ContriMixModel, sources: torch.Tensor, references: torch.Tensor,
                   batch_size: int = 32) -> dict[str, torch.Tensor]:
    """With the same tissue in another stain as the donor: does the swap reproduce it, and does the content agree?

    ``references[i]`` must show the tissue of ``sources[i]`` in another stain (a re-rendering). Returns
    ``gap_closed`` (:func:`gap_closed` of ``decode(content(source), attributes(reference))``) and
    ``content_agreement``: the mean Pearson correlation of ``content(source)`` and ``content(reference)`` over
    the content channels that vary (1 = the content ignores the stain). Both (N,).
    """
    if sources.shape != references.shape:
        raise ValueError(f"stain_transfer: sources {tuple(sources.shape)} and references {tuple(references.shape)} "
                         "must have one shape (the same tissue).")
    dev = next(model.parameters()).device
    gaps, agree = [], []
    for xs, xr in zip(sources.split(batch_size), references.split(batch_size)):
        xs, xr = xs.to(dev), xr.to(dev)
        cs, _ = model.encode(xs)
        cr, ar = model.encode(xr)
        gaps.append(gap_closed(xs.cpu(), xr.cpu(), model.decode(cs, ar).float().cpu()))
        a, b = cs.flatten(2).float(), cr.flatten(2).float()
        a, b = a - a.mean(2, keepdim=True), b - b.mean(2, keepdim=True)
        num = (a * b).sum(2)
        den = a.norm(dim=2) * b.norm(dim=2)
        varies = den > 1e-6
        r = torch.where(varies, num / den.clamp_min(1e-12), torch.zeros_like(num))
        agree.append((r.sum(1) / varies.sum(1).clamp_min(1)).cpu())
    return {"gap_closed": torch.cat(gaps), "content_agreement": torch.cat(agree)}


# ---------------------------------------------------------------------------------------------------------------
# stain plausibility
# ---------------------------------------------------------------------------------------------------------------
def _check_batch(x: Any, name: str, channels: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch tensor (B, C, H, W) in [0, 1], got {type(x).__name__}.")
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels) or x.shape[0] == 0:
        want = f"(B, {channels}, H, W)" if channels else "(B, C, H, W)"
        raise ValueError(f"{name}: expected a non-empty {want} batch, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected float images in [0, 1], got {x.dtype}; divide uint8 images by 255.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: NaN or Inf values.")
    return x


def _lab(x: torch.Tensor) -> torch.Tensor:
    from kornia.color import rgb_to_lab

    return rgb_to_lab(x.float().clamp(0, 1))


def stain_features(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Colour features of each image: CIELAB (D65, sRGB) mean and standard deviation over its tissue pixels.

    Tissue is :func:`~contrimix_aug.tissue.tissue_mask_tensor` of the image itself unless ``mask`` is given; an
    image without tissue uses all its pixels. For C != 3 channels (fluorescence): each channel's mean and standard
    deviation of log(intensity + 1e-3) over all pixels.

    Shape: (B, C, H, W) in [0, 1] [, (B, H, W) bool] -> (B, 2·C) float32 on the CPU: [L, a, b] means, then stds.
    """
    x = _check_batch(images, "stain_features").detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 3:
        v = _lab(x)
        if mask is None:
            w = tissue_mask_tensor(x)
        else:
            if tuple(mask.shape) != (x.shape[0], *x.shape[2:]):
                raise ValueError(f"stain_features: mask must be (B, H, W) = {(x.shape[0], *x.shape[2:])}, "
                                 f"got {tuple(mask.shape)}.")
            w = mask.bool().cpu()
        w = w.float()
        w = torch.where(w.sum((1, 2), keepdim=True) > 0, w, torch.ones_like(w)).unsqueeze(1)
    else:
        v = torch.log(x + 1e-3)
        w = torch.ones_like(x[:, :1])
    n = w.sum((2, 3))
    mean = (v * w).sum((2, 3)) / n
    var = ((v - mean[..., None, None]) ** 2 * w).sum((2, 3)) / n
    return torch.cat([mean, var.sqrt()], 1)


def _nearest(queries: torch.Tensor, points: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(Q, D), (N, D), (D,) -> (Q,) float64 distance of each query to its nearest point, in ``scale`` units."""
    if points.shape[0] == 0:
        return torch.full((queries.shape[0],), float("inf"), dtype=torch.float64)
    return torch.cdist(queries.double() / scale, points.double() / scale).min(1).values


@dataclass
class PlausibilityReference:
    """Colour features of real crops of many labs, and the distance under which an image counts as plausible.

    Attributes:
        features: (N, 6) float64 :func:`stain_features` of the real crops.
        labs: N lab names (one per crop).
        scale: (6,) float64 z-scaling: distances are Euclidean in ``features / scale`` (the crops' std).
        threshold: the calibrated distance: the ``quantile`` of :attr:`loo_distances`.
        quantile: the share of real crops of an unseen lab meant to pass (0.95).
        meta: free-form provenance (collections, crop size, µm/px, crops per lab).
    """

    features: torch.Tensor
    labs: tuple[str, ...]
    scale: torch.Tensor
    threshold: float
    quantile: float = 0.95
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features, dtype=torch.float64)
        self.scale = torch.as_tensor(self.scale, dtype=torch.float64)
        self.labs = tuple(str(s) for s in self.labs)
        if self.features.ndim != 2 or self.features.shape[0] != len(self.labs) or self.features.shape[0] == 0:
            raise ValueError(f"PlausibilityReference: expected (N, D) features and N labs, got "
                             f"{tuple(self.features.shape)} and {len(self.labs)}.")
        if tuple(self.scale.shape) != (self.features.shape[1],) or not bool((self.scale > 0).all()):
            raise ValueError(f"PlausibilityReference: scale must be ({self.features.shape[1]},) positive values.")

    @classmethod
    def from_features(cls, features: torch.Tensor, labs: Sequence[str], quantile: float = 0.95,
                      meta: dict | None = None) -> "PlausibilityReference":
        """Calibrate on precomputed (N, D) features of real crops of at least two labs (see :meth:`from_crops`)."""
        features = torch.as_tensor(features, dtype=torch.float64)
        labs = tuple(str(s) for s in labs)
        if features.ndim != 2 or features.shape[0] != len(labs):
            raise ValueError(f"PlausibilityReference: expected (N, D) features and N labs, got "
                             f"{tuple(features.shape)} and {len(labs)}.")
        if len(set(labs)) < 2:
            raise ValueError("PlausibilityReference: the leave-one-lab-out calibration needs crops of at least two "
                             f"labs, got {sorted(set(labs))}.")
        if not 0 < quantile < 1:
            raise ValueError(f"PlausibilityReference: quantile must lie in (0, 1), got {quantile}.")
        scale = features.std(0).clamp_min(1e-6)
        ref = cls(features, labs, scale, float("nan"), quantile, dict(meta or {}))
        ref.threshold = float(torch.quantile(ref.loo_distances(), quantile))
        return ref

    @classmethod
    def from_crops(cls, crops: torch.Tensor, labs: Sequence[str], quantile: float = 0.95,
                   meta: dict | None = None) -> "PlausibilityReference":
        """Calibrate on real crops: (N, 3, H, W) in [0, 1] and their N lab names.

        Each crop's distance to its nearest crop of *another* lab (leave-one-lab-out); the threshold is the
        ``quantile`` of these distances, so a real crop of a lab the reference lacks passes with probability
        about ``quantile`` (about that share of the reference's own crops passes when its lab is left out: the
        threshold interpolates between two of their distances).
        Use the same number of crops per lab, so that every lab weighs the same.
        """
        crops = _check_batch(crops, "PlausibilityReference.from_crops: crops", 3)
        if len(labs) != crops.shape[0]:
            raise ValueError(f"PlausibilityReference.from_crops: {crops.shape[0]} crops but {len(labs)} lab names.")
        return cls.from_features(stain_features(crops), labs, quantile, meta)

    def loo_distances(self) -> torch.Tensor:
        """(N,) distance of each reference crop to its nearest crop of another lab (the calibration sample)."""
        z = self.features / self.scale
        d = torch.cdist(z, z)
        labs = np.asarray(self.labs)
        same = torch.from_numpy(labs[:, None] == labs[None, :])
        return d.masked_fill(same, float("inf")).min(1).values

    def distance(self, features: torch.Tensor, exclude_labs: Sequence[str] = ()) -> torch.Tensor:
        """(B, D) features -> (B,) float64 distance to the nearest reference crop (of a lab not in ``exclude_labs``)."""
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.ndim != 2 or features.shape[1] != self.features.shape[1]:
            raise ValueError(f"PlausibilityReference.distance: expected (B, {self.features.shape[1]}) features, got "
                             f"{tuple(features.shape)}.")
        exclude = [exclude_labs] if isinstance(exclude_labs, str) else list(exclude_labs)  # one name, not its letters
        unknown = sorted(set(exclude) - set(self.labs))
        if unknown:
            raise ValueError(f"PlausibilityReference.distance: exclude_labs names labs the reference does not hold: "
                             f"{unknown}; its labs are ref.lab_names ({len(self.lab_names)}).")
        keep = torch.from_numpy(~np.isin(np.asarray(self.labs), exclude))
        return _nearest(features, self.features[keep], self.scale)

    @property
    def lab_names(self) -> tuple[str, ...]:
        """The distinct labs, sorted."""
        return tuple(sorted(set(self.labs)))

    def to_dict(self) -> dict:
        return {"format": "contrimix_aug.plausibility/1", "features": "CIELAB mean L, a, b; std L, a, b over tissue",
                "quantile": self.quantile, "threshold": self.threshold, "scale": self.scale.tolist(),
                "meta": self.meta, "labs": list(self.labs),
                "values": [[round(float(v), 4) for v in row] for row in self.features]}

    @classmethod
    def from_dict(cls, d: dict) -> "PlausibilityReference":
        if d.get("format") != "contrimix_aug.plausibility/1":
            raise ValueError(f"PlausibilityReference: unknown format {d.get('format')!r}.")
        return cls(torch.tensor(d["values"], dtype=torch.float64), tuple(d["labs"]),
                   torch.tensor(d["scale"], dtype=torch.float64), float(d["threshold"]), float(d["quantile"]),
                   dict(d.get("meta", {})))

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=None, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PlausibilityReference":
        with open(path) as f:
            return cls.from_dict(json.load(f))


PLAUSIBILITY_REFERENCE = "plausibility_reference.json"


def load_plausibility_reference() -> PlausibilityReference:
    """The reference shipped in ``contrimix_aug/assets/plausibility_reference.json``: 96 px crops at 0.5 µm/px of
    labs that no benchmark of this project holds out (MoNuSeg training sites, CAMELYON17 hospitals 0, 3, 4, the
    six H&E sources); written by ``scripts/make_plausibility_reference.py``. Holds derived statistics only."""
    text = resources.files("contrimix_aug").joinpath("assets", PLAUSIBILITY_REFERENCE).read_text()
    return PlausibilityReference.from_dict(json.loads(text))


def plausible(images: torch.Tensor, reference: PlausibilityReference | None = None,
              exclude_labs: Sequence[str] = ()) -> torch.Tensor:
    """Whether each image's colour statistics (:func:`stain_features`) lie within ``reference.threshold`` of some
    real crop (of a lab not in ``exclude_labs``; default reference: :func:`load_plausibility_reference`).

    Shape: (B, 3, H, W) in [0, 1] -> (B,) bool.
    """
    images = _check_batch(images, "plausible", 3)
    reference = load_plausibility_reference() if reference is None else reference
    return reference.distance(stain_features(images), exclude_labs) <= reference.threshold


ARTEFACT_THRESHOLDS = {"background_chroma": 16.0, "black_lightness": 5.0, "clip_level": 1.5 / 255}
"""Pixel-artefact thresholds of :func:`render_artefacts` (CIELAB units; transmittance for ``clip_level``), set
from the real crops of the shipped reference (416 crops of 26 labs, 96 px at 0.5 µm/px):

* ``background_chroma`` 16: a glass pixel (:func:`~contrimix_aug.tissue.tissue_mask` False: grey > 0.82 and
  saturation < 0.10) has a CIELAB chroma of at most 15.7 by that definition; the real crops' glass pixels reach
  15.65 (median 4.8, 99th percentile 12.8). Above 16, a background pixel is no longer background-coloured;
* ``black_lightness`` 5: 99.9 % of the real tissue pixels have L* above 5.9 (0.06 % of a real crop's pixels lie
  below 5 on average; 99th percentile over crops 2 %, all of one lab, cmu1);
* ``clip_level`` 1.5/255: a channel at 8-bit 0 or 1 (optical density above 2.2, fully absorbed): 0.05 % of the
  real crops' pixels (cmu1 and hgsc only).
"""


def render_artefacts(inputs: torch.Tensor, outputs: torch.Tensor,
                     thresholds: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Pixel artefacts of a re-rendering, each as a fraction of all pixels of the image.

    * ``background_coloured``: background in the input (glass: ``tissue_mask`` False, i.e. near-white and grey)
      whose output has CIELAB chroma above ``background_chroma`` (cyan or yellow spots on the glass);
    * ``near_black``: output L* below ``black_lightness`` where the input was not;
    * ``clipped``: an output channel at or below ``clip_level`` where the input had none (a saturated colour).

    Thresholds: :data:`ARTEFACT_THRESHOLDS`, overridden by ``thresholds``.

    Shape: (B, 3, H, W), (B, 3, H, W) in [0, 1] -> {name: (B,) float32}.
    """
    inputs = _check_batch(inputs, "render_artefacts: inputs", 3)
    outputs = _check_batch(outputs, "render_artefacts: outputs", 3)
    if inputs.shape != outputs.shape:
        raise ValueError(f"render_artefacts: inputs {tuple(inputs.shape)} and outputs {tuple(outputs.shape)} must "
                         "have one shape (the same images before and after).")
    unknown = set(thresholds or {}) - set(ARTEFACT_THRESHOLDS)
    if unknown:
        raise ValueError(f"render_artefacts: unknown thresholds {sorted(unknown)}; "
                         f"known: {sorted(ARTEFACT_THRESHOLDS)}.")
    t = {**ARTEFACT_THRESHOLDS, **(thresholds or {})}
    x = inputs.detach().float().clamp(0, 1).cpu()
    y = outputs.detach().float().clamp(0, 1).cpu()
    glass = ~tissue_mask_tensor(x)
    lab_x, lab_y = _lab(x), _lab(y)
    chroma = lab_y[:, 1:].norm(dim=1)
    black_x, black_y = lab_x[:, 0] < t["black_lightness"], lab_y[:, 0] < t["black_lightness"]
    clip_x = (x <= t["clip_level"]).any(1)
    clip_y = (y <= t["clip_level"]).any(1)
    frac = lambda m: m.flatten(1).float().mean(1)  # noqa: E731
    return {"background_coloured": frac(glass & (chroma > t["background_chroma"])),
            "near_black": frac(black_y & ~black_x),
            "clipped": frac(clip_y & ~clip_x)}
