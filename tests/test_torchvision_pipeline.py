"""The real torchvision pipeline users write: ``transforms.Compose([transforms.ToTensor(), ContriMix(weights="camelyon")])``
on PIL images, inside a DataLoader with 2 workers.

torchvision is not a dependency of contrimix_aug (its PyPI wheels pull a CUDA torch). CI runs this file in a second
environment that has it (``.ci/run``, with ``CONTRIMIX_AUG_REQUIRE_TORCHVISION=1`` so that it cannot pass by
skipping); in the main test environment it is skipped.
"""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("CONTRIMIX_AUG_REQUIRE_TORCHVISION"):
    import torchvision  # noqa: F401  (fail loudly: this environment must have it)
transforms = pytest.importorskip("torchvision.transforms", reason="torchvision is not installed (not a dependency)")

from PIL import Image  # noqa: E402

from contrimix_aug import ContriMix  # noqa: E402
from contrimix_aug.data import load_demo_tiles  # noqa: E402


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


def test_v2_compose_passes_masks_through():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), ContriMix(weights="camelyon", p=1.0, seed=0)])
    img = PILTiles(lambda x: x).images[1]
    out = tf(img)
    assert out.shape == (3, 96, 96)
