"""Stage 3: choosing donors and mixing attribute matrices. Draws only from an explicit ``torch.Generator``."""

from __future__ import annotations

import torch

__all__ = ["sample_donors", "sample_bank_donors", "sample_strength", "mix_attributes", "gather_attributes"]


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


def sample_bank_donors(
    bank_size: int, batch_size: int, num_mixes: int = 1, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(M, B) indices into an attribute bank of ``bank_size`` entries, uniform with replacement."""
    if bank_size < 1:
        raise ValueError("sample_bank_donors: the attribute bank is empty; build one from reference images.")
    dev = generator.device if generator is not None else None
    return torch.randint(0, bank_size, (num_mixes, batch_size), generator=generator, device=dev)


def sample_strength(
    batch_size: int, low: float, high: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B,) interpolation weights α ~ U(low, high) (exactly ``low`` when low == high, drawing nothing)."""
    dev = generator.device if generator is not None else None
    if low == high:
        return torch.full((batch_size,), low, device=dev)
    return low + (high - low) * torch.rand(batch_size, generator=generator, device=dev)


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
    if bank is None or from_bank is None:
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
