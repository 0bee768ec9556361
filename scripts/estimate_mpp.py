"""Estimate the resolution (µm/px) of the CAMELYON17 tiles from nucleus size.

The tiles' source does not state their resolution. Lymph-node nuclei have the same size in every hospital, so the
ratio of median nucleus diameters between the tiles and the CAMELYON16 "normal" lymph-node patches (0.243 µm/px,
stated by the challenge) gives the tiles' µm/px. Both go through the same segmentation: haematoxylin (fixed
Ruifrok basis), Gaussian σ = 1 px, Otsu threshold, hole filling, round blobs only (area / (π r_max²) in
0.6-1.6); the CAMELYON16 patches are first downsampled 2× so that both are segmented at a similar scale.

    python scripts/estimate_mpp.py        # needs the data root (CONTRIMIX_AUG_DATA) and scipy
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from scipy import ndimage as ndi

from contrimix_aug.data import load_camelyon16_patches, load_camelyon17_tiles
from contrimix_aug.data.patches import resample_to_mpp
from contrimix_aug.optical_density import rgb_to_hed


def diameters(rgb: np.ndarray) -> list[float]:
    """Equivalent diameters (px) of the round nuclei of an (H, W, 3) uint8 image."""
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    h = ndi.gaussian_filter(rgb_to_hed(x)[0, 0].numpy().astype(np.float64), 1.0)
    hist, edges = np.histogram(h, 256)
    p, c = hist / hist.sum(), (edges[:-1] + edges[1:]) / 2
    w, mu = np.cumsum(p), np.cumsum(p * c)
    t = c[np.argmax((mu[-1] * w - mu) ** 2 / np.clip(w * (1 - w), 1e-12, None))]
    m = ndi.binary_fill_holes(ndi.binary_opening(h > t, iterations=1))
    lab, n = ndi.label(m)
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    rmax = ndi.maximum(ndi.distance_transform_edt(m), lab, idx)
    area = ndi.sum(m, lab, idx)
    ok = (rmax >= 2) & (area / (np.pi * rmax**2) > 0.6) & (area / (np.pi * rmax**2) < 1.6)
    return list(2 * np.sqrt(area[ok] / np.pi))


def main() -> int:
    c16 = load_camelyon16_patches(progress=False)
    ref_mpp = c16.um_per_px * 2
    ref = [d for im, y in zip(c16.images, c16.labels) if y == 0
           for d in diameters(resample_to_mpp(im, c16.um_per_px, ref_mpp))]
    ref_um = float(np.median(ref)) * ref_mpp
    print(f"CAMELYON16 normal patches: median nucleus diameter {np.median(ref):.2f} px at {ref_mpp:.3f} um/px "
          f"= {ref_um:.2f} um ({len(ref)} nuclei)")
    tiles = load_camelyon17_tiles(progress=False)
    every = []
    for h in range(5):
        d = [v for im, hh in zip(tiles.images, tiles.hospitals) if hh == h for v in diameters(im)]
        every += d
        print(f"CAMELYON17 hospital {h}: median {np.median(d):.2f} px -> {ref_um / np.median(d):.3f} um/px")
    print(f"all hospitals: median {np.median(every):.2f} px -> {ref_um / np.median(every):.3f} um/px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
