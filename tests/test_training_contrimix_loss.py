"""ContriMixLoss: one training step's objective on real H&E crops (encode once, mix, generate, re-encode, score),
including the paired re-staining terms."""

from __future__ import annotations

import pytest
import torch

from contrimix_aug import ContriMixModel
from contrimix_aug.model_config import ModelConfig
from contrimix_aug.training import (
    ContriMixLoss,
    LossWeights,
    RestainConfig,
    attribute_repulsion_loss,
    content_consistency_loss,
    restain,
    self_reconstruction_loss,
)


@pytest.fixture
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    """Six real H&E crops of 32 px (odd count of sources mixed, so batches are not uniform)."""
    return real_tiles[:6, :, :32, :32].contiguous()


class _Counter:
    def __init__(self, *modules: torch.nn.Module) -> None:
        self.calls: list[tuple[str, int]] = []
        for m in modules:
            m.register_forward_hook(lambda mod, inp, out: self.calls.append((type(mod).__name__, inp[0].shape[0])))


class TestContriMixLoss:
    def test_encoders_run_once_on_originals_and_once_on_all_views(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        counter = _Counter(model.content_encoder, model.attribute_encoder)
        loss_fn = ContriMixLoss(model, num_mixes=3)
        loss_fn(tiles, generator=generator)[0].backward()
        b = tiles.shape[0]
        assert sorted(counter.calls) == sorted(
            [("ContentEncoder", b), ("AttributeEncoder", b), ("ContentEncoder", 4 * b), ("AttributeEncoder", 4 * b)]
        )

    def test_terms_match_independent_recomputation(self, tiles, tiny_config):
        torch.manual_seed(0)  # only for the weights' init: the step itself draws from its own generator
        model = ContriMixModel(tiny_config)
        loss_fn = ContriMixLoss(model, num_mixes=2)
        total, terms, aux = loss_fn(tiles, generator=torch.Generator().manual_seed(3))
        donors = aux["donors"]
        assert donors.shape == (2, len(tiles))
        assert (donors != torch.arange(len(tiles))).all()  # never the image itself
        with torch.no_grad():
            content, attrs = model.encode(tiles)
            stack = [attrs] + [attrs[donors[m]] for m in range(2)]
            signals = torch.stack([model.decode_signal(content, a) for a in stack])
            torch.testing.assert_close(aux["signals"], signals)
            recon = model.decode(content, attrs)
            flat = signals.flatten(0, 1)
            exp = {
                "self_recon": self_reconstruction_loss(recon, tiles),
                "attr_cons": (model.attribute_encoder(flat) - torch.cat(stack)).abs().mean(),
                "cont_cons": (model.content_encoder(flat) - content.repeat(3, 1, 1, 1)).abs().mean(),
                "attr_repulsion": attribute_repulsion_loss(torch.stack(stack)),
            }
        for name, value in exp.items():
            torch.testing.assert_close(terms[name], value, msg=name)
        w = LossWeights()
        weighted = sum(getattr(w, n) * v for n, v in exp.items())
        torch.testing.assert_close(total, weighted)
        torch.testing.assert_close(aux["reconstruction"], recon)

    def test_gradients_reach_every_parameter(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        ContriMixLoss(model, num_mixes=2)(tiles, generator=generator)[0].backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    def test_zero_weight_terms_are_skipped(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        counter = _Counter(model.content_encoder)
        w = LossWeights(self_recon=1.0, attr_cons=0.1, cont_cons=0.0, attr_repulsion=0.0)
        _, terms, _ = ContriMixLoss(model, w, num_mixes=2)(tiles, generator=generator)
        assert sorted(terms) == ["attr_cons", "self_recon"]
        assert len(counter.calls) == 1  # no content re-encoding

    def test_joint_classifier_sees_all_views(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        clf = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        seen = []
        clf.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
        labels = torch.tensor([0, 1, 0, 1, 1, 0])
        w = LossWeights.preset("camelyon-joint")
        loss_fn = ContriMixLoss(model, w, num_mixes=2, classifier_input="original", ce_aggregation="max")
        total, terms, aux = loss_fn(tiles, generator=generator, classifier=clf, labels=labels)
        assert seen[0].shape == (3 * len(tiles), 3, 32, 32)
        torch.testing.assert_close(seen[0][: len(tiles)], tiles)  # view 0 = the originals
        per = torch.nn.functional.cross_entropy(aux["logits"], labels.repeat(3), reduction="none")
        torch.testing.assert_close(terms["ce"], per.view(3, -1).max(0).values.mean())
        total.backward()
        assert clf[2].weight.grad is not None and model.attribute_encoder.head.weight.grad is not None

    def test_frozen_encoders_train_only_the_classifier(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        counter = _Counter(model.content_encoder, model.attribute_encoder)
        clf = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        loss_fn = ContriMixLoss(model, num_mixes=2, freeze_encoders=True)
        total, terms, _ = loss_fn(tiles, generator=generator, classifier=clf, labels=torch.zeros(6, dtype=torch.long))
        assert sorted(terms) == ["ce", "self_recon"] and total is terms["ce"]
        total.backward()
        assert all(not p.requires_grad for p in model.parameters())
        assert clf[2].weight.grad is not None
        assert len(counter.calls) == 2  # originals only: no re-encoding

    def test_exception(self, tiles, tiny_config):
        model = ContriMixModel(tiny_config)
        with pytest.raises(ValueError, match="no classifier"):
            ContriMixLoss(model, LossWeights.preset("camelyon-joint"))(tiles)
        with pytest.raises(ValueError, match="weights.ce == 0"):
            ContriMixLoss(model)(tiles, classifier=torch.nn.Identity(), labels=torch.zeros(6, dtype=torch.long))
        with pytest.raises(ValueError, match="num_mixes"):
            ContriMixLoss(model, num_mixes=-1)
        with pytest.raises(ValueError, match="batch of one"):
            ContriMixLoss(model)(tiles[:1])


class TestPairedTerms:
    """pair_recon / pair_content: x and restain(x) show the same tissue; contents must agree and swapping their
    attributes must reproduce each other."""

    def test_terms_match_independent_recomputation(self, tiles, tiny_config):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # weights' init only
            model = ContriMixModel(tiny_config)
        w = LossWeights(pair_recon=0.6, pair_content=0.2)
        cfg = RestainConfig(od_scale=0.4)
        loss_fn = ContriMixLoss(model, w, num_mixes=2, restain=cfg)
        total, terms, aux = loss_fn(tiles, generator=torch.Generator().manual_seed(3))
        assert {"pair_recon", "pair_content"} <= set(terms)
        # the step's draws: donors first, then the re-staining, all from the one generator
        g = torch.Generator().manual_seed(3)
        from contrimix_aug.mixing import sample_donors

        donors = sample_donors(len(tiles), 2, generator=g)
        assert torch.equal(donors, aux["donors"])
        other = restain(tiles, cfg, generator=g)
        with torch.no_grad():
            c1, a1 = model.encode(tiles)
            c2, a2 = model.encode(other)
            cross = torch.cat([model.decode(c1, a2), model.decode(c2, a1)])
            want_recon = self_reconstruction_loss(cross, torch.cat([other, tiles]))
            want_content = content_consistency_loss(c2.unsqueeze(0), c1)
        torch.testing.assert_close(terms["pair_recon"], want_recon)
        torch.testing.assert_close(terms["pair_content"], want_content)
        rest = sum(getattr(LossWeights(), n) * terms[n] for n in ("self_recon", "attr_cons", "cont_cons",
                                                                   "attr_repulsion"))
        torch.testing.assert_close(total, rest + 0.6 * want_recon + 0.2 * want_content)

    def test_off_by_default_and_gradients(self, tiles, tiny_config, generator):
        model = ContriMixModel(tiny_config)
        _, terms, _ = ContriMixLoss(model, num_mixes=2)(tiles, generator=generator)
        assert "pair_recon" not in terms and "pair_content" not in terms
        w = LossWeights(self_recon=0.0, attr_cons=0.0, cont_cons=0.0, attr_repulsion=0.0, pair_recon=1.0)
        total, terms, _ = ContriMixLoss(model, w, num_mixes=0)(tiles, generator=generator)
        assert set(terms) == {"self_recon", "pair_recon"}
        total.backward()
        assert model.content_encoder.conv_in.weight.grad.abs().sum() > 0
        assert model.attribute_encoder.stem.weight.grad.abs().sum() > 0

    def test_needs_rgb(self, tiny_config):
        grey = ContriMixModel(ModelConfig(in_channels=1, mode="linear", num_attributes=3, attr_widths=(4, 8)))
        with pytest.raises(ValueError, match="paired re-staining terms need 3-channel"):
            ContriMixLoss(grey, LossWeights(pair_recon=0.5))
        ContriMixLoss(grey, LossWeights())  # without them a 1-channel model is fine
