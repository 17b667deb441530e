"""Image trees with one folder per class: custom data, CUB-style copies, and Omniglot.

  "class_folders"  <root>/<split>/<class>/<image>, split folders named train, val (or validation,
                   valid) and test; class names are the folder names, in sorted order.
  "omniglot"       <root>/images_background/<alphabet>/<character>/*.png and
                   <root>/images_evaluation/... (also found under <root>/omniglot-py/). Class name
                   "alphabet/character". train = images_background, test = images_evaluation.
                   Omniglot has no validation set: ``val_alphabets=K`` holds out K background
                   alphabets (picked by ``split_seed``) as "val" and removes them from "train".
                   Images go through ``strokes.stroke_image``: white strokes on black (converted
                   from Omniglot's black on white), as the ``omniglot`` loader, which also reads the
                   zips, the minimal sets and named validation alphabets (prefer it).
Only image files are read (by extension; hidden files and other files are skipped); a class folder
without images is an error. Images are converted to RGB (channels=3) or grayscale (channels=1),
resized to image_size x image_size and decoded once into a uint8 .npy cache whose name depends on
the file list (paths, sizes, mtimes), image_size and channels, so a changed tree is re-read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..validate import integer, non_negative_int
from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import ImageSplit
from .cache import cache_file, cached_uint8_array, files_fingerprint, note, resolve_cache_dir, root_tag
from .image_io import IMAGE_EXTENSIONS, decode_image, decode_many_into, is_image_file
from .strokes import BLACK_ON_WHITE, PREPROCESS_VERSION, STROKE_POLARITY, StrokePreprocess
from .loader_args import check_choice, check_positive_int, layout_choice, normalize_split, reject_unknown, require_root

NAME = "folder"
CLASS_FOLDERS, OMNIGLOT = "class_folders", "omniglot"
LAYOUTS = (CLASS_FOLDERS, OMNIGLOT)
SPLIT_DIRS: Dict[str, List[str]] = {"train": ["train"], "val": ["val", "validation", "valid"], "test": ["test"]}
OMNIGLOT_DIRS = ("images_background", "images_evaluation")


def _subdirs(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_of(class_dir: Path) -> List[Path]:
    files = sorted((p for p in class_dir.iterdir() if is_image_file(p)), key=lambda p: p.name)
    if not files:
        raise DataError(
            f"class folder {str(class_dir)!r} contains no image files (expected {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files


def omniglot_root(root: Path) -> Optional[Path]:
    """The folder holding images_background / images_evaluation (root or root/omniglot-py), or None."""
    for base in (root, root / "omniglot-py"):
        if any((base / d).is_dir() for d in OMNIGLOT_DIRS):
            return base
    return None


def split_dir(root: Path, split: str) -> Optional[Path]:
    found = [root / name for name in SPLIT_DIRS[split] if (root / name).is_dir()]
    if len(found) > 1:
        note(f"{NAME}: {str(root)!r} has the split folders {', '.join(p.name for p in found)}; using "
             f"{found[0].name} as {split!r} (move the other{'s' if len(found) > 2 else ''} out to use "
             f"{'them' if len(found) > 2 else 'it'} instead)")
    return found[0] if found else None


def detect_layouts(root: Path) -> List[str]:
    """Folder layouts found in ``root``: omniglot if its folders exist, class_folders if a split folder has classes."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    if omniglot_root(root) is not None:
        found.append(OMNIGLOT)
    if any((d := split_dir(root, s)) is not None and _subdirs(d) for s in SPLIT_DIRS):
        found.append(CLASS_FOLDERS)
    return found


def scan_class_folders(root: Path, split: str) -> Tuple[List[str], List[Path], np.ndarray]:
    """(class names, image files, labels (N,)) of ``<root>/<split>/<class>/<image>``."""
    folder = split_dir(root, split)
    if folder is None:
        looked = ", ".join(str(root / n) for n in SPLIT_DIRS[split])
        raise DataError(f"{NAME}: no {split!r} split folder in {str(root)!r}; looked for: {looked}")
    classes = _subdirs(folder)
    if not classes:
        raise DataError(f"{NAME}: split folder {str(folder)!r} has no class sub-folders (expected <class>/<image>)")
    return _collect([(c.name, c) for c in classes])


def _collect(classes: List[Tuple[str, Path]]) -> Tuple[List[str], List[Path], np.ndarray]:
    names, files, labels = [], [], []
    for label, (name, folder) in enumerate(classes):
        images = _images_of(folder)
        names.append(name)
        files.extend(images)
        labels.extend([label] * len(images))
    return names, files, np.asarray(labels, dtype=np.int64)


def omniglot_val_alphabets(background: Path, val_alphabets: int, split_seed: int) -> List[str]:
    """The background alphabets held out as "val": ``val_alphabets`` of them, a seeded random choice."""
    alphabets = [p.name for p in _subdirs(background)]
    if val_alphabets >= len(alphabets):
        raise ConfigError(
            f"{NAME}: val_alphabets={val_alphabets} must be smaller than the {len(alphabets)} alphabets "
            f"in {str(background)!r}"
        )
    order = np.random.default_rng(split_seed).permutation(len(alphabets))
    return sorted(alphabets[i] for i in order[:val_alphabets])


def scan_omniglot(base: Path, split: str, val_alphabets: int, split_seed: int) -> Tuple[List[str], List[Path], np.ndarray]:
    """(class names "alphabet/character", image files, labels) of one Omniglot split."""
    folder = base / OMNIGLOT_DIRS[1 if split == "test" else 0]
    if not folder.is_dir():
        raise DataError(f"{NAME}: Omniglot split {split!r} needs the folder {str(folder)!r}, which does not exist")
    if split == "val" and val_alphabets == 0:
        raise ConfigError(
            f"{NAME}: Omniglot has no validation split; pass val_alphabets=K to hold out K background "
            f"alphabets (chosen with split_seed) as 'val' (they are then removed from 'train')"
        )
    held_out = set(omniglot_val_alphabets(folder, val_alphabets, split_seed)) if val_alphabets and split != "test" else set()
    alphabets = [a for a in _subdirs(folder) if (a.name in held_out) == (split == "val")]
    classes = [(f"{a.name}/{c.name}", c) for a in alphabets for c in _subdirs(a)]
    if not classes:
        raise DataError(f"{NAME}: no character folders under {str(folder)!r} (expected <alphabet>/<character>/*.png)")
    return _collect(classes)


@DATASETS.register(NAME)
def load_folder(
    root: str,
    split: str,
    *,
    image_size: int = 84,
    cache_dir: Optional[str] = None,
    channels: int = 3,
    layout: Optional[str] = None,
    val_alphabets: int = 0,
    split_seed: int = 0,
    **unknown: object,
) -> ImageSplit:
    """One split of a class-per-folder tree as uint8 (N, image_size, image_size, channels) + labels 0..C-1.

    layout: None (auto: omniglot when images_background/images_evaluation exist, else class_folders).
    val_alphabets, split_seed: Omniglot only (see the module docstring).
    """
    reject_unknown(NAME, unknown, ["image_size", "cache_dir", "channels", "layout", "val_alphabets", "split_seed"])
    split = normalize_split(split, NAME)
    size = check_positive_int(image_size, "image_size", NAME)
    check_choice(channels, "channels", (1, 3), NAME)
    non_negative_int(val_alphabets, "val_alphabets", source=NAME)
    integer(split_seed, "split_seed", source=NAME)
    root_path = require_root(root, NAME)
    if layout is not None:
        check_choice(layout, "layout", LAYOUTS, NAME)
    else:
        present = detect_layouts(root_path)
        if not present:
            raise DataError(
                f"{NAME}: {str(root_path)!r} is neither a class-folder tree (<root>/train|val|test/<class>/<image>) "
                f"nor Omniglot (<root>/images_background|images_evaluation/<alphabet>/<character>/*.png)"
            )
        layout = layout_choice(NAME, root_path, present)
    if layout == OMNIGLOT:
        base = omniglot_root(root_path) or root_path
        names, files, labels = scan_omniglot(base, split, val_alphabets, split_seed)
        variant = f"{split}-v{val_alphabets}s{split_seed}" if val_alphabets else split
    else:
        if val_alphabets:
            raise ConfigError(f"{NAME}: val_alphabets applies to the Omniglot layout only, not {layout}")
        base = root_path
        names, files, labels = scan_class_folders(root_path, split)
        variant = split
    cache = resolve_cache_dir(root_path, cache_dir)
    # Omniglot trees are stroke data: the one stroke preprocessing (white on black), as the omniglot loader
    decode = StrokePreprocess(size, channels, BLACK_ON_WHITE).decode if layout == OMNIGLOT else decode_image
    if layout == OMNIGLOT:
        variant += f"-strokes{PREPROCESS_VERSION}"
    path, stale = cache_file(
        cache, f"{NAME}-{root_tag(root_path)}-{layout}-{variant}-{size}px-{channels}ch", files_fingerprint(files, base)
    )
    desc = f"{NAME}/{split}: decoding {len(files)} images once into a {size}px cache"
    images = cached_uint8_array(
        path,
        (len(files), size, size, channels),
        lambda out: decode_many_into(out, files, channels=channels, desc=desc, decode=decode),
        desc,
        stale,
        probe=lambda: decode(files[0], size, channels),
    )
    source = str(base / OMNIGLOT_DIRS[1 if split == "test" else 0] if layout == OMNIGLOT else split_dir(base, split))
    meta = {"format": layout, "cache": str(path)}
    if layout == OMNIGLOT:
        meta["polarity"] = STROKE_POLARITY
    if layout == OMNIGLOT and val_alphabets:
        meta["val_alphabets"] = omniglot_val_alphabets(base / OMNIGLOT_DIRS[0], val_alphabets, split_seed)
    return ImageSplit(images, labels, names, f"{NAME}/{split}", source, meta)
