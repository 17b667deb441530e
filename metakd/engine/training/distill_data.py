"""Data for classification distillation: train/test tensors from any registered dataset, seeded
batch order and the standard CIFAR augmentation on tensors.

Splits. cifar100 and folder trees: ``data.train_split`` and ``data.test_split`` (same classes,
checked by name). glyphs, omniglot (and any dataset with ``data.holdout_per_class`` set): the train
split's classes only; in every class the last ``holdout_per_class`` instances (in file order) are the
test set and the rest the training set; e.g. 20 glyph instances per class -> 16 train / 4 test. Glyph
instances of a class are i.i.d. random distortions, so file order is an unbiased split; Omniglot's
files of a character sort by drawer (``<id>_<drawer>.png``), so the split holds out drawers (people).
``data.val_per_class``: the ``val_per_class`` instances before the test ones form a validation part
(model selection; the test part is then scored once, at the end). ``data.train_per_class``: keep
only the first N training instances of every class (a smaller data size with the same val/test).
``data.train_split`` may be a list: the classes of those splits together (e.g. Omniglot's ``[train,
val]`` of the minimal track: both minimal sets' 242 characters). ``data.max_classes`` keeps the first
N classes (labels stay 0..N-1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ...data import load_split
from ...data.base import ImageSplit
from ...data.sampler import channel_stats
from ...errors import ConfigError, DataError


@dataclass
class ClassificationData:
    """Images uint8 (N, C, H, W) on the host and labels int64 (N,), per part; class names; normalisation."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    class_names: List[str]
    mean: Tensor  # (C,) in [0, 1] units
    std: Tensor   # (C,)
    info: Dict[str, Any]
    val_x: Optional[Tensor] = None  # (N_val, C, H, W) uint8, when data.val_per_class is set
    val_y: Optional[Tensor] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


def _keep_classes(split: ImageSplit, n: Optional[int]) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    images, labels = np.asarray(split.images), split.labels
    if n is None:
        return images, labels, list(split.class_names)
    if n > split.num_classes:
        raise ConfigError(f"data.max_classes={n} but {split.name or 'the split'} has only {split.num_classes} classes")
    mask = labels < n
    return images[mask], labels[mask], list(split.class_names[:n])


def _holdout(images: np.ndarray, labels: np.ndarray, per_class: int, where: str, val: int = 0,
             train: Optional[int] = None):
    """Per class in file order: the last ``per_class`` instances -> test, the ``val`` before them -> val,
    the first ``train`` (default: all) of the rest -> train. Returns (part name -> (images, labels))."""
    part = np.full(len(labels), -1)  # 0 train, 1 val, 2 test, -1 unused
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class + val:
            raise DataError(f"{where}: class {int(c)} has {len(idx)} images; data.holdout_per_class={per_class}"
                            + (f" and data.val_per_class={val}" if val else "") + " would leave none for training")
        part[idx[len(idx) - per_class:]] = 2
        part[idx[len(idx) - per_class - val:len(idx) - per_class]] = 1
        part[idx[:len(idx) - per_class - val][:train]] = 0
    return {name: (images[part == k], labels[part == k]) for k, name in enumerate(("train", "val", "test"))}


def _load_train(d: Dict[str, Any], options: Dict[str, Any]) -> ImageSplit:
    """The train split, or the classes of several splits together (``data.train_split`` a list)."""
    names = d["train_split"] if isinstance(d["train_split"], list) else [d["train_split"]]
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"data.train_split must be a split name or a non-empty list of them, got {d['train_split']!r}")
    splits = [load_split(d["dataset"], d["root"], n, image_size=d["image_size"], **options) for n in names]
    if len(splits) == 1:
        return splits[0]
    classes = [c for s in splits for c in s.class_names]
    if len(set(classes)) != len(classes):
        raise DataError(f"data.train_split={names}: the splits share class names; each class must be in one split")
    offsets = np.cumsum([0] + [s.num_classes for s in splits[:-1]])
    images = np.concatenate([np.asarray(s.images) for s in splits])
    labels = np.concatenate([s.labels + o for s, o in zip(splits, offsets)])
    return ImageSplit(images, labels, classes, name="+".join(s.name or n for s, n in zip(splits, names)))


def _to_tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def load_classification(cfg: Dict[str, Any]) -> ClassificationData:
    """Train and test parts for the config's ``data`` section (see the module docstring)."""
    d = cfg["data"]
    options = dict(d["options"])
    train = _load_train(d, options)
    tr_x, tr_y, names = _keep_classes(train, d["max_classes"])
    va_x = va_y = None
    if (d["val_per_class"] or d["train_per_class"]) and d["holdout_per_class"] is None:
        raise ConfigError("data.val_per_class and data.train_per_class need data.holdout_per_class (instances "
                          "are split per class)")
    if d["holdout_per_class"] is not None:
        parts = _holdout(tr_x, tr_y, d["holdout_per_class"], train.name or d["dataset"], d["val_per_class"] or 0,
                         d["train_per_class"])
        (tr_x, tr_y), (te_x, te_y) = parts["train"], parts["test"]
        if d["val_per_class"]:
            va_x, va_y = parts["val"]
        test_name = f"{train.name} (held-out instances)"
    else:
        if d["dataset"] == "glyphs":
            raise ConfigError("data.dataset=glyphs: its splits hold disjoint classes; set data.holdout_per_class "
                              "(e.g. 4 of 20 instances per class) to classify the train split's classes")
        test = load_split(d["dataset"], d["root"], d["test_split"], image_size=d["image_size"], **options)
        te_x, te_y, test_names = _keep_classes(test, d["max_classes"])
        if test_names != names:
            raise DataError(f"{test.source or test.name}: the test split's classes differ from the train split's "
                            f"({len(test_names)} vs {len(names)} classes, first difference at "
                            f"{next((a, b) for a, b in zip(test_names + [None], names + [None]) if a != b)})")
        test_name = test.name
    if len(np.unique(tr_y)) != len(names):
        raise DataError(f"{train.name}: some classes have no training image")
    spec = d["normalize"]
    if spec is None:
        mean, std = [0.0] * tr_x.shape[-1], [1.0] * tr_x.shape[-1]
    elif spec == "dataset":
        mean, std = channel_stats(ImageSplit(tr_x, tr_y, names))
    elif isinstance(spec, list) and len(spec) == 2 and all(isinstance(v, list) and len(v) == tr_x.shape[-1] for v in spec):
        mean, std = spec
    else:
        raise ConfigError(f"data.normalize must be null, 'dataset' or [[mean x C], [std x C]], got {spec!r}")
    info = {"train": {"name": train.name, "images": int(len(tr_y))}, "test": {"name": test_name, "images": int(len(te_y))},
            "classes": len(names), "image_shape": list(tr_x.shape[1:])}
    if va_x is not None:
        info["val"] = {"name": f"{train.name} (held-out instances)", "images": int(len(va_y))}
    return ClassificationData(_to_tensor(tr_x), torch.from_numpy(tr_y.astype(np.int64)), _to_tensor(te_x),
                              torch.from_numpy(te_y.astype(np.int64)), names,
                              torch.tensor([float(m) for m in mean]), torch.tensor([float(s) for s in std]), info,
                              None if va_x is None else _to_tensor(va_x),
                              None if va_y is None else torch.from_numpy(va_y.astype(np.int64)))


def heldout_split(labels: Tensor, fraction: float, seed: int) -> Tuple[Tensor, Tensor]:
    """Indices (train, heldout): a random ``fraction`` of every class (at least one image, never all)."""
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        m = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        if m < 1:
            raise DataError(f"class {int(c)} has a single training image: cannot hold one out for MKD (use mkd.heldout=train)")
        held.append(idx[:m])
        keep.append(idx[m:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def prepare(x_uint8: Tensor, mean: Tensor, std: Tensor, device: torch.device, augment: str = "none",
            padding: int = 4, generator: Optional[torch.Generator] = None) -> Tensor:
    """uint8 (B, C, H, W) -> normalised float on ``device``, optionally augmented.

    augment "crop_flip": a random HxW crop of the image zero-padded by ``padding`` (padding in pixel
    space, before normalisation, as in the standard CIFAR pipeline) and a horizontal flip with
    probability 1/2; "crop": the crop only. All randomness from ``generator`` (CPU), so a resumed
    run replays the same augmentations.
    """
    x = x_uint8.to(torch.float32) / 255.0
    if augment != "none":
        b, _, h, w = x.shape
        if padding:
            x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]      # (B, 1, H, 1)
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]      # (B, 1, 1, W)
        x = x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
        if augment == "crop_flip":
            flip = torch.rand(b, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x.to(device, non_blocking=True)
    return (x - mean.to(device)[None, :, None, None]) / std.to(device)[None, :, None, None]


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of ``n`` training images used in ``epoch`` (a pure function: resume needs no state)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)
