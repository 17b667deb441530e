"""Datasets (one module per on-disk format), the built-in glyph dataset and the episode sampler.

    split = load_split("mini_imagenet", "/data/mini", "train")     # -> ImageSplit (uint8 images)
    sampler = EpisodeSampler(split, n_way=5, k_shot=1, q_query=15)
    batch = sampler.sample(4)                                       # -> EpisodeBatch of 4 tasks
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

from ..errors import ConfigError
from ..registry import DATASETS
from .base import ImageSplit
from .episode import EpisodeBatch
from .sampler import EpisodeSampler

# Each module registers its loaders in DATASETS on import.
_LOADER_MODULES = ("mini_imagenet", "tiered_imagenet", "folder", "cifar", "glyphs")
for _name in _LOADER_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def load_split(dataset: str, root: Optional[str], split: str, **options: Any) -> ImageSplit:
    """The ``split`` (train / val / test) of the dataset registered as ``dataset``, read from ``root``.

    skip_small_classes (any dataset, ``data.options.skip_small_classes`` in a config): recorded in the
    split's meta, where ``EpisodeSampler`` reads it: classes with fewer than K+Q images are left out.
    """
    skip = options.pop("skip_small_classes", None)
    if skip is not None and not isinstance(skip, bool):
        raise ConfigError(f"{dataset}: skip_small_classes must be true or false, got {skip!r}")
    data = DATASETS.get(dataset)(root, split, **options)
    if skip is not None:
        data.meta["skip_small_classes"] = skip
    return data


__all__ = ["DATASETS", "EpisodeBatch", "EpisodeSampler", "ImageSplit", "load_split"]
