"""Do attributes carry the whole stain? The same tissue in another real stain as the donor.

Pairs (x, x') of identical tissue: every CAMELYON17 tile (resampled to ``mpp``) re-rendered in the stain of every
other hospital by both renderers (:mod:`..renderers`; each hospital's stain fitted on its five tiles). For a
ContriMix model, ``decode(content(x), attributes(x'))`` should reproduce x': :func:`contrimix_aug.quality.gap_closed`
(share of the colour gap closed, 1 = x' reproduced) and ``content_agreement`` (content(x) vs content(x')). Peers
get the same x' as their reference: RGB mean/std transfer, Reinhard and Macenko (torchstain).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch

from ..methods import to_float, to_uint8_hwc
from ..renderers import RENDERERS, fit_stain, render

from contrimix_aug.data import load_camelyon17_tiles
from contrimix_aug.data.patches import resample_to_mpp
from contrimix_aug.quality import gap_closed, stain_transfer

__all__ = ["PEERS", "pairs", "peer_output", "score_model", "score_peers"]

PEERS = ("rgb-meanstd", "reinhard", "macenko")


@functools.lru_cache(maxsize=4)
def pairs(renderer: str, mpp: float = 0.5) -> dict[str, np.ndarray]:
    """{"x", "x_ref": (P, H, W, 3) uint8, "src", "tgt": (P,) hospital of the tissue and of the stain}."""
    tiles = load_camelyon17_tiles(progress=False)
    stains = {h: fit_stain([im for im, hh in zip(tiles.images, tiles.hospitals) if hh == h]) for h in range(5)}
    xs, refs, src, tgt = [], [], [], []
    for im, h in zip(tiles.images, tiles.hospitals):
        small = resample_to_mpp(im, tiles.um_per_px, mpp)
        for t in range(5):
            if t == h:
                continue
            xs.append(small)
            refs.append(render(small, renderer, stains[int(h)], stains[t]))
            src.append(int(h))
            tgt.append(t)
    return {"x": np.stack(xs), "x_ref": np.stack(refs), "src": np.asarray(src), "tgt": np.asarray(tgt)}


def peer_output(name: str, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """A peer's rendering of ``x`` with ``ref`` as its reference (uint8 HWC each)."""
    if name == "rgb-meanstd":
        a, r = x.astype(np.float64), ref.astype(np.float64)
        out = (a - a.mean((0, 1))) / np.maximum(a.std((0, 1)), 1e-3) * r.std((0, 1)) + r.mean((0, 1))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
    import torchstain

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if name == "reinhard":
            n = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
            n.fit(ref)
            out = n.normalize(x)
        elif name == "macenko":
            n = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
            n.fit(ref)
            out = n.normalize(x, stains=False)[0]
        else:
            raise ValueError(f"unknown peer {name!r}; known {PEERS}")
    return np.clip(np.asarray(out), 0, 255).astype(np.uint8)


def _summary(values: torch.Tensor, src: np.ndarray, heldout: tuple[int, ...]) -> dict[str, float]:
    v = values.double().numpy()
    held = np.isin(src, heldout)
    return {"mean": float(v.mean()), "median": float(np.median(v)), "heldout_src_mean": float(v[held].mean()),
            "n": int(v.size)}


def score_model(model, renderer: str, *, heldout: tuple[int, ...] = (1, 2), mpp: float = 0.5) -> dict:
    """gap closed and content agreement of a ContriMix model on the pairs of ``renderer``."""
    p = pairs(renderer, mpp)
    res = stain_transfer(model, to_float(p["x"]), to_float(p["x_ref"]))
    return {"gap_closed": _summary(res["gap_closed"], p["src"], heldout),
            "content_agreement": _summary(res["content_agreement"], p["src"], heldout)}


def score_peers(renderer: str, *, heldout: tuple[int, ...] = (1, 2), mpp: float = 0.5) -> dict[str, dict]:
    """gap closed of each peer of :data:`PEERS` on the pairs of ``renderer``."""
    p = pairs(renderer, mpp)
    out = {}
    for name in PEERS:
        y = np.stack([peer_output(name, a, r) for a, r in zip(p["x"], p["x_ref"])])
        out[name] = {"gap_closed": _summary(gap_closed(to_float(p["x"]), to_float(p["x_ref"]), to_float(y)),
                                            p["src"], heldout)}
    return out


def run(models: dict[str, object], log=print) -> dict:
    """The stain-transfer table: every model and peer on both renderers."""
    out: dict = {"task": __doc__.splitlines()[0], "renderers": list(RENDERERS), "models": {}, "peers": {}}
    for r in RENDERERS:
        out["peers"][r] = score_peers(r)
        for name, m in models.items():
            out["models"].setdefault(name, {})[r] = score_model(m, r)
            g = out["models"][name][r]["gap_closed"]["mean"]
            log(f"[stain-transfer] {r:12s} {name:14s} gap closed {g:.3f}")
        for name, v in out["peers"][r].items():
            log(f"[stain-transfer] {r:12s} {name:14s} gap closed {v['gap_closed']['mean']:.3f}")
    return out


__all__ += ["run", "to_uint8_hwc"]
