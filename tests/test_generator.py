"""The k = 1 generator against an einsum oracle: Â[b, c, h, w] = Σ_k z_a[b, c, k] · z_c[b, k, h, w]."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contrimix_aug.generator import generate
from contrimix_aug.optical_density import rgb_to_od


def oracle(content: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bck,bkhw->bchw", attributes.double(), content.double())


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.integers(1, 5),
    k=st.integers(1, 6),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_einsum(b: int, c: int, k: int, h: int, w: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    content = torch.randn(b, k, h, w, generator=g, dtype=torch.float64)
    attributes = torch.randn(b, c, k, generator=g, dtype=torch.float64)
    out = generate(content, attributes)
    assert out.shape == (b, c, h, w) and out.dtype == torch.float64
    torch.testing.assert_close(out, oracle(content, attributes), rtol=1e-12, atol=1e-12)


def test_real_tissue_stain_matrix(real_tiles: torch.Tensor) -> None:
    """Content = per-pixel OD of real tiles used as K=3 'concentrations'; attributes = stain matrices."""
    od = rgb_to_od(real_tiles)  # (N, 3, S, S)
    n = od.shape[0]
    g = torch.Generator().manual_seed(0)
    attributes = torch.rand(n, 3, 3, generator=g)
    out = generate(od, attributes)
    torch.testing.assert_close(out.double(), oracle(od, attributes), rtol=1e-5, atol=1e-5)
    # identity stain matrices reproduce the input exactly
    eye = torch.eye(3).expand(n, 3, 3)
    torch.testing.assert_close(generate(od, eye), od)


def test_per_image_attributes_do_not_leak() -> None:
    g = torch.Generator().manual_seed(3)
    content = torch.rand(3, 4, 5, 6, generator=g)
    attributes = torch.rand(3, 3, 4, generator=g)
    out = generate(content, attributes)
    for i in range(3):
        torch.testing.assert_close(out[i : i + 1], generate(content[i : i + 1], attributes[i : i + 1]))


def test_non_contiguous_inputs() -> None:
    g = torch.Generator().manual_seed(4)
    content = torch.rand(2, 4, 7, 5, generator=g).contiguous(memory_format=torch.channels_last)
    attributes = torch.rand(2, 4, 3, generator=g).transpose(1, 2)  # (2, 3, 4) non-contiguous
    torch.testing.assert_close(generate(content, attributes).double(), oracle(content, attributes))


def test_dtype_follows_content() -> None:
    content = torch.rand(1, 2, 3, 3, dtype=torch.float64)
    attributes = torch.rand(1, 3, 2, dtype=torch.float32)
    assert generate(content, attributes).dtype == torch.float64


def test_gradients_reach_both_inputs() -> None:
    g = torch.Generator().manual_seed(5)
    content = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    attributes = torch.rand(2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(generate, (content, attributes), fast_mode=True)


@pytest.mark.parametrize(
    "content_shape, attr_shape",
    [((2, 4, 5, 5), (3, 3, 4)), ((2, 4, 5, 5), (2, 3, 5))],
    ids=["batch-mismatch", "K-mismatch"],
)
def test_shape_mismatch_raises(content_shape: tuple[int, ...], attr_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="disagree"):
        generate(torch.zeros(content_shape), torch.zeros(attr_shape))
