"""Attribute banks: compute_bank, images_from_numpy and resolve_bank (the one validation of every ``bank=``), on real
H&E tiles and the bundled real fluorescence tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrimix_aug.bank import compute_bank, images_from_numpy, resolve_bank
from helpers import make_tiny_model

H, W = 40, 48


@pytest.fixture(scope="module")
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    t = real_tiles[..., :H, :W].contiguous()
    assert t.shape[0] >= 4
    return t


@pytest.fixture(scope="module")
def tiles_u8(tiles: torch.Tensor) -> np.ndarray:
    """The same tiles as numpy (N, H, W, 3) uint8 (what albumentations users hold)."""
    return np.ascontiguousarray((tiles.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())


class TestComputeBank:
    def test_matches_encode_attributes(self, tiny, tiles):
        bank = compute_bank(tiny, tiles, batch_size=3)  # chunks of 3: the result must not depend on them
        assert bank.shape == (tiles.shape[0], 3, 3) and bank.dtype == torch.float32 and bank.device.type == "cpu"
        torch.testing.assert_close(bank, tiny.encode_attributes(tiles), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bank, compute_bank(tiny, tiles, batch_size=64), atol=1e-6, rtol=1e-6)

    def test_checks_images(self, tiny, tiles):
        with pytest.raises(ValueError, match="bank images.*divide by 255"):
            compute_bank(tiny, tiles * 255)
        with pytest.raises(ValueError, match="bank images: the weights expect 3 channel"):
            compute_bank(tiny, tiles[:, :2])
        with pytest.raises(TypeError, match="bank images.*uint8"):
            compute_bank(tiny, (tiles * 255).to(torch.uint8))


class TestImagesFromNumpy:
    def test_dtypes(self, tiles, tiles_u8):
        x = images_from_numpy(tiles_u8, 3)
        assert x.shape == tiles.shape and x.dtype == torch.float32
        torch.testing.assert_close(x, tiles, atol=0.5 / 255 + 1e-6, rtol=0)
        u16 = (tiles_u8.astype(np.uint16) * 257)  # the same intensities at 16 bits
        torch.testing.assert_close(images_from_numpy(u16, 3), x, atol=1e-6, rtol=0)
        f = images_from_numpy(tiles_u8.astype(np.float32) / 255, 3)
        torch.testing.assert_close(f, x)

    def test_single_channel_without_channel_axis(self):
        from contrimix_aug.data.readers import load_demo_tiles

        fluo, _ = load_demo_tiles(modality="fluorescence")  # (N, 96, 96, 1) uint8
        x = images_from_numpy(fluo[..., 0], 1)
        assert x.shape == (fluo.shape[0], 1, 96, 96)
        torch.testing.assert_close(x, torch.from_numpy(fluo).permute(0, 3, 1, 2).float() / 255)

    def test_read_only_arrays(self, tiles_u8):
        """Arrays read with np.asarray(PIL image) are read-only: no warning, and the input is not aliased."""
        from PIL import Image

        ro = np.stack([np.asarray(Image.fromarray(t)) for t in tiles_u8[:2]])
        ro.flags.writeable = False
        x = images_from_numpy(ro, 3)  # filterwarnings=error: torch.from_numpy's read-only warning would fail here
        x += 1
        torch.testing.assert_close(images_from_numpy(ro, 3), x - 1)

    def test_errors(self, tiles_u8):
        with pytest.raises(ValueError, match="channels-first: use np.transpose"):
            images_from_numpy(np.ascontiguousarray(tiles_u8.transpose(0, 3, 1, 2)), 3)
        with pytest.raises(ValueError, match=r"expected reference images \(N, H, W, 3\)"):
            images_from_numpy(tiles_u8[0], 3)
        with pytest.raises(TypeError, match="int32"):
            images_from_numpy(tiles_u8.astype(np.int32), 3)


class TestResolveBank:
    def test_every_form_gives_the_same_attributes(self, tiny, tiles, tiles_u8):
        want = compute_bank(tiny, tiles)
        forms = {
            "attributes": want,
            "tensor images": tiles,
            "numpy stack": tiles_u8,
            "list of numpy": list(tiles_u8),
            "tuple of float numpy": tuple(tiles_u8.astype(np.float32) / 255),
        }
        for name, bank in forms.items():
            got = resolve_bank(tiny, bank)
            assert got.shape == want.shape and got.dtype == torch.float32, name
            torch.testing.assert_close(got, want, atol=2e-2, rtol=0, msg=name)  # 8-bit rounding of the numpy forms
        assert resolve_bank(tiny, None) is None

    def test_list_of_images_of_different_sizes(self, tiny, tiles_u8):
        imgs = [tiles_u8[0], tiles_u8[1, :24, :36], tiles_u8[2, 5:, 3:]]
        got = resolve_bank(tiny, imgs)
        assert got.shape == (3, 3, 3)
        torch.testing.assert_close(got[1], compute_bank(tiny, images_from_numpy(imgs[1][None], 3))[0])

    def test_attribute_tensor_is_copied_to_cpu_float32(self, tiny, tiles):
        attrs = compute_bank(tiny, tiles).double()
        got = resolve_bank(tiny, attrs)
        assert got.dtype == torch.float32 and torch.equal(got, attrs.float())

    @pytest.mark.parametrize(
        "make, exc, match",
        [
            (lambda t, a: a[:0], ValueError, "the attribute bank is empty"),
            (lambda t, a: [], ValueError, "the list of reference images is empty"),
            (lambda t, a: torch.where(a > a.median(), float("nan"), a), ValueError, "NaN, Inf or integers"),
            (lambda t, a: torch.where(a > a.median(), float("inf"), a), ValueError, "NaN, Inf or integers"),
            (lambda t, a: (a * 100).long(), ValueError, "NaN, Inf or integers"),
            (lambda t, a: a[:, :, :2], ValueError, r"expected attributes \(N, 3, 3\)"),
            (lambda t, a: t * 255, ValueError, "divide by 255"),
            (lambda t, a: t - 0.5, ValueError, "mean/std-normalised"),
            (lambda t, a: t[:, :2], ValueError, "3 channel"),
            (lambda t, a: "refs", TypeError, "bank: expected attributes"),
            (lambda t, a: [t[0]], TypeError, r"bank\[0\]: expected a numpy"),
        ],
        ids=["empty", "empty-list", "nan", "inf", "ints", "wrong-k", "0-255", "normalised", "channels", "str",
             "list-of-tensors"],
    )
    def test_rejects(self, tiny, tiles, make, exc, match):
        attrs = compute_bank(tiny, tiles)
        with pytest.raises(exc, match=match):
            resolve_bank(tiny, make(tiles, attrs))

    def test_single_channel_model(self):
        from contrimix_aug.data.readers import load_demo_tiles

        fluo, _ = load_demo_tiles(modality="fluorescence")
        model = make_tiny_model(channels=1)
        got = resolve_bank(model, fluo)
        assert got.shape == (fluo.shape[0], 1, 3)
        torch.testing.assert_close(got, compute_bank(model, torch.from_numpy(fluo).permute(0, 3, 1, 2).float() / 255))


class TestSelectBank:
    """select_bank: the entries of some labs of a shipped bank (by full lab name or by kind), for bank=."""

    def test_keeps_and_drops_labs_by_name_and_kind(self):
        from contrimix_aug import load_model
        from contrimix_aug.bank import select_bank

        model = load_model("camelyon")
        labs = model.meta.bank_entry_labs()
        no_mo = select_bank("camelyon", exclude="monuseg")
        keep = [i for i, lab in enumerate(labs) if not lab.startswith("monuseg:")]
        assert 0 < len(keep) < len(labs) and no_mo.shape == (len(keep), 3, 8)
        torch.testing.assert_close(no_mo, model.bank[keep].float())  # the rows themselves, in bank order
        one = select_bank(model, labs=["source:cmu1", "camelyon17"], exclude=["camelyon17:3"])
        rows = [i for i, lab in enumerate(labs) if lab in ("source:cmu1", "camelyon17:0", "camelyon17:4")]
        torch.testing.assert_close(one, model.bank[rows].float())
        assert select_bank("camelyon").shape == model.bank.shape

    def test_the_selected_bank_drives_the_transform(self, real_tiles):
        from contrimix_aug import ContriMix
        from contrimix_aug.bank import select_bank

        small = select_bank("camelyon", labs="source:skin")
        aug = ContriMix(weights="camelyon", p=1.0, donors="bank", bank=small, seed=0)
        assert "bank=" + str(small.shape[0]) in repr(aug)
        y = aug(real_tiles)
        assert bool(aug.params["from_bank"].all()) and int(aug.params["donors"].max()) < small.shape[0]
        assert (y - real_tiles).abs().mean() > 0.01  # re-rendered, not passed through

    @pytest.mark.parametrize(("kwargs", "error", "message"), [
        ({"labs": "camelyon16"}, ValueError, r"labs \['camelyon16'\] match no lab of this bank; its labs are"),
        ({"exclude": ["monuseg:XX"]}, ValueError, r"exclude \['monuseg:XX'\] match no lab.*or a kind: \['camelyon17', 'monuseg', 'source'\]"),
        ({"labs": "monuseg", "exclude": "monuseg"}, ValueError, "leave no bank entry"),
        ({"labs": [3]}, TypeError, "labs must be lab names"),
    ])
    def test_bad_selection_names_the_labs(self, kwargs, error, message):
        from contrimix_aug.bank import select_bank

        with pytest.raises(error, match=message):
            select_bank("camelyon", **kwargs)

    def test_weights_without_bank_labs_say_what_to_do(self, tiny):
        from contrimix_aug.bank import select_bank

        with pytest.raises(ValueError, match="do not name the lab of each bank entry"):
            select_bank(tiny)

    def test_published_measure_of_the_subsets_matches_the_coverage_benchmark(self):
        """docs/weights/bank_subsets.json: its whole-bank row is the default row of docs/benchmarks/coverage.json
        (same measurement), and every subset keeps renders >= 0.95 plausible."""
        import json
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        subsets = json.loads((root / "docs" / "weights" / "bank_subsets.json").read_text())["summary"]
        cov = {r["method"]: r for r in json.loads((root / "docs" / "benchmarks" / "coverage.json").read_text())["summary"]}
        whole = subsets[0]
        assert whole["select_bank"] == {} and (whole["coverage"], whole["plausible"]) == (
            cov["contrimix-camelyon"]["coverage"], cov["contrimix-camelyon"]["plausible"])
        assert all(s["plausible"] >= 0.95 for s in subsets) and len(subsets) == 3
        page = (root / "docs" / "weights.md").read_text()  # its table quotes these files
        for s in subsets:
            assert f"| {s['entries']} | {s['coverage']:.3f} | {s['plausible']:.3f} |" in page, s["bank"]
        for peer in ("kornia-colorjitter", "hestain-preset"):
            assert f"{cov[peer]['coverage']:.3f} at {cov[peer]['plausible']:.3f}" in page, peer
