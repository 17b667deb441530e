"""What is in a dataset root: format detection and a per-split summary (backs the ``metakd data ROOT`` command).

Detection order (first match wins): miniImageNet pickles (learn2learn cache, then MetaOptNet),
tieredImageNet (Ren PNG pickles or MetaOptNet npz), CIFAR-100 python pickles, Omniglot (the official
zips or their folders: the ``omniglot`` loader; ``--dataset folder`` reads unzipped trees generically),
the miniImageNet CSV + images layout, and finally a generic <root>/<split>/<class>/ tree.
Inspecting reads only: every split goes through its loader inside ``cache.inspection()``, so labels
and shapes are read and one image per split is decoded, but no decode cache is built or written.
When a root holds several layouts, the report says which one was read and how to pick another.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from . import cifar, folder, mini_imagenet, omniglot, tiered_imagenet
from .cache import inspection
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
    "omniglot": omniglot.detect_layouts,
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
    omni = omniglot.detect_layouts(path)
    if omni:
        return "omniglot", omni[0]
    folders = folder.detect_layouts(path)
    if mini:
        return "mini_imagenet", mini[0]
    if folders:
        return "folder", folders[0]
    raise DataError(
        f"{str(path)!r}: no known dataset layout; looked for mini-imagenet-cache-*.pkl, "
        "miniImageNet_category_split_*.pickle, {split}_images_png.pkl / {split}_images.npz + {split}_labels.pkl, "
        "cifar-100-python/{train,test,meta}, images_background[_small1|_small2] / images_evaluation (.zip or "
        "folder: Omniglot), "
        "{train,val,test}.csv + images/, and <split>/<class>/<image> folders"
    )


def _other_families(path: Path, dataset: str) -> List[str]:
    """Notes naming the dataset families found in ``path`` besides ``dataset``."""
    found = {"mini_imagenet": mini_imagenet.detect_layouts(path), "tiered_imagenet": tiered_imagenet.detect_layouts(path),
             "cifar100": cifar.detect_layouts(path), "folder": folder.detect_layouts(path),
             "omniglot": omniglot.detect_layouts(path)}
    family = "cifar100" if dataset in ("cifar_fs", "fc100") else dataset
    return [f"{str(path)!r} also holds {name} data ({', '.join(layouts)}); pass --dataset {name} "
            f"(data.dataset={name} in a config) to read it instead" for name, layouts in found.items()
            if layouts and name != family]


def inspect_root(root: str | Path, dataset: Optional[str] = None, **options: Any) -> Dict[str, Any]:
    """Format and per-split summary of ``root``, read without writing anything (no decode cache is built).

    options go to the loader (e.g. layout=, image_size=, channels=1 or val_alphabets=K for Omniglot).
    A split that cannot be read gets {"error": message} and is listed in "unreadable"; ``check_report``
    turns that into a DataError. Omniglot without val_alphabets has no "val" split and is not asked for one.

    Returns {"root", "dataset", "format", "also_readable_as", "splits": {split: {"format", "classes",
    "images", "images_per_class_min", "images_per_class_max", "image_shape", "source", "cache"} | {"error"}},
    "notes": [layout choices and other remarks], "unreadable": [split names]}.
    """
    path = require_root(root, "inspect_root")
    options.pop("skip_small_classes", None)  # episode / augmentation options, not the loader's
    options.pop("augment_preset", None)
    with inspection() as seen:
        if dataset is None:
            dataset, layout = detect_format(path)
        else:
            loader_name = str(dataset).lower()
            DATASETS.get(loader_name)  # ConfigError listing the registered names if unknown
            dataset = loader_name
            found = DETECTORS[dataset](path) if dataset in DETECTORS else []
            layout = found[0] if found else "unknown"
        if dataset in DETECTORS:
            seen.notes.extend(_other_families(path, dataset))
        names = SPLITS_OF.get(dataset, ("train", "val", "test"))
        if dataset == "omniglot" and (options.get("val_alphabets") == [] or options.get("trainval")):
            names = ("train", "test")
        if dataset == "folder" and options.get("layout", layout) == folder.OMNIGLOT and not options.get("val_alphabets"):
            names = ("train", "test")
            seen.notes.append("Omniglot has no validation split; pass val_alphabets=K (data.options.val_alphabets=K "
                              "in a config) to hold out K background alphabets as 'val'")
        splits: Dict[str, Dict[str, Any]] = {}
        for split in names:
            unbuilt = len(seen.unbuilt)
            try:
                data = DATASETS.build(dataset, str(path), split, **options)
            except (DataError, ConfigError) as exc:
                splits[split] = {"error": str(exc)}
                continue
            summary = data.summary()
            summary["format"] = data.meta.get("format", layout)
            for key in ("alphabets", "val_alphabets", "polarity", "protocol", "background", "rotations", "sets"):
                if key in data.meta:
                    summary[key] = data.meta[key]
            if "cache" in data.meta or len(seen.unbuilt) > unbuilt:
                summary["cache"] = "not built yet" if len(seen.unbuilt) > unbuilt else "built"
            splits[split] = summary
    notes = list(seen.notes)
    found = omniglot.describe_root(path) if dataset == "omniglot" else []
    pending = [s for s, v in splits.items() if v.get("cache") == "not built yet"]
    if pending:
        notes.append(f"decode cache not built yet for {', '.join(pending)} (inspecting writes nothing; "
                     "the first training or evaluation run decodes the images once)")
    return {
        "root": str(path),
        "dataset": dataset,
        "format": layout,
        "also_readable_as": ALSO_READABLE_AS.get(dataset, []),
        "splits": splits,
        "found": found,
        "notes": notes,
        "unreadable": [s for s, v in splits.items() if "error" in v],
    }


def check_report(info: Dict[str, Any]) -> None:
    """DataError naming the splits ``inspect_root`` could not read (so ``metakd data ROOT`` exits non-zero)."""
    bad = [s for s, v in info["splits"].items() if "error" in v]
    if bad:
        raise DataError(
            f"{info['root']!r}: {len(bad)} of {len(info['splits'])} splits cannot be read as {info['dataset']} "
            f"({', '.join(bad)}); the reasons are listed in the report above"
        )


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
    if info.get("found"):
        lines += ["", "found:"] + [f"  - {f}" for f in info["found"]]
    per_split = [(split, s) for split, s in info["splits"].items() if "alphabets" in s]
    if per_split:
        lines += ["", "alphabets per split:"]
        for split, s in per_split:
            names = s["alphabets"]
            shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
            extra = "; rotations x4" if s.get("rotations") else ""
            lines.append(f"  {split}: {len(names)} alphabets{extra}: {shown}")
        first = per_split[0][1]
        lines.append(f"  images: {'x'.join(map(str, first['image_shape']))} uint8, {first.get('polarity', '')}"
                     f"{', protocol ' + first['protocol'] if first.get('protocol') else ''}"
                     f"{', background ' + str(first['background']) if first.get('background') else ''}")
    if info.get("notes"):
        lines += ["", "notes:"] + [f"  - {n}" for n in info["notes"]]
    if errors:
        lines += ["", "errors:"] + errors
    return "\n".join(lines)
