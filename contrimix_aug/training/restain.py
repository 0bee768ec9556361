"""Random re-staining of a batch: the same tissue in another stain, for the paired training terms.

ContriMix's own losses only ask that a swap be *consistent*; nothing tells the model what the same tissue looks
like in another stain, so the content is free to keep part of the stain. A paired term fixes that: ``x`` and
``restain(x)`` show identical tissue, so the content of both must agree and ``decode(content(x),
attributes(restain(x)))`` must reproduce ``restain(x)``.

Two independent, label-free families of random stain changes are drawn per image (never a real source's stain):

* **Beer–Lambert**: optical density is unmixed into haematoxylin / eosin / residual concentrations with the fixed
  Ruifrok–Johnston basis; each stain vector is perturbed (``basis_jitter``), each concentration scaled
  (log-normal, ``od_scale``) and shifted (``od_shift``), and the pixel re-mixed. A linear map of optical density:
  what a different stain batch or staining time does.
* **CIELAB tone curves**: L* goes through a random gamma curve and a random monotone piecewise-linear curve
  (``lab_curve``: spread of its knots), a* and b* are scaled and shifted. A monotone, non-linear colour change:
  what a different scanner or colour pipeline does.

Shapes: (B, 3, H, W) float in [0, 1] -> same (3-channel absorbance models only).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from .._checks import check_nonnegative, check_probability
from ..optical_density import RUIFROK_HED, T_MIN_UINT8, od_to_rgb, rgb_to_od

__all__ = ["RestainConfig", "restain"]


@dataclass(frozen=True)
class RestainConfig:
    """Strength of the random re-staining (all spreads are standard deviations of normal draws).

    Args:
        p_beer_lambert: probability that an image gets a Beer–Lambert stain change.
        p_lab: probability that an image gets a CIELAB tone change (independently; an image drawn for neither
            gets the Beer–Lambert one, so every image changes).
        od_scale: spread of the log concentration scale of each stain.
        od_shift: spread of the additive concentration shift (optical density units).
        basis_jitter: spread of the perturbation of each unit stain vector.
        lab_gamma: spread of the log gamma of L*.
        lab_ab_scale: spread of the log scale of a* and b*.
        lab_ab_shift: spread of the shift of a* and b* (CIELAB units).
        lab_curve: spread of the 3 inner knots of the monotone piecewise-linear curve applied to L* / 100 (0 = none).
    """

    p_beer_lambert: float = 0.7
    p_lab: float = 0.5
    od_scale: float = 0.3
    od_shift: float = 0.03
    basis_jitter: float = 0.12
    lab_gamma: float = 0.25
    lab_ab_scale: float = 0.25
    lab_ab_shift: float = 6.0
    lab_curve: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            name = f"RestainConfig.{f.name}"
            v = check_probability(getattr(self, f.name), name) if f.name.startswith("p_") else check_nonnegative(
                getattr(self, f.name), name)
            object.__setattr__(self, f.name, v)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "RestainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d or {}) - known)
        if unknown:
            raise ValueError(f"restain: unknown keys {unknown}; valid keys: {sorted(known)}.")
        return cls(**(d or {}))


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=dev).to(device)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=dev).to(device)


def _beer_lambert(x: torch.Tensor, cfg: RestainConfig, g: torch.Generator | None) -> torch.Tensor:
    b = x.shape[0]
    dev = x.device
    basis = RUIFROK_HED.to(dev, torch.float32)
    od = rgb_to_od(x.float(), T_MIN_UINT8).flatten(2)  # (B, 3, N)
    conc = torch.linalg.solve(basis.T, od)  # (B, 3 stains, N): od = basis^T @ conc
    new_basis = basis.unsqueeze(0) + cfg.basis_jitter * _randn((b, 3, 3), g, dev)
    new_basis = new_basis.abs() / new_basis.abs().norm(dim=2, keepdim=True).clamp_min(1e-6)
    scale = torch.exp(cfg.od_scale * _randn((b, 3, 1), g, dev))
    shift = cfg.od_shift * _randn((b, 3, 1), g, dev)
    # shift only where there is stain, so glass stays glass
    conc = conc * scale + shift * (conc.clamp_min(0) > 0.02)
    od2 = torch.bmm(new_basis.transpose(1, 2), conc).clamp_min(0)
    return od_to_rgb(od2).view_as(x)  # the package's one OD -> transmittance (clipped to [0, 1])


def _lab(x: torch.Tensor, cfg: RestainConfig, g: torch.Generator | None) -> torch.Tensor:
    from kornia.color import lab_to_rgb, rgb_to_lab

    b = x.shape[0]
    dev = x.device
    lab = rgb_to_lab(x.float().clamp(0, 1))
    gamma = torch.exp(cfg.lab_gamma * _randn((b, 1, 1), g, dev))
    ab_scale = torch.exp(cfg.lab_ab_scale * _randn((b, 2, 1, 1), g, dev))
    ab_shift = cfg.lab_ab_shift * _randn((b, 2, 1, 1), g, dev)
    light = (lab[:, 0] / 100.0).clamp(0, 1).pow(gamma)
    if cfg.lab_curve:
        # a monotone piecewise-linear curve through (0, 0), 3 jittered inner knots and (1, 1)
        knots_x = torch.linspace(0, 1, 5, device=dev)
        inner = knots_x[1:4] + cfg.lab_curve * _randn((b, 3), g, dev)
        knots_y = torch.cat([torch.zeros(b, 1, device=dev), inner.clamp(0, 1).sort(1).values,
                             torch.ones(b, 1, device=dev)], 1)  # (B, 5), non-decreasing
        seg = (light * 4).clamp(0, 3.999).floor().long()  # which of the 4 segments
        t = light * 4 - seg
        y0 = knots_y.gather(1, seg.flatten(1)).view_as(light)
        y1 = knots_y.gather(1, (seg + 1).flatten(1)).view_as(light)
        light = y0 + t * (y1 - y0)
    light = 100.0 * light
    ab = lab[:, 1:] * ab_scale + ab_shift
    return lab_to_rgb(torch.cat([light.unsqueeze(1), ab], 1), clip=True)


@torch.no_grad()
def restain(x: torch.Tensor, config: RestainConfig | None = None, *, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """The batch ``x`` (B, 3, H, W) in [0, 1] re-stained at random, image by image (see the module docstring).

    Draws only from ``generator`` (torch's global RNG when None). Returns a new tensor of the same shape, dtype
    and device; the tissue (every pixel's position) is unchanged.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"restain: expected (B, 3, H, W) RGB images, got {tuple(x.shape)}.")
    cfg = config or RestainConfig()
    b = x.shape[0]
    dev = x.device
    u = _rand((b, 2), generator, dev)
    use_lab = u[:, 1] < cfg.p_lab
    use_bl = (u[:, 0] < cfg.p_beer_lambert) | ~use_lab
    out = x.float()
    out = torch.where(use_bl.view(-1, 1, 1, 1), _beer_lambert(out, cfg, generator), out)
    out = torch.where(use_lab.view(-1, 1, 1, 1), _lab(out, cfg, generator), out)
    return out.to(x.dtype)
