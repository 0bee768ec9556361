"""Stage 3: the random half of the transform (who gives their attributes to whom, and how much) and the mixing of
attribute matrices. Every draw comes from an explicit ``torch.Generator``; nothing touches torch's global RNG.

:func:`sample_mix_params` is the one place where the donor policy lives (kornia's split of parameter generators
from apply functions is the model): the kornia/torchvision module, the albumentations adapter and the functional
API all draw their parameters with it and hand the :class:`MixParams` record to
:func:`contrimix_aug.functional.apply_contrimix`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

__all__ = [
    "DONOR_MODES",
    "SAMPLED_ENTRIES",
    "MixParams",
    "DEFAULT_DONORS",
    "DEFAULT_SPREAD",
    "check_spread",
    "gather_attributes",
    "mix_attributes",
    "sample_bank_attributes",
    "sampled_reach",
    "sample_donors",
    "sample_mix_params",
    "sample_strength",
]

DONOR_MODES = ("batch", "bank", "both", "sampled")
# what to pass when a bank is missing: ContriMix takes images, the functional API attributes
_BANK_FIX = ("pass bank=reference images (N, C, H, W) to ContriMix, or attributes (N, C, K) to the functional API "
             "(contrimix_aug.bank.compute_bank(model, images) makes them)")
"""Where donors come from: other images of the batch, the attribute bank, both (uniform over the union), or new
attribute matrices sampled around the bank (:func:`sample_bank_attributes`: stains no reference image had)."""

SAMPLED_ENTRIES = 3
"""How many distinct bank entries one sampled attribute matrix blends (fewer when the bank is smaller)."""


@dataclass(frozen=True)
class MixParams:
    """The parameters of one ContriMix call on a batch of B images, all (B,) tensors on one device.

    Attributes:
        selected: bool, images that are re-rendered (the others come back unchanged).
        donors: long, the donor of each image: a row of the batch, or of the attribute bank where ``from_bank``.
        from_bank: bool, donors that index the bank.
        strength: float α in [0, 1]: attributes become (1 - α)·own + α·donor.
        donor_attributes: None, or (B, C, K) float: explicit donor attribute matrices (``donors="sampled"``).
            When present, image i's donor is ``donor_attributes[i]``; ``donors`` then holds -1 and ``from_bank``
            False (no image or bank entry is the donor).
    """

    selected: torch.Tensor
    donors: torch.Tensor
    from_bank: torch.Tensor
    strength: torch.Tensor
    donor_attributes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shapes = {name: tuple(getattr(self, name).shape) for name in ("selected", "donors", "from_bank", "strength")}
        if len(set(shapes.values())) != 1 or len(shapes["donors"]) != 1:
            raise ValueError(f"MixParams: expected four (B,) tensors, got shapes {shapes}.")
        da = self.donor_attributes
        if da is not None and (da.ndim != 3 or da.shape[0] != shapes["donors"][0] or not da.is_floating_point()):
            raise ValueError(f"MixParams: donor_attributes must be a float (B, C, K) tensor with B = "
                             f"{shapes['donors'][0]}, got {da.dtype} {tuple(da.shape)}.")

    @property
    def batch_size(self) -> int:
        return int(self.donors.shape[0])

    def to_dict(self) -> dict[str, torch.Tensor]:
        """kornia's parameter dict (``batch_prob`` is the float selection, as kornia expects); ``donor_attributes``
        only when there are explicit donor attributes."""
        d = {"batch_prob": self.selected.float(), "donors": self.donors, "from_bank": self.from_bank,
             "strength": self.strength}
        if self.donor_attributes is not None:
            d["donor_attributes"] = self.donor_attributes
        return d

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> "MixParams":
        """Inverse of :meth:`to_dict` (replay of ``aug.params``)."""
        missing = [k for k in ("batch_prob", "donors", "from_bank", "strength") if k not in d]
        if missing:
            raise ValueError(f"MixParams: replayed params lack {missing}; pass the params a ContriMix call recorded.")
        return cls(d["batch_prob"] > 0.5, d["donors"], d["from_bank"].bool(), d["strength"], d.get("donor_attributes"))


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


DEFAULT_DONORS = "sampled"
"""The default donor policy of ``ContriMix`` and ``AlbumentationsContriMix``, chosen on development data by the rule
of docs/weights.md ("The default donor policy: how it was chosen"; ``scripts/choose_default_policy.py``)."""
DEFAULT_SPREAD = 0.7
"""The default ``spread`` of sampled donors (chosen with :data:`DEFAULT_DONORS`): blends of real stains, inside the
bank's hull."""


def check_spread(spread: float | None, donors: str = "sampled") -> float | None:
    """Validate ``spread=`` (a finite float >= 0; it applies to ``donors="sampled"`` only) and return it as a float;
    None is :data:`DEFAULT_SPREAD` for ``"sampled"`` and stays None for the other modes (which ignore it).

    Raises:
        TypeError: not a real number. ValueError: negative, NaN or Inf; or != 1 with another donor mode.
    """
    if spread is None:
        return DEFAULT_SPREAD if donors == "sampled" else None
    if isinstance(spread, bool) or not isinstance(spread, numbers.Real):  # numpy floats are Real too
        raise TypeError(f"spread: expected a float >= 0 (1.0: as varied as the bank), got {type(spread).__name__}.")
    s = float(spread)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"spread: expected a finite float >= 0 (0: the bank centre, 1: as varied as the bank), "
                         f"got {spread!r}.")
    if s != 1.0 and donors != "sampled":
        raise ValueError(f"spread={spread!r} applies to donors='sampled' only (donors={donors!r} takes real donors); "
                         "pass donors='sampled', or leave spread out.")
    return s


def sampled_reach(bank_size: int, entries: int = SAMPLED_ENTRIES) -> float:
    """κ of :func:`sample_bank_attributes`: the factor that gives its blends the bank's own variance.

    A blend Σ_j w_j·b_j of m = min(entries, N) distinct entries of an N-entry bank with Dirichlet(1) weights
    deviates from the bank centre c with f = 2/(m + 1) − (m − 1)/((m + 1)(N − 1)) times the bank's covariance
    (E[Σ w_j²] = 2/(m + 1), less the slight anticorrelation of entries drawn without replacement); κ = f^(−1/2).
    κ = √2 (1.414) for m = 3 and a large bank; 1 for a bank of one entry.
    """
    n_bank, m = int(bank_size), min(int(entries), int(bank_size))
    if n_bank < 1 or m < 1:
        raise ValueError(f"sampled_reach: need bank_size >= 1 and entries >= 1, got {bank_size}, {entries}.")
    f = 2 / (m + 1) - ((m - 1) / ((m + 1) * (n_bank - 1)) if n_bank > 1 else 0.0)
    return 1.0 / math.sqrt(f)


def sample_bank_attributes(
    bank: torch.Tensor,
    n: int,
    spread: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    entries: int = SAMPLED_ENTRIES,
) -> torch.Tensor:
    """``n`` new attribute matrices around an attribute bank: stains that no reference image had.

    Each starts from a random blend of ``entries`` distinct bank entries b_1..b_m (drawn uniformly without
    replacement; m = min(entries, N)) with weights w uniform on the simplex (Dirichlet(1)), a point inside the
    bank's convex hull, and is moved away from the bank centre c (the bank mean) by ``spread``·κ:

        z = c + spread·κ·(Σ_j w_j·b_j − c),   κ = :func:`sampled_reach` (√2 = 1.414 for a large bank, m = 3)

    **spread is the samples' standard deviation relative to the bank's**: their covariance is exactly spread²
    times the bank's. spread 1 (this function's default; ContriMix's is :data:`DEFAULT_SPREAD`) = as varied as the
    bank's own entries, but continuous: new stains between and slightly beyond them; spread 0 = the bank centre;
    spread ≤ 1/κ stays inside the bank's convex hull (≈ 0.707 for a large bank; κ grows as the bank shrinks, so
    the default 0.7 reaches slightly outside the hull of a bank of 50 entries or fewer). Every sample lies in the region c + spread·κ·(hull(bank) − c); nothing is clamped. A bank of
    one entry gives that entry at every spread. Draws (entries, then weights; the same numbers whatever the
    spread) come only from ``generator``, on its device.

    Args:
        bank: (N, C, K) attribute matrices, N >= 1. n: how many to draw. spread: float >= 0.

    Returns:
        (n, C, K) float32 on the generator's device (the CPU without one).

    >>> bank = torch.tensor([[[0.0]], [[1.0]], [[2.0]]])
    >>> z = sample_bank_attributes(bank, 5, generator=torch.Generator().manual_seed(0))
    >>> z.shape, bool(((z >= 1 - 2) & (z <= 1 + 2)).all())  # κ = 2 for three entries of three
    (torch.Size([5, 1, 1]), True)
    >>> sample_bank_attributes(bank, 2, 0.0, generator=torch.Generator()).flatten().tolist()
    [1.0, 1.0]
    """
    s = check_spread(spread)
    if not isinstance(bank, torch.Tensor) or bank.ndim != 3 or bank.shape[0] == 0:
        shape = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
        raise ValueError(f"sample_bank_attributes: expected a non-empty (N, C, K) attribute bank, got {shape}; "
                         f"{_BANK_FIX}.")
    if int(n) < 0 or int(entries) < 1:
        raise ValueError(f"sample_bank_attributes: need n >= 0 and entries >= 1, got {n}, {entries}.")
    dev = generator.device if generator is not None else torch.device("cpu")
    bank = bank.detach().to(dev, torch.float32)
    n, n_bank = int(n), bank.shape[0]
    m = min(int(entries), n_bank)
    idx = torch.multinomial(torch.ones(n, n_bank, device=dev), m, replacement=False, generator=generator) \
        if n else torch.zeros(0, m, dtype=torch.long, device=dev)
    # uniform on the simplex (Dirichlet(1)): the spacings of m - 1 sorted uniforms on [0, 1]
    cuts = torch.rand(n, m - 1, generator=generator, device=dev).sort(dim=1).values
    ends = torch.ones(n, 1, device=dev)
    w = torch.diff(torch.cat([torch.zeros_like(ends), cuts, ends], dim=1), dim=1)  # (n, m), rows sum to 1
    blend = torch.einsum("nm,nmck->nck", w, bank[idx])
    centre = bank.mean(0)
    return centre + (s * sampled_reach(n_bank, m)) * (blend - centre)


def sample_mix_params(
    batch_size: int,
    *,
    p: float = 1.0,
    strength: tuple[float, float] = (1.0, 1.0),
    donors: str = "batch",
    bank_size: int = 0,
    generator: torch.Generator | None = None,
    bank: torch.Tensor | None = None,
    spread: float | None = None,
) -> MixParams:
    """Draw the :class:`MixParams` of one call, on the generator's device.

    Policy: ``"batch"`` donors are the other images of the batch, and a batch of one takes a bank donor instead;
    ``"bank"`` donors come from the bank; ``"both"`` donors are uniform over the other images and the bank (the
    batch alone when the bank is empty); ``"sampled"`` donors are new attribute matrices drawn around ``bank`` by
    :func:`sample_bank_attributes` with ``spread`` (one per image, also for a batch of one), carried in
    ``MixParams.donor_attributes``. Draw order: selection, donors (sampled attributes), strength.

    Args:
        bank_size: the bank's size (index donors). bank: the (N, C, K) bank itself, needed by ``"sampled"``
            (its size stands for ``bank_size`` when that is 0). spread: see :func:`sample_bank_attributes` (None:
            :data:`DEFAULT_SPREAD`).

    Raises:
        ValueError: no donor can exist (a single image and no bank; ``"bank"`` or ``"sampled"`` with an empty or
            missing bank); a bad ``spread``, or ``spread != 1`` with another mode than ``"sampled"``.
    """
    if donors not in DONOR_MODES:
        raise ValueError(f"donors: expected one of {DONOR_MODES}, got {donors!r}.")
    b = int(batch_size)
    if b < 1:
        raise ValueError(f"sample_mix_params: batch_size must be >= 1, got {batch_size}.")
    spread = check_spread(spread, donors)
    if bank is not None:
        if bank_size and bank_size != bank.shape[0]:
            raise ValueError(f"sample_mix_params: bank_size={bank_size} but the bank has {bank.shape[0]} entries.")
        bank_size = int(bank.shape[0])
    if donors == "sampled" and bank_size == 0:
        raise ValueError("donors='sampled' draws new attribute matrices around an attribute bank, and there is none: "
                         f"{_BANK_FIX}.")
    dev = generator.device if generator is not None else torch.device("cpu")
    selected = torch.rand(b, generator=generator, device=dev) < p
    mode = donors
    if mode == "sampled":
        if bank is None:
            raise ValueError("sample_mix_params: donors='sampled' needs the bank itself (bank=), not only bank_size.")
        attrs = sample_bank_attributes(bank, b, spread, generator=generator)
        alpha = sample_strength(b, *strength, generator=generator)
        return MixParams(selected, torch.full((b,), -1, dtype=torch.long, device=dev),
                         torch.zeros(b, dtype=torch.bool, device=dev), alpha, attrs)
    if mode == "batch" and b < 2:
        if bank_size == 0:
            raise ValueError(
                "ContriMix: a single image (or a batch of one) has no other image to take attributes from, and "
                f"the weights carry no attribute bank. Use batches of 2 or more, or {_BANK_FIX}."
            )
        mode = "bank"
    if mode == "both" and bank_size == 0:
        mode = "batch"
    if mode == "bank" and bank_size == 0:
        raise ValueError(f"donors='bank' needs an attribute bank, and there is none: {_BANK_FIX}.")
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
