"""Every method of the benchmarks behind one interface: :class:`Method`.

- ``kind``: ``"none"`` (ERM floor), ``"normalise"`` (deterministic, fitted on training domains) or ``"augment"``
  (random, training time only, applied to each image with probability ``p``);
- ``api``: the peer's natural interface, ``"batch"`` (B×C×H×W float tensor in [0, 1]) or ``"image"`` (one H×W×3
  uint8 numpy array at a time, as albumentations and torchstain take it);
- ``__call__(batch)``: the uniform entry point, float B×C×H×W in [0, 1] -> same shape; per-image peers are looped
  over the batch (conversion to and from uint8 included);
- ``natural(x)``: the natural call (a batch tensor, or one uint8 image), which the throughput script times.

Peers come from their published packages where one installs here (torchstain, albumentations, kornia). Where none
does, the published method is implemented in a few lines and says so in its ``package`` field: HED jitter
(Tellez et al. 2018), RandStainNA (Shen et al. 2022), RGB mean/std transfer from a random training image
("Colorist", 2026), and the fluorescence peers (per-channel gain/gamma jitter).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .report import pkg_version

from contrimix_aug.bank import images_from_numpy
from contrimix_aug.optical_density import hed_to_rgb, rgb_to_hed
from contrimix_aug.viz import to_uint8

__all__ = ["FLUO_PEERS", "HE_PEERS", "STRONG_PEERS", "Method", "build_peers", "contrimix_augment", "contrimix_normalise",
           "hed_jitter", "then", "to_float", "to_uint8_hwc"]


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float in [0, 1] -> (B, H, W, C) uint8 (every channel kept)."""
    return to_uint8(x, rgb=False)


def to_float(a: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 / uint16 / float -> (B, C, H, W) float32 in [0, 1]."""
    a = np.asarray(a)
    return images_from_numpy(a, a.shape[-1], "images")


@dataclass
class Method:
    """One method behind a uniform interface (see module docstring)."""

    name: str
    kind: str  # "none" | "normalise" | "augment"
    api: str  # "batch" | "image"
    package: str
    note: str
    _batch_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    _image_fn: Callable[[np.ndarray], np.ndarray] | None = None
    failures: int = 0
    calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Float (B, C, H, W) in [0, 1] -> same. Per-image peers are looped over the batch."""
        if self.api == "batch":
            return self._batch_fn(batch)
        imgs = to_uint8_hwc(batch)
        out = np.stack([self._safe_image(im) for im in imgs])
        return to_float(out).to(batch.device, batch.dtype)

    def in_batches(self, x: torch.Tensor, bs: int = 128) -> torch.Tensor:
        """``self(x)`` over (N, C, H, W) in chunks of ``bs`` images (a normaliser over a whole split)."""
        return torch.cat([self(x[i : i + bs]) for i in range(0, len(x), bs)]) if len(x) else x

    def natural(self, x):
        """The peer's natural call: a float batch tensor (api 'batch') or one uint8 H×W×3 image (api 'image')."""
        return self._batch_fn(x) if self.api == "batch" else self._safe_image(x)

    def _safe_image(self, im: np.ndarray) -> np.ndarray:
        self.calls += 1
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                out = self._image_fn(im)
        except Exception:  # noqa: BLE001 - peers crash on some tiles (e.g. torchstain kthvalue on empty tissue)
            self.failures += 1
            return im
        out = np.asarray(out)
        if out.dtype != np.uint8:
            out = np.clip(out, 0, 255).astype(np.uint8)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "api": self.api, "package": self.package, "note": self.note}


def _with_p(fn: Callable[[torch.Tensor], torch.Tensor], p: float, g: torch.Generator
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply a batch augmentation to each image with probability p (drawn from ``g``)."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        if p >= 1.0:
            return out
        sel = torch.rand(x.shape[0], generator=g) < p
        return torch.where(sel.to(x.device).view(-1, 1, 1, 1), out, x)

    return apply


def _mosaic(images: Sequence[np.ndarray], max_tiles: int = 64, seed: int = 0) -> np.ndarray:
    """A square mosaic (uint8 H×W×3) of up to ``max_tiles`` equally sized images (a normalisation target)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(images))[:max_tiles]
    tiles = [images[i] for i in idx]
    n = int(math.ceil(math.sqrt(len(tiles))))
    h, w = tiles[0].shape[:2]
    canvas = np.full((n * h, n * w, 3), 255, np.uint8)
    for k in range(n * n):  # empty cells get repeats, so the mosaic has no glass
        r, c = divmod(k, n)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = tiles[k % len(tiles)][:h, :w]
    return canvas


# ------------------------------------------------------------------------------------------------------------------
# H&E peers
# ------------------------------------------------------------------------------------------------------------------
def _torchstain(kind: str, target: np.ndarray, backend: str = "numpy") -> Method:
    """torchstain Macenko or Reinhard normaliser fitted on ``target`` (one image at a time, as its API takes)."""
    import torchstain

    as_in = (lambda a: np.ascontiguousarray(a)) if backend == "numpy" else (
        lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
    )
    if kind == "macenko":
        norm = torchstain.normalizers.MacenkoNormalizer(backend=backend)
    else:
        norm = torchstain.normalizers.ReinhardNormalizer(backend=backend)
    norm.fit(as_in(target))

    def fn(im: np.ndarray) -> np.ndarray:
        out = norm.normalize(as_in(im), stains=False) if kind == "macenko" else norm.normalize(as_in(im))
        if isinstance(out, tuple):
            out = out[0]
        if isinstance(out, torch.Tensor):
            out = out.clamp(0, 255).to(torch.uint8).numpy()
        return out

    suffix = "" if backend == "numpy" else f"-{backend}"
    desc = "Macenko" if kind == "macenko" else "Reinhard (LAB mean/std)"
    return Method(f"torchstain-{kind}{suffix}", "normalise", "image", f"torchstain {pkg_version('torchstain')}",
                  f"{desc} normaliser, {backend} backend, target = mosaic of training-domain images; per image",
                  _image_fn=fn)


def _hestain(mode: str, seed: int, p: float) -> Method:
    import albumentations as A

    t = A.HEStain(method=mode, p=p)
    t.set_random_seed(seed)
    return Method(f"hestain-{mode.replace('random_preset', 'preset')}", "augment", "image",
                  f"albumentations {pkg_version('albumentations')}",
                  f"albumentations HEStain(method={mode!r}, p={p}) defaults; per image",
                  _image_fn=lambda im: t(image=im)["image"])


def hed_jitter(x: torch.Tensor, sigma: float = 0.05, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """HED colour jitter (Tellez et al., 2018): per image and stain, hed' = hed·α + β, α ~ U(1±σ), β ~ U(±σ).

    Batched, per-sample parameters; the fixed Ruifrok basis of :mod:`contrimix_aug.optical_density`.
    x: (B, 3, H, W) float in [0, 1]. σ = 0.05 is Tellez's "HED-light", 0.2 "HED-strong".
    """
    b = x.shape[0]
    alpha = 1 + (torch.rand(b, 3, 1, 1, generator=generator) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, 1, 1, generator=generator) * 2 - 1) * sigma
    hed = rgb_to_hed(x.float())
    return hed_to_rgb(hed * alpha.to(hed) + beta.to(hed)).to(x.dtype)


def _hed(name: str, sigma: float, seed: int, p: float) -> Method:
    g = torch.Generator().manual_seed(seed)
    return Method(name, "augment", "batch", "own (Tellez et al. 2018, 10 lines; no maintained package offers it)",
                  f"HED jitter, σ={sigma}, p={p}, per-sample", _batch_fn=_with_p(lambda x: hed_jitter(x, sigma,
                  generator=g), p, g))


def _lab_stats(images: np.ndarray) -> np.ndarray:
    """(N, 6) per-image CIELAB mean and std of uint8 RGB images (kornia's conversion)."""
    from kornia.color import rgb_to_lab

    lab = rgb_to_lab(to_float(images)).flatten(2)
    return torch.cat([lab.mean(2), lab.std(2)], 1).numpy()


def _lab_transfer(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image CIELAB mean/std transfer (Reinhard) of (B, 3, H, W) to (B, 6) target statistics."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    lab = rgb_to_lab(x.float())
    mean, std = lab.mean((2, 3), keepdim=True), lab.std((2, 3), keepdim=True).clamp_min(1e-3)
    t = target.to(lab).view(-1, 6, 1, 1)
    return lab_to_rgb((lab - mean) / std * t[:, 3:] + t[:, :3], clip=True).to(x.dtype)


def _randstainna(train_images: np.ndarray, seed: int, p: float, std_hyper: float = -0.3) -> Method:
    """RandStainNA (Shen et al., MICCAI 2022), LAB space: per image, target statistics drawn from normal
    distributions fitted to the training images' per-image LAB means and stds (spread scaled by 1 + ``std_hyper``,
    -0.3 as in the authors' README), then a Reinhard transfer."""
    stats = _lab_stats(train_images)
    mu, sd = torch.from_numpy(stats.mean(0)), torch.from_numpy(stats.std(0)) * (1 + std_hyper)
    g = torch.Generator().manual_seed(seed)

    def fn(x: torch.Tensor) -> torch.Tensor:
        target = mu + sd * torch.randn(x.shape[0], 6, generator=g)
        target[:, 3:] = target[:, 3:].clamp_min(1e-2)
        return _lab_transfer(x, target)

    return Method("randstainna", "augment", "batch", "own (published method; not on PyPI: the authors ship scripts "
                  "and a YAML of dataset statistics)", f"RandStainNA, LAB, normal distributions fitted on "
                  f"{len(train_images)} training images, std_hyper {std_hyper}, p={p}, per-sample",
                  _batch_fn=_with_p(fn, p, g))


def _rgb_meanstd(train_images: np.ndarray, seed: int, p: float) -> Method:
    """RGB mean/std transfer from a random training image (the method of "Colorist", 2026, package colorist-aug 1.0.1):
    each image's per-channel RGB mean and (population) std are replaced by those of a training image drawn
    uniformly."""
    ref = to_float(train_images).flatten(2)
    ref_mean, ref_std = ref.mean(2), ref.std(2, unbiased=False)
    g = torch.Generator().manual_seed(seed)

    def fn(x: torch.Tensor) -> torch.Tensor:
        j = torch.randint(0, ref_mean.shape[0], (x.shape[0],), generator=g)
        flat = x.float().flatten(2)
        mean, std = flat.mean(2, keepdim=True), flat.std(2, keepdim=True, unbiased=False).clamp_min(1e-3)
        out = (flat - mean) / std * ref_std[j].unsqueeze(2).to(flat) + ref_mean[j].unsqueeze(2).to(flat)
        return out.view_as(x).clamp(0, 1).to(x.dtype)

    return Method("rgb-meanstd", "augment", "batch", "own (the published method of Colorist; colorist-aug 1.0.1 pins "
                  "numpy<2.3 and torchvision 0.24, incompatible with this environment)", f"per-channel RGB mean/std of a random training image, p={p}",
                  _batch_fn=_with_p(fn, p, g))


def _kornia(aug: Any, g: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A kornia augmentation drawing from a fixed stream (kornia draws from torch's global RNG)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            return aug(x)

    return fn


def _kornia_jitter(seed: int, p: float, name: str = "kornia-colorjitter",
                   setting: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.05)) -> Method:
    import kornia.augmentation as K

    g = torch.Generator().manual_seed(seed)
    return Method(name, "augment", "batch", f"kornia {pkg_version('kornia')}",
                  f"kornia.augmentation.ColorJitter{setting}, p={p}, per-sample",
                  _batch_fn=_kornia(K.ColorJitter(*setting, p=p), g))


def _hed_bc(seed: int, p: float, sigma: float = 0.2, bc: float = 0.2) -> Method:
    """HED jitter (strong, σ = 0.2) followed by brightness/contrast jitter (±``bc``), both applied together to an
    image with probability p (the combination of Tellez et al. 2019's best-performing groups, HED + BC)."""
    import kornia.augmentation as K

    g = torch.Generator().manual_seed(seed)
    bc_fn = _kornia(K.ColorJitter(brightness=bc, contrast=bc, p=1.0), g)
    return Method("hed-strong-bc", "augment", "batch", f"own HED jitter + kornia {pkg_version('kornia')}",
                  f"HED jitter σ={sigma} then ColorJitter(brightness={bc}, contrast={bc}), together with p={p}, "
                  "per-sample", _batch_fn=_with_p(lambda x: bc_fn(hed_jitter(x, sigma, generator=g)), p, g))


def then(name: str, first: Method, second: Method, note: str = "") -> Method:
    """``second`` applied after ``first`` (both batch augmentations, each with its own probability)."""
    return Method(name, "augment", "batch", f"{first.package} + {second.package}",
                  note or f"{first.note}; then {second.note}", _batch_fn=lambda x: second(first(x)),
                  extra={**first.extra, **second.extra})


# ------------------------------------------------------------------------------------------------------------------
# fluorescence peers
# ------------------------------------------------------------------------------------------------------------------
def _gain_gamma(seed: int, p: float, gain: float = 0.3, gamma: float = 0.3) -> Method:
    """Per-image, per-channel intensity gain (log-normal, σ = ``gain``) and gamma (log-normal, σ = ``gamma``)."""
    g = torch.Generator().manual_seed(seed)

    def fn(x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        k = torch.exp(gain * torch.randn(b, c, 1, 1, generator=g)).to(x)
        e = torch.exp(gamma * torch.randn(b, c, 1, 1, generator=g)).to(x)
        return (x.clamp_min(0).pow(e) * k).clamp(0, 1)

    return Method("gain-gamma", "augment", "batch", "own (standard intensity augmentation)",
                  f"per-channel gain exp(N(0, {gain})) and gamma exp(N(0, {gamma})), p={p}", _batch_fn=_with_p(fn, p, g))


HE_PEERS = ["erm", "torchstain-macenko", "torchstain-reinhard", "hestain-preset", "hed-light", "hed-strong",
            "randstainna", "rgb-meanstd", "kornia-colorjitter"]
"""The H&E peers of the domain-generalisation benchmark, in table order."""
STRONG_PEERS = ["kornia-colorjitter-strong", "hed-strong-bc"]
"""The strong generic colour augmentations practitioners use (MoNuSeg task): ColorJitter(0.4, 0.4, 0.4, 0.1) and
HED-strong + brightness/contrast."""
FLUO_PEERS = ["erm", "gain-gamma"]
"""Fluorescence peers that are batch methods (per-plate z-scoring is a property of the task's input pipeline)."""


def build_peers(names: Iterable[str], train_images: np.ndarray | None, seed: int = 0, p: float = 0.5) -> list[Method]:
    """The non-ContriMix methods by name. ``train_images``: training-domain uint8 (N, H, W, 3) images (normalisation
    targets, RandStainNA / RGB statistics); ``p``: per-image probability of every augmentation."""
    out: list[Method] = []
    for n in names:
        if n == "erm":
            out.append(Method("erm", "none", "batch", "-", "no augmentation, no normalisation (floor)",
                              _batch_fn=lambda x: x))
        elif n.startswith("torchstain-"):
            if train_images is None:
                raise ValueError(f"{n} needs training-domain images")
            kind, _, backend = n[len("torchstain-"):].partition("-")
            out.append(_torchstain(kind, _mosaic(train_images, seed=0), backend or "numpy"))
        elif n.startswith("hestain-"):
            mode = {"hestain-preset": "random_preset", "hestain-macenko": "macenko", "hestain-vahadane": "vahadane"}[n]
            out.append(_hestain(mode, seed, p))
        elif n in ("hed-light", "hed-strong"):
            out.append(_hed(n, 0.05 if n == "hed-light" else 0.2, seed, p))
        elif n == "randstainna":
            out.append(_randstainna(train_images, seed, p))
        elif n == "rgb-meanstd":
            out.append(_rgb_meanstd(train_images, seed, p))
        elif n == "kornia-colorjitter":
            out.append(_kornia_jitter(seed, p))
        elif n == "kornia-colorjitter-strong":
            out.append(_kornia_jitter(seed, p, n, (0.4, 0.4, 0.4, 0.1)))
        elif n == "hed-strong-bc":
            out.append(_hed_bc(seed, p))
        elif n == "gain-gamma":
            out.append(_gain_gamma(seed, p))
        else:
            raise ValueError(f"unknown peer {n!r}; known: {HE_PEERS + STRONG_PEERS + FLUO_PEERS}")
    return out


# ------------------------------------------------------------------------------------------------------------------
# ContriMix
# ------------------------------------------------------------------------------------------------------------------
def contrimix_augment(name: str, model, *, seed: int, donors: str | None = None, p: float = 0.5,
                      strength: float | tuple[float, float] = 1.0, bank: Any = None, note: str = "",
                      spread: float | None = None) -> Method:
    """``contrimix_aug.ContriMix`` as a batch method (the product's main use); ``donors=None``: the library's default
    donor policy (what ``ContriMix(weights=...)`` does with no other argument)."""
    import contrimix_aug

    aug = contrimix_aug.ContriMix(weights=model, p=p, seed=seed, strength=strength, bank=bank,
                                  **({} if donors is None else {"donors": donors}),
                                  **({} if spread is None else {"spread": spread}))
    donors = aug.donors

    def fn(x: torch.Tensor) -> torch.Tensor:
        if next(aug.model.parameters()).device != x.device:
            aug.to(x.device)
        return aug(x)

    return Method(name, "augment", "batch", f"contrimix_aug {contrimix_aug.__version__}",
                  note or f"ContriMix(p={p}, donors={donors!r}, strength={strength})", _batch_fn=fn,
                  extra={"module": aug})


def contrimix_normalise(name: str, model, target: torch.Tensor | None, note: str = "") -> Method:
    import contrimix_aug

    norm = contrimix_aug.ContriMixNormalize(weights=model, target=target)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if next(norm.model.parameters()).device != x.device:
            norm.to(x.device)
        return norm(x)

    return Method(name, "normalise", "batch", f"contrimix_aug {contrimix_aug.__version__}",
                  note or "ContriMixNormalize: the image's content, the training domains' mean attributes",
                  _batch_fn=fn, extra={"module": norm})
