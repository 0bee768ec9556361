"""Encoders against an independent reference forward pass written from the method notes (§1.2–1.4, §5.2).

The reference below works on a raw dict of tensors named as in the authors' checkpoints and uses only
``torch.nn.functional`` calls; it shares no code with ``contrimix_aug``. ``test_authors_checkpoint.py`` reuses it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from contrimix_aug.model_config import ModelConfig, authors_config
from contrimix_aug.encoders import AttributeEncoder, ContentEncoder
from contrimix_aug.model import ContriMixModel

# --------------------------------------------------------------------------------------------------------
# The authors' layout (method notes §5.2), transcribed independently of contrimix_aug/authors_checkpoint.py
# --------------------------------------------------------------------------------------------------------

CONTENT_PREFIX = "_models_by_names.cont_enc.module."
ATTR_PREFIX = "_models_by_names.attr_enc.module."
ATTR_WIDTHS = (16, 32, 64, 128, 256, 512)


def authors_shapes(k: int, c: int = 3) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Tensor shapes of E_c and E_a (keys without the ``_models_by_names.*.module.`` prefix)."""
    content = {}
    convs = {
        "_model.0._model.0": (8, c, 3, 3),  # Conv3x3(3->8) -> LReLU
        "_model.1._model.0": (k, 8, 3, 3),  # Conv3x3(8->K) -> IN -> LReLU
        "_model.2._model.0": (k, k, 3, 3),  # residual block 1
        "_model.2._model.3": (k, k, 3, 3),
        "_model.3._model.0": (k, k, 3, 3),  # residual block 2
        "_model.3._model.3": (k, k, 3, 3),
    }
    for name, shape in convs.items():
        content[f"{name}.weight"] = shape
        content[f"{name}.bias"] = (shape[0],)
    attr = {"_model.0.weight": (16, c, 4, 4), "_model.0.bias": (16,)}
    for i, (cin, cout) in enumerate(itertools.pairwise(ATTR_WIDTHS), start=1):
        attr[f"_model.{i}._forward_block.0.weight"] = (cin, cin, 3, 3)
        attr[f"_model.{i}._forward_block.0.bias"] = (cin,)
        attr[f"_model.{i}._forward_block.2.weight"] = (cout, cin, 3, 3)
        attr[f"_model.{i}._forward_block.2.bias"] = (cout,)
        attr[f"_model.{i}._skip_block.1.weight"] = (cout, cin, 1, 1)
        attr[f"_model.{i}._skip_block.1.bias"] = (cout,)
    attr["_model.7.weight"] = (c * k, 512, 1, 1)
    attr["_model.7.bias"] = (c * k,)
    attr["_model.8.weight"] = (c * k, 1, 1)  # LayerNorm([3K, 1, 1], affine)
    attr["_model.8.bias"] = (c * k, 1, 1)
    return content, attr


def authors_tensors(
    k: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random E_c / E_a tensors in the authors' layout: default-init scale, every tensor distinct and non-trivial
    (biases and LayerNorm affine included, so any mix-up of keys changes the output)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shapes in authors_shapes(k):
        d = {}
        for name, shape in shapes.items():
            if name.startswith("_model.8."):  # LayerNorm affine
                base = 1.0 if name.endswith("weight") else 0.0
                d[name] = (base + 0.3 * torch.randn(shape, generator=g)).to(dtype)
                continue
            fan_in = math.prod(shapes[name.rsplit(".", 1)[0] + ".weight"][1:])
            bound = 1.0 / math.sqrt(fan_in)
            d[name] = ((torch.rand(shape, generator=g) * 2 - 1) * bound).to(dtype)
        out.append(d)
    return out[0], out[1]


def authors_algorithm_state_dict(content: dict[str, torch.Tensor], attr: dict[str, torch.Tensor]) -> dict:
    """The ``algorithm`` state dict as the authors' training code saves it (plus a few backbone keys)."""
    sd = {"_models_by_names.backbone.module.features.conv0.weight": torch.randn(64, 3, 7, 7)}
    sd["_models_by_names.backbone.module.features.norm0.running_mean"] = torch.zeros(64)
    sd["_models_by_names.backbone.module.features.norm0.num_batches_tracked"] = torch.tensor(7)
    sd.update({CONTENT_PREFIX + n: t for n, t in content.items()})
    sd.update({ATTR_PREFIX + n: t for n, t in attr.items()})
    return sd


# --------------------------------------------------------------------------------------------------------
# Reference forward pass (plain torch.nn.functional)
# --------------------------------------------------------------------------------------------------------


def _conv(x: torch.Tensor, t: dict[str, torch.Tensor], name: str, stride: int = 1, pad: int | None = None):
    w, b = t[f"{name}.weight"], t[f"{name}.bias"]
    p = (w.shape[-1] - 1) // 2 if pad is None else pad
    if p:
        x = F.pad(x, (p, p, p, p), mode="reflect")
    return F.conv2d(x, w, b, stride=stride)


def reference_content(t: dict[str, torch.Tensor], od: torch.Tensor) -> torch.Tensor:
    """E_c (k=1): Conv->LReLU, Conv->IN->LReLU, 2 × [x + IN(Conv(LReLU(IN(Conv x))))], LReLU. Slope 0.01."""
    x = F.leaky_relu(_conv(od, t, "_model.0._model.0"), 0.01)
    x = F.leaky_relu(F.instance_norm(_conv(x, t, "_model.1._model.0"), eps=1e-5), 0.01)
    for i in (2, 3):
        y = F.leaky_relu(F.instance_norm(_conv(x, t, f"_model.{i}._model.0"), eps=1e-5), 0.01)
        x = x + F.instance_norm(_conv(y, t, f"_model.{i}._model.3"), eps=1e-5)
    return F.leaky_relu(x, 0.01)


def reference_attributes(t: dict[str, torch.Tensor], od: torch.Tensor) -> torch.Tensor:
    """E_a: Conv4x4/s2/p1 reflect -> 5 DS blocks -> GAP -> 1x1 conv -> LayerNorm(3K) -> LReLU -> (N, 3, K)."""
    x = _conv(od, t, "_model.0", stride=2, pad=1)
    for i in range(1, 6):
        main = _conv(F.leaky_relu(_conv(x, t, f"_model.{i}._forward_block.0"), 0.2), t, f"_model.{i}._forward_block.2")
        main = F.avg_pool2d(main, 2)
        skip = _conv(F.avg_pool2d(x, 2), t, f"_model.{i}._skip_block.1")
        x = main + skip
    x = x.mean(dim=(2, 3), keepdim=True)
    x = _conv(x, t, "_model.7")
    x = F.layer_norm(x, tuple(x.shape[1:]), t["_model.8.weight"], t["_model.8.bias"], eps=1e-5)
    flat = F.leaky_relu(x, 0.01).flatten(1)  # (N, 3K)
    n, ck = flat.shape
    k = ck // 3
    z = flat.new_empty(n, 3, k)
    for c in range(3):
        for j in range(k):
            z[:, c, j] = flat[:, c * k + j]  # channel c·K + j -> (colour c, attribute j)
    return z


def reference_encode(content: dict, attr: dict, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    od = -torch.log10(image.clamp_min(1e-6))
    return reference_content(content, od), reference_attributes(attr, od)


def reference_decode(z_c: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor:
    a_hat = torch.einsum("ncj,njhw->nchw", z_a, z_c)
    return (10.0 ** (-a_hat.clamp(-0.2, 6.0))).clamp(0.0, 1.0)


def load_into_model(model: ContriMixModel, content: dict, attr: dict) -> ContriMixModel:
    """Copy the authors' tensors into our model by the test's own transcription of the key map."""
    ours = {
        "content_encoder.conv_in": "_model.0._model.0",
        "content_encoder.conv_mid": "_model.1._model.0",
        "content_encoder.blocks.0.conv1": "_model.2._model.0",
        "content_encoder.blocks.0.conv2": "_model.2._model.3",
        "content_encoder.blocks.1.conv1": "_model.3._model.0",
        "content_encoder.blocks.1.conv2": "_model.3._model.3",
    }
    attr_map = {
        "attribute_encoder.stem": "_model.0",
        "attribute_encoder.head": "_model.7",
        "attribute_encoder.norm": "_model.8",
    }
    for i in range(5):
        attr_map[f"attribute_encoder.blocks.{i}.conv1"] = f"_model.{i + 1}._forward_block.0"
        attr_map[f"attribute_encoder.blocks.{i}.conv2"] = f"_model.{i + 1}._forward_block.2"
        attr_map[f"attribute_encoder.blocks.{i}.skip"] = f"_model.{i + 1}._skip_block.1"
    sd = {}
    for src, mapping in ((content, ours), (attr, attr_map)):
        for dst, name in mapping.items():
            for p in ("weight", "bias"):
                sd[f"{dst}.{p}"] = src[f"{name}.{p}"]
    model.load_state_dict(sd, strict=True)
    return model


def tiles_for_reference(real_tiles: torch.Tensor) -> list[torch.Tensor]:
    """Real tissue at the attribute encoder's minimum size (2 × 64²) and a non-square, odd crop (1 × 64 × 77)."""
    s = real_tiles.shape[-1]
    assert s >= 77, f"real tiles must be at least 77 px for the reference tests, got {s}"
    return [real_tiles[:2, :, :64, :64], real_tiles[-1:, :, s - 64 :, s - 77 :]]


# --------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------

PARAM_COUNTS = {4: (1_108, 2_541_028), 5: (1_509, 2_542_573), 10: (4_594, 2_550_298), 16: (10_672, 2_559_568)}


@pytest.mark.parametrize("k", sorted(PARAM_COUNTS))
def test_parameter_counts(k: int) -> None:
    model = ContriMixModel(authors_config(k))
    n_c = sum(p.numel() for p in model.content_encoder.parameters())
    n_a = sum(p.numel() for p in model.attribute_encoder.parameters())
    assert (n_c, n_a) == PARAM_COUNTS[k]
    assert model.num_params == n_c + n_a  # the k = 1 generator has no parameters
    # the test's own transcription of the authors' layout has the same counts
    content_shapes, attr_shapes = authors_shapes(k)
    assert sum(math.prod(s) for s in content_shapes.values()) == PARAM_COUNTS[k][0]
    assert sum(math.prod(s) for s in attr_shapes.values()) == PARAM_COUNTS[k][1]


@pytest.mark.parametrize("k", [4, 16])
def test_matches_reference_float64(k: int, real_tiles: torch.Tensor) -> None:
    content, attr = authors_tensors(k, seed=k)
    model = load_into_model(ContriMixModel(authors_config(k)).double().eval(), content, attr)
    for x in tiles_for_reference(real_tiles):
        x = x.double()
        z_c, z_a = model.encode(x)
        r_c, r_a = reference_encode(content, attr, x)
        assert z_c.shape == (x.shape[0], k, *x.shape[-2:]) and z_a.shape == (x.shape[0], 3, k)
        torch.testing.assert_close(z_c, r_c, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(z_a, r_a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.decode(z_c, z_a), reference_decode(r_c, r_a), rtol=1e-10, atol=1e-10)
        # mixing: content of one image with the attributes of another
        torch.testing.assert_close(
            model.decode(z_c, z_a.roll(1, 0)), reference_decode(r_c, r_a.roll(1, 0)), rtol=1e-10, atol=1e-10
        )
        # the random weights give non-degenerate outputs (the comparison means something)
        assert z_a.std() > 1e-3 and z_c.std() > 1e-3


@pytest.mark.parametrize("k", [4, 16])
def test_matches_reference_float32(k: int, real_tiles: torch.Tensor) -> None:
    content, attr = authors_tensors(k, seed=100 + k)
    model = load_into_model(ContriMixModel(authors_config(k)).eval(), content, attr)
    x = tiles_for_reference(real_tiles)[0]
    with torch.no_grad():
        z_c, z_a = model.encode(x)
        out = model.decode(z_c, z_a)
    r_c, r_a = reference_encode(content, attr, x.double())
    torch.testing.assert_close(z_c.double(), r_c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z_a.double(), r_a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.double(), reference_decode(r_c, r_a), rtol=1e-3, atol=1e-4)


def test_view_ordering_is_colour_major() -> None:
    """z_a[n, c, j] comes from head channel c·K + j: make the head output its own channel index."""
    k = 4
    cfg = authors_config(k)
    enc = AttributeEncoder(cfg).double().eval()
    with torch.no_grad():
        enc.head.weight.zero_()
        enc.head.bias.copy_(torch.arange(3 * k, dtype=torch.float64))
        enc.norm.weight.fill_(1.0)
        enc.norm.bias.zero_()
        z = enc(torch.rand(1, 3, 64, 64, dtype=torch.float64))
    # LayerNorm of 0..3K-1 is monotone; after LReLU the order is kept
    flat_rank = z.flatten().argsort()
    assert torch.equal(flat_rank, torch.arange(3 * k))
    assert z[0, 1, 0] > z[0, 0, k - 1]  # colour 1 starts after colour 0 ends


def test_batch_consistency(real_tiles: torch.Tensor) -> None:
    """Instance/Layer norms are per image: a batch encodes like its images one by one."""
    torch.manual_seed(0)  # only model init; the test checks the RNG-free forward pass
    model = ContriMixModel(authors_config(4)).eval()
    x = real_tiles[:3, :, :72, :65]
    with torch.no_grad():
        z_c, z_a = model.encode(x)
        for i in range(x.shape[0]):
            c1, a1 = model.encode(x[i : i + 1])
            torch.testing.assert_close(c1, z_c[i : i + 1], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(a1, z_a[i : i + 1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [(8, 8), (17, 11), (33, 64)])
def test_tiny_config_shapes(tiny_config: ModelConfig, size: tuple[int, int], real_tiles: torch.Tensor) -> None:
    enc_c, enc_a = ContentEncoder(tiny_config), AttributeEncoder(tiny_config)
    x = -torch.log10(real_tiles[:2, :, : size[0], : size[1]].clamp_min(1 / 255))
    assert enc_c(x).shape == (2, tiny_config.num_attributes, *size)
    assert enc_a(x).shape == (2, 3, tiny_config.num_attributes)


def test_content_constant_channel(real_tiles: torch.Tensor) -> None:
    cfg = ModelConfig(num_attributes=4, content_constant=True, attr_widths=(4, 8, 8))
    enc = ContentEncoder(cfg)
    z = enc(-torch.log10(real_tiles[:2, :, :12, :9].clamp_min(1 / 255)))
    assert z.shape == (2, 4, 12, 9)
    assert torch.equal(z[:, -1], torch.ones(2, 12, 9))
    assert enc.conv_mid.out_channels == 3


def test_attribute_resize_rules() -> None:
    enc = AttributeEncoder(authors_config(4))
    x64 = torch.rand(1, 3, 64, 70)
    assert enc.resize_input(x64) is x64  # large enough: untouched
    assert enc.resize_input(torch.rand(1, 3, 63, 63)).shape[-2:] == (64, 64)
    assert enc.resize_input(torch.rand(1, 3, 17, 100)).shape[-2:] == (64, 100)
    fixed = AttributeEncoder(ModelConfig(attr_input_size=96))
    assert fixed.resize_input(torch.rand(1, 3, 300, 200)).shape[-2:] == (96, 96)
    x96 = torch.rand(1, 3, 96, 96)
    assert fixed.resize_input(x96) is x96


def test_content_activation_none_keeps_negative_values(real_tiles: torch.Tensor) -> None:
    """``content_activation="none"`` drops only the last LeakyReLU: applying it afterwards gives the default."""
    base = dict(num_attributes=5, content_kernel=1, content_hidden=8, content_res_blocks=1, attr_widths=(4, 8))
    torch.manual_seed(0)
    plain = ContentEncoder(ModelConfig(content_activation="none", **base)).double()
    authors_like = ContentEncoder(ModelConfig(**base)).double()
    authors_like.load_state_dict(plain.state_dict())
    x = -torch.log10(real_tiles[:2].double().clamp_min(1 / 255))
    with torch.no_grad():
        z, z_act = plain(x), authors_like(x)
    assert (z < 0).float().mean() > 0.1  # the tail the LeakyReLU would squash
    torch.testing.assert_close(F.leaky_relu(z, 0.01), z_act)


def test_attr_cov_statistics_match_torch(real_tiles: torch.Tensor) -> None:
    """With ``attr_cov`` the head sees mean, std and the upper-triangle correlations of each image's signal."""
    cfg = ModelConfig(num_attributes=4, attr_widths=(4, 8), attr_stats=True, attr_cov=True, attr_head="mlp")
    assert cfg.num_attr_stats == 9
    enc = AttributeEncoder(cfg).double()
    x = -torch.log10(real_tiles[:3].double().clamp_min(1 / 255))
    _, stats = enc.prepare(x)
    assert stats.shape == (3, 9, 1, 1)
    for b in range(3):
        f = x[b].flatten(1)
        std = (f.var(1) + 1e-6).sqrt()  # the encoder's std carries a 1e-6 variance floor
        corr = torch.cov(f) / (std[:, None] * std[None, :])
        expected = torch.cat([f.mean(1), std, corr[[0, 0, 1], [1, 2, 2]]])
        torch.testing.assert_close(stats[b].flatten(), expected, rtol=0, atol=1e-5)  # computed in float32
        assert (stats[b].flatten()[6:] - torch.corrcoef(f)[[0, 0, 1], [1, 2, 2]]).abs().max() < 1e-3
    assert enc.head_hidden.in_channels == 8 + 9 and enc.head.in_channels == cfg.attr_head_hidden
    assert enc(x).shape == (3, 3, 4)


def test_attr_cov_needs_stats() -> None:
    with pytest.raises(ValueError, match="attr_cov=True needs attr_stats=True"):
        ModelConfig(attr_cov=True)
    with pytest.raises(ValueError, match="content_activation"):
        ModelConfig(content_activation="relu")
    with pytest.raises(ValueError, match="attr_head"):
        ModelConfig(attr_head="deep")


@pytest.mark.parametrize("kernel", [1, 3])
def test_content_bias_before_norm_false_drops_only_the_redundant_biases(kernel: int, real_tiles: torch.Tensor) -> None:
    """``content_bias_before_norm=False``: the convolutions feeding an InstanceNorm have no bias (the first one,
    followed by a LeakyReLU, keeps its own). The norm removes any per-channel constant, so the output equals that of
    the biased network with the same weights and any biases, on both the 1×1 (matmul) and the k×k path."""
    base = dict(num_attributes=4, content_kernel=kernel, content_hidden=6, content_res_blocks=2, attr_widths=(4, 8))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(kernel)
        lean = ContentEncoder(ModelConfig(content_bias_before_norm=False, **base)).double()
        full = ContentEncoder(ModelConfig(**base)).double()
    assert lean.conv_in.bias is not None
    assert lean.conv_mid.bias is None and all(b.conv1.bias is None and b.conv2.bias is None for b in lean.blocks)
    assert full.conv_mid.bias is not None and all(b.conv1.bias is not None for b in full.blocks)
    n_bias = full.conv_mid.out_channels * (1 + 2 * len(full.blocks))
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in lean.parameters()) == n_bias
    lean_sd = lean.state_dict()
    assert set(full.state_dict()) - set(lean_sd) == {"conv_mid.bias"} | {
        f"blocks.{i}.conv{j}.bias" for i in range(2) for j in (1, 2)}
    g = torch.Generator().manual_seed(7)
    sd = {k: lean_sd[k] if k in lean_sd else torch.randn(v.shape, generator=g, dtype=v.dtype)
          for k, v in full.state_dict().items()}
    full.load_state_dict(sd)  # the same weights, plus non-zero biases before every norm
    x = -torch.log10(real_tiles[:2, :, :40, :33].double().clamp_min(1 / 255))
    with torch.no_grad():
        torch.testing.assert_close(lean(x), full(x), rtol=1e-9, atol=1e-9)
        assert lean(x).std() > 1e-3
    # and the round trip of the flag through the stored config
    cfg = ModelConfig(content_bias_before_norm=False, **base)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["content_bias_before_norm"] is False
