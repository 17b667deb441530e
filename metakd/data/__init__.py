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
from .augment import DEFAULT_PRESET, PRESETS
from .base import ImageSplit
from .episode import EpisodeBatch
from .sampler import EpisodeSampler

# Each module registers its loaders in DATASETS on import.
_LOADER_MODULES = ("mini_imagenet", "tiered_imagenet", "folder", "cifar", "glyphs", "omniglot")
for _name in _LOADER_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

# The augmentation preset (metakd.data.augment.PRESETS) each built-in dataset selects: "glyph" for
# strokes (the glyphs, Omniglot and Omniglot through the folder loader), "natural" for photos.
DATASET_PRESETS = {"mini_imagenet": "natural", "tiered_imagenet": "natural", "cifar_fs": "natural", "fc100": "natural",
                   "cifar100": "natural", "glyphs": "glyph", "omniglot": "glyph", "folder": "natural"}
LAYOUT_PRESETS = {"omniglot": "glyph", "class_folders": "natural"}  # the folder loader's layouts (meta["format"])


def default_preset(dataset: str, data: ImageSplit) -> str:
    """The preset a split selects when the config names none: the loader's own ``meta["augment_preset"]``,
    else by layout (``folder``: Omniglot -> glyph, class folders -> natural), else by dataset, else natural."""
    own = data.meta.get("augment_preset")
    if own in PRESETS:
        return own
    if dataset == "folder" and data.meta.get("format") in LAYOUT_PRESETS:
        return LAYOUT_PRESETS[data.meta["format"]]
    return DATASET_PRESETS.get(dataset, DEFAULT_PRESET)


def load_split(dataset: str, root: Optional[str], split: str, **options: Any) -> ImageSplit:
    """The ``split`` (train / val / test) of the dataset registered as ``dataset``, read from ``root``.

    skip_small_classes (any dataset, ``data.options.skip_small_classes`` in a config): recorded in the
    split's meta, where ``EpisodeSampler`` reads it: classes with fewer than K+Q images are left out.

    augment_preset (any dataset, ``data.options.augment_preset: natural | glyph``): the augmentations
    that fit the images (MSD's views, the robustness scenarios; ``metakd.data.augment.PRESETS``),
    recorded as ``meta["augment_preset"]``, where ``EpisodeSampler`` reads it and puts it on every batch.
    Default: ``default_preset`` (glyph for ``glyphs`` and Omniglot folders, natural otherwise).
    """
    skip = options.pop("skip_small_classes", None)
    if skip is not None and not isinstance(skip, bool):
        raise ConfigError(f"{dataset}: skip_small_classes must be true or false, got {skip!r}")
    preset = options.pop("augment_preset", None)
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"{dataset}: augment_preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    data = DATASETS.get(dataset)(root, split, **options)
    if skip is not None:
        data.meta["skip_small_classes"] = skip
    data.meta["augment_preset"] = preset if preset is not None else default_preset(dataset, data)
    return data


__all__ = ["DATASETS", "DATASET_PRESETS", "EpisodeBatch", "EpisodeSampler", "ImageSplit", "default_preset", "load_split"]
