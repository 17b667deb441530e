"""CIFAR-FS, FC100 and plain CIFAR-100, all read from the CIFAR-100 python pickles.

Source: ``<root>/cifar-100-python/{train,test,meta}`` (or ``root`` pointing at that folder): train
and test are dicts with data (uint8 (N, 3072), each row 3x32x32 channels-first), fine_labels (0..99)
and coarse_labels (0..19); meta has fine_label_names and coarse_label_names.

CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018, TADAM) pool the 600 images of each
class (500 train + 100 test) and split the 100 classes:
  CIFAR-FS: 64 / 16 / 20 classes, the published lists below.
  FC100:    60 / 20 / 20 classes, by superclass: train 1,2,3,4,5,6,9,10,15,17,18,19; val 8,11,13,16;
            test 0,7,12,14 (indices into the standard coarse_label_names order; the loader looks the
            names up in the user's meta file, so the split does not depend on that order).
"cifar100" is the usual classification split (train 50,000 / test 10,000 images, all 100 classes),
for teacher training and distillation. Class labels follow the fine label order (alphabetical).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..registry import DATASETS
from .base import ImageSplit
from .cache import cache_file, cached_uint8_array, files_fingerprint, resolve_cache_dir, root_tag
from .image_io import resize_into
from .loader_args import check_positive_int, normalize_split, reject_unknown, require_root
from .pickle_io import as_text, int_labels, load_pickle, require_keys, text_keys

FORMAT = "cifar100_python"
PARTS = ("train", "test", "meta")

CIFAR_FS_CLASSES: Dict[str, Tuple[str, ...]] = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can", "castle",
        "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur", "dolphin", "elephant",
        "forest", "girl", "hamster", "house", "kangaroo", "keyboard", "lawn_mower", "lion", "lizard", "lobster",
        "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate",
        "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper", "snake",
        "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip", "turtle",
        "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp", "maple_tree",
        "motorcycle", "otter", "sea", "shark", "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain", "poppy", "rocket",
        "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale", "woman", "worm",
    ),
}

# Standard CIFAR-100 coarse label order (meta's coarse_label_names), for the FC100 indices above.
COARSE_LABEL_NAMES: Tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
FC100_SUPERCLASSES: Dict[str, Tuple[int, ...]] = {
    "train": (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    "val": (8, 11, 13, 16),
    "test": (0, 7, 12, 14),
}


def cifar_dir(root: Path) -> Optional[Path]:
    """The folder holding train/test/meta: ``root/cifar-100-python`` or ``root`` itself; None if neither."""
    for folder in (root / "cifar-100-python", root):
        if folder.is_dir() and any((folder / p).is_file() for p in PARTS):
            if folder == root and not ((root / "meta").is_file() and (root / "train").is_file()):
                continue
            return folder
    return None


def detect_layouts(root: Path) -> List[str]:
    return [FORMAT] if Path(root).is_dir() and cifar_dir(Path(root)) is not None else []


def _locate(root: Path, loader: str) -> Path:
    folder = cifar_dir(root)
    if folder is None:
        raise DataError(
            f"{loader}: no CIFAR-100 python files in {str(root)!r}; looked for "
            f"{str(root / 'cifar-100-python')}/{{train,test,meta}} and {str(root)}/{{train,test,meta}}"
        )
    return folder


def read_part(folder: Path, part: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """images uint8 (N, 32, 32, 3), fine labels (N,), coarse labels (N,) of CIFAR-100's train or test file."""
    path = folder / part
    if not path.is_file():
        raise DataError(f"{str(path)!r}: CIFAR-100 {part} file not found (expected cifar-100-python/{part})")
    d = text_keys(load_pickle(path, encoding="bytes", what=f"CIFAR-100 {part} pickle"), path, f"CIFAR-100 {part} pickle")
    require_keys(d, ["data", "fine_labels", "coarse_labels"], path, f"CIFAR-100 {part} pickle")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{str(path)!r}: 'data' must be uint8 of shape (N, 3072), got {got}")
    n = data.shape[0]
    fine = int_labels(d["fine_labels"], path, "fine_labels", n)
    coarse = int_labels(d["coarse_labels"], path, "coarse_labels", n)
    for key, labels, top in (("fine_labels", fine, 100), ("coarse_labels", coarse, 20)):
        if n and (labels.min() < 0 or labels.max() >= top):
            raise DataError(f"{str(path)!r}: {key} must lie in 0..{top - 1}, got {labels.min()}..{labels.max()}")
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, fine, coarse


def read_meta(folder: Path) -> Tuple[List[str], List[str]]:
    """(100 fine label names, 20 coarse label names) from CIFAR-100's meta file."""
    path = folder / "meta"
    if not path.is_file():
        raise DataError(f"{str(path)!r}: CIFAR-100 meta file not found (it holds fine_label_names)")
    d = text_keys(load_pickle(path, encoding="bytes", what="CIFAR-100 meta pickle"), path, "CIFAR-100 meta pickle")
    require_keys(d, ["fine_label_names", "coarse_label_names"], path, "CIFAR-100 meta pickle")
    fine, coarse = [as_text(x) for x in d["fine_label_names"]], [as_text(x) for x in d["coarse_label_names"]]
    if len(fine) != 100 or len(coarse) != 20:
        raise DataError(
            f"{str(path)!r}: expected 100 fine_label_names and 20 coarse_label_names, got {len(fine)} and {len(coarse)}"
        )
    return fine, coarse


def _lookup(names: Sequence[str], wanted: Sequence[str], path: Path, key: str) -> List[int]:
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DataError(f"{str(path)!r}: {key} lacks {missing[:5]} (not the standard CIFAR-100 names)")
    return [list(names).index(w) for w in wanted]


def _finish(images: np.ndarray, fine: np.ndarray, keep: Sequence[int], names: List[str], dataset: str, split: str,
            folder: Path, size: int, cache_dir: Optional[str], meta: Dict[str, object]) -> ImageSplit:
    """Keep the images of fine classes ``keep`` (labels 0..C-1 in fine-id order) and resize if needed."""
    keep = sorted(keep)
    mask = np.isin(fine, keep)
    labels = np.searchsorted(np.asarray(keep), fine[mask]).astype(np.int64)
    chosen = images[mask]
    if size != 32:
        cache = resolve_cache_dir(folder, cache_dir)
        sources = [folder / p for p in PARTS if (folder / p).is_file()]
        path, stale = cache_file(cache, f"{dataset}-{root_tag(folder)}-{split}-{size}px", files_fingerprint(sources))
        desc = f"{dataset}/{split}: resizing once to {size}px"
        src = chosen
        chosen = cached_uint8_array(path, (len(src), size, size, 3), lambda out: resize_into(out, src, desc=desc),
                                    desc, stale)
        meta["cache"] = str(path)
    meta.update({"format": FORMAT, "fine_ids": keep})
    return ImageSplit(chosen, labels, [names[i] for i in keep], f"{dataset}/{split}", str(folder), meta)


def _pooled(folder: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-100 train + test images and labels concatenated (600 images per class)."""
    a, b = read_part(folder, "train"), read_part(folder, "test")
    return tuple(np.concatenate([x, y]) for x, y in zip(a, b))  # type: ignore[return-value]


def _check_args(loader: str, split: str, image_size: int, unknown: Dict[str, object], splits: Sequence[str]) -> Tuple[str, int]:
    reject_unknown(loader, unknown, ["image_size", "cache_dir"])
    return normalize_split(split, loader, splits), check_positive_int(image_size, "image_size", loader)


@DATASETS.register("cifar_fs")
def load_cifar_fs(root: str, split: str, *, image_size: int = 32, cache_dir: Optional[str] = None,
                  **unknown: object) -> ImageSplit:
    """One CIFAR-FS split (64/16/20 classes x 600 images) as uint8 (N, image_size, image_size, 3)."""
    split, size = _check_args("cifar_fs", split, image_size, unknown, ("train", "val", "test"))
    folder = _locate(require_root(root, "cifar_fs"), "cifar_fs")
    fine_names, _ = read_meta(folder)
    keep = _lookup(fine_names, CIFAR_FS_CLASSES[split], folder / "meta", "fine_label_names")
    images, fine, _ = _pooled(folder)
    return _finish(images, fine, keep, fine_names, "cifar_fs", split, folder, size, cache_dir, {})


@DATASETS.register("fc100")
def load_fc100(root: str, split: str, *, image_size: int = 32, cache_dir: Optional[str] = None,
               **unknown: object) -> ImageSplit:
    """One FC100 split (60/20/20 classes by superclass, 600 images each) as uint8 (N, S, S, 3).

    meta["superclasses"] lists the superclass names of the split.
    """
    split, size = _check_args("fc100", split, image_size, unknown, ("train", "val", "test"))
    folder = _locate(require_root(root, "fc100"), "fc100")
    fine_names, coarse_names = read_meta(folder)
    wanted = [COARSE_LABEL_NAMES[i] for i in FC100_SUPERCLASSES[split]]
    supers = _lookup(coarse_names, wanted, folder / "meta", "coarse_label_names")
    images, fine, coarse = _pooled(folder)
    pairs = np.unique(np.stack([fine, coarse], 1), axis=0)
    if len(np.unique(pairs[:, 0])) != len(pairs):
        raise DataError(f"{str(folder)!r}: some fine class has images under several coarse labels")
    keep = [int(f) for f, c in pairs if int(c) in supers]
    return _finish(images, fine, keep, fine_names, "fc100", split, folder, size, cache_dir, {"superclasses": wanted})


@DATASETS.register("cifar100")
def load_cifar100(root: str, split: str, *, image_size: int = 32, cache_dir: Optional[str] = None,
                  **unknown: object) -> ImageSplit:
    """CIFAR-100 classification split "train" (50,000) or "test" (10,000), all 100 fine classes.

    meta["coarse_labels"] holds the superclass id of every image (int64 (N,)).
    """
    split, size = _check_args("cifar100", split, image_size, unknown, ("train", "test"))
    folder = _locate(require_root(root, "cifar100"), "cifar100")
    fine_names, coarse_names = read_meta(folder)
    images, fine, coarse = read_part(folder, split)
    meta: Dict[str, object] = {"coarse_labels": coarse, "coarse_label_names": coarse_names}
    return _finish(images, fine, range(100), fine_names, "cifar100", split, folder, size, cache_dir, meta)
