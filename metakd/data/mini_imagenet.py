"""miniImageNet (Ravi & Larochelle split, 64/16/20 classes x 600 images, 84x84 RGB) from any of its 3 common layouts.

Layouts, detected in this order when several are present in one root (the first needs no decoding):
  "pickle_cache"      learn2learn / Ren: mini-imagenet-cache-{train,validation|val,test}.pkl, each a dict
                      image_data uint8 (N, 84, 84, 3) + class_dict {wnid: [row indices]}; labels follow
                      the order of class_dict keys. Python-2 copies with bytes keys are accepted.
  "metaoptnet_pickle" MetaOptNet / Gidaris: miniImageNet_category_split_train_phase_train.pickle,
                      ..._val.pickle, ..._test.pickle, each a dict data uint8 (N, 84, 84, 3), labels (ints,
                      any values: remapped to 0..C-1 in sorted order), catname2label {wnid: label}.
  "csv_images"        Ravi & Larochelle: {train,val,test}.csv (header filename,label) + images/*.jpg of any
                      size; decoded once into a uint8 .npy cache (see metakd.data.cache).
Pass ``layout=`` to pick one explicitly. Images whose size differs from ``image_size`` are resized once
into the same kind of cache.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..errors import DataError
from ..registry import DATASETS
from .base import ImageSplit
from .cache import cache_file, cached_uint8_array, files_fingerprint, fingerprint, resolve_cache_dir, root_tag
from .image_io import decode_image, decode_many_into, resize_into
from .loader_args import (
    check_choice,
    check_positive_int,
    first_existing,
    layout_choice,
    missing_split_error,
    normalize_split,
    pick_file,
    reject_unknown,
    require_root,
)
from .pickle_io import int_labels, load_pickle, remap_sorted, require_keys, text_keys, uint8_images

NAME = "mini_imagenet"
PICKLE_CACHE, METAOPTNET, CSV_IMAGES = "pickle_cache", "metaoptnet_pickle", "csv_images"
LAYOUTS = (PICKLE_CACHE, METAOPTNET, CSV_IMAGES)

SPLIT_FILES: Dict[str, Dict[str, List[str]]] = {
    PICKLE_CACHE: {
        "train": ["mini-imagenet-cache-train.pkl"],
        "val": ["mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"],
        "test": ["mini-imagenet-cache-test.pkl"],
    },
    METAOPTNET: {
        "train": ["miniImageNet_category_split_train_phase_train.pickle"],
        "val": ["miniImageNet_category_split_val.pickle"],
        "test": ["miniImageNet_category_split_test.pickle"],
    },
    CSV_IMAGES: {"train": ["train.csv"], "val": ["val.csv", "validation.csv"], "test": ["test.csv"]},
}


def detect_layouts(root: Path) -> List[str]:
    """Every miniImageNet layout with at least one split file in ``root``, in preference order."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for layout in LAYOUTS:
        names = [n for files in SPLIT_FILES[layout].values() for n in files]
        if first_existing(root, names) is not None and (layout != CSV_IMAGES or (root / "images").is_dir()):
            found.append(layout)
    return found


def _resized(images: np.ndarray, size: int, cache: Path, stem: str, source: Path, desc: str) -> np.ndarray:
    """``images`` unchanged if already size x size, else resized once into a cached array."""
    if images.shape[1:3] == (size, size):
        return images
    shape = (images.shape[0], size, size, images.shape[3])
    path, stale = cache_file(cache, f"{stem}-{size}px", files_fingerprint([source]))
    return cached_uint8_array(path, shape, lambda out: resize_into(out, images, desc=desc), desc, stale)


def _load_pickle_cache(path: Path, split: str, size: int, cache: Path) -> ImageSplit:
    d = text_keys(load_pickle(path, encoding="bytes", what="miniImageNet pickle cache"), path, "pickle")
    require_keys(d, ["image_data", "class_dict"], path, "miniImageNet pickle cache")
    images = uint8_images(d["image_data"], path, "image_data")
    class_dict = text_keys(d["class_dict"], path, "'class_dict'")
    labels = np.full(images.shape[0], -1, dtype=np.int64)
    for label, (wnid, rows) in enumerate(class_dict.items()):
        idx = int_labels(rows, path, f"class_dict[{wnid!r}]")
        bad = idx[(idx < 0) | (idx >= images.shape[0])]
        if bad.size:
            raise DataError(
                f"{str(path)!r}: class_dict[{wnid!r}] has row index {int(bad[0])} "
                f"outside image_data's {images.shape[0]} rows"
            )
        if np.any(labels[idx] >= 0):
            raise DataError(f"{str(path)!r}: class_dict[{wnid!r}] lists rows already given to another class")
        labels[idx] = label
    if np.any(labels < 0):
        raise DataError(
            f"{str(path)!r}: {int(np.sum(labels < 0))} of {images.shape[0]} rows of image_data belong to no class "
            "in class_dict (expected one label per image)"
        )
    stem = f"{NAME}-{root_tag(path.parent)}-{split}-{PICKLE_CACHE}"
    images = _resized(images, size, cache, stem, path, f"{NAME}/{split}: resizing once to {size}px")
    return ImageSplit(images, labels, list(class_dict), f"{NAME}/{split}", str(path), {"format": PICKLE_CACHE})


def _load_metaoptnet(path: Path, split: str, size: int, cache: Path) -> ImageSplit:
    d = text_keys(load_pickle(path, encoding="latin1", what="MetaOptNet miniImageNet pickle"), path, "pickle")
    require_keys(d, ["data", "labels"], path, "MetaOptNet miniImageNet pickle")
    images = uint8_images(d["data"], path, "data")
    labels, ids = remap_sorted(int_labels(d["labels"], path, "labels", images.shape[0]))
    if "catname2label" in d:
        names_of = {}
        for name, label in text_keys(d["catname2label"], path, "'catname2label'").items():
            names_of[int(label)] = name
        missing = [int(i) for i in ids if int(i) not in names_of]
        if missing:
            raise DataError(
                f"{str(path)!r}: labels {missing[:10]} have no entry in catname2label "
                f"(it maps {len(names_of)} names to labels)"
            )
        class_names = [names_of[int(i)] for i in ids]
    else:
        class_names = [f"class_{int(i)}" for i in ids]
    stem = f"{NAME}-{root_tag(path.parent)}-{split}-{METAOPTNET}"
    images = _resized(images, size, cache, stem, path, f"{NAME}/{split}: resizing once to {size}px")
    meta = {"format": METAOPTNET, "original_labels": [int(i) for i in ids]}
    return ImageSplit(images, labels, class_names, f"{NAME}/{split}", str(path), meta)


def read_csv_split(path: Path) -> List[tuple[str, str]]:
    """(filename, label) rows of a Ravi & Larochelle split CSV; DataError on a wrong header or row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != ["filename", "label"]:
                raise DataError(f"{str(path)!r}: expected the header 'filename,label', got {','.join(header or [])!r}")
            rows = []
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DataError(f"{str(path)!r} line {line_no}: expected 'filename,label', got {','.join(row)!r}")
                rows.append((row[0].strip(), row[1].strip()))
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(path)!r}: not a UTF-8 text CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{str(path)!r}: no image rows after the header")
    return rows


def _load_csv(path: Path, root: Path, split: str, size: int, cache: Path) -> ImageSplit:
    rows = read_csv_split(path)
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"{str(path)!r} lists images but the folder {str(image_dir)!r} does not exist")
    class_names: List[str] = []
    index: Dict[str, int] = {}
    files: List[Path] = []
    labels = np.empty(len(rows), np.int64)
    for i, (filename, wnid) in enumerate(rows):
        if wnid not in index:
            index[wnid] = len(class_names)
            class_names.append(wnid)
        labels[i] = index[wnid]
        candidate = image_dir / filename
        if not candidate.is_file() and (image_dir / wnid / filename).is_file():
            candidate = image_dir / wnid / filename
        files.append(candidate)
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DataError(
            f"{str(path)!r}: {len(missing)} listed image(s) not found under {str(image_dir)!r}, e.g. {missing[0]!r}"
        )
    key = fingerprint(files_fingerprint([path]), files_fingerprint(files, base=root))
    cache_path, stale = cache_file(cache, f"{NAME}-{root_tag(root)}-{split}-{CSV_IMAGES}-{size}px", key)
    desc = f"{NAME}/{split}: decoding {len(files)} images once into a {size}px cache"
    images = cached_uint8_array(
        cache_path,
        (len(files), size, size, 3),
        lambda out: decode_many_into(out, files, channels=3, desc=desc),
        desc=desc,
        stale_glob=stale,
        probe=lambda: decode_image(files[0], size, 3),
    )
    meta = {"format": CSV_IMAGES, "cache": str(cache_path)}
    return ImageSplit(images, labels, class_names, f"{NAME}/{split}", str(path), meta)


@DATASETS.register(NAME)
def load_mini_imagenet(
    root: str,
    split: str,
    *,
    image_size: int = 84,
    cache_dir: Optional[str] = None,
    layout: Optional[str] = None,
    **unknown: object,
) -> ImageSplit:
    """One miniImageNet split as uint8 (N, image_size, image_size, 3) images + labels 0..C-1.

    layout: None (auto-detect: pickle_cache, then metaoptnet_pickle, then csv_images) or one of those.
    meta["format"] records the layout read.
    """
    reject_unknown(NAME, unknown, ["image_size", "cache_dir", "layout"])
    split = normalize_split(split, NAME)
    size = check_positive_int(image_size, "image_size", NAME)
    root_path = require_root(root, NAME)
    if layout is not None:
        check_choice(layout, "layout", LAYOUTS, NAME)
        chosen = str(layout)
    else:
        present = detect_layouts(root_path)
        if not present:
            looked = [n for lay in LAYOUTS for n in SPLIT_FILES[lay][split]]
            raise missing_split_error(NAME, root_path, split, looked + ["images/ (with the CSV files)"],
                                      "no miniImageNet layout found")
        chosen = layout_choice(NAME, root_path, present)
    path = pick_file(root_path, SPLIT_FILES[chosen][split], NAME)
    if path is None:
        raise missing_split_error(NAME, root_path, split, SPLIT_FILES[chosen][split], f"layout {chosen}")
    cache = resolve_cache_dir(root_path, cache_dir)
    loaders: Dict[str, Callable[[], ImageSplit]] = {
        PICKLE_CACHE: lambda: _load_pickle_cache(path, split, size, cache),
        METAOPTNET: lambda: _load_metaoptnet(path, split, size, cache),
        CSV_IMAGES: lambda: _load_csv(path, root_path, split, size, cache),
    }
    return loaders[chosen]()
