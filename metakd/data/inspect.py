"""What is in a dataset root: format detection and a per-split summary (backs the ``metakd data ROOT`` command).

Detection order (first match wins): miniImageNet pickles (learn2learn cache, then MetaOptNet),
tieredImageNet (Ren PNG pickles or MetaOptNet npz), CIFAR-100 python pickles, Omniglot folders,
the miniImageNet CSV + images layout, and finally a generic <root>/<split>/<class>/ tree.
Inspecting loads every split through its loader, so a first inspection also builds the decode caches
that training will then reuse.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from . import cifar, folder, mini_imagenet, tiered_imagenet
from .loader_args import require_root

SPLITS_OF = {"cifar100": ("train", "test")}
ALSO_READABLE_AS = {"cifar100": ["cifar_fs", "fc100"]}
DETECTORS = {
    "mini_imagenet": mini_imagenet.detect_layouts,
    "tiered_imagenet": tiered_imagenet.detect_layouts,
    "cifar100": cifar.detect_layouts,
    "cifar_fs": cifar.detect_layouts,
    "fc100": cifar.detect_layouts,
    "folder": folder.detect_layouts,
}


def detect_format(root: str | Path) -> Tuple[str, str]:
    """(dataset name in the DATASETS registry, layout name) of the data in ``root``; DataError if unrecognised."""
    path = require_root(root, "detect_format")
    mini = mini_imagenet.detect_layouts(path)
    if mini and mini[0] != mini_imagenet.CSV_IMAGES:
        return "mini_imagenet", mini[0]
    tiered = tiered_imagenet.detect_layouts(path)
    if tiered:
        return "tiered_imagenet", tiered[0]
    if cifar.detect_layouts(path):
        return "cifar100", cifar.FORMAT
    folders = folder.detect_layouts(path)
    if folder.OMNIGLOT in folders:
        return "folder", folder.OMNIGLOT
    if mini:
        return "mini_imagenet", mini[0]
    if folders:
        return "folder", folders[0]
    raise DataError(
        f"{str(path)!r}: no known dataset layout; looked for mini-imagenet-cache-*.pkl, "
        "miniImageNet_category_split_*.pickle, {split}_images_png.pkl / {split}_images.npz + {split}_labels.pkl, "
        "cifar-100-python/{train,test,meta}, images_background/ or images_evaluation/ (Omniglot), "
        "{train,val,test}.csv + images/, and <split>/<class>/<image> folders"
    )


def inspect_root(root: str | Path, dataset: Optional[str] = None, **options: Any) -> Dict[str, Any]:
    """Format and per-split summary of ``root``; a split that cannot be read gets {"error": message}.

    options go to the loader (e.g. image_size=28, channels=1 for Omniglot, so the cache built while
    inspecting is the one training will use).

    Returns {"root", "dataset", "format", "also_readable_as", "splits": {split: {"format", "classes",
    "images", "images_per_class_min", "images_per_class_max", "image_shape", "source"} | {"error"}}}.
    """
    path = require_root(root, "inspect_root")
    if dataset is None:
        dataset, layout = detect_format(path)
    else:
        loader_name = str(dataset).lower()
        DATASETS.get(loader_name)  # ConfigError listing the registered names if unknown
        dataset = loader_name
        found = DETECTORS[dataset](path) if dataset in DETECTORS else []
        layout = found[0] if found else "unknown"
    splits: Dict[str, Dict[str, Any]] = {}
    for split in SPLITS_OF.get(dataset, ("train", "val", "test")):
        try:
            data = DATASETS.build(dataset, str(path), split, **options)
        except (DataError, ConfigError) as exc:
            splits[split] = {"error": str(exc)}
            continue
        summary = data.summary()
        summary["format"] = data.meta.get("format", layout)
        splits[split] = summary
    return {
        "root": str(path),
        "dataset": dataset,
        "format": layout,
        "also_readable_as": ALSO_READABLE_AS.get(dataset, []),
        "splits": splits,
    }


def format_report(info: Dict[str, Any]) -> str:
    """``inspect_root``'s result as a plain-text table, one row per split, errors listed below it."""
    lines = [f"root:    {info['root']}", f"dataset: {info['dataset']}  (format: {info['format']})"]
    if info.get("also_readable_as"):
        lines.append(f"also readable as: {', '.join(info['also_readable_as'])}")
    header = ["split", "format", "classes", "images", "per class", "image shape", "source"]
    rows: List[List[str]] = []
    errors: List[str] = []
    for split, s in info["splits"].items():
        if "error" in s:
            rows.append([split, "-", "-", "-", "-", "-", "not available (see below)"])
            errors.append(f"{split}: {s['error']}")
            continue
        lo, hi = s["images_per_class_min"], s["images_per_class_max"]
        rows.append([
            split, str(s.get("format", "")), str(s["classes"]), str(s["images"]),
            str(lo) if lo == hi else f"{lo}-{hi}", "x".join(map(str, s["image_shape"])), str(s.get("source", "")),
        ])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    lines += ["", fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    if errors:
        lines += [""] + errors
    return "\n".join(lines)
