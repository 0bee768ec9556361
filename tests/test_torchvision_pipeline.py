"""The real torchvision pipelines users write: ``transforms.Compose([transforms.ToTensor(), ContriMix(weights="camelyon")])``
on PIL images, and torchvision v2 samples (``v2.Compose([...])(img, mask)``, dicts, nested structures, tv_tensors) in
which ContriMix re-renders the images with one draw per sample, keeps their type and passes masks, boxes, keypoints
and labels through untouched; inside DataLoaders with 2 workers, on the bundled real tiles and on real MoNuSeg tiles
with their nuclei masks.

torchvision is not a dependency of contrimix_aug (its PyPI wheels pull a CUDA torch). CI runs this file in a second
environment that has it (``.ci/run``, with ``CONTRIMIX_AUG_REQUIRE_TORCHVISION=1`` so that it cannot pass by
skipping); in the main test environment it is skipped.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("CONTRIMIX_AUG_REQUIRE_TORCHVISION"):
    import torchvision  # noqa: F401  (fail loudly: this environment must have it)
transforms = pytest.importorskip("torchvision.transforms", reason="torchvision is not installed (not a dependency)")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from contrimix_aug import ContriMix, ContriMixNormalize  # noqa: E402
from contrimix_aug.data import load_demo_tiles  # noqa: E402
from contrimix_aug.optical_density import rgb_to_od  # noqa: E402


class PILTiles(torch.utils.data.Dataset):
    """The bundled real H&E tiles as PIL images through a torchvision transform."""

    def __init__(self, transform, same: bool = False) -> None:
        tiles, _ = load_demo_tiles()
        self.images = [Image.fromarray(t) for t in tiles]
        self.transform, self.same = transform, same

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.images[0 if self.same else i])


def _pipeline():
    return transforms.Compose([transforms.ToTensor(), ContriMix(weights="camelyon", p=1.0, seed=0)])


def test_compose_on_a_single_pil_image():
    tf = _pipeline()
    img = PILTiles(lambda x: x).images[0]
    out = tf(img)
    plain = transforms.ToTensor()(img)
    assert out.shape == plain.shape == (3, 96, 96) and out.dtype == torch.float32
    assert float((out - plain).abs().mean()) > 1e-3  # re-rendered with a bank donor
    assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_compose_in_a_dataloader_with_two_workers(ctx):
    def run(same: bool = False):
        ds = PILTiles(_pipeline(), same=same)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=ctx,
                                         generator=torch.Generator().manual_seed(0))
        return torch.cat(list(dl))

    a, b = run(), run()
    plain = torch.stack([transforms.ToTensor()(im) for im in PILTiles(lambda x: x).images])
    assert a.shape == plain.shape
    assert torch.equal(a, b)  # reproducible across runs
    assert float((a - plain).abs().flatten(1).mean(1).min()) > 1e-4  # every image re-rendered
    # one image everywhere: worker 0 renders batch 0, worker 1 batch 1; their donors differ, so do the outputs
    s = run(same=True)
    assert not torch.equal(s[:4], s[4:8])




# --------------------------------------------------------------------------------------------------------------
# torchvision v2 samples (issue 19, item 1)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def he_tiles() -> torch.Tensor:
    """The bundled real H&E tiles, (16, 3, 96, 96) float32 in [0, 1]."""
    tiles, _ = load_demo_tiles()
    return torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255


def nuclei_mask(img: torch.Tensor) -> torch.Tensor:
    """A real (H, W) uint8 mask of the tile's dark (haematoxylin-rich) pixels, 0 or 1."""
    od = rgb_to_od(img.float()).mean(-3)
    return (od > od.quantile(0.7)).to(torch.uint8)


@pytest.fixture(scope="module")
def camelyon() -> ContriMix:
    return ContriMix(weights="camelyon", p=1.0, seed=0)


def test_issue_repro_flip_then_contrimix_image_and_mask(he_tiles):
    """v2.Compose([v2.RandomHorizontalFlip(), ContriMix(weights="camelyon")])(img, mask): the crash of issue 19."""
    img, mask = he_tiles[3], nuclei_mask(he_tiles[3])
    aug = ContriMix(weights="camelyon", p=1.0, seed=0)
    # plain tensors: v2 treats the first as the image, the mask passes through every transform
    out_img, out_mask = v2.Compose([v2.RandomHorizontalFlip(p=1.0), aug])(img, mask)
    assert type(out_img) is torch.Tensor and out_img.shape == img.shape
    assert out_mask is mask
    assert torch.equal(out_img, aug(img.flip(-1), params=aug.params))  # flipped, then re-rendered with the draw
    assert float((out_img - img.flip(-1)).abs().mean()) > 1e-2
    # tv_tensors: the mask is flipped with the image and left alone by ContriMix
    t_img, t_mask = v2.Compose([v2.RandomHorizontalFlip(p=1.0), aug])(tv_tensors.Image(img), tv_tensors.Mask(mask))
    assert type(t_img) is tv_tensors.Image and type(t_mask) is tv_tensors.Mask
    assert torch.equal(t_mask.as_subclass(torch.Tensor), mask.flip(-1))
    assert torch.equal(t_img.as_subclass(torch.Tensor), aug(img.flip(-1), params=aug.params))


def test_dict_sample_with_every_kind_of_target(he_tiles, camelyon):
    img = he_tiles[5]
    mask = tv_tensors.Mask(nuclei_mask(img))
    boxes = tv_tensors.BoundingBoxes([[4, 6, 40, 50], [30, 10, 90, 60]], format="XYXY", canvas_size=(96, 96))
    points = tv_tensors.KeyPoints([[10.0, 12.0], [50.0, 60.0]], canvas_size=(96, 96))
    labels = torch.tensor([1, 2])
    sample = {"image": tv_tensors.Image(img), "target": {"masks": mask, "boxes": boxes, "keypoints": points,
                                                          "labels": labels, "name": "tile-5"}, "extra": [7, None]}
    out = camelyon(sample)
    assert set(out) == set(sample) and set(out["target"]) == set(sample["target"])
    assert type(out["image"]) is tv_tensors.Image and out["image"].shape == img.shape
    for key in ("masks", "boxes", "keypoints", "labels", "name"):  # the very same objects
        assert out["target"][key] is sample["target"][key]
    assert out["extra"] == [7, None]
    params = camelyon.params  # one draw for the sample: the default samples one stain around the bank
    assert params["donors"].shape == (1,) and params["donor_attributes"].shape[0] == 1
    assert torch.equal(out["image"].as_subclass(torch.Tensor), camelyon(img, params=params))
    assert float((out["image"] - img).abs().mean()) > 1e-2


def test_one_draw_per_sample(he_tiles):
    """Two images in one sample (e.g. a registered pair) share the donor and strength of one draw."""
    aug = ContriMix(weights="camelyon", p=1.0, strength=(0.3, 1.0), seed=1)
    a, b = he_tiles[0], he_tiles[9]
    out_a, out_b, label = aug(tv_tensors.Image(a), tv_tensors.Image(b), 3)
    params = aug.params
    assert params["donors"].shape == (1,) and label == 3
    assert torch.equal(out_a.as_subclass(torch.Tensor), aug(a, params=params))
    assert torch.equal(out_b.as_subclass(torch.Tensor), aug(b, params=params))
    replay_a, replay_b, _ = aug(tv_tensors.Image(a), tv_tensors.Image(b), 3, params=params)  # replay a sample
    assert torch.equal(replay_a, out_a) and torch.equal(replay_b, out_b) and type(replay_a) is tv_tensors.Image
    # different samples get different draws
    draws = set()
    for _ in range(5):
        aug(tv_tensors.Image(a), tv_tensors.Image(b))
        draws.add((int(aug.params["donors"][0]), float(aug.params["strength"][0])))
    assert len(draws) == 5
    with pytest.raises(ValueError, match="same batch size"):
        aug(tv_tensors.Image(he_tiles[:2]), tv_tensors.Image(he_tiles[:3]))


def test_plain_tensor_heuristic_as_v2(he_tiles, camelyon):
    """Plain tensors: the first one is the image only when the sample has no tv_tensors.Image (v2's rule)."""
    img, heat = he_tiles[1], he_tiles[2]
    out_img, out_heat = camelyon(img, heat)  # no Image: the first plain tensor is the image
    assert out_heat is heat and not torch.equal(out_img, img)
    out_img, out_heat = camelyon(tv_tensors.Image(img), heat)  # an Image: plain tensors pass through
    assert out_heat is heat and type(out_img) is tv_tensors.Image and not torch.equal(out_img, img)
    nested = camelyon({"pair": (img, heat)})
    assert nested["pair"][1] is heat and not torch.equal(nested["pair"][0], img)
    video = tv_tensors.Video(he_tiles[:2])  # a video is not an image for ContriMix: it passes through, as the
    out_video, out_plain = camelyon(video, img)  # plain tensor does next to it
    assert out_video is video and out_plain is img


def test_image_types_kept_single_and_batched(he_tiles, camelyon):
    single = camelyon(tv_tensors.Image(he_tiles[0]))
    assert type(single) is tv_tensors.Image and single.shape == (3, 96, 96)
    batch = camelyon(tv_tensors.Image(he_tiles[:4]))
    assert type(batch) is tv_tensors.Image and batch.shape == (4, 3, 96, 96)
    assert camelyon.params["donors"].shape == (4,)  # a batched Image: one draw per image of the batch
    assert torch.equal(batch.as_subclass(torch.Tensor), camelyon(he_tiles[:4], params=camelyon.params))
    assert type(camelyon(he_tiles[0])) is torch.Tensor  # kornia's path, unchanged


def test_pil_image_in_a_sample_names_the_fix_and_the_fix_works(he_tiles, camelyon):
    pil = Image.fromarray((he_tiles[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    mask = tv_tensors.Mask(nuclei_mask(he_tiles[0]))
    with pytest.raises(TypeError, match=r"Put v2\.ToImage\(\), v2\.ToDtype\(torch\.float32, scale=True\) before it"):
        camelyon(pil, mask)
    img, m = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), camelyon])(pil, mask)
    assert type(img) is tv_tensors.Image and img.dtype == torch.float32 and m is mask
    with pytest.raises(TypeError, match=r"v2\.ToDtype\(torch\.float32, scale=True\)"):  # uint8 Image: the dtype fix
        v2.Compose([v2.ToImage(), camelyon])(pil, mask)


def test_normalize_in_a_v2_sample(he_tiles):
    norm = ContriMixNormalize(weights="camelyon")
    sample = {"image": tv_tensors.Image(he_tiles[:3]), "mask": tv_tensors.Mask(nuclei_mask(he_tiles[0]))}
    out = v2.Compose([v2.RandomVerticalFlip(p=0.0), norm])(sample)
    assert type(out["image"]) is tv_tensors.Image and out["mask"] is sample["mask"]
    assert torch.equal(out["image"].as_subclass(torch.Tensor), norm(he_tiles[:3]))


def test_sampled_donors_in_v1_and_v2_pipelines(he_tiles):
    """donors="sampled" (new stains drawn around the bank) on a PIL image after ToTensor, and in a v2 sample."""
    pil = PILTiles(lambda x: x).images[0]
    tf = transforms.Compose([transforms.ToTensor(), ContriMix(weights="camelyon", p=1.0, donors="sampled", seed=0)])
    out = tf(pil)
    assert out.shape == (3, 96, 96) and float((out - transforms.ToTensor()(pil)).abs().mean()) > 1e-3
    aug = ContriMix(weights="camelyon", p=1.0, donors="sampled", spread=0.8, seed=1)
    a, b, mask = he_tiles[2], he_tiles[7], tv_tensors.Mask(nuclei_mask(he_tiles[2]))
    out_a, out_b, out_mask = v2.Compose([v2.RandomHorizontalFlip(p=1.0), aug])(
        tv_tensors.Image(a), tv_tensors.Image(b), mask)
    assert type(out_a) is tv_tensors.Image and type(out_mask) is tv_tensors.Mask
    assert torch.equal(out_mask.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).flip(-1))
    params = aug.params
    assert params["donor_attributes"].shape == (1, 3, 8)  # one sampled matrix for the sample, both images
    assert torch.equal(out_a.as_subclass(torch.Tensor), aug(a.flip(-1), params=params))
    assert torch.equal(out_b.as_subclass(torch.Tensor), aug(b.flip(-1), params=params))
    again = aug({"image": tv_tensors.Image(a.flip(-1)), "mask": mask}, params=params)  # replay a sample
    assert torch.equal(again["image"], out_a) and again["mask"] is mask
    aug({"image": tv_tensors.Image(a)})
    assert not torch.equal(aug.params["donor_attributes"], params["donor_attributes"])  # a new stain per sample


def test_without_torchvision_a_sample_is_refused(he_tiles, camelyon, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    with pytest.raises(TypeError, match="pip install torchvision"):
        camelyon(he_tiles[0], nuclei_mask(he_tiles[0]))


# --------------------------------------------------------------------------------------------------------------
# a segmentation DataLoader with 2 workers on real MoNuSeg tiles and nuclei masks
# --------------------------------------------------------------------------------------------------------------
CROP = 256
FLIPS = {"none": lambda t: t, "h": lambda t: t.flip(-1), "v": lambda t: t.flip(-2), "hv": lambda t: t.flip(-1, -2)}


class MoNuSegCrops(torch.utils.data.Dataset):
    """Real MoNuSeg H&E crops (CROP px) and their binary nuclei masks as (tv_tensors.Image uint8, tv_tensors.Mask)
    through a v2 transform; the sample is a dict that also carries its index and the worker that made it."""

    def __init__(self, root: Path, transform, n_images: int = 2) -> None:
        self.images, self.masks = [], []
        for path in sorted((root / "images" / "train").glob("*.png"))[:n_images]:
            with Image.open(path) as im:
                rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
            with Image.open(root / "masks" / "train" / path.name) as im:
                mask = torch.from_numpy(np.array(im.convert("L")))
            for top, left in ((0, 0), (rgb.shape[1] // 2, rgb.shape[2] // 2)):
                self.images.append(rgb[:, top : top + CROP, left : left + CROP].clone())
                self.masks.append(mask[top : top + CROP, left : left + CROP].clone())
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        out = self.transform({"image": tv_tensors.Image(self.images[i]), "mask": tv_tensors.Mask(self.masks[i]),
                              "index": i})
        info = torch.utils.data.get_worker_info()
        out["worker"] = info.id if info is not None else -1
        return out


def keep_samples(batch: list) -> list:
    """collate_fn that keeps the samples as they are (tv_tensor types included)."""
    return batch


@pytest.fixture(scope="module")
def monuseg(data_root) -> Path:
    root = Path(data_root) / "monuseg"
    if not (root / "images" / "train").is_dir():
        msg = f"MoNuSeg tiles not found under {root}"
        if os.environ.get("CONTRIMIX_AUG_REQUIRE_DATA"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def _segmentation_run(root: Path, loader_seed: int) -> list:
    tf = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.ToDtype(torch.float32, scale=True),
                     ContriMix(weights="camelyon", p=1.0, strength=(0.5, 1.0), seed=0)])
    dl = torch.utils.data.DataLoader(MoNuSegCrops(root, tf), batch_size=2, num_workers=2, collate_fn=keep_samples,
                                     generator=torch.Generator().manual_seed(loader_seed))
    return [sample for batch in dl for sample in batch]


def _luminance(img: torch.Tensor) -> torch.Tensor:
    lum = rgb_to_od(img.float()).mean(-3).flatten()
    return (lum - lum.mean()) / lum.std()


def test_segmentation_dataloader_on_monuseg(monuseg):
    raw = MoNuSegCrops(monuseg, lambda s: s)
    run = _segmentation_run(monuseg, 0)
    assert [s["index"] for s in run] == list(range(len(raw))) and {s["worker"] for s in run} == {0, 1}
    for s in run:
        img, mask = s["image"], s["mask"]
        assert type(img) is tv_tensors.Image and img.dtype == torch.float32 and img.shape == (3, CROP, CROP)
        assert type(mask) is tv_tensors.Mask and mask.dtype == torch.uint8
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        raw_img, raw_mask = raw.images[s["index"]].float() / 255, raw.masks[s["index"]]
        assert 0 < int((raw_mask > 0).sum()) < raw_mask.numel()  # real nuclei in the crop
        # the mask went through the flips untouched by ContriMix: exactly one flip of the raw mask
        which = [k for k, f in FLIPS.items() if torch.equal(mask.as_subclass(torch.Tensor), f(raw_mask))]
        assert len(which) >= 1
        # the image is the same tissue under the same flip (structure), in another stain (colour)
        corr = {k: float((_luminance(img) * _luminance(f(raw_img))).mean()) for k, f in FLIPS.items()}
        assert max(corr, key=corr.get) in which and corr[which[0]] > 0.8
        assert float((img - FLIPS[which[0]](raw_img)).abs().mean()) > 1e-2
    # reproducible with the same seeds; another DataLoader generator gives other draws
    again = _segmentation_run(monuseg, 0)
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"]) for a, b in zip(run, again))
    other = _segmentation_run(monuseg, 1)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(run, other))
