"""A run's image preprocessing as one object, for files that are not in a dataset: a user's own images
turned into an episode (``episode_from_files``), an episode-list CSV, the official Omniglot runs.

``preprocess_for`` gives the preprocessing a run's training images went through: stroke datasets
(``omniglot``, ``glyphs``) through ``strokes.StrokePreprocess`` (grayscale, white strokes on black, resize),
every other dataset through ``ImagePreprocess`` (``image_io.decode_image``: the decode and resize of the
folder and CSV loaders), then the run's normalisation with the episode sampler's ``ImageConverter``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .episode import EpisodeBatch
from .image_io import ImageSource, decode_image
from .sampler import ImageConverter
from .strokes import BLACK_ON_WHITE, StrokePreprocess

STROKE_DATASETS = ("omniglot", "glyphs")  # images of strokes: one polarity (white on black) in every run


@dataclass(frozen=True)
class ImagePreprocess:
    """Natural images: decode, resize to ``image_size`` (``decode_image``), then pixels / 255 and the
    per-channel normalisation ``mean``/``std`` (None: none), as every training batch."""

    image_size: int = 84
    channels: int = 3
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    def image(self, source: ImageSource, where: str = "") -> np.ndarray:
        """uint8 (S, S, C) of one file or encoded image."""
        return decode_image(source, self.image_size, self.channels, where)

    def converter(self, dtype: torch.dtype = torch.float32) -> ImageConverter:
        return ImageConverter(dtype, self.mean, self.std, "natural")

    def tensor(self, images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """float (N, C, S, S) of uint8 (N, S, S, C) images."""
        return self.converter(dtype).from_numpy(images)


Preprocess = Union[ImagePreprocess, StrokePreprocess]


def preprocess_for(dataset: str, image_size: int, channels: int, normalize: Any = None,
                   source_polarity: str = BLACK_ON_WHITE) -> Preprocess:
    """The preprocessing of a run on ``dataset`` at ``image_size`` px with ``channels`` channels and the run's
    normalisation ``normalize`` ((mean, std) or None). ``source_polarity``: what stroke files are (black
    strokes on white, as Omniglot's and most scanned handwriting; a run always sees white on black)."""
    mean, std = (None, None) if normalize is None else (tuple(normalize[0]), tuple(normalize[1]))
    if dataset in STROKE_DATASETS:
        return StrokePreprocess(image_size=image_size, channels=channels, source_polarity=source_polarity,
                                mean=mean, std=std)
    return ImagePreprocess(image_size=image_size, channels=channels, mean=mean, std=std)


def episode_from_files(support: Sequence[ImageSource], support_labels: Sequence[Any],
                       query: Sequence[ImageSource], preprocess: Preprocess,
                       query_labels: Optional[Sequence[Any]] = None) -> Tuple[EpisodeBatch, List[Any]]:
    """(one-task EpisodeBatch, class of each episode label) from image files: support_x (1, S, C, H, W),
    support_y (1, S) numbered 0..N-1 in the order classes first appear in ``support_labels``; query_x (1, Q, ...);
    query_y (1, Q) from ``query_labels`` when given, else -1 (unknown: ``learner.predict`` still answers)."""
    classes: List[Any] = []
    for label in support_labels:
        if label not in classes:
            classes.append(label)
    if len(support) != len(support_labels) or not support or not query:
        raise ValueError("episode_from_files needs one label per support image and at least one query image")
    sx = preprocess.tensor(np.stack([preprocess.image(s) for s in support]))
    qx = preprocess.tensor(np.stack([preprocess.image(q) for q in query]))
    sy = torch.tensor([classes.index(label) for label in support_labels])
    if query_labels is not None:
        unknown = [label for label in query_labels if label not in classes]
        if unknown:
            raise ValueError(f"query labels {unknown[:3]} have no support image (support classes: {classes})")
        qy = torch.tensor([classes.index(label) for label in query_labels])
    else:
        qy = torch.full((len(query),), -1)
    k = int(torch.bincount(sy).min())
    batch = EpisodeBatch(sx[None], sy[None], qx[None], qy[None], len(classes), k, -(-len(query) // len(classes)),
                         augment_preset=preprocess.converter().augment_preset, mean=preprocess.mean, std=preprocess.std)
    return batch, classes
