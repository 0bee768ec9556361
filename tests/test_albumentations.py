"""contrimix_aug.albumentations.AlbumentationsContriMix: an albumentations ImageOnlyTransform, on real H&E tiles."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

import contrimix_aug as ca
from contrimix_aug.bank import compute_bank
from contrimix_aug.mixing import sample_mix_params
from contrimix_aug.optical_density import rgb_to_od

A = pytest.importorskip("albumentations")
from contrimix_aug.albumentations import AlbumentationsContriMix as ContriMix
from helpers import make_handset_model, make_tiny_model

H, W = 40, 48


def mean_od_hwc(img: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0))
    return rgb_to_od(x).mean((0, 1)).numpy()


@pytest.fixture(scope="module")
def tiles_u8(real_tiles: torch.Tensor) -> np.ndarray:
    """Real H&E tiles as albumentations images: (N, 40, 48, 3) uint8."""
    t = real_tiles[..., :H, :W]
    assert t.shape[0] >= 4 and t.shape[-2:] == (H, W)
    return np.ascontiguousarray((t.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())


@pytest.fixture(scope="module")
def bank_u8(tiles_u8: np.ndarray) -> np.ndarray:
    return tiles_u8[-3:].copy()


@pytest.fixture(scope="module")
def tiny_with_bank(bank_u8: np.ndarray) -> ca.ContriMixModel:
    base = make_tiny_model()
    x = torch.from_numpy(bank_u8).permute(0, 3, 1, 2).float() / 255
    model = make_tiny_model(bank=compute_bank(base, x))
    return model


class TestBasics:
    def test_is_image_only_transform(self, tiny_with_bank):
        import contrimix_aug.albumentations as mod

        assert mod.__all__ == ["AlbumentationsContriMix"] and not hasattr(mod, "ContriMix")
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        assert isinstance(t, A.ImageOnlyTransform)
        assert set(t.targets) >= {"image", "images"}
        assert t.get_transform_init_args_names() == ("weights", "strength", "donors", "spread", "bank", "device",
                                                     "render_guard")
        assert repr(t).startswith(
            "AlbumentationsContriMix(weights=<ContriMixModel>, p=1.0, donors='sampled', spread=0.7, strength=1.0, "
            "bank=3, C=3, K=3")
        named = ContriMix(weights="camelyon", p=0.5, strength=(0.2, 0.9))
        assert repr(named).startswith("AlbumentationsContriMix(weights='camelyon', p=0.5, donors='sampled', "
                                      "spread=0.7, strength=(0.2, 0.9), bank=")
        assert "weights='camelyon'" in repr(A.Compose([named]))  # how a pipeline prints it

    def test_uint8_in_uint8_out(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[0]
        out = A.Compose([ContriMix(weights=tiny_with_bank, p=1.0)], seed=0)(image=img)["image"]
        assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous
        assert not np.array_equal(out, img)

    def test_uint8_rounds_not_truncates(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[0]
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        out_u8 = t.apply(img, donor=1, strength=0.7)
        out_f = t.apply(img.astype(np.float32) / 255, donor=1, strength=0.7)
        assert np.array_equal(out_u8, np.clip(np.round(out_f * 255), 0, 255).astype(np.uint8))
        assert abs(out_u8.astype(np.float64).mean() - (out_f * 255).mean()) < 0.05  # truncation would be ~ -0.5

    def test_float32_in_float32_out(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[1].astype(np.float32) / 255
        out = A.Compose([ContriMix(weights=tiny_with_bank, p=1.0)], seed=0)(image=img)["image"]
        assert out.dtype == np.float32 and out.shape == img.shape
        assert 0.0 <= out.min() and out.max() <= 1.0

    @pytest.mark.parametrize("hi, lo", [(1.001, 0.0), (1.009, -0.006)])
    def test_float32_small_overshoot_is_clamped(self, tiny_with_bank, tiles_u8, hi, lo):
        """A float image a little outside [0, 1] (resize overshoot, jitter) is clamped, not refused."""
        img = tiles_u8[1].astype(np.float32) / 255
        over = img.copy()
        over.flat[over.argmax()], over.flat[over.argmin()] = hi, lo
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        out = t.apply(over, donor=1, strength=0.7)
        assert np.array_equal(out, t.apply(np.clip(over, 0, 1), donor=1, strength=0.7))
        assert 0.0 <= out.min() and out.max() <= 1.0 and not np.array_equal(out, np.clip(over, 0, 1))
        far = img.copy()
        far.flat[far.argmax()] = 1.3  # beyond the tolerance of 0.15
        with pytest.raises(ValueError, match="an earlier float step"):
            t.apply(far, donor=1, strength=0.7)

    def test_p0_is_identity(self, tiny_with_bank, tiles_u8):
        out = A.Compose([ContriMix(weights=tiny_with_bank, p=0.0)], seed=0)(image=tiles_u8[0])["image"]
        assert np.array_equal(out, tiles_u8[0])

    def test_colour_transfer_from_bank(self, tiles_u8, bank_u8):
        handset = make_handset_model()
        t = ContriMix(weights=handset, p=1.0, bank=bank_u8, render_guard=False, donors="bank")
        for seed in range(3):
            out = A.Compose([t], seed=seed)(image=tiles_u8[0])["image"]
            d = t.get_applied_params()["donor"]
            np.testing.assert_allclose(mean_od_hwc(out), mean_od_hwc(bank_u8[d]), atol=1e-2, rtol=3e-2)

    def test_strength_zero_is_self_reconstruction(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[2].astype(np.float32) / 255
        out = ContriMix(weights=tiny_with_bank, p=1.0, strength=0.0, render_guard=False).apply(img, donor=0,
                                                                                              strength=0.0)
        rec = tiny_with_bank(torch.from_numpy(img).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(out, rec, atol=1e-5)  # float32 rounding through log10/exp; batch-of-one vs batched kernels

    def test_single_channel(self, tiles_u8):
        gray = tiles_u8[..., 1]  # a real single-channel image: the green channel
        bank = torch.from_numpy(gray[-2:]).float().div(255)[:, None]
        model = make_tiny_model(channels=1)
        t = ContriMix(weights=model, p=1.0, bank=bank)
        out = A.Compose([t], seed=0)(image=gray[0])["image"]
        assert out.shape == gray[0].shape and out.dtype == np.uint8
        out3 = A.Compose([t], seed=0)(image=gray[0][..., None])["image"]
        assert out3.shape == (H, W, 1)
        assert np.array_equal(out3[..., 0], out)


class TestCompose:
    def test_masks_bboxes_keypoints_pass_through(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[0]
        mask = (mean_od_pixels(img) > 0.3).astype(np.uint8)
        bboxes = np.array([[2, 3, 20, 30], [10, 5, 40, 35]], dtype=np.float32)
        keypoints = np.array([[5, 6], [30, 20]], dtype=np.float32)
        pipe = A.Compose(
            [ContriMix(weights=tiny_with_bank, p=1.0)],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
            keypoint_params=A.KeypointParams(format="xy"),
            seed=0,
        )
        out = pipe(image=img, mask=mask, masks=[mask, 1 - mask], bboxes=bboxes, labels=[1, 2], keypoints=keypoints)
        assert not np.array_equal(out["image"], img)
        assert np.array_equal(out["mask"], mask)
        assert all(np.array_equal(a, b) for a, b in zip(out["masks"], [mask, 1 - mask]))
        np.testing.assert_allclose(np.asarray(out["bboxes"]), bboxes)
        np.testing.assert_allclose(np.asarray(out["keypoints"]), keypoints)
        assert list(out["labels"]) == [1, 2]

    def test_with_geometric_transform(self, tiny_with_bank, tiles_u8):
        img = tiles_u8[0]
        mask = (mean_od_pixels(img) > 0.3).astype(np.uint8)
        pipe = A.Compose([A.HorizontalFlip(p=1.0), ContriMix(weights=tiny_with_bank, p=1.0)], seed=0)
        out = pipe(image=img, mask=mask)
        assert np.array_equal(out["mask"], mask[:, ::-1])

    def test_seed_reproducible(self, tiny_with_bank, tiles_u8):
        def run(seed):
            pipe = A.Compose([ContriMix(weights=tiny_with_bank, p=0.5, strength=(0.2, 1.0))], seed=seed)
            return [pipe(image=img)["image"] for img in tiles_u8]

        a, b, c = run(7), run(7), run(8)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c))
        changed = [not np.array_equal(x, img) for x, img in zip(a, tiles_u8)]
        assert any(changed) and not all(changed)  # p=0.5 over the real tiles

    def test_global_rngs_untouched(self, tiny_with_bank, tiles_u8):
        import random

        np_state, py_state, t_state = np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state()
        A.Compose([ContriMix(weights=tiny_with_bank, p=0.5, strength=(0.2, 1.0))], seed=1)(image=tiles_u8[0])
        assert np.array_equal(np_state, np.random.get_state()[1])
        assert py_state == random.getstate() and torch.equal(t_state, torch.get_rng_state())

    def test_applied_params_and_replay(self, tiny_with_bank, tiles_u8):
        t = ContriMix(weights=tiny_with_bank, p=1.0, strength=(0.2, 1.0), donors="bank")
        pipe = A.Compose([t], seed=3, save_applied_params=True)
        res = pipe(image=tiles_u8[0])
        params = t.get_applied_params()
        assert set(params) >= {"donor", "strength"} and 0 <= params["donor"] < 3 and 0.2 <= params["strength"] <= 1
        assert res["applied_transforms"][0][0] == "AlbumentationsContriMix"
        again = t.apply(tiles_u8[0], **params)
        assert np.array_equal(again, res["image"])

        replay = A.ReplayCompose([ContriMix(weights=tiny_with_bank, p=1.0, strength=(0.2, 1.0), donors="bank")])
        first = replay(image=tiles_u8[1])
        rep = A.ReplayCompose.replay(first["replay"], image=tiles_u8[1])
        assert np.array_equal(rep["image"], first["image"])

    def test_images_stack(self, tiny_with_bank, tiles_u8):
        stack = tiles_u8[:5]
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        out = A.Compose([t], seed=0)(images=stack)["images"]
        assert out.shape == stack.shape and out.dtype == np.uint8
        params = t.get_applied_params()
        one_by_one = np.stack([t.apply(img, **params) for img in stack])
        assert np.abs(out.astype(int) - one_by_one.astype(int)).max() <= 1  # same donor for the stack
        f = t.apply_to_images(stack.astype(np.float32) / 255, **params)
        assert f.dtype == np.float32 and f.shape == stack.shape

    def test_get_params_draws_with_sample_mix_params(self, tiny_with_bank, tiles_u8):
        """get_params = sample_mix_params(donors="bank") on a torch generator seeded from albumentations' own RNG."""
        import copy

        t = ContriMix(weights=tiny_with_bank, p=1.0, strength=(0.2, 1.0), donors="bank")
        A.Compose([t], seed=11)  # seeds the transform's generators
        for _ in range(4):
            probe = copy.deepcopy(t.random_generator)
            g = torch.Generator().manual_seed(int(probe.integers(0, 2**63 - 1)))
            want = sample_mix_params(1, strength=(0.2, 1.0), donors="bank", bank_size=3, generator=g)
            got = t.get_params()
            assert got == {"donor": int(want.donors[0]), "strength": float(want.strength[0])}

    def test_pickle(self, tiny_with_bank, tiles_u8):
        pipe = A.Compose([ContriMix(weights=tiny_with_bank, p=1.0, strength=(0.2, 1.0))], seed=5)
        clone = pickle.loads(pickle.dumps(pipe))
        assert np.array_equal(clone(image=tiles_u8[0])["image"], pipe(image=tiles_u8[0])["image"])


@pytest.fixture(scope="module")
def camelyon_bank() -> torch.Tensor:
    """The attribute bank of the bundled ``camelyon`` weights (real crops of 26 H&E labs)."""
    return ca.load_model("camelyon").bank.float()


class TestSampledDonors:
    """``donors="sampled"``: a new (C, K) matrix drawn around the bank per call, carried in the params."""

    def test_repr_params_and_new_stains(self, tiles_u8, camelyon_bank):
        from contrimix_aug.mixing import sampled_reach

        t = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=0.9)
        assert repr(t).startswith("AlbumentationsContriMix(weights='camelyon', p=1.0, donors='sampled', spread=0.9, "
                                  f"strength=1.0, bank={len(camelyon_bank)},")
        pipe = A.Compose([t], seed=0, save_applied_params=True)
        seen = []
        for img in tiles_u8[:4]:
            out = pipe(image=img)["image"]
            params = t.get_applied_params()
            assert params["donor"] == -1 and np.asarray(params["donor_attributes"]).shape == (3, 8)
            assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
            assert np.array_equal(t.apply(img, **params), out)  # the params alone replay it
            seen.append(torch.tensor(params["donor_attributes"]))
        z = torch.stack(seen)
        assert float(torch.cdist(z.flatten(1), camelyon_bank.flatten(1)).min()) > 1e-4  # no bank entry
        c = camelyon_bank.mean(0)
        reach = 0.9 * sampled_reach(len(camelyon_bank)) * float((camelyon_bank - c).flatten(1).norm(dim=1).max())
        assert float((z - c).flatten(1).norm(dim=1).max()) <= reach + 1e-5  # within spread·κ of the bank's extent
        assert len({tuple(r) for r in z.flatten(1).tolist()}) == 4

    def test_spread_zero_is_the_bank_centre(self, tiles_u8, camelyon_bank):
        t = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=0.0)
        A.Compose([t], seed=1)(image=tiles_u8[0])
        params = t.get_params()
        assert torch.equal(torch.tensor(params["donor_attributes"]), camelyon_bank.mean(0))

    def test_seeds_and_replay_compose(self, tiles_u8):
        def run(seed):
            pipe = A.Compose([ContriMix(weights="camelyon", p=1.0, donors="sampled", strength=(0.5, 1.0))], seed=seed)
            return [pipe(image=img)["image"] for img in tiles_u8[:3]]

        a, b, c = run(3), run(3), run(4)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not any(np.array_equal(x, y) for x, y in zip(a, c))
        replay = A.ReplayCompose([ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=1.2)])
        first = replay(image=tiles_u8[1])
        import json

        saved = json.loads(json.dumps(first["replay"]))  # the replay record survives JSON
        rep = A.ReplayCompose.replay(saved, image=tiles_u8[1])
        assert np.array_equal(rep["image"], first["image"])

    def test_images_stack_share_one_matrix(self, tiles_u8):
        t = ContriMix(weights="camelyon", p=1.0, donors="sampled")
        out = A.Compose([t], seed=0)(images=tiles_u8[:4])["images"]
        params = t.get_applied_params()
        one_by_one = np.stack([t.apply(img, **params) for img in tiles_u8[:4]])
        assert out.shape == tiles_u8[:4].shape and np.abs(out.astype(int) - one_by_one.astype(int)).max() <= 1

    def test_bad_replayed_matrix(self, tiles_u8):
        t = ContriMix(weights="camelyon", p=1.0, donors="sampled")
        with pytest.raises(ValueError, match=r"donor_attributes must be a finite \(3, 8\) matrix"):
            t.apply(tiles_u8[0], donor=-1, strength=1.0, donor_attributes=[[0.1] * 8] * 2)


def mean_od_pixels(img: np.ndarray) -> np.ndarray:
    return rgb_to_od(torch.from_numpy(img.astype(np.float32) / 255)).mean(-1).numpy()


class TestInitSchema:
    @pytest.mark.parametrize("kind", ["model", "weights_object", "file"])
    def test_weights_objects_accepted(self, tiny_with_bank, tiles_u8, tmp_path, kind):
        w = {"model": tiny_with_bank, "weights_object": ca.ContriMixWeights.from_model(tiny_with_bank)}.get(kind)
        if kind == "file":
            w = str(ca.save_weights(tiny_with_bank, tmp_path / "w.safetensors"))
        t = ContriMix(weights=w, p=1.0)
        assert t.weights is w  # not turned into a dict by pydantic
        ref = ContriMix(weights=tiny_with_bank, p=1.0)
        assert np.array_equal(t.apply(tiles_u8[0], donor=1, strength=1.0), ref.apply(tiles_u8[0], donor=1, strength=1.0))

    def test_caller_model_untouched(self, bank_u8):
        m = make_tiny_model(seed=3)
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)
        t = ContriMix(weights=m, bank=bank_u8)
        assert m.training and all(p.requires_grad for p in m.parameters()) and m.bank.shape[0] == 0
        assert t.model is not m and not t.model.training

    def test_bank_forms_agree(self, tiles_u8, bank_u8):
        model = make_tiny_model()
        x = torch.from_numpy(bank_u8).permute(0, 3, 1, 2).float() / 255
        banks = [bank_u8, list(bank_u8), x, compute_bank(model, x)]
        outs = [ContriMix(weights=model, p=1.0, bank=b).apply(tiles_u8[0], donor=2, strength=1.0) for b in banks]
        assert all(np.abs(o.astype(int) - outs[0].astype(int)).max() <= 1 for o in outs)

    def test_to_dict(self, tiny_with_bank):
        d = A.to_dict(A.Compose([ContriMix(weights=tiny_with_bank, p=0.3, strength=(0.1, 0.5))]))
        args = d["transform"]["transforms"][0]
        assert args["p"] == 0.3 and args["strength"] == (0.1, 0.5) and args["device"] == "cpu"
        assert args["donors"] == "sampled" and args["spread"] == 0.7  # the default policy


class TestErrors:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"p": 1.5}, "less than or equal to 1"),
            ({"strength": 1.5}, "strength"),
            ({"strength": (0.9, 0.1)}, "low <= high"),
            ({"strength": "high"}, "strength"),
            ({"device": "gpu0"}, "device"),
            ({"donors": "batch"}, r"donors: expected one of \('bank', 'sampled'\) \(a single image has no batch"),
            ({"donors": "sampled", "spread": -1.0}, "spread"),
            ({"donors": "sampled", "spread": float("nan")}, "finite"),
            ({"donors": "sampled", "spread": "wide"}, "spread"),
            ({"spread": 2.0, "donors": "bank"}, "applies to donors='sampled' only"),
            ({"render_guard": "yes"}, "render_guard"),
        ],
    )
    def test_bad_arguments(self, tiny_with_bank, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ContriMix(weights=tiny_with_bank, **kwargs)

    def test_unknown_argument_strict(self, tiny_with_bank):
        with pytest.raises(ValueError, match="not valid"):
            ContriMix(weights=tiny_with_bank, sigma=0.3, strict=True)

    def test_unknown_weights(self):
        with pytest.raises(ca.WeightsError, match="unknown weights name"):
            ContriMix(weights="no-such-weights")

    def test_no_bank(self):
        with pytest.raises(ValueError, match="attribute bank"):
            ContriMix(weights=make_tiny_model())

    def test_bad_bank(self, tiny_with_bank, bank_u8):
        with pytest.raises(ValueError, match=r"expected reference images \(N, H, W, 3\).*got shape \(3, 40, 48, 2\)"):
            ContriMix(weights=tiny_with_bank, bank=bank_u8[..., :2])
        with pytest.raises(TypeError, match="bank"):
            ContriMix(weights=tiny_with_bank, bank="refs")
        with pytest.raises(ValueError, match="empty"):
            ContriMix(weights=tiny_with_bank, bank=[])

    @pytest.mark.parametrize(
        "make, exc, match",
        [
            (lambda img: img[..., :2], ValueError, "expect 3 channel"),
            (lambda img: np.ascontiguousarray(img.transpose(2, 0, 1)), ValueError, "channels-first"),
            (lambda img: img[..., 0], ValueError, "single-channel"),
            (lambda img: img[None, None], ValueError, "5-D"),
            (lambda img: img.astype(np.float64) / 255, TypeError, "float64"),
            (lambda img: img.astype(np.uint16), TypeError, r"uint16.*/ 65535"),
            (lambda img: img.astype(np.float32), ValueError, "divide by 255"),
            (lambda img: np.where(img > 100, np.nan, img / 255).astype(np.float32), ValueError, "NaN"),
            (lambda img: torch.from_numpy(img), TypeError, "numpy"),
            (lambda img: img[:4, :4], ValueError, "8×8"),
        ],
    )
    def test_bad_images(self, tiny_with_bank, tiles_u8, make, exc, match):
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        with pytest.raises(exc, match=match):
            t.apply(make(tiles_u8[0]), donor=0, strength=1.0)

    @pytest.mark.parametrize(
        "make, fix",
        [
            (lambda img: np.ascontiguousarray(img.transpose(2, 0, 1)), "np.transpose(img, (1, 2, 0))"),
            (lambda img: img.astype(np.float64) / 255, "img.astype(np.float32)"),
            (lambda img: img.astype(np.uint16) * 257, "img.astype(np.float32) / 65535"),
            (lambda img: img.astype(np.float32), "x.float() / 255"),
            (lambda img: np.where(img > 150, np.nan, img / 255).astype(np.float32),
             "torch.nan_to_num(x, nan=0, posinf=1, neginf=0)"),
        ],
        ids=["channels-first", "float64", "uint16", "0-255 floats", "NaN"],
    )
    def test_the_suggested_fix_works(self, tiny_with_bank, tiles_u8, make, fix):
        """Apply the fix the message gives, verbatim (on the numpy image, or as torch code on it), and it works."""
        t = ContriMix(weights=tiny_with_bank, p=1.0)
        bad = make(tiles_u8[0])
        with pytest.raises((TypeError, ValueError)) as err:
            t.apply(bad, donor=0, strength=1.0)
        assert fix in str(err.value), str(err.value)
        if fix.startswith(("x.", "torch.")):  # a torch expression: run it on the array's tensor, back to numpy
            fixed = eval(fix, {"x": torch.from_numpy(bad), "torch": torch}).numpy()  # noqa: S307
        else:
            fixed = eval(fix, {"img": bad, "np": np})  # noqa: S307 - our own message
        out = t.apply(fixed, donor=0, strength=1.0)
        assert out.shape == fixed.shape and out.dtype == fixed.dtype

    def test_single_channel_hint_names_weights_that_work(self, tiles_u8):
        t = ContriMix(weights="camelyon", p=1.0)
        grey = tiles_u8[0][..., 1]
        with pytest.raises(ValueError, match="Use weights trained for 1 channel \\(e.g. 'fluorescence'\\)"):
            t.apply(grey, donor=0, strength=1.0)
        out = ContriMix(weights="fluorescence", p=1.0).apply(grey, donor=0, strength=1.0)
        assert out.shape == grey.shape and out.dtype == np.uint8

    def test_replayed_donor_outside_bank(self, tiny_with_bank, tiles_u8):
        with pytest.raises(ValueError, match="outside the attribute bank"):
            ContriMix(weights=tiny_with_bank, p=1.0).apply(tiles_u8[0], donor=99, strength=1.0)

    def test_missing_albumentations_message(self, monkeypatch):
        import importlib.util

        import contrimix_aug.albumentations as mod

        monkeypatch.setitem(sys.modules, "albumentations", None)  # what "not installed" looks like to import
        spec = importlib.util.spec_from_file_location("contrimix_aug._albumentations_probe", mod.__file__)
        with pytest.raises(ImportError, match=r"albumentations package \(>= 2.0\).*pip install \"contrimix_aug\[albumentations\]\""):
            spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture(scope="module")
def demo_u8() -> np.ndarray:
    """The 16 bundled real H&E tiles of two labs, (16, 96, 96, 3) uint8."""
    from contrimix_aug.data import load_demo_tiles

    return load_demo_tiles()[0]


class TestRenderGuard:
    """The default ``render_guard=True``: glass stays glass and no pixel is darker than real tissue
    (:func:`~contrimix_aug.optical_density.limit_render`), on the bundled real tiles with the bundled weights."""

    @pytest.mark.parametrize("donors", ["bank", "sampled"])
    def test_default_is_guarded(self, demo_u8, donors):
        from contrimix_aug.functional import apply_contrimix
        from contrimix_aug.mixing import MixParams
        from contrimix_aug.optical_density import RENDER_BACKGROUND_OD

        t = ContriMix(weights="camelyon", p=1.0, donors=donors)
        raw_t = ContriMix(weights="camelyon", p=1.0, donors=donors, render_guard=False)
        assert t.render_guard is True and A.to_dict(A.Compose([t]))["transform"]["transforms"][0]["render_guard"]
        white_kept = dark_capped = 0
        for i, img in enumerate(demo_u8[::2]):
            out = A.Compose([t], seed=i)(image=img)["image"]
            raw = A.Compose([raw_t], seed=i)(image=img)["image"]
            params = t.get_applied_params()
            assert params == raw_t.get_applied_params()  # the same draw
            # the adapter renders what the functional API does with the guard
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
            n = 1
            donor_attrs = (None if "donor_attributes" not in params
                           else torch.tensor(params["donor_attributes"]).expand(n, -1, -1))
            mp = MixParams(torch.ones(n, dtype=torch.bool), torch.full((n,), params["donor"]),
                           torch.full((n,), donor_attrs is None), torch.full((n,), params["strength"]), donor_attrs)
            want = apply_contrimix(t.model, x, mp, bank=t.model.bank if donor_attrs is None else None)
            want_u8 = (want[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            assert np.abs(out.astype(int) - want_u8.astype(int)).max() <= 1
            # near-white glass comes back as it went in (to uint8 rounding); no pixel darker than OD 1.7
            white = rgb_to_od(x).sum(1)[0].numpy() < RENDER_BACKGROUND_OD[0]
            if white.any():
                assert np.abs(out.astype(int) - img.astype(int))[white].max() <= 1
                white_kept += int(np.abs(raw.astype(int) - img.astype(int))[white].max() > 3)
            assert out.min() >= 5  # 255 * 10^-1.7 = 5.09
            dark_capped += int(raw.min() < 5)
            assert np.abs(out.astype(int) - img.astype(int)).mean() > 5  # still a change of stain
        assert white_kept >= 1 and dark_capped >= 1  # the unguarded render coloured glass, and overshot, here

    def test_opt_out_is_the_authors_render(self, demo_u8):
        from contrimix_aug.functional import apply_contrimix
        from contrimix_aug.mixing import MixParams

        t = ContriMix(weights="camelyon", p=1.0, render_guard=False)
        assert "render_guard=False" in repr(t) and "render_guard" not in repr(ContriMix(weights="camelyon"))
        x = demo_u8[3].astype(np.float32) / 255
        out = t.apply(x, donor=5, strength=1.0)
        mp = MixParams(torch.ones(1, dtype=torch.bool), torch.full((1,), 5), torch.ones(1, dtype=torch.bool),
                       torch.ones(1))
        want = apply_contrimix(t.model, torch.from_numpy(x).permute(2, 0, 1)[None], mp, bank=t.model.bank,
                               render_guard=False)
        np.testing.assert_allclose(out, want[0].permute(1, 2, 0).numpy(), atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device(tiny_with_bank, tiles_u8):
    cpu = ContriMix(weights=tiny_with_bank, p=1.0)
    gpu = ContriMix(weights=tiny_with_bank, p=1.0, device="cuda")
    assert next(gpu.model.parameters()).is_cuda and not next(tiny_with_bank.parameters()).is_cuda
    a = cpu.apply(tiles_u8[0], donor=1, strength=0.8)
    b = gpu.apply(tiles_u8[0], donor=1, strength=0.8)
    assert b.dtype == np.uint8 and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    stack = gpu.apply_to_images(tiles_u8[:4], donor=2, strength=1.0)
    assert stack.shape == tiles_u8[:4].shape
