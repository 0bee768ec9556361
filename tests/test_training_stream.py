"""The training data stream (training.stream) on real tiles: dataset opening, the size check before step 0, the
stateless index stream, seeded patches (plain and multi-scale), the held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrimix_aug._seeding import derive_seed
from contrimix_aug.data.datasets import ImageFolderDataset
from contrimix_aug.training.stream import (
    IndexStream,
    StepBatches,
    TrainPatches,
    center_patch,
    check_image_sizes,
    image_of,
    open_datasets,
    split_indices,
)


def _save(t: torch.Tensor, path: Path) -> None:
    Image.fromarray((t.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().squeeze()).save(path)


@pytest.fixture
def sized_folder(tmp_path: Path, real_tile_list: list[torch.Tensor]) -> Path:
    """Four 128 px real crops and one 64 x 100 px crop."""
    big = [t for t in real_tile_list if min(t.shape[-2:]) >= 128]
    for i in range(4):
        _save(big[i % len(big)][:, :128, i * 10 : i * 10 + 128], tmp_path / f"a{i}.png")
    _save(real_tile_list[0][:, :64, :100], tmp_path / "z_small.png")
    return tmp_path


def test_check_image_sizes_names_the_file(sized_folder: Path):
    ds = ImageFolderDataset(sized_folder)
    check_image_sizes(ds, range(len(ds)), 64)  # everything fits 64 px
    with pytest.raises(ValueError) as err:
        check_image_sizes(ds, range(len(ds)), 96)
    msg = str(err.value)
    assert msg.startswith(str(sized_folder / "z_small.png")) and "64×100 px is smaller than the patch size 96" in msg
    with pytest.raises(ValueError, match=r"a0.png: .*\(5 images in all\)"):
        check_image_sizes(ds, range(len(ds)), 129)
    check_image_sizes(ds, [0, 1, 2, 3], 128)  # only the indices given are checked

    class Fixed(torch.utils.data.Dataset):  # no image_sizes(): checked by its first item
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(3, 40, 40), {}

    with pytest.raises(ValueError, match="training item 1: image of 40×40 px"):
        check_image_sizes(Fixed(), [1, 2], 48)


def test_image_of():
    x = torch.zeros(3, 8, 8)
    assert image_of(x) is x and image_of((x, {})) is x and image_of({"image": x}) is x
    with pytest.raises(ValueError, match="float \\(C, H, W\\) tensors"):
        image_of(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="got ndarray"):
        image_of(np.zeros((3, 8, 8)))


def test_index_stream_epochs_and_ranks():
    s = IndexStream(10, seed=3)
    first = [i for _, i in s.batch(0, 10)]
    assert sorted(first) == list(range(10))  # an epoch is a permutation
    g = torch.Generator().manual_seed(derive_seed(3, "epoch", 0))
    assert first == torch.randperm(10, generator=g).tolist()
    second = [i for _, i in s.batch(1, 10)]
    assert sorted(second) == list(range(10)) and second != first
    # two ranks of batch 4 read exactly the positions one process with batch 8 reads
    single = s.batch(5, 8)
    ranks = s.batch(5, 4, rank=0, world_size=2) + s.batch(5, 4, rank=1, world_size=2)
    assert single == ranks and [p for p, _ in single] == list(range(40, 48))
    # stateless: a fresh stream gives the same batches from the step number alone
    assert IndexStream(10, seed=3).batch(5, 8) == single
    with pytest.raises(ValueError, match="empty"):
        IndexStream(0, 0)
    sb = StepBatches(s, 2, 6, 4, 1, 2)
    assert len(sb) == 4 and list(sb)[0] == s.batch(2, 4, 1, 2)


def test_train_patches_are_seeded_by_position(real_tile_list):
    base = [(t, {}) for t in real_tile_list]
    p = TrainPatches(base, list(range(len(base))), 32, seed=0)
    a, b = p[(7, 3)], p[(7, 3)]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(p[(8, 3)], a)  # another stream position: another crop/rotation/flip
    assert torch.equal(TrainPatches(base, list(range(len(base))), 32, seed=0)[(7, 3)], a)
    assert not torch.equal(TrainPatches(base, list(range(len(base))), 32, seed=1)[(7, 3)], a)
    # the patch is a crop of the real image up to a rotation/flip: its pixels are the image's
    img = real_tile_list[3]
    vals = set(np.round(img.flatten().numpy(), 6).tolist())
    assert set(np.round(a.flatten().numpy(), 6).tolist()) <= vals


def test_train_patches_multi_scale(real_tile_list):
    """With scale=(s, s) the patch is the s·P px region at the seeded offset, resized to P px (antialiased), then
    rotated and flipped: recomputed here from the documented draws."""
    import torch.nn.functional as F

    big = [(t, {}) for t in real_tile_list if min(t.shape[-2:]) >= 200]
    assert big, "needs a real tile of 200 px or more"
    img = big[0][0]
    h, w = img.shape[-2:]
    plain = TrainPatches(big, [0], 32, seed=0)
    scaled = TrainPatches(big, [0], 32, seed=0, scale=(2.0, 2.0))
    assert scaled.scale == (2.0, 2.0) and plain.scale == (1.0, 1.0)
    for pos in range(6):
        x = scaled[(pos, 0)]
        g = torch.Generator().manual_seed(derive_seed(0, "patch", pos))
        top, left, rot, flip = torch.randint(0, 1 << 30, (4,), generator=g).tolist()
        torch.rand((), generator=g, dtype=torch.float64)  # the scale draw (log-uniform in [2, 2])
        region = img[:, top % (h - 64 + 1):, left % (w - 64 + 1):][:, :64, :64]
        want = F.interpolate(region[None], size=(32, 32), mode="bilinear", align_corners=False, antialias=True)[0]
        want = torch.rot90(want.clamp(0, 1), rot % 4, dims=(-2, -1))
        want = want.flip(-1) if flip % 2 else want
        torch.testing.assert_close(x, want, rtol=0, atol=1e-6)
        # the plain patch of the same position: the 32 px crop at the same offsets, no resize
        p = plain[(pos, 0)]
        crop = img[:, top % (h - 32 + 1):, left % (w - 32 + 1):][:, :32, :32]
        crop = torch.rot90(crop, rot % 4, dims=(-2, -1))
        assert torch.equal(p, crop.flip(-1) if flip % 2 else crop)
    ranged = TrainPatches(big, [0], 32, seed=0, scale=(1.0, 4.0))[(3, 0)]
    assert ranged.shape == (3, 32, 32) and float(ranged.min()) >= 0 and float(ranged.max()) <= 1


def test_center_patch_and_split(real_tile_list):
    t = real_tile_list[-1]
    h, w = t.shape[-2:]
    c = center_patch(t, 64)
    assert torch.equal(c, t[:, (h - 64) // 2 : (h - 64) // 2 + 64, (w - 64) // 2 : (w - 64) // 2 + 64])
    with pytest.raises(ValueError, match="smaller than the patch size"):
        center_patch(t, max(h, w) + 1)
    train, val = split_indices(50, 64, seed=0)
    assert len(val) == 10 and sorted(train + val) == list(range(50)) and not set(train) & set(val)
    assert split_indices(50, 64, seed=0) == (train, val) and split_indices(50, 64, seed=1) != (train, val)
    assert split_indices(50, 3, seed=0)[1] == sorted(split_indices(50, 3, seed=0)[1]) and len(split_indices(50, 3, 0)[1]) == 3


def test_open_datasets_folder_channels(tmp_path, real_tile_list):
    from contrimix_aug.data.readers import load_demo_tiles

    fluo, _ = load_demo_tiles(modality="fluorescence")
    for i, f in enumerate(fluo):
        Image.fromarray(f[..., 0]).save(tmp_path / f"n{i}.png")
    train, tr_idx, val, va_idx = open_datasets(str(tmp_path), patch_size=32, seed=0, val_size=2, channels=1)
    assert train is val and len(tr_idx) == 7 and len(va_idx) == 1 and image_of(train[0]).shape == (1, 96, 96)
    train3, *_ = open_datasets(str(tmp_path), patch_size=32, seed=0, val_size=2)
    assert image_of(train3[0]).shape == (3, 96, 96)


def test_open_datasets_camelyon17_tiles(data_root):
    train, tr_idx, val, va_idx = open_datasets("camelyon17-tiles:0", patch_size=96, seed=0, val_size=3,
                                               data_root=data_root, progress=False)
    assert len(tr_idx) == 5 and len(va_idx) == 3 and train is not val
    assert image_of(train[0]).shape == (3, 410, 512) and image_of(val[0]).shape == (3, 102, 512)
