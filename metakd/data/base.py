"""The in-memory form every dataset loader returns: uint8 images plus integer class labels."""
from __future__ import annotations

import hashlib

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from ..errors import DataError


@dataclass
class ImageSplit:
    """One split (train / val / test) of an image dataset.

    images: uint8 array (N, H, W, C), C in {1, 3}; may be a read-only memory map.
    labels: int64 array (N,), values 0..num_classes-1 (index into ``class_names``).
    class_names: one name per class (e.g. a WordNet id or a character).
    name: short id such as ``"mini_imagenet/train"``; source: the file or folder it came from.
    """

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    class_names: List[str] = field(repr=False)
    name: str = ""
    source: str = ""
    meta: Dict[str, object] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        where = self.source or self.name or "dataset"
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataError(
                f"{where}: images must be uint8 of shape (N, H, W, C) with C in {{1, 3}}, "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{where}: expected one label per image ({self.images.shape[0]}), got labels of shape {self.labels.shape}"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"{where}: labels must lie in 0..{len(self.class_names) - 1} (one per class name), "
                f"got range {self.labels.min()}..{self.labels.max()}"
            )

    def __repr__(self) -> str:
        """One line: dataset/split, classes, images, image shape, storage (never the pixels)."""
        h, w, c = self.image_shape
        storage = "memory-mapped" if isinstance(self.images, np.memmap) or isinstance(
            getattr(self.images, "base", None), np.memmap) else "in memory"
        where = f", source={self.source!r}" if self.source else ""
        return (f"ImageSplit({self.name or 'unnamed'}: {self.num_classes} classes, {len(self)} images of "
                f"{h}x{w}x{c} uint8, {storage}{where})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])

    def indices_by_class(self) -> List[np.ndarray]:
        """Row indices of each class, in ascending order: list of length num_classes."""
        order = np.argsort(self.labels, kind="stable")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return np.split(order, np.cumsum(counts)[:-1])

    def content_fingerprint(self, samples: int = 64) -> str:
        """16 hex chars over the image count, shape, class names, labels and the pixels of ``samples``
        evenly spaced images: cheap (a few reads of a memory map), and it changes when the same class names
        hold other images (what ``--resume`` must notice)."""
        h = hashlib.sha256()
        h.update(repr((len(self), self.image_shape, list(self.class_names))).encode("utf-8", "surrogateescape"))
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        if len(self):
            for i in np.unique(np.linspace(0, len(self) - 1, min(samples, len(self))).astype(np.int64)):
                h.update(np.ascontiguousarray(self.images[int(i)]).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> Dict[str, object]:
        counts = np.bincount(self.labels, minlength=self.num_classes) if len(self.labels) else np.zeros(0, int)
        return {
            "name": self.name,
            "source": self.source,
            "classes": self.num_classes,
            "images": len(self),
            "image_shape": list(self.image_shape),
            "images_per_class_min": int(counts.min()) if len(counts) else 0,
            "images_per_class_max": int(counts.max()) if len(counts) else 0,
        }
