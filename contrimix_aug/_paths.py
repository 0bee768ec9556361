"""Where contrimix_aug keeps files it fetches or builds (weights, real-data cache).

The root is ``$CONTRIMIX_AUG_HOME`` when set, else ``$XDG_CACHE_HOME/contrimix_aug``, else
``~/.cache/contrimix_aug``. Nothing is created at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home_dir", "weights_dir", "data_dir"]


def home_dir() -> Path:
    """Root of the user cache (not created)."""
    env = os.environ.get("CONTRIMIX_AUG_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "contrimix_aug"


def weights_dir() -> Path:
    """Folder of user-imported or user-trained weights: ``home_dir()/weights``."""
    return home_dir() / "weights"


def data_dir() -> Path:
    """Folder of cached real images fetched from published packages: ``home_dir()/data``."""
    return home_dir() / "data"
