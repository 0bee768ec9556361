"""torchvision v2 samples for :class:`~contrimix_aug.ContriMix` and :class:`~contrimix_aug.ContriMixNormalize`.

``v2.Compose([..., ContriMix(...)])(img, mask)`` calls the transform with the whole sample: several positional
arguments, or one tuple / list / dict, nested in any way v2 accepts, holding images, masks, boxes, keypoints, labels
and anything else. This module finds the images the way torchvision v2 does, re-renders them with one draw for the
sample, keeps their type (a ``tv_tensors.Image`` stays an Image) and passes every other leaf through untouched.

Images, as v2 decides (``Transform._needs_transform_list``):

- every ``tv_tensors.Image``;
- plain tensors: only when the sample holds no ``tv_tensors.Image`` / ``Video`` (nor a PIL image), and then only the
  first plain tensor in ``torch.utils._pytree`` flattening order (depth-first, dict keys in insertion order);
- ``tv_tensors.Mask``, ``BoundingBoxes``, ``KeyPoints``, ``Video`` and non-tensors pass through. A PIL image is an
  image for v2 but ContriMix needs float tensors: it is refused with the steps to add before ContriMix.

torchvision is imported only when such a sample comes in; it is not a dependency of ``contrimix_aug``.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["apply_to_sample", "is_kornia_params", "is_sample_call", "is_tv_tensor"]

_TO_FLOAT = "v2.ToImage(), v2.ToDtype(torch.float32, scale=True)"


def is_tv_tensor(x: Any) -> bool:
    """True for a torchvision ``TVTensor`` (Image, Mask, BoundingBoxes, ...). Imports nothing: a TVTensor can only
    exist once torchvision is imported."""
    tv = sys.modules.get("torchvision.tv_tensors")
    return tv is not None and isinstance(x, tv.TVTensor)


def is_kornia_params(x: Any) -> bool:
    """A parameter dict a ContriMix call recorded (``aug.params``), passed positionally, kornia-style."""
    return isinstance(x, dict) and "batch_prob" in x and all(isinstance(v, torch.Tensor) for v in x.values())


def is_sample_call(input: Any, rest: tuple) -> bool:
    """Whether ``forward(input, *rest)`` is a torchvision-style sample rather than kornia's single tensor."""
    if rest:
        return True
    return isinstance(input, (tuple, list, dict)) or is_tv_tensor(input)


def _is_pil(x: Any) -> bool:
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(x, pil.Image)


def _import_tv_tensors(owner: str, sample: Any) -> Any:
    try:
        from torchvision import tv_tensors
    except ImportError:
        raise TypeError(
            f"{owner}: got a {type(sample).__name__} sample (several inputs, or a tuple/list/dict). Finding the "
            "images in a sample follows torchvision v2's rules and needs torchvision, which is not installed: "
            "pip install torchvision. Without it, call the transform on the image tensor alone (masks, boxes and "
            "labels need no stain augmentation), or use kornia.augmentation.AugmentationSequential(..., "
            "data_keys=['input', 'mask'])."
        ) from None
    return tv_tensors


def apply_to_sample(aug: Any, inputs: tuple, params: Optional[Dict[str, torch.Tensor]] = None) -> Any:
    """Re-render the images of a torchvision v2 sample with one draw; return the sample in the same structure.

    Args:
        aug: a ContriMix / ContriMixNormalize (its ``_forward_tensor`` renders one image tensor).
        inputs: the positional arguments of the call (one sample, or the parts of one sample).
        params: a recorded draw to replay (``aug.params``), or None to draw one for this sample.

    Shape: each image (C, H, W) or (B, C, H, W); all images of a sample share the draw, so they need the same
    batch size. Every other leaf is returned as is (the same object).
    """
    owner = type(aug).__name__
    sample = inputs if len(inputs) > 1 else inputs[0]
    tv_tensors = _import_tv_tensors(owner, sample)
    flat, spec = tree_flatten(sample)
    if any(_is_pil(leaf) for leaf in flat):
        raise TypeError(
            f"{owner}: got a PIL image; ContriMix renders float tensors in [0, 1]. Put {_TO_FLOAT} before it in "
            "the v2.Compose (or transforms.ToTensor() in a v1 pipeline)."
        )
    explicit = any(isinstance(leaf, (tv_tensors.Image, tv_tensors.Video)) for leaf in flat)
    images, pure_taken = [], explicit
    for i, leaf in enumerate(flat):
        if isinstance(leaf, tv_tensors.Image):
            images.append(i)
        elif isinstance(leaf, torch.Tensor) and not isinstance(leaf, tv_tensors.TVTensor) and not pure_taken:
            images.append(i)
            pure_taken = True
    if not images:  # nothing v2 would call an image: the sample passes through, as in any v2 transform
        return sample
    plain = {i: flat[i].as_subclass(torch.Tensor) for i in images}
    first = plain[images[0]]
    aug._check_tensor(first)
    batch = tuple(first.shape) if first.ndim == 4 else (1, *first.shape)
    for i in images[1:]:
        aug._check_tensor(plain[i])
        b = plain[i].shape[0] if plain[i].ndim == 4 else 1
        if b != batch[0]:
            raise ValueError(
                f"{owner}: the images of one sample share one draw, so they need the same batch size; got "
                f"{tuple(first.shape)} and {tuple(plain[i].shape)}. Call the transform on each separately."
            )
    if params is None:
        params = aug.forward_parameters(torch.Size(batch))
    out = list(flat)
    for i in images:
        rendered = aug._forward_tensor(plain[i], params)
        leaf = flat[i]
        out[i] = tv_tensors.wrap(rendered, like=leaf) if isinstance(leaf, tv_tensors.TVTensor) else rendered
    return tree_unflatten(out, spec)
