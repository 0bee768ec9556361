"""Stage 3: the random half of the transform (who gives their attributes to whom, and how much) and the mixing of
attribute matrices. Every draw comes from an explicit ``torch.Generator``; nothing touches torch's global RNG.

:func:`sample_mix_params` is the one place where the donor policy lives (kornia's split of parameter generators
from apply functions is the model): the kornia/torchvision module, the albumentations adapter and the functional
API all draw their parameters with it and hand the :class:`MixParams` record to
:func:`contrimix_aug.functional.apply_contrimix`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "DONOR_MODES",
    "MixParams",
    "gather_attributes",
    "mix_attributes",
    "sample_donors",
    "sample_mix_params",
    "sample_strength",
]

DONOR_MODES = ("batch", "bank", "both")
"""Where donors come from: other images of the batch, the attribute bank, or both (uniform over the union)."""


@dataclass(frozen=True)
class MixParams:
    """The parameters of one ContriMix call on a batch of B images, all (B,) tensors on one device.

    Attributes:
        selected: bool, images that are re-rendered (the others come back unchanged).
        donors: long, the donor of each image: a row of the batch, or of the attribute bank where ``from_bank``.
        from_bank: bool, donors that index the bank.
        strength: float α in [0, 1]: attributes become (1 - α)·own + α·donor.
    """

    selected: torch.Tensor
    donors: torch.Tensor
    from_bank: torch.Tensor
    strength: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {name: tuple(getattr(self, name).shape) for name in ("selected", "donors", "from_bank", "strength")}
        if len(set(shapes.values())) != 1 or len(shapes["donors"]) != 1:
            raise ValueError(f"MixParams: expected four (B,) tensors, got shapes {shapes}.")

    @property
    def batch_size(self) -> int:
        return int(self.donors.shape[0])

    def to_dict(self) -> dict[str, torch.Tensor]:
        """kornia's parameter dict (``batch_prob`` is the float selection, as kornia expects)."""
        return {"batch_prob": self.selected.float(), "donors": self.donors, "from_bank": self.from_bank,
                "strength": self.strength}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> "MixParams":
        """Inverse of :meth:`to_dict` (replay of ``aug.params``)."""
        missing = [k for k in ("batch_prob", "donors", "from_bank", "strength") if k not in d]
        if missing:
            raise ValueError(f"MixParams: replayed params lack {missing}; pass the params a ContriMix call recorded.")
        return cls(d["batch_prob"] > 0.5, d["donors"], d["from_bank"].bool(), d["strength"])


def sample_donors(
    batch_size: int,
    num_mixes: int = 1,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    exclude_self: bool = True,
) -> torch.Tensor:
    """Donor index for every image and mix, uniform over the *other* images of the batch.

    Returns:
        (M, B) long tensor; with ``exclude_self`` row m never contains ``i`` at position ``i``.

    >>> d = sample_donors(4, 2, generator=torch.Generator().manual_seed(0))
    >>> d.shape, bool((d != torch.arange(4)).all())
    (torch.Size([2, 4]), True)
    """
    if batch_size < 1 or num_mixes < 0:
        raise ValueError(f"sample_donors: need batch_size >= 1 and num_mixes >= 0, got {batch_size}, {num_mixes}.")
    dev = generator.device if generator is not None else device
    if not exclude_self:
        return torch.randint(0, batch_size, (num_mixes, batch_size), generator=generator, device=dev)
    if batch_size < 2:
        raise ValueError("sample_donors: a batch of one has no other image to take attributes from; use a bank.")
    r = torch.randint(0, batch_size - 1, (num_mixes, batch_size), generator=generator, device=dev)
    own = torch.arange(batch_size, device=r.device)
    return r + (r >= own).long()


def sample_strength(
    batch_size: int, low: float, high: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) interpolation weights α ~ U(low, high) (exactly ``low`` when low == high, drawing nothing)."""
    dev = generator.device if generator is not None else None
    if low == high:
        return torch.full((batch_size,), low, device=dev)
    return low + (high - low) * torch.rand(batch_size, generator=generator, device=dev)


def sample_mix_params(
    batch_size: int,
    *,
    p: float = 1.0,
    strength: tuple[float, float] = (1.0, 1.0),
    donors: str = "batch",
    bank_size: int = 0,
    generator: torch.Generator | None = None,
) -> MixParams:
    """Draw the :class:`MixParams` of one call, on the generator's device.

    Policy: ``"batch"`` donors are the other images of the batch, and a batch of one takes a bank donor instead;
    ``"bank"`` donors come from the bank; ``"both"`` donors are uniform over the other images and the bank (the
    batch alone when the bank is empty). Draw order: selection, donors, strength.

    Raises:
        ValueError: no donor can exist (a single image and no bank; ``"bank"`` with an empty bank).
    """
    if donors not in DONOR_MODES:
        raise ValueError(f"donors: expected one of {DONOR_MODES}, got {donors!r}.")
    b = int(batch_size)
    if b < 1:
        raise ValueError(f"sample_mix_params: batch_size must be >= 1, got {batch_size}.")
    dev = generator.device if generator is not None else torch.device("cpu")
    selected = torch.rand(b, generator=generator, device=dev) < p
    mode = donors
    if mode == "batch" and b < 2:
        if bank_size == 0:
            raise ValueError(
                "ContriMix: a single image (or a batch of one) has no other image to take attributes from, and "
                "the weights carry no attribute bank. Pass bank=reference images, or use batches of 2 or more."
            )
        mode = "bank"
    if mode == "both" and bank_size == 0:
        mode = "batch"
    if mode == "bank" and bank_size == 0:
        raise ValueError("donors='bank' needs an attribute bank, and there is none: pass bank=reference images "
                         "(N, C, H, W) or attributes (N, C, K).")
    if mode == "batch":
        donor = sample_donors(b, 1, generator=generator, device=dev)[0]
        from_bank = torch.zeros(b, dtype=torch.bool, device=dev)
    elif mode == "bank":
        donor = torch.randint(0, bank_size, (b,), generator=generator, device=dev)
        from_bank = torch.ones(b, dtype=torch.bool, device=dev)
    else:  # uniform over the b - 1 other images and the bank_size bank entries
        r = torch.randint(0, b - 1 + bank_size, (b,), generator=generator, device=dev)
        from_bank = r >= (b - 1)
        own = torch.arange(b, device=dev)
        donor = torch.where(from_bank, r - (b - 1), r + (r >= own).long())
    alpha = sample_strength(b, *strength, generator=generator)
    return MixParams(selected, donor, from_bank, alpha)


def gather_attributes(
    attributes: torch.Tensor, donors: torch.Tensor, bank: torch.Tensor | None = None, from_bank: torch.Tensor | None = None
) -> torch.Tensor:
    """Donor attribute matrices.

    Args:
        attributes: (B, C, K) attributes of the batch.
        donors: (B,) indices, into the batch or, where ``from_bank`` is True, into ``bank``.
        bank: (N, C, K) attribute bank or None.
        from_bank: (B,) bool, which donors index the bank.

    Returns:
        (B, C, K).
    """
    if bank is None or from_bank is None or bank.shape[0] == 0:
        return attributes[donors]
    bank = bank.to(attributes)
    batch_idx = torch.where(from_bank, 0, donors).clamp(max=attributes.shape[0] - 1)
    bank_idx = torch.where(from_bank, donors, 0).clamp(max=bank.shape[0] - 1)
    sel = from_bank.view(-1, 1, 1)
    return torch.where(sel, bank[bank_idx], attributes[batch_idx])


def mix_attributes(attributes: torch.Tensor, donor_attributes: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Interpolate own -> donor attributes: (1 - α)·z_a + α·z_a_donor.

    Shape: (B, C, K), (B, C, K), (B,) -> (B, C, K).
    """
    a = strength.to(attributes).view(-1, 1, 1)
    return torch.lerp(attributes, donor_attributes.to(attributes), a)
