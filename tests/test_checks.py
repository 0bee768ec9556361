"""The input guards (contrimix_aug._checks): each message says what most likely happened and how to fix it, on real
H&E tiles scaled the ways users get them wrong."""

from __future__ import annotations

import pytest
import torch

from contrimix_aug import ContriMix
from contrimix_aug._checks import check_image, check_image_values, check_probability, check_strength


@pytest.fixture(scope="module")
def tiles(real_tiles: torch.Tensor) -> torch.Tensor:
    return real_tiles[:4, :, :40, :48].contiguous()


# how users get the value range wrong -> what the message must say
WRONG_RANGES = [
    # mean/std-normalised (transforms.Normalize) before ContriMix: values in about [-2, 2]
    (lambda t: (t - 0.5) / 0.25, ["mean/std-normalised", "apply ContriMix first", "Normalize after it"]),
    # an earlier float step (brightness/contrast jitter, interpolation) pushed values a little past 1
    (lambda t: t * 1.5, ["an earlier float step", "clamp", "x.clamp(0, 1)"]),
    # 8-bit intensities as floats
    (lambda t: t * 200, ["8-bit", "divide by 255"]),
    # 16-bit intensities as floats
    (lambda t: t * 4000, ["16-bit", "divide by 65535"]),
]
IDS = ["normalised", "max-1.5", "max-200", "max-4000"]


@pytest.mark.parametrize("make, phrases", WRONG_RANGES, ids=IDS)
def test_check_image_values_messages(tiles, make, phrases):
    x = make(tiles)
    with pytest.raises(ValueError) as err:
        check_image_values(x, name="image")
    msg = str(err.value)
    lo, hi = float(x.min()), float(x.max())
    assert msg.startswith("image: expected values in [0, 1], got values in ["), msg
    assert f"{lo:.4g}" in msg and f"{hi:.4g}" in msg  # the range that came in
    for phrase in phrases:
        assert phrase in msg, (phrase, msg)
    # exactly one diagnosis per message
    assert [d for d in ("mean/std-normalised", "an earlier float step", "divide by 255", "divide by 65535")
            if d in msg] == [phrases[-1] if phrases[0] == "8-bit" or phrases[0] == "16-bit" else phrases[0]], msg


@pytest.mark.parametrize("make, phrases", WRONG_RANGES, ids=IDS)
def test_contrimix_reports_the_same_message(tiny, tiles, make, phrases):
    aug = ContriMix(weights=tiny, p=1.0, seed=0)
    with pytest.raises(ValueError, match="ContriMix input: expected values in") as err:
        aug(make(tiles))
    assert all(p in str(err.value) for p in phrases)
    # check_values=False switches the value check off (the caller takes responsibility)
    out = ContriMix(weights=tiny, p=1.0, seed=0, check_values=False)(make(tiles).clamp(0, 1))
    assert out.shape == tiles.shape


def test_in_range_values_pass(tiles):
    check_image_values(tiles)
    check_image_values(tiles * (1 + 5e-4))  # within the 1e-3 tolerance
    check_image_values(tiles * 4000, value_range=(0.0, 65535.0))  # weights declaring another range
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_image_values(torch.where(tiles > 0.5, float("nan"), tiles))


def test_check_image(tiles):
    check_image(tiles, 3)
    with pytest.raises(ValueError, match="at least 16×16 px for these weights, got 12×48"):
        check_image(tiles[:, :, :12], 3, min_size=16)
    with pytest.raises(ValueError, match="channels-last: use x.permute"):
        check_image(tiles.permute(0, 2, 3, 1), 3)
    with pytest.raises(ValueError, match="unsqueeze"):
        check_image(tiles[0], 3)
    check_image(tiles[0], 3, allow_chw=True)
    with pytest.raises(TypeError, match="x.float\\(\\) / 255"):
        check_image((tiles * 255).to(torch.uint8), 3)


def test_probability_and_strength():
    assert check_probability(1) == 1.0
    with pytest.raises(ValueError, match="probability"):
        check_probability(1.2)
    with pytest.raises(TypeError, match="p:"):
        check_probability(True)
    assert check_strength(0.3) == (0.3, 0.3) and check_strength([0.1, 0.4]) == (0.1, 0.4)
    with pytest.raises(ValueError, match="low <= high"):
        check_strength((0.9, 0.1))
