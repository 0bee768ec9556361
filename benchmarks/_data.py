"""Benchmark data: the labelled HGSC nuclei re-rendered in the stains of other real sources, real-source tiles,
colour statistics and structure measures.

The leave-one-stain-out task (real-data.md): the HGSC nest image (1,294 labelled nuclei: connective, inflammatory,
neoplastic; silver-standard labels of the lab's pipeline) is re-rendered, whole, in the stain of each other real
H&E source by two independent renderers, then 48 px crops are cut around the nuclei:

* ``beer-lambert``: stain-matrix swap. The H and E optical-density vectors and the 99th-percentile concentrations of
  every source are estimated once on its tissue pixels (ink masked) with torchstain's Macenko ``fit`` (numpy
  backend; the published package, not a re-implementation). Each HGSC pixel is unmixed with the HGSC basis
  [H, E, H×E] (the residual kept, so no structure is lost), the H and E concentrations are rescaled to the target's,
  and the pixel is re-mixed with the target basis. Stain normalisation inverts this nearly exactly: it favours it.
* ``lab-cdf``: colour-distribution match. Each CIELAB channel of the HGSC image is mapped through its quantile
  function onto the target source's tissue-pixel quantiles (a monotone per-channel map). No stain model, so it
  does not favour stain normalisation.

Both keep every pixel's position: the shift is colour-only and semi-synthetic, and results say so.
The split is spatial: nuclei in the top-left and bottom-right quadrants train, the other two test, and nuclei
whose 48 px crop would cross a quadrant border are dropped.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

import _common  # noqa: F401  (puts the checkout on sys.path)

HGSC = "hgsc_nest"
STAIN_TARGETS = ("cmu1", "prostate", "skin", "tcia")
"""Real H&E sources whose stains the HGSC nuclei are rendered in (plus the native HGSC stain)."""
RENDERERS = ("beer-lambert", "lab-cdf")
CROP = 48
IO = 240.0  # torchstain's transmitted-light intensity
OD_SAT = 2.5  # natural-log OD cap of the Beer-Lambert renderer (pixel values below about 19 are saturated)


# ------------------------------------------------------------------------------------------------------------------
# real images
# ------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def load_source(source_id: str) -> np.ndarray:
    from contrimix_aug.data import sources

    img = sources.load_image(source_id, progress=False)
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=None)
def good_pixels(source_id: str) -> np.ndarray:
    """(N, 3) uint8 tissue pixels of a source, marking ink excluded (contrimix_aug.data masks)."""
    from contrimix_aug.data.patches import ink_mask, tissue_mask

    img = load_source(source_id)
    m = tissue_mask(img) & ~ink_mask(img)
    px = img[m]
    px.setflags(write=False)
    return px


# ------------------------------------------------------------------------------------------------------------------
# renderer 1: Beer-Lambert stain-matrix swap
# ------------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def stain_estimate(source_id: str, max_pixels: int = 400_000) -> tuple[np.ndarray, np.ndarray]:
    """(3, 2) H/E OD vectors and (2,) 99th-percentile concentrations (torchstain Macenko ``fit``, numpy backend)."""
    import torchstain

    px = good_pixels(source_id)
    if len(px) > max_pixels:
        px = px[np.random.default_rng(0).choice(len(px), max_pixels, replace=False)]
    norm = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        norm.fit(np.ascontiguousarray(px.reshape(1, -1, 3)), Io=IO)
    return np.asarray(norm.HERef, float), np.asarray(norm.maxCRef, float)


def _basis(he: np.ndarray) -> np.ndarray:
    r = np.cross(he[:, 0], he[:, 1])
    r = r / max(np.linalg.norm(r), 1e-8)
    return np.concatenate([he, r[:, None]], axis=1)  # (3, 3) columns H, E, residual


def render_beer_lambert(img: np.ndarray, src_id: str, tgt_id: str) -> np.ndarray:
    """Swap the stain matrix of ``img`` (a picture of ``src_id``) for ``tgt_id``'s. uint8 HWC -> uint8 HWC."""
    he_s, c_s = stain_estimate(src_id)
    he_t, c_t = stain_estimate(tgt_id)
    # JPEG-saturated channels (values near 0 in the darkest nuclei) have no meaningful OD: cap it (OD_SAT) so that
    # they do not unmix into huge concentrations that re-mix into false colours; H/E concentrations are kept >= 0
    od = np.minimum(-np.log((img.reshape(-1, 3).astype(np.float64) + 1.0) / IO), OD_SAT)
    conc = np.linalg.solve(_basis(he_s), od.T)  # (3, N)
    conc[:2] = np.clip(conc[:2], 0, None) * (c_t / c_s)[:, None]
    out = IO * np.exp(-(_basis(he_t) @ conc)) - 1.0
    return np.clip(out.T.reshape(img.shape) + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------------
# renderer 2: CIELAB quantile (CDF) matching
# ------------------------------------------------------------------------------------------------------------------
def rgb_to_lab_np(px: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 3) float32 CIELAB (kornia)."""
    import kornia.color

    t = torch.from_numpy(np.array(px.reshape(-1, 1, 3))).float().div(255).permute(2, 0, 1)[None]
    lab = kornia.color.rgb_to_lab(t)[0].permute(1, 2, 0).reshape(px.shape)
    return lab.numpy()


def lab_to_rgb_np(lab: np.ndarray) -> np.ndarray:
    import kornia.color

    t = torch.from_numpy(np.ascontiguousarray(lab.reshape(-1, 1, 3))).float().permute(2, 0, 1)[None]
    rgb = kornia.color.lab_to_rgb(t, clip=True)[0].permute(1, 2, 0).reshape(lab.shape)
    return np.clip(rgb.numpy() * 255 + 0.5, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def lab_quantiles(source_id: str, n: int = 1001) -> np.ndarray:
    px = good_pixels(source_id)
    if len(px) > 400_000:
        px = px[np.random.default_rng(0).choice(len(px), 400_000, replace=False)]
    lab = rgb_to_lab_np(px)
    return np.quantile(lab, np.linspace(0, 1, n), axis=0)  # (n, 3)


def render_lab_cdf(img: np.ndarray, src_id: str, tgt_id: str) -> np.ndarray:
    """Map each CIELAB channel of ``img`` through src quantiles -> tgt quantiles (tissue pixels). uint8 HWC."""
    qs, qt = lab_quantiles(src_id), lab_quantiles(tgt_id)
    lab = rgb_to_lab_np(img)
    out = np.empty_like(lab)
    for c in range(3):
        # strictly increasing abscissae for np.interp (flat runs in the quantile function)
        xs = qs[:, c] + np.arange(len(qs)) * 1e-6
        out[..., c] = np.interp(lab[..., c], xs, qt[:, c])
    return lab_to_rgb_np(out)


def render(img: np.ndarray, renderer: str, src_id: str, tgt_id: str) -> np.ndarray:
    if tgt_id == src_id or tgt_id == "native":
        return img
    if renderer == "beer-lambert":
        return render_beer_lambert(img, src_id, tgt_id)
    if renderer == "lab-cdf":
        return render_lab_cdf(img, src_id, tgt_id)
    raise ValueError(f"unknown renderer {renderer!r}; known: {RENDERERS}")


# ------------------------------------------------------------------------------------------------------------------
# HGSC nuclei
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Nuclei:
    image: np.ndarray  # (H, W, 3) uint8 native stain
    centroids: np.ndarray  # (N, 2) int (y, x)
    labels: np.ndarray  # (N,) 0..2
    split: np.ndarray  # (N,) "train" | "test"
    class_names: tuple[str, ...]

    def crops(self, img: np.ndarray | None = None) -> np.ndarray:
        """(N, 48, 48, 3) uint8 crops centred on the nuclei of ``img`` (default: the native image)."""
        img = self.image if img is None else img
        h = CROP // 2
        pad = np.pad(img, ((h, h), (h, h), (0, 0)), mode="reflect")
        ys, xs = self.centroids[:, 0], self.centroids[:, 1]
        return np.stack([pad[y : y + CROP, x : x + CROP] for y, x in zip(ys, xs)])


@functools.lru_cache(maxsize=1)
def load_nuclei() -> Nuclei:
    """The hgsc_nest nuclei with a spatial (diagonal-quadrant) split and a guard band of half a crop."""
    from contrimix_aug.data import sources

    lab = sources.load_hgsc_nuclei("hgsc_nest", progress=False)
    ok = np.isfinite(lab.centroids).all(1) & (lab.classes > 0)
    cen = np.round(lab.centroids[ok]).astype(int)
    cls = lab.classes[ok].astype(int) - 1
    h, w = lab.image.shape[:2]
    my, mx = h // 2, w // 2
    guard = CROP // 2
    far = (np.abs(cen[:, 0] - my) >= guard) & (np.abs(cen[:, 1] - mx) >= guard)
    top, left = cen[:, 0] < my, cen[:, 1] < mx
    split = np.where(top == left, "train", "test")
    names = tuple(lab.class_names[k] for k in sorted(lab.class_names))
    return Nuclei(lab.image, cen[far], cls[far], split[far], names)


@functools.lru_cache(maxsize=None)
def rendered_image(renderer: str, domain: str) -> np.ndarray:
    """The whole HGSC image in ``domain``'s stain ("hgsc" = native)."""
    nuc = load_nuclei()
    if domain == "hgsc":
        return nuc.image
    return render(nuc.image, renderer, HGSC, domain)


@functools.lru_cache(maxsize=None)
def domain_crops(renderer: str, domain: str) -> np.ndarray:
    out = load_nuclei().crops(rendered_image(renderer, domain))
    out.setflags(write=False)
    return out


# ------------------------------------------------------------------------------------------------------------------
# real-source tiles (label-free part)
# ------------------------------------------------------------------------------------------------------------------
SOURCE_DOMAINS = {"cmu1": ("cmu1",), "prostate": ("prostate",), "skin": ("skin",),
                  "hgsc": ("hgsc_nest", "hgsc_stroma"), "tcia": ("tcia",)}


def source_tiles(n_per_domain: int, size: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """{domain: (n, size, size, 3) uint8} real tissue tiles at ~0.5 µm/px (contrimix_aug.data sampling)."""
    from contrimix_aug.data.patches import sample_source_patches

    out = {}
    for dom, ids in SOURCE_DOMAINS.items():
        per = [max(1, n_per_domain // len(ids))] * len(ids)
        per[0] += n_per_domain - sum(per)
        parts = []
        for sid, n in zip(ids, per):
            try:
                ps = sample_source_patches((sid,), size=size, n_per_source=n, seed=seed, progress=False)
            except ValueError:  # fewer valid random positions than asked (tcia is small): take the grid
                ps = sample_source_patches((sid,), size=size, n_per_source=n, seed=seed, method="grid",
                                           stride=size // 2, progress=False)
            parts.append(ps.images)
        out[dom] = np.concatenate(parts)
    return out


# ------------------------------------------------------------------------------------------------------------------
# measures
# ------------------------------------------------------------------------------------------------------------------
def colour_features(batch: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] -> (B, 6) CIELAB mean and std over tissue pixels (all pixels if none)."""
    import kornia.color

    x = batch.float().clamp(0, 1)
    lab = kornia.color.rgb_to_lab(x)  # (B, 3, H, W)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    mx, mn = x.amax(1), x.amin(1)
    sat = (mx - mn) / mx.clamp_min(1e-6)
    tissue = ~((grey > 0.82) & (sat < 0.10))
    w = tissue.float()
    w = torch.where(w.sum((1, 2), keepdim=True) > 0, w, torch.ones_like(w)).unsqueeze(1)
    n = w.sum((2, 3))
    mean = (lab * w).sum((2, 3)) / n
    var = ((lab - mean[..., None, None]) ** 2 * w).sum((2, 3)) / n
    return torch.cat([mean, var.sqrt()], 1).numpy()


def od_luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) mean optical density scaled to [0, 1] (OD 0..2)."""
    od = -torch.log10(x.float().clamp_min(1e-3))
    return (od.mean(1, keepdim=True) / 2.0).clamp(0, 1)


def haematoxylin(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) haematoxylin concentration (fixed Ruifrok basis), scaled to [0, 1]."""
    from _common import rgb_to_hed  # type: ignore[import-not-found]

    h = rgb_to_hed(x.float())[:, :1]
    return (h / 2.5).clamp(0, 1)


def _otsu(v: torch.Tensor) -> torch.Tensor:
    """Per-image Otsu threshold of (B, N) values in [0, 1] (64 bins)."""
    bins = 64
    idx = (v.clamp(0, 1) * (bins - 1)).round().long()
    hist = torch.zeros(v.shape[0], bins).scatter_add_(1, idx, torch.ones_like(v))
    p = hist / hist.sum(1, keepdim=True)
    centers = torch.linspace(0, 1, bins)
    w0 = p.cumsum(1)
    mu = (p * centers).cumsum(1)
    mu_t = mu[:, -1:]
    between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    return centers[between.argmax(1)]


def structure_scores(orig: torch.Tensor, new: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image SSIM of OD luminance and haematoxylin, and Dice of Otsu nucleus masks (haematoxylin)."""
    from kornia.metrics import ssim

    lo, ln = od_luminance(orig), od_luminance(new)
    ho, hn = haematoxylin(orig), haematoxylin(new)
    s_lum = ssim(lo, ln, 7, max_val=1.0).mean((1, 2, 3))
    s_h = ssim(ho, hn, 7, max_val=1.0).mean((1, 2, 3))
    fo, fn = ho.flatten(1), hn.flatten(1)
    mo = fo > _otsu(fo)[:, None]
    mn = fn > _otsu(fn)[:, None]
    inter = (mo & mn).sum(1).float()
    dice = 2 * inter / (mo.sum(1) + mn.sum(1)).clamp_min(1).float()
    return {"ssim_od": s_lum.numpy(), "ssim_h": s_h.numpy(), "dice_nuclei": dice.numpy()}
