"""Tissue and marking-ink masks (contrimix_aug.tissue) on the vendored real crops: glass, green/teal/blue ink,
the 8-bit optical density table, summed-area tables and the batch mask of float tensors."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from contrimix_aug import tissue as T
from contrimix_aug.optical_density import T_MIN_UINT8, rgb_to_od



# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------


def test_tissue_mask_on_real_tiles_and_glass(fixture_tiles_u8, skin_edge):
    for crops in fixture_tiles_u8.values():
        for t in crops:
            assert T.tissue_mask(t).mean() >= 0.9  # the fixtures were cut with >= 90 % tissue
    glass = np.full((32, 32, 3), (236, 236, 232), np.uint8)
    assert not T.tissue_mask(glass).any()
    # skin edge crop: the top band is glass above the stratum corneum, the bottom band is epidermis
    m = T.tissue_mask(skin_edge)
    assert m[:40].mean() < 0.35 and m[-60:].mean() > 0.95  # camera noise speckles the glass a little
    # the rule itself: bright + unsaturated = glass; bright but saturated pink = tissue
    px = np.array([[[220, 220, 220], [240, 180, 220], [120, 60, 140]]], np.uint8)
    assert T.tissue_mask(px).tolist() == [[False, True, True]]


def test_ink_mask_finds_cmu1_green_ink_and_spares_stain(cmu1_edge, skin_edge, fixture_tiles_u8):
    ink = T.ink_mask(cmu1_edge)
    assert 0.05 < ink.mean() < 0.4
    od = T.optical_density(cmu1_edge)
    # flagged pixels absorb red more than green (green/teal ink), the rest do not on average
    assert (od[..., 0] - od[..., 1])[ink].mean() > 0.1
    assert not (ink & ~T.tissue_mask(cmu1_edge)).any()  # glass is never ink
    assert T.ink_mask(skin_edge).mean() < 1e-3
    for crops in fixture_tiles_u8.values():
        for t in crops:
            assert not T.ink_mask(t).any()


def test_ink_mask_flags_blue_ink_but_not_haematoxylin():
    blue_ink = np.full((16, 16, 3), (30, 44, 110), np.uint8)  # prostate_ink's blot
    haematoxylin = np.full((16, 16, 3), (80, 50, 140), np.uint8)  # dark nuclei: OD_G > OD_R
    assert T.ink_mask(blue_ink).all()
    assert not T.ink_mask(haematoxylin).any()


def test_optical_density_range():
    od = T.optical_density(np.array([[[255, 1, 0]]], np.uint8))
    np.testing.assert_allclose(od[0, 0], [0.0, np.log10(255), np.log10(255)], rtol=1e-6)


def test_mask_input_checks():
    with pytest.raises(ValueError, match="RGB"):
        T.tissue_mask(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        T.ink_mask(np.zeros((8, 8, 3), np.float32))


def test_optical_density_is_the_packages_one_conversion(cmu1_edge):
    """The uint8 lookup table equals rgb_to_od with the 8-bit floor (a 0 pixel counts as the darkest non-zero one)."""
    od = T.optical_density(cmu1_edge)
    want = rgb_to_od(torch.from_numpy(cmu1_edge).double() / 255, T_MIN_UINT8).float().numpy()
    np.testing.assert_allclose(od, want, rtol=1e-6, atol=1e-7)
    assert od.dtype == np.float32 and od.shape == cmu1_edge.shape
    assert T_MIN_UINT8 == pytest.approx(1 / 255)


def test_integral(skin_edge):
    m = T.tissue_mask(skin_edge)
    ii = T.integral(m)
    assert ii.shape == (257, 257) and ii.dtype == np.int32
    assert ii[-1, -1] == m.sum() and (ii[0] == 0).all() and (ii[:, 0] == 0).all()
    y, x, s = 37, 101, 64
    assert ii[y + s, x + s] - ii[y, x + s] - ii[y + s, x] + ii[y, x] == m[y:y + s, x:x + s].sum()


def test_check_rgb(skin_edge):
    assert T.check_rgb(skin_edge) is not None and T.check_rgb(skin_edge).shape == (256, 256, 3)
    with pytest.raises(ValueError, match=r"img: expected an \(H, W, 3\) RGB array"):
        T.check_rgb(skin_edge[..., :2], "img")
    with pytest.raises(TypeError, match="round\\(\\).astype\\(np.uint8\\)"):
        T.check_rgb(skin_edge.astype(np.float32) / 255)


def test_tissue_mask_tensor_matches_numpy(skin_edge, cmu1_edge):
    x = torch.from_numpy(np.stack([skin_edge, cmu1_edge])).permute(0, 3, 1, 2).float() / 255
    m = T.tissue_mask_tensor(x)
    assert m.shape == (2, 256, 256) and m.dtype == torch.bool
    assert np.array_equal(m[0].numpy(), T.tissue_mask(skin_edge))
    assert np.array_equal(m[1].numpy(), T.tissue_mask(cmu1_edge))
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\) RGB images"):
        T.tissue_mask_tensor(x[:, :1])


def test_the_masks_left_data_patches():
    from contrimix_aug.data import patches as P

    assert not {"tissue_mask", "ink_mask", "optical_density"} & set(P.__all__)
