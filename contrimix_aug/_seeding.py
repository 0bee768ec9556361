"""One seed derivation for the whole package: a 63-bit seed from a base seed and a few labels or integers.

Used wherever randomness must be a fixed function of "what and where" rather than of generator history: the
training stream (epoch orders, patch crops, donors per step and rank) and the transform in DataLoader workers.
Stable across processes, platforms and Python versions (blake2b of the ``repr`` of ints and strings).

The one other scheme, :func:`source_rng` (numpy's seed sequence over ``(seed, crc32(source id))``), picks the
patches of the real sources; it is kept as it is, here beside ``derive_seed``, because the bundled ``he`` and
``fluorescence`` weights and their cards were made from exactly those patches (changing it would change what
their published commands reproduce).
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np

__all__ = ["derive_seed", "source_rng"]


def derive_seed(seed: int, *parts: Any) -> int:
    """``blake2b((seed, *parts))`` as a non-negative 63-bit int. Parts must be ints or strings.

    >>> derive_seed(0, "epoch", 3) == derive_seed(0, "epoch", 3) != derive_seed(0, "epoch", 4)
    True
    """
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, str)):
            raise TypeError(f"derive_seed: parts must be ints or strings, got {type(p).__name__}.")
    h = hashlib.blake2b(repr((int(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def source_rng(seed: int, source_id: str) -> np.random.Generator:
    """Generator for the patches of one real source: depends on ``seed`` and the id only, not on the other sources
    chosen (see the module docstring for why it is not :func:`derive_seed`)."""
    return np.random.default_rng([int(seed), zlib.crc32(source_id.encode())])
