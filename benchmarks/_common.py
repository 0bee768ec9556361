"""Shared pieces of the benchmark scripts: peer methods behind one interface, environment capture, writers.

Every method (ContriMix and its peers) is a :class:`Method`:

- ``kind``: ``"none"`` (ERM floor), ``"normalise"`` (deterministic, fitted on training domains) or ``"augment"``
  (random, training time only);
- ``api``: the peer's natural interface, ``"batch"`` (B×3×H×W float tensor in [0, 1]) or ``"image"`` (one H×W×3
  uint8 numpy array at a time, as albumentations and torchstain take it);
- ``__call__(batch)``: the uniform entry point, float B×3×H×W in [0, 1] -> same shape; per-image peers are looped
  over the batch (conversion to and from uint8 included);
- ``natural(x)``: the natural call (a batch tensor, or one uint8 image), which the throughput script times.

Peers are used only through their published packages (torchstain, albumentations, kornia). The one exception is the
HED jitter (Tellez et al. 2018): no maintained package installed here offers it (albumentations 2.0.8 has HEStain but
no HED jitter; kornia has no HED colour space; scikit-image only has the ``rgb2hed`` conversion), so it is a small
function of our own, :func:`hed_jitter`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
DOCS_DIR = ROOT / "docs" / "benchmarks"
RESULTS_DIR = ROOT / "benchmarks" / "results"

__all__ = [
    "Method",
    "build_methods",
    "environment",
    "hed_jitter",
    "to_uint8_hwc",
    "from_uint8_hwc",
    "write_csv",
    "write_json",
    "markdown_table",
    "load_contrimix",
]


# ------------------------------------------------------------------------------------------------------------------
# conversions
# ------------------------------------------------------------------------------------------------------------------
def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (B, 3, H, W) float [0, 1] -> (H, W, 3) or (B, H, W, 3) uint8."""
    y = (x.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    return y.movedim(-3, -1).cpu().numpy()


def from_uint8_hwc(a: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> (3, H, W) or (B, 3, H, W) float32 in [0, 1]."""
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a).movedim(-1, -3).float().div_(255.0)


# ------------------------------------------------------------------------------------------------------------------
# HED jitter (own function: no maintained package here offers it)
# ------------------------------------------------------------------------------------------------------------------
# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB), as in scikit-image's ``rgb_from_hed``.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def rgb_to_hed(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) HED concentrations (fixed Ruifrok basis, natural-log OD)."""
    od = -torch.log(x.clamp_min(1e-6))
    m = _HED_FROM_RGB.to(x.device, x.dtype)
    return torch.einsum("bchw,cd->bdhw", od, m)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    m = _RGB_FROM_HED.to(hed.device, hed.dtype)
    return torch.exp(-torch.einsum("bdhw,dc->bchw", hed, m)).clamp(0, 1)


def hed_jitter(
    x: torch.Tensor, sigma: float = 0.05, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """HED colour jitter (Tellez et al., 2018): per image and stain, hed' = hed·α + β, α ~ U(1±σ), β ~ U(±σ).

    Batched, per-sample parameters. x: (B, 3, H, W) float in [0, 1]. sigma 0.05 is Tellez's "HED-light".
    """
    b = x.shape[0]
    dev = generator.device if generator is not None else x.device
    alpha = 1 + (torch.rand(b, 3, 1, 1, generator=generator, device=dev) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, 1, 1, generator=generator, device=dev) * 2 - 1) * sigma
    hed = rgb_to_hed(x)
    return hed_to_rgb(hed * alpha.to(hed) + beta.to(hed)).to(x.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------------------------
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
        """Float (B, 3, H, W) in [0, 1] -> same. Per-image peers are looped over the batch."""
        if self.api == "batch":
            return self._batch_fn(batch)
        imgs = to_uint8_hwc(batch)
        out = np.stack([self._safe_image(im) for im in imgs])
        return from_uint8_hwc(out).to(batch.device, batch.dtype)

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


def _pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def _mosaic(images: Sequence[np.ndarray], max_tiles: int = 64, seed: int = 0) -> np.ndarray:
    """A square mosaic (uint8 H×W×3) of up to ``max_tiles`` equally sized images (used as a normalisation target)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(images))[:max_tiles]
    tiles = [images[i] for i in idx]
    n = int(math.ceil(math.sqrt(len(tiles))))
    h, w = tiles[0].shape[:2]
    canvas = np.full((n * h, n * w, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, n)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = t[:h, :w]
    # fill the empty cells with repeats so the mosaic has no glass
    for k in range(len(tiles), n * n):
        r, c = divmod(k, n)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = tiles[k % len(tiles)][:h, :w]
    return canvas


def _torchstain(kind: str, target: np.ndarray, backend: str = "numpy") -> Method:
    """torchstain Macenko or Reinhard normaliser fitted on ``target``.

    The numpy backend is the default: on CPU, one image at a time, it is the faster one here (torch backend Macenko
    ran at 21-23 img/s on 48-96 px tiles against 234-830 img/s for numpy), so it is the fair choice of peer.
    """
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
    return Method(
        f"torchstain-{kind}{suffix}",
        "normalise",
        "image",
        f"torchstain {_pkg_version('torchstain')}",
        f"{desc} normaliser, {backend} backend, target = mosaic of training-domain images; per image",
        _image_fn=fn,
    )


def _hestain(mode: str, seed: int, p: float = 1.0) -> Method:
    import albumentations as A

    t = A.HEStain(method=mode, p=p)
    t.set_random_seed(seed) if hasattr(t, "set_random_seed") else None

    def fn(im: np.ndarray) -> np.ndarray:
        return t(image=im)["image"]

    return Method(
        f"hestain-{mode.replace('random_preset', 'preset')}",
        "augment",
        "image",
        f"albumentations {_pkg_version('albumentations')}",
        f"albumentations HEStain(method={mode!r}, p={p}) defaults (intensity scale 0.7-1.3, shift ±0.2); per image",
        _image_fn=fn,
    )


def _hed(sigma: float, seed: int, p: float = 1.0) -> Method:
    g = torch.Generator().manual_seed(seed)

    def fn(x: torch.Tensor) -> torch.Tensor:
        gen = g if x.device.type == "cpu" else None
        out = hed_jitter(x, sigma, generator=gen)
        if p >= 1.0:
            return out
        sel = torch.rand(x.shape[0], generator=gen, device=gen.device if gen is not None else x.device) < p
        return torch.where(sel.to(x.device).view(-1, 1, 1, 1), out, x)

    return Method(
        "hed-jitter",
        "augment",
        "batch",
        "own (benchmarks/_common.py)",
        f"HED jitter (Tellez 2018), σ={sigma}, p={p}, per-sample; our own small function, no maintained package "
        "offers it",
        _batch_fn=fn,
    )


def _kornia_jitter(seed: int, p: float = 1.0) -> Method:
    import kornia.augmentation as K

    aug = K.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=p)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if next(iter(aug.buffers()), torch.empty(0)).device != x.device:
            aug.to(x.device)
        return aug(x)

    return Method(
        "kornia-colorjitter",
        "augment",
        "batch",
        f"kornia {_pkg_version('kornia')}",
        f"kornia.augmentation.ColorJitter(0.2, 0.2, 0.2, 0.05, p={p}), per-sample",
        _batch_fn=fn,
    )


def load_contrimix(weights: Any):
    """A frozen ContriMixModel from a registry name, a path or a model (``contrimix_aug.load_model``)."""
    import contrimix_aug

    return contrimix_aug.load_model(weights)


def weights_label(weights: Any, model=None) -> str:
    """A truthful label for a weights argument: its name/path and what its metadata says it was trained on."""
    meta = dict(getattr(model, "meta", {}) or {})
    base = str(weights) if not hasattr(weights, "config") else "<in-memory model>"
    if isinstance(weights, (str, os.PathLike)) and os.sep in str(weights):
        base = Path(weights).name
    trained = meta.get("training_data") or meta.get("trained_on") or meta.get("name")
    return f"{base}" + (f" ({trained})" if trained else "")


def contrimix_augment(name: str, model, *, seed: int, donors: str = "batch", p: float = 0.5, note: str = "") -> Method:
    import contrimix_aug

    kwargs: dict[str, Any] = dict(weights=model, p=p, seed=seed)
    if donors != "batch":
        kwargs["donors"] = donors
    aug = contrimix_aug.ContriMix(**kwargs)
    aug.train()

    def fn(x: torch.Tensor) -> torch.Tensor:
        mod_dev = next(iter(aug.parameters()), next(iter(aug.buffers()), torch.empty(0))).device
        if mod_dev != x.device:
            aug.to(x.device)
        with torch.no_grad():
            return aug(x)

    return Method(
        name,
        "augment",
        "batch",
        f"contrimix_aug {_pkg_version('contrimix_aug') or contrimix_aug.__version__}",
        note or f"ContriMix(p={p}, donors={donors!r})",
        _batch_fn=fn,
        extra={"module": aug},
    )


def contrimix_normalise(name: str, model, target: torch.Tensor | None, note: str = "") -> Method:
    import contrimix_aug

    norm = contrimix_aug.ContriMixNormalize(weights=model, target=target)
    norm.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        mod_dev = next(iter(norm.parameters()), next(iter(norm.buffers()), torch.empty(0))).device
        if mod_dev != x.device:
            norm.to(x.device)
        with torch.no_grad():
            return norm(x)

    return Method(
        name,
        "normalise",
        "batch",
        f"contrimix_aug {contrimix_aug.__version__}",
        note or "ContriMixNormalize: content of the image, fixed attribute matrix of the training-domain target",
        _batch_fn=fn,
        extra={"module": norm},
    )


PEER_NAMES = [
    "erm",
    "torchstain-macenko",
    "torchstain-reinhard",
    "hestain-preset",
    "hestain-macenko",
    "hestain-vahadane",
    "hed-jitter",
    "kornia-colorjitter",
]


def build_peers(
    names: Iterable[str], target_images: Sequence[np.ndarray] | None, seed: int = 0, p: float = 1.0
) -> list[Method]:
    """The non-ContriMix methods by name. ``target_images``: training-domain uint8 images for the normalisers;
    ``p``: per-image probability of every augmentation (normalisers always apply)."""
    out: list[Method] = []
    target = _mosaic(target_images, seed=seed) if target_images is not None and len(target_images) else None
    for n in names:
        if n == "erm":
            out.append(Method("erm", "none", "batch", "-", "no augmentation, no normalisation (floor)", _batch_fn=lambda x: x))
        elif n in ("torchstain-macenko", "torchstain-reinhard"):
            if target is None:
                raise ValueError(f"{n} needs target images from the training domains")
            out.append(_torchstain(n.split("-")[1], target))
        elif n in ("torchstain-macenko-torch", "torchstain-reinhard-torch"):
            if target is None:
                raise ValueError(f"{n} needs target images from the training domains")
            out.append(_torchstain(n.split("-")[1], target, backend="torch"))
        elif n.startswith("hestain-"):
            mode = {"hestain-preset": "random_preset", "hestain-macenko": "macenko", "hestain-vahadane": "vahadane"}[n]
            out.append(_hestain(mode, seed, p))
        elif n == "hed-jitter":
            out.append(_hed(0.05, seed, p))
        elif n == "kornia-colorjitter":
            out.append(_kornia_jitter(seed, p))
        else:
            raise ValueError(f"unknown peer {n!r}; known: {PEER_NAMES}")
    return out


def build_methods(*args, **kwargs) -> list[Method]:  # backwards-friendly alias
    return build_peers(*args, **kwargs)


def vahadane_normaliser_status() -> str:
    """Why no Vahadane *normaliser* is among the peers (checked at run time, reported in the outputs)."""
    try:
        importlib.import_module("torch_staintools")
        return "torch-staintools is importable but not wired in (non-commercial licence; optional)"
    except Exception:  # noqa: BLE001
        pass
    return (
        "not run: the only maintained Vahadane normaliser that could install here, torch-staintools 1.0.7 "
        "(non-commercial licence), requires kornia~=0.8.2 (this environment has kornia 0.9) and torchvision (not a "
        "dependency here; its PyPI wheels pin a CUDA torch build); StainTools needs SPAMS and is unmaintained; "
        "tiatoolbox/HistomicsTK pull large unrelated stacks. Vahadane appears as albumentations HEStain(method="
        "'vahadane') augmentation instead."
    )


# ------------------------------------------------------------------------------------------------------------------
# Environment capture
# ------------------------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command, versions, hardware and time of this run."""
    argv = list(sys.argv if argv is None else argv)
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "kornia", "albumentations", "torchstain", "contrimix_aug", "torchvision", "matplotlib"):
        v = _pkg_version(pkg)
        if v is None and pkg == "contrimix_aug":
            try:
                import contrimix_aug

                v = contrimix_aug.__version__
            except Exception:  # noqa: BLE001
                v = None
        versions[pkg] = v
    hw: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["cuda_version"] = torch.version.cuda
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        hw["memory_gib"] = round(mem / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cmd = " ".join(shlex.quote(a) for a in ["python", _rel(argv[0]), *argv[1:]]) if argv else ""
    return {
        "command": cmd,
        "git_commit": _git_commit(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions,
        "hardware": hw,
    }


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


# ------------------------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------------------------
def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, torch.Tensor):
        return _jsonable(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


def write_json(path: Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in keys})
    return path


def _fmt_csv(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
