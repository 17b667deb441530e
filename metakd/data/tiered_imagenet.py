"""tieredImageNet (351/97/160 classes, 84x84 RGB) from the Ren et al. or the MetaOptNet release.

  "ren_png"         {split}_images_png.pkl: a list of PNG-encoded byte arrays, one per image, and
                    {split}_labels.pkl: dict label_specific (class per image), label_general,
                    label_specific_str, label_general_str. The PNGs are decoded once (progress bar)
                    into a uint8 .npy cache and memory-mapped on later loads. Colours are RGB.
  "metaoptnet_npz"  {split}_images.npz (array images, uint8 (N, 84, 84, 3)) and {split}_labels.pkl
                    (dict with key labels). An uncompressed npz is memory-mapped in place; a
                    compressed one is unpacked once into the cache.
Both releases name their label file {split}_labels.pkl but its keys differ; the loader reads the
keys to tell them apart (when both image files are present) and explains a mismatched pair.
Class labels of either release are remapped to 0..C-1 in sorted order of the original ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import DataError
from ..registry import DATASETS
from .base import ImageSplit
from .cache import cache_file, cached_uint8_array, files_fingerprint, note, resolve_cache_dir, root_tag
from .image_io import decode_image, decode_many_into, resize_into
from .loader_args import check_choice, check_positive_int, missing_split_error, normalize_split, reject_unknown, require_root
from .npz_io import npz_header, npz_mmap, npz_read_into
from .pickle_io import as_text, int_labels, load_pickle, remap_sorted, require_keys, text_keys

NAME = "tiered_imagenet"
REN, METAOPTNET = "ren_png", "metaoptnet_npz"
LAYOUTS = (REN, METAOPTNET)
SPLITS = ("train", "val", "test")


def split_files(root: Path, split: str) -> Dict[str, Path]:
    """Paths of the three files a split may have: png (Ren images), npz (MetaOptNet images), labels."""
    return {
        "png": root / f"{split}_images_png.pkl",
        "npz": root / f"{split}_images.npz",
        "labels": root / f"{split}_labels.pkl",
    }


def detect_layouts(root: Path) -> List[str]:
    """tieredImageNet layouts with an image file for some split in ``root`` (both only if both present)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for layout, kind in ((REN, "png"), (METAOPTNET, "npz")):
        if any(split_files(root, s)[kind].is_file() and split_files(root, s)["labels"].is_file() for s in SPLITS):
            found.append(layout)
    return found


def _class_names(d: Dict[str, Any], labels: np.ndarray, ids: np.ndarray, n: int, path: Path) -> List[str]:
    """Names of the remapped classes from label_specific_str (a per-class or per-image list), else class_<id>."""
    names = d.get("label_specific_str")
    if names is None:
        return [f"class_{int(i)}" for i in ids]
    names = [as_text(x) for x in list(names)]
    top = int(ids.max(initial=-1))
    if len(names) == n and len(names) != top + 1:  # one name per image
        first = np.unique(labels, return_index=True)[1]
        return [names[int(j)] for j in first]
    if len(names) > top and int(ids.min(initial=0)) >= 0:  # one name per class id (the Ren release)
        return [names[int(i)] for i in ids]
    raise DataError(
        f"{str(path)!r}: label_specific_str has {len(names)} entries; expected one per class "
        f"(ids up to {int(ids.max(initial=0))}) or one per image ({n})"
    )


def _superclasses(d: Dict[str, Any], labels: np.ndarray, n: int, path: Path) -> Dict[str, object]:
    """meta entries describing each class's superclass (label_general), when the label file has them."""
    if "label_general" not in d:
        return {}
    general = int_labels(d["label_general"], path, "label_general", n)
    first = np.unique(labels, return_index=True)[1]
    meta: Dict[str, object] = {"superclass_of_class": [int(general[j]) for j in first]}
    if "label_general_str" in d:
        meta["superclass_names"] = [as_text(x) for x in list(d["label_general_str"])]
    return meta


def _load_ren(files: Dict[str, Path], lab: Dict[str, Any], split: str, size: int, cache: Path) -> ImageSplit:
    lpath, png = files["labels"], files["png"]
    require_keys(
        lab, ["label_specific"], lpath, "Ren et al. tieredImageNet label file",
        hint=f"{png.name} (Ren release) pairs with a label file holding label_specific; "
        "a file holding 'labels' belongs to the MetaOptNet release ({split}_images.npz)".replace("{split}", split),
    )
    raw = int_labels(lab["label_specific"], lpath, "label_specific")
    n = raw.shape[0]
    labels, ids = remap_sorted(raw)
    names = _class_names(lab, raw, ids, n, lpath)

    def items() -> list:
        got = load_pickle(png, encoding="latin1", what="tieredImageNet PNG list")
        if not isinstance(got, (list, tuple)):
            raise DataError(f"{str(png)!r}: expected a list of PNG byte arrays, got {type(got).__name__}")
        if len(got) != n:
            raise DataError(f"{str(png)!r} holds {len(got)} images but {lpath.name} has {n} labels")
        return got

    def fill(out: np.ndarray) -> None:
        decode_many_into(out, items(), channels=3, desc=desc, where=lambda i: f"{png} (image #{i})")

    def probe() -> None:
        first = items()[:1]
        if first:
            decode_image(first[0], size, 3, f"{png} (image #0)")

    desc = f"{NAME}/{split}: decoding {n} PNGs once into a {size}px cache (later loads memory-map it)"
    path, stale = cache_file(cache, f"{NAME}-{root_tag(png.parent)}-{split}-{REN}-{size}px", files_fingerprint([png]))
    images = cached_uint8_array(path, (n, size, size, 3), fill, desc=desc, stale_glob=stale, probe=probe)
    meta = {"format": REN, "cache": str(path), "original_labels": [int(i) for i in ids]}
    meta.update(_superclasses(lab, raw, n, lpath))
    return ImageSplit(images, labels, names, f"{NAME}/{split}", str(png), meta)


def _load_metaoptnet(files: Dict[str, Path], lab: Dict[str, Any], split: str, size: int, cache: Path) -> ImageSplit:
    lpath, npz = files["labels"], files["npz"]
    require_keys(
        lab, ["labels"], lpath, "MetaOptNet tieredImageNet label file",
        hint=f"{npz.name} (MetaOptNet release) pairs with a label file holding 'labels'; a file holding "
        f"label_specific is the Ren et al. label file, which pairs with {split}_images_png.pkl",
    )
    shape, dtype = npz_header(npz, "images")
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
        raise DataError(f"{str(npz)!r}: 'images' must be uint8 of shape (N, H, W, 3), got {dtype} {shape}")
    raw = int_labels(lab["labels"], lpath, "labels", shape[0])
    labels, ids = remap_sorted(raw)
    names = _class_names(lab, raw, ids, shape[0], lpath)
    stem, key = f"{NAME}-{root_tag(npz.parent)}-{split}-{METAOPTNET}", files_fingerprint([npz])
    meta: Dict[str, object] = {"format": METAOPTNET, "original_labels": [int(i) for i in ids]}
    images = npz_mmap(npz, "images")
    if images is None:
        desc = f"{NAME}/{split}: unpacking compressed {npz.name} once into the cache"
        path, stale = cache_file(cache, f"{stem}-native", key)
        images = cached_uint8_array(path, shape, lambda out: npz_read_into(npz, "images", out), desc, stale)
        meta["cache"] = str(path)
    if tuple(images.shape[1:3]) != (size, size):
        src = images
        desc = f"{NAME}/{split}: resizing once to {size}px"
        path, stale = cache_file(cache, f"{stem}-{size}px", key)
        images = cached_uint8_array(path, (shape[0], size, size, 3), lambda out: resize_into(out, src, desc=desc),
                                    desc, stale)
        meta["cache"] = str(path)
    meta.update(_superclasses(lab, raw, shape[0], lpath))
    return ImageSplit(images, labels, names, f"{NAME}/{split}", str(npz), meta)


@DATASETS.register(NAME)
def load_tiered_imagenet(
    root: str,
    split: str,
    *,
    image_size: int = 84,
    cache_dir: Optional[str] = None,
    layout: Optional[str] = None,
    **unknown: object,
) -> ImageSplit:
    """One tieredImageNet split as uint8 (N, image_size, image_size, 3) images + labels 0..C-1.

    layout: None (auto: the image file present; if both, the one the label file's keys belong to),
    "ren_png" or "metaoptnet_npz". meta["format"] records the layout; meta["superclass_of_class"]
    gives each class's label_general id when the label file has it.
    """
    reject_unknown(NAME, unknown, ["image_size", "cache_dir", "layout"])
    split = normalize_split(split, NAME)
    size = check_positive_int(image_size, "image_size", NAME)
    root_path = require_root(root, NAME)
    if layout is not None:
        check_choice(layout, "layout", LAYOUTS, NAME)
    files = split_files(root_path, split)
    has_png, has_npz = files["png"].is_file(), files["npz"].is_file()
    wanted = {None: has_png or has_npz, REN: has_png, METAOPTNET: has_npz}[layout]
    if not wanted or not files["labels"].is_file():
        looked = {None: ["png", "npz", "labels"], REN: ["png", "labels"], METAOPTNET: ["npz", "labels"]}[layout]
        raise missing_split_error(NAME, root_path, split, [files[k].name for k in looked],
                                  "needs an image file and its label file")
    lab = text_keys(load_pickle(files["labels"], encoding="latin1", what="tieredImageNet label file"),
                    files["labels"], "label file")
    if layout is None:
        if has_png and has_npz:
            layout = METAOPTNET if "labels" in lab else REN
            other = REN if layout == METAOPTNET else METAOPTNET
            note(f"{NAME}: {str(root_path)!r} holds both releases' {split!r} images ({files['png'].name}: {REN}, "
                 f"{files['npz'].name}: {METAOPTNET}); using {layout}, as {files['labels'].name} holds "
                 f"{'labels' if layout == METAOPTNET else 'label_specific'!r} (set data.options.layout={other} "
                 f"in a config, or layout= when calling the loader, to read the other)")
        else:
            layout = REN if has_png else METAOPTNET
    cache = resolve_cache_dir(root_path, cache_dir)
    if layout == REN:
        return _load_ren(files, lab, split, size, cache)
    return _load_metaoptnet(files, lab, split, size, cache)
