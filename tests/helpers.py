"""Models and datasets shared by several test modules (not a test module itself).

Everything here is importable by name (``from helpers import ...``), which DataLoader workers started with the
``spawn`` or ``forkserver`` method need: they unpickle the dataset by importing its class.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

import contrimix_aug as ca

__all__ = ["make_tiny_model", "make_handset_model", "count_calls", "AugmentedTiles"]


def make_tiny_model(seed: int = 0, bank: torch.Tensor | None = None, channels: int = 3) -> ca.ContriMixModel:
    """Small random-init model, built without touching the global RNG state (linear mode unless 3 channels)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = ca.ModelConfig(in_channels=channels, num_attributes=3, content_hidden=4, content_res_blocks=1,
                             attr_widths=(4, 8, 8), mode="absorbance" if channels == 3 else "linear")
        return ca.ContriMixModel(cfg, bank=bank).freeze()


def make_handset_model(kappa: float = 0.6) -> ca.ContriMixModel:
    """Hand-set weights whose re-rendering transfers mean optical density exactly (see module docstring)."""
    c = 3
    k = 2 * c + 1
    cfg = ca.ModelConfig(
        in_channels=c, num_attributes=k, content_hidden=c, content_kernel=1, content_res_blocks=0,
        content_constant=True, attr_widths=(c, c), attr_head="linear",
    )
    m = ca.ContriMixModel(cfg)
    eye = torch.eye(c)
    with torch.no_grad():
        ce = m.content_encoder
        ce.conv_in.weight.copy_(eye.view(c, c, 1, 1))  # OD >= 0, so the LeakyReLU after it is the identity
        ce.conv_in.bias.zero_()
        ce.conv_mid.weight.copy_(torch.cat([eye, -eye]).view(2 * c, c, 1, 1))  # ±OD -> IN -> LReLU∘LReLU
        ce.conv_mid.bias.zero_()
        ae = m.attribute_encoder
        ae.stem.weight.copy_(eye.view(c, c, 1, 1).expand(c, c, 4, 4) / 16)  # local mean
        ae.stem.bias.zero_()
        for blk in ae.blocks:  # residual branch off, skip branch = identity: the blocks only average-pool
            for conv in (blk.conv1, blk.conv2):
                conv.weight.zero_()
                conv.bias.zero_()
            blk.skip.weight.copy_(eye.view(c, c, 1, 1))
            blk.skip.bias.zero_()
        head = torch.zeros(c, k, c)  # attributes[ch, col] = Σ_j head[ch, col, j] · meanOD[j]
        for ch in range(c):
            head[ch, ch, ch] = kappa
            head[ch, c + ch, ch] = -kappa
            head[ch, 2 * c, ch] = 1.0
        ae.head.weight.copy_(head.reshape(c * k, c, 1, 1))
        ae.head.bias.zero_()
    return m.freeze()


def count_calls(model: ca.ContriMixModel) -> dict[str, list[int]]:
    """Record the batch size of every content-encoder call and every run of the small attribute network."""
    calls: dict[str, list[int]] = {"content": [], "attributes": []}
    model.content_encoder.register_forward_hook(lambda mod, inp, out: calls["content"].append(inp[0].shape[0]))
    enc = model.attribute_encoder
    prepared = enc.forward_prepared  # the small attribute network, whether reached via forward() or directly

    def counted(small, stats):
        calls["attributes"].append(small.shape[0])
        return prepared(small, stats)

    enc.forward_prepared = counted
    return calls


class AugmentedTiles(Dataset):
    """Applies ``aug`` per sample to one (C, H, W) image (``tiles[i % N]``, or always ``tiles[0]`` with
    ``same_input``) and reports what happened in the worker.

    Items: ``(output (C, H, W), donor index, strength, worker id (-1 in the main process), torch threads)``.
    """

    def __init__(self, tiles: torch.Tensor, aug: torch.nn.Module, length: int = 8, same_input: bool = False) -> None:
        self.tiles, self.aug, self.length, self.same_input = tiles, aug, length, same_input

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        x = self.tiles[0 if self.same_input else i % self.tiles.shape[0]]
        out = self.aug(x)
        info = torch.utils.data.get_worker_info()
        params = self.aug.params
        return (out, params["donors"][0], params["strength"][0], info.id if info is not None else -1,
                torch.get_num_threads())
