"""Quality measures for a ContriMix model: reconstruction, structure kept under an attribute swap, and
colour moved towards the donor. Used by the model cards, the training validation and the benchmarks.

Definitions (all per image, images (B, C, H, W) in [0, 1]):
- reconstruction: PSNR and SSIM between an image and ``model(image)``;
- structure agreement: SSIM between the optical-density luminance maps (mean OD over channels, each map
  rescaled by its own 1st-99th percentile to [0, 1]) of the input and the swapped output;
- colour statistics: per-channel mean and standard deviation of the optical density (2·C numbers);
  for ``linear`` (fluorescence) models the intensity replaces the optical density in both measures;
- transfer: the swapped output's colour statistics are closer (Euclidean) to the donor's than to the source's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import ContriMixModel
from .training.metrics import psnr, ssim

__all__ = ["od_luminance", "structure_ssim", "colour_stats", "SwapReport", "reconstruction", "swap_report"]


def _signal(image: torch.Tensor, mode: str) -> torch.Tensor:
    return -torch.log10(image.float().clamp_min(1.0 / 255.0)) if mode == "absorbance" else image.float()


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
