"""The ContriMix loss terms against independent float64 computations, and the loss weights (the ContriMixLoss step
is tested in test_training_contrimix_loss.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contrimix_aug.training import (
    LOSS_PRESETS,
    LossWeights,
    aggregate_cross_entropy,
    attribute_consistency_loss,
    attribute_repulsion_loss,
    content_consistency_loss,
    group_by_image,
    self_reconstruction_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core runner OpenMP spinning costs 10×."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


@pytest.fixture
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    """Six real H&E crops of 32 px (odd count of sources mixed, so batches are not uniform)."""
    return real_tiles[:6, :, :32, :32].contiguous()


class TestSelfReconstruction:
    def test_correctness(self, tiles, generator):
        noisy = (tiles + 0.1 * torch.randn(tiles.shape, generator=generator)).clamp(0, 1)
        err = np.abs(_np(noisy) - _np(tiles)).reshape(len(tiles), -1)
        expected = 0.8 * err.mean() + 0.2 * np.quantile(err, 0.9, axis=1).max()
        assert self_reconstruction_loss(noisy, tiles).item() == pytest.approx(expected, rel=1e-5)

    def test_quantile_matches_torch_quantile(self, generator):
        x = torch.rand(3, 1001, generator=generator)  # interpolating position (0.9 · 1000 = 900 exactly)
        y = torch.rand(3, 1234, generator=generator)  # 0.9 · 1233 = 1109.7: interpolates between ranks
        from contrimix_aug.training.losses import _per_image_quantile

        for t in (x, y):
            torch.testing.assert_close(_per_image_quantile(t, 0.9), torch.quantile(t, 0.9, dim=1))

    def test_quantile_term_feeds_only_the_worst_image(self, tiles, generator):
        noise = 0.05 * torch.randn(tiles.shape, generator=generator)
        noise[2] *= 4  # image 2 has the worst tail
        grads = []
        for qw in (0.2, 0.0):
            recon = (tiles + noise).requires_grad_(True)
            self_reconstruction_loss(recon, tiles, quantile_weight=qw).backward()
            grads.append(recon.grad)
        extra = (grads[0] - grads[1]).abs().flatten(1).sum(1)
        assert extra[2] > 0 and extra[[0, 1, 3, 4, 5]].sum() == 0

    def test_exception(self, tiles):
        with pytest.raises(ValueError, match="shapes differ"):
            self_reconstruction_loss(tiles, tiles[:2])


class TestConsistency:
    def test_attribute(self, generator):
        a = torch.randn(3, 4, 3, 5, generator=generator)
        b = torch.randn(3, 4, 3, 5, generator=generator)
        assert attribute_consistency_loss(a, b).item() == pytest.approx(np.abs(_np(a) - _np(b)).mean(), rel=1e-6)

    def test_content_broadcasts_over_views(self, generator):
        content = torch.randn(4, 3, 7, 5, generator=generator)
        re = torch.randn(3, 4, 3, 7, 5, generator=generator)
        expected = np.mean([np.abs(_np(re[m]) - _np(content)).mean() for m in range(3)])
        assert content_consistency_loss(re, content).item() == pytest.approx(expected, rel=1e-6)
        # the flat view-major layout ((M+1)·B, ...) gives the same value
        assert content_consistency_loss(re.flatten(0, 1), content).item() == pytest.approx(expected, rel=1e-6)

    def test_content_exception(self, generator):
        with pytest.raises(ValueError, match="multiple of the batch"):
            content_consistency_loss(torch.zeros(5, 3, 4, 4), torch.zeros(2, 3, 4, 4))


class TestRepulsion:
    def test_correctness(self, generator):
        views, b, c, k = 4, 3, 3, 2
        a = 0.05 * torch.randn(views, b, c, k, generator=generator, dtype=torch.float64)
        total = 0.0
        for n in range(b):
            for i in range(views):
                for j in range(views):
                    if i != j:
                        d = math.dist(a[i, n].flatten().tolist(), a[j, n].flatten().tolist())
                        total += math.exp(-d / 0.1)
        expected = total / (b * views * views)
        assert attribute_repulsion_loss(a, tau=0.1, eps=0.0).item() == pytest.approx(expected, rel=1e-6)

    def test_identical_views_are_finite(self):
        a = torch.ones(3, 2, 3, 4, requires_grad=True)  # all views equal: distance 0
        loss = attribute_repulsion_loss(a)
        loss.backward()
        assert loss.item() == pytest.approx(2 * 3 * 2 / (2 * 9), rel=1e-4)  # every off-diagonal exp(0) = 1
        assert torch.isfinite(a.grad).all()


class TestCrossEntropyAggregation:
    def test_group_by_image_is_q4_fixed(self):
        views, b = 3, 4
        # value = 10·image + view, laid out view-major (index m·B + image)
        per_view = torch.tensor([10.0 * n + m for m in range(views) for n in range(b)])
        groups = group_by_image(per_view, views)
        assert groups.shape == (b, views)
        assert torch.equal(groups, torch.tensor([[10.0 * n + m for m in range(views)] for n in range(b)]))
        # the reference's reshape(-1, M+1) mixes images: its first row is images 0, 1, 2 of view 0
        assert not torch.equal(per_view.reshape(-1, views), groups)

    def test_modes(self, generator):
        views, b = 3, 5
        per_view = torch.rand(views * b, generator=generator, dtype=torch.float64)
        g = _np(per_view).reshape(views, b).T  # independent grouping: numpy (M+1, B) transpose
        assert aggregate_cross_entropy(per_view, views, "mean").item() == pytest.approx(g.mean())
        assert aggregate_cross_entropy(per_view, views, "max").item() == pytest.approx(g.max(1).mean())
        assert aggregate_cross_entropy(per_view, views, "augreg").item() == pytest.approx(
            g.mean() + 10 * g.var(axis=1, ddof=1).mean()
        )
        assert aggregate_cross_entropy(per_view[:b], 1, "augreg").item() == pytest.approx(g[:, 0].mean())

    def test_exception(self):
        with pytest.raises(ValueError, match="mode must be"):
            aggregate_cross_entropy(torch.zeros(6), 2, "median")
        with pytest.raises(ValueError, match="M\\+1 = 4"):
            group_by_image(torch.zeros(6), 4)


class TestLossWeights:
    def test_presets(self):
        assert LossWeights() == LOSS_PRESETS["tcga"] == LossWeights(0.6, 0.1, 0.2, 0.05, 0.0)
        cam = LossWeights.preset("camelyon-joint")
        assert (cam.self_recon, cam.attr_cons, cam.cont_cons, cam.attr_repulsion, cam.ce) == (0.1, 0.1, 0.3, 0.0, 0.5)
        assert LossWeights.preset("rxrx1") == LossWeights(0.9, 0.04, 0.05, 0.01, 0.0)

    def test_paired_terms_default_to_zero(self):
        w = LossWeights()
        assert (w.pair_recon, w.pair_content) == (0.0, 0.0)
        assert all(p.pair_recon == 0 and p.pair_content == 0 for p in LOSS_PRESETS.values())
        p = LossWeights.from_dict({"preset": "tcga", "pair_recon": 0.6, "pair_content": 0.2})
        assert (p.pair_recon, p.pair_content, p.self_recon) == (0.6, 0.2, 0.6)
        assert LossWeights.from_dict(p.to_dict()) == p
        with pytest.raises(ValueError, match=">= 0"):
            LossWeights(pair_content=-0.1)

    def test_from_dict(self):
        w = LossWeights.from_dict({"preset": "rxrx1", "attr_cons": 0.5})
        assert w.attr_cons == 0.5 and w.self_recon == 0.9
        with pytest.raises(ValueError, match="unknown keys"):
            LossWeights.from_dict({"selfrecon": 1})
        with pytest.raises(ValueError, match="unknown loss preset"):
            LossWeights.preset("imagenet")
        with pytest.raises(ValueError, match=">= 0"):
            LossWeights(self_recon=-1)
