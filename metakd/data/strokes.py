"""The one preprocessing of stroke images (Omniglot and any handwriting given as files).

metakd's polarity for stroke data is WHITE STROKES ON BLACK (ink = high values), the polarity of the
built-in glyphs (``glyphs.py``), so a backbone pre-trained on glyphs meets Omniglot the same way up.
Omniglot's PNGs are black strokes on white; they are inverted here.

Every stroke image metakd reads goes through ``stroke_image`` (decode -> grayscale -> polarity ->
resize), whether it is a training image of a background set, a validation or test image, an image of
the 20 official runs or of a user's episode list (``fixed_episodes.py``), or a character of an
Omniglot tree read with the ``folder`` loader. Normalisation is the second, shared step:
``StrokePreprocess.converter()`` is the same ``ImageConverter`` the episode sampler applies to every
training batch (pixels / 255, then ``(p - mean) / std`` when a normalisation is configured).

    pre = StrokePreprocess(image_size=28)            # channels 1, source black on white
    img = pre.image("run01/test/item01.png")         # uint8 (28, 28, 1), strokes 255 on 0
    x = pre.tensor(img[None])                        # float (1, 1, 28, 28), in [0, 1]
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, DataError
from .image_io import ImageSource, to_array
from .sampler import ImageConverter

WHITE_ON_BLACK, BLACK_ON_WHITE = "white_on_black", "black_on_white"
POLARITIES = (WHITE_ON_BLACK, BLACK_ON_WHITE)
STROKE_POLARITY = WHITE_ON_BLACK  # what metakd's stroke images are, after preprocessing
PREPROCESS_VERSION = 1  # bump when stroke_image's output changes (it is part of every stroke cache key)


def polarity_note(source_polarity: str) -> str:
    """One line for reports: what the files are and what a run sees."""
    if source_polarity == STROKE_POLARITY:
        return "white strokes on black (as stored)"
    return "white strokes on black (converted from the files' black strokes on white)"


def stroke_image(source: ImageSource, size: int, channels: int = 1, source_polarity: str = BLACK_ON_WHITE,
                 where: str = "") -> np.ndarray:
    """A stroke image file or its encoded bytes as uint8 (size, size, channels), white strokes on black.

    Steps (always in this order): decode; convert to 8-bit grayscale (1-bit PNGs become 0/255); invert if
    ``source_polarity`` is black_on_white; resize to size x size with Pillow's LANCZOS (antialiased, as
    every metakd loader); repeat to 3 channels if ``channels`` is 3. DataError naming ``where`` (or the
    path) if the data cannot be decoded.
    """
    if source_polarity not in POLARITIES:
        raise ConfigError(f"source_polarity must be one of {', '.join(POLARITIES)}, got {source_polarity!r}")
    label = where or (str(source) if isinstance(source, (str, Path)) else "encoded image")
    try:
        fp: object = str(source) if isinstance(source, (str, Path)) else io.BytesIO(
            source.tobytes() if isinstance(source, np.ndarray) else bytes(source))
        with Image.open(fp) as img:  # type: ignore[arg-type]
            gray = img.convert("L")
    except FileNotFoundError:
        raise DataError(f"{label!r}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{label!r}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if source_polarity == BLACK_ON_WHITE:
        gray = Image.fromarray(255 - np.asarray(gray, dtype=np.uint8))
    out = to_array(gray, size, 1)
    return np.repeat(out, 3, axis=2) if channels == 3 else out


@dataclass(frozen=True)
class StrokePreprocess:
    """The preprocessing a run applies to stroke images: size, channels, source polarity, normalisation.

    image_size, channels: the run's ``data.image_size`` and the dataset's channels (Omniglot: 28, 1).
    source_polarity: what the files are (Omniglot: black_on_white). mean, std: per-channel normalisation
    on the [0, 1] scale (the run's ``data.normalize``), or None for plain pixels / 255.
    """

    image_size: int = 28
    channels: int = 1
    source_polarity: str = BLACK_ON_WHITE
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ConfigError(f"image_size must be an integer >= 1, got {self.image_size!r}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels!r}")
        if self.source_polarity not in POLARITIES:
            raise ConfigError(f"source_polarity must be one of {', '.join(POLARITIES)}, got {self.source_polarity!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std (normalisation) or neither")

    def image(self, source: ImageSource, where: str = "") -> np.ndarray:
        """uint8 (S, S, C) of one file or encoded image, through ``stroke_image``."""
        return stroke_image(source, self.image_size, self.channels, self.source_polarity, where)

    def images(self, sources: Sequence[ImageSource], names: Optional[Sequence[str]] = None) -> np.ndarray:
        """uint8 (N, S, S, C) of several images (``names[i]`` names image i in errors)."""
        out = np.empty((len(sources), self.image_size, self.image_size, self.channels), np.uint8)
        for i, src in enumerate(sources):
            out[i] = self.image(src, names[i] if names is not None else "")
        return out

    def converter(self, dtype: torch.dtype = torch.float32) -> ImageConverter:
        """The episode sampler's uint8 -> float step with this normalisation (augment preset "glyph")."""
        return ImageConverter(dtype, self.mean, self.std, "glyph")

    def tensor(self, images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """float (N, C, S, S) of uint8 (N, S, S, C) images, normalised like every training batch."""
        return self.converter(dtype).from_numpy(images)

    def decode(self, source: ImageSource, size: int, channels: int, where: str = "") -> np.ndarray:
        """``image_io.decode_many_into``'s decode signature; size and channels must be this preprocessing's."""
        if (size, channels) != (self.image_size, self.channels):
            raise DataError(f"{where or 'stroke image'}: asked for {size}px {channels}ch, the preprocessing is "
                            f"{self.image_size}px {self.channels}ch")
        return self.image(source, where)
