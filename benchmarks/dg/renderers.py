"""Two independent renderers that show the same tissue in another real stain (colour-only, semi-synthetic shifts).

* ``beer-lambert``: stain-matrix swap. The H and E optical-density vectors and 99th-percentile concentrations of a
  stain are estimated once on its tissue pixels with torchstain's Macenko ``fit`` (numpy backend; the published
  package). Each pixel is unmixed with the source basis [H, E, H×E] (the residual kept, so no structure is lost),
  the H and E concentrations are rescaled to the target's, and the pixel is re-mixed with the target basis. Stain
  normalisation inverts this nearly exactly: it favours it.
* ``lab-cdf``: colour-distribution match. Each CIELAB channel is mapped through the source's tissue-pixel quantile
  function onto the target's (a monotone per-channel map). No stain model, so it does not favour normalisation.

A stain is described by :class:`Stain`, fitted from the tissue pixels (marking ink excluded) of any set of images:
a real source image (HGSC task), or the tiles of one CAMELYON17 hospital (the model cards' stain-transfer measure).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from . import report  # noqa: F401  (puts the checkout on sys.path)

from contrimix_aug.tissue import ink_mask, tissue_mask

__all__ = ["RENDERERS", "Stain", "fit_stain", "render", "source_stain"]

RENDERERS = ("beer-lambert", "lab-cdf")
IO = 240.0  # torchstain's transmitted-light intensity
OD_SAT = 2.5  # natural-log OD cap of the Beer-Lambert renderer (pixel values below about 19 are saturated)
_MAX_PIXELS = 400_000


@dataclass(frozen=True)
class Stain:
    """A stain as the renderers use it: Macenko H/E vectors (3, 2), 99th-percentile concentrations (2,), and the
    CIELAB quantile function (1001, 3) of its tissue pixels."""

    he: np.ndarray
    max_conc: np.ndarray
    lab_quantiles: np.ndarray


def _tissue_pixels(images: list[np.ndarray]) -> np.ndarray:
    px = np.concatenate([im[tissue_mask(im) & ~ink_mask(im)] for im in images])
    if len(px) > _MAX_PIXELS:
        px = px[np.random.default_rng(0).choice(len(px), _MAX_PIXELS, replace=False)]
    return px


def rgb_to_lab_np(px: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 3) float32 CIELAB (kornia)."""
    import kornia.color

    t = torch.from_numpy(np.array(px.reshape(-1, 1, 3))).float().div(255).permute(2, 0, 1)[None]
    return kornia.color.rgb_to_lab(t)[0].permute(1, 2, 0).reshape(px.shape).numpy()


def lab_to_rgb_np(lab: np.ndarray) -> np.ndarray:
    import kornia.color

    t = torch.from_numpy(np.ascontiguousarray(lab.reshape(-1, 1, 3))).float().permute(2, 0, 1)[None]
    rgb = kornia.color.lab_to_rgb(t, clip=True)[0].permute(1, 2, 0).reshape(lab.shape)
    return np.clip(rgb.numpy() * 255 + 0.5, 0, 255).astype(np.uint8)


def fit_stain(images: list[np.ndarray]) -> Stain:
    """:class:`Stain` of the tissue pixels of ``images`` ((H, W, 3) uint8 each)."""
    import torchstain

    px = _tissue_pixels(images)
    norm = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        norm.fit(np.ascontiguousarray(px.reshape(1, -1, 3)), Io=IO)
    q = np.quantile(rgb_to_lab_np(px), np.linspace(0, 1, 1001), axis=0)
    return Stain(np.asarray(norm.HERef, float), np.asarray(norm.maxCRef, float), q)


@functools.lru_cache(maxsize=None)
def source_stain(source_id: str) -> Stain:
    """The stain of a registered real source image (fetched through ``contrimix_aug.data``)."""
    from contrimix_aug.data import load_image

    return fit_stain([load_image(source_id, progress=False)])


def _basis(he: np.ndarray) -> np.ndarray:
    r = np.cross(he[:, 0], he[:, 1])
    r = r / max(np.linalg.norm(r), 1e-8)
    return np.concatenate([he, r[:, None]], axis=1)  # (3, 3) columns H, E, residual


def render_beer_lambert(img: np.ndarray, src: Stain, tgt: Stain) -> np.ndarray:
    """Swap the stain matrix of ``img`` (a picture in stain ``src``) for ``tgt``'s. uint8 HWC -> uint8 HWC."""
    # JPEG-saturated channels (values near 0 in the darkest nuclei) have no meaningful OD: cap it (OD_SAT) so that
    # they do not unmix into huge concentrations that re-mix into false colours; H/E concentrations are kept >= 0
    od = np.minimum(-np.log((img.reshape(-1, 3).astype(np.float64) + 1.0) / IO), OD_SAT)
    conc = np.linalg.solve(_basis(src.he), od.T)  # (3, N)
    conc[:2] = np.clip(conc[:2], 0, None) * (tgt.max_conc / src.max_conc)[:, None]
    out = IO * np.exp(-(_basis(tgt.he) @ conc)) - 1.0
    return np.clip(out.T.reshape(img.shape) + 0.5, 0, 255).astype(np.uint8)


def render_lab_cdf(img: np.ndarray, src: Stain, tgt: Stain) -> np.ndarray:
    """Map each CIELAB channel of ``img`` through src quantiles -> tgt quantiles (tissue pixels). uint8 HWC."""
    qs, qt = src.lab_quantiles, tgt.lab_quantiles
    lab = rgb_to_lab_np(img)
    out = np.empty_like(lab)
    for c in range(3):
        # strictly increasing abscissae for np.interp (flat runs in the quantile function)
        xs = qs[:, c] + np.arange(len(qs)) * 1e-6
        out[..., c] = np.interp(lab[..., c], xs, qt[:, c])
    return lab_to_rgb_np(out)


def render(img: np.ndarray, renderer: str, src: Stain, tgt: Stain) -> np.ndarray:
    """``img`` (in stain ``src``) re-rendered in stain ``tgt`` by ``renderer`` (one of :data:`RENDERERS`)."""
    if src is tgt:
        return img
    if renderer == "beer-lambert":
        return render_beer_lambert(img, src, tgt)
    if renderer == "lab-cdf":
        return render_lab_cdf(img, src, tgt)
    raise ValueError(f"unknown renderer {renderer!r}; known: {RENDERERS}")
