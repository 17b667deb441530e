"""Writers of tiny on-disk copies of every benchmark layout metakd reads (see data-formats.md).

Each writer returns what it wrote (images, labels, names) so tests can check the round trip.
``py2_pickle`` emits the byte stream Python 2's cPickle (protocol 2) produces, with py2 ``str``
values (here: Python 3 ``bytes``) as BINSTRING opcodes and numpy arrays in numpy's py2 reduce form,
so the "old copy" code paths are exercised with genuine Python-2 pickles.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

# ---------------------------------------------------------------- Python-2 style pickles


def _py2_dtype(dt: np.dtype) -> bytes:
    order = b"|" if dt.itemsize == 1 else b"<"
    code = dt.str[1:].encode()
    return (
        b"cnumpy\ndtype\n" + _py2(code) + b"K\x00K\x01\x87R"  # dtype(code, 0, 1)
        + b"(K\x03" + _py2(order) + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )


def _py2(obj: Any) -> bytes:
    if obj is None:
        return b"N"
    if obj is True or obj is False:
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.ndarray):
        v = int(obj)
        if 0 <= v < 256:
            return b"K" + bytes([v])
        return b"J" + struct.pack("<i", v)
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, bytes):  # a py2 str
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj))) + obj
    if isinstance(obj, str):  # a py2 unicode
        raw = obj.encode("utf-8")
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, tuple):
        return b"(" + b"".join(_py2(x) for x in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(x) for x in obj) + b"e" if obj else b"]"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u" if obj else b"}"
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            + b"(K\x01" + _py2(tuple(int(s) for s in arr.shape)) + _py2_dtype(arr.dtype) + b"\x89"
            + _py2(arr.tobytes()) + b"tb"
        )
    raise TypeError(f"py2_pickle: unsupported {type(obj).__name__}")


def py2_pickle(obj: Any) -> bytes:
    """``obj`` pickled as Python 2.7's cPickle.dumps(obj, 2) would (bytes stand for py2 str)."""
    return b"\x80\x02" + _py2(obj) + b"."


def write_pickle(path: Path, obj: Any, py2: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle(obj) if py2 else pickle.dumps(obj, protocol=4))
    return path


def random_images(n: int, size: int = 84, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def wnids(n: int, start: int = 1000) -> List[str]:
    return [f"n{start + i:08d}" for i in range(n)]


# ---------------------------------------------------------------- miniImageNet


def write_mini_pickle_cache(root: Path, split: str, n_classes: int = 5, per_class: int = 4, *, py2: bool = False,
                            file_split: str | None = None, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """learn2learn cache; rows shuffled and class_dict keys in non-sorted order. Returns (images, labels, wnids)."""
    n = n_classes * per_class
    images = random_images(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    labels = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    names = list(reversed(wnids(n_classes, 100 * seed)))
    class_dict = {names[c]: [int(i) for i in np.flatnonzero(labels == c)] for c in range(n_classes)}
    if py2:
        obj: Dict[Any, Any] = {b"image_data": images, b"class_dict": {k.encode(): v for k, v in class_dict.items()}}
    else:
        obj = {"image_data": images, "class_dict": class_dict}
    write_pickle(root / f"mini-imagenet-cache-{file_split or split}.pkl", obj, py2=py2)
    return images, labels, names


def write_mini_metaoptnet(root: Path, split: str, n_classes: int = 5, per_class: int = 4, *, label_offset: int = 64,
                          py2: bool = True, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """MetaOptNet pickle with global label ids; returns (images, labels remapped to 0..C-1, names in label order)."""
    fname = {"train": "train_phase_train", "val": "val", "test": "test"}[split]
    n = n_classes * per_class
    images = random_images(n, seed=seed)
    ids = np.arange(n_classes)[::-1] * 3 + label_offset  # arbitrary, non-contiguous, unsorted
    local = np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))
    global_labels = [int(ids[c]) for c in local]
    names = wnids(n_classes, 7000 + seed)
    cat = {(names[c].encode() if py2 else names[c]): int(ids[c]) for c in range(n_classes)}
    data_key, labels_key, cat_key = (b"data", b"labels", b"catname2label") if py2 else ("data", "labels", "catname2label")
    write_pickle(root / f"miniImageNet_category_split_{fname}.pickle",
                 {data_key: images, labels_key: global_labels, cat_key: cat}, py2=py2)
    order = np.argsort(ids)  # remapped label j <-> j-th smallest id
    remap = np.empty(n_classes, np.int64)
    remap[order] = np.arange(n_classes)
    return images, remap[local], [names[c] for c in order]


def write_jpeg(path: Path, color: Sequence[int], size: Tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in color)).save(path, "JPEG", quality=95)


def write_mini_csv(root: Path, splits: Sequence[str] = ("train", "val", "test"), n_classes: int = 3,
                   per_class: int = 2) -> Dict[str, Tuple[List[str], List[Tuple[int, int, int]]]]:
    """Ravi CSVs + solid-colour JPEGs of varied sizes; returns {split: (class order, colour of each row)}."""
    out = {}
    for s_i, split in enumerate(splits):
        names = wnids(n_classes, 2000 + 100 * s_i)
        lines, colors = ["filename,label"], []
        for c, wnid in enumerate(names):
            for k in range(per_class):
                fname = f"{wnid}{k:08d}.jpg"
                color = (40 * c + 10, 200 - 30 * k, 60 + 50 * s_i)
                write_jpeg(root / "images" / fname, color, (30 + 7 * k, 20 + 5 * c))
                lines.append(f"{fname},{wnid}")
                colors.append(color)
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
        out[split] = (names, colors)
    return out


# ---------------------------------------------------------------- tieredImageNet


def png_bytes(img: np.ndarray) -> np.ndarray:
    """PNG encoding of one image as a uint8 (L, 1) array, like cv2.imencode returns."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return np.frombuffer(buf.getvalue(), np.uint8).reshape(-1, 1).copy()


def _tiered_labels(n_classes: int, per_class: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    specific = np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))
    return specific, specific // 2


def write_tiered_ren(root: Path, split: str, n_classes: int = 4, per_class: int = 3, *, seed: int = 0,
                     py2: bool = False) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Ren release: {split}_images_png.pkl + {split}_labels.pkl. Returns (images, label_specific, class names)."""
    n = n_classes * per_class
    images = random_images(n, seed=seed)
    specific, general = _tiered_labels(n_classes, per_class, seed)
    names = [f"class-{split}-{i}" for i in range(n_classes)]
    supers = [f"super-{i}" for i in range((n_classes + 1) // 2)]
    write_pickle(root / f"{split}_images_png.pkl", [png_bytes(im) for im in images], py2=py2)
    lab = {"label_specific": specific, "label_general": general, "label_specific_str": names, "label_general_str": supers}
    if py2:
        lab = {k.encode(): ([s.encode() for s in v] if isinstance(v, list) else v) for k, v in lab.items()}
    write_pickle(root / f"{split}_labels.pkl", lab, py2=py2)
    return images, specific, names


def write_tiered_metaoptnet(root: Path, split: str, n_classes: int = 4, per_class: int = 3, *, seed: int = 0,
                            compressed: bool = False, label_offset: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """MetaOptNet release: {split}_images.npz (images) + {split}_labels.pkl (labels). Returns (images, raw labels)."""
    n = n_classes * per_class
    images = random_images(n, seed=seed)
    labels = _tiered_labels(n_classes, per_class, seed)[0] + label_offset
    root.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(root / f"{split}_images.npz", images=images)
    write_pickle(root / f"{split}_labels.pkl", {"labels": [int(x) for x in labels]})
    return images, labels


# ---------------------------------------------------------------- class folders and Omniglot


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img).save(path, "PNG")


def write_class_folders(root: Path, splits: Sequence[str] = ("train", "val", "test"), n_classes: int = 3,
                        per_class: int = 2, size: int = 12) -> Dict[str, Tuple[List[str], np.ndarray]]:
    """<root>/<split>/<class>/<i>.png with random RGB images; returns {split: (sorted class names, images in order)}."""
    out = {}
    for s_i, split in enumerate(splits):
        names = sorted(f"{split}_class{c}" for c in range(n_classes))
        imgs = random_images(n_classes * per_class, size=size, seed=10 + s_i)
        for c, name in enumerate(names):
            for k in range(per_class):
                write_png(root / split / name / f"img{k:03d}.png", imgs[c * per_class + k])
        out[split] = (names, imgs)
    return out


def write_omniglot(root: Path, background: int = 4, evaluation: int = 2, chars: int = 2, drawers: int = 3,
                   size: int = 20) -> Dict[str, List[str]]:
    """images_background / images_evaluation with bilevel PNGs; returns {folder: sorted class names}."""
    rng = np.random.default_rng(5)
    out: Dict[str, List[str]] = {}
    for folder, n_alpha in (("images_background", background), ("images_evaluation", evaluation)):
        names = []
        for a in range(n_alpha):
            alphabet = f"{folder[7:10].title()}_Alphabet_{a}"
            for c in range(chars):
                char = f"character{c + 1:02d}"
                names.append(f"{alphabet}/{char}")
                for d in range(drawers):
                    bits = rng.random((size, size)) > 0.5
                    path = root / folder / alphabet / char / f"{c:04d}_{d + 1:02d}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(bits).convert("1").save(path)
        out[folder] = sorted(names)
    return out


# ---------------------------------------------------------------- CIFAR-100

FINE_BY_COARSE: Dict[str, Tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE_NAMES = list(FINE_BY_COARSE)
FINE_NAMES = sorted(f for fs in FINE_BY_COARSE.values() for f in fs)
COARSE_OF_FINE = {f: COARSE_NAMES.index(c) for c, fs in FINE_BY_COARSE.items() for f in fs}


def write_fake_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Dict[str, Any]:
    """cifar-100-python/{train,test,meta} as Python-2 pickles with all 100 classes and a few images each.

    Returns {"train"/"test": (images (N,32,32,3), fine (N,), coarse (N,))}. Pixel [0, 0] of each image
    encodes (fine id, image index in its file, channel) so channel order can be checked.
    """
    folder = root / "cifar-100-python"
    out: Dict[str, Any] = {}
    for part, per in (("train", train_per_class), ("test", test_per_class)):
        fine = np.random.default_rng(len(part)).permutation(np.repeat(np.arange(100), per))
        coarse = np.array([COARSE_OF_FINE[FINE_NAMES[f]] for f in fine])
        images = random_images(len(fine), size=32, seed=len(part) + 3)
        images[:, 0, 0, 0] = fine
        images[:, 0, 0, 1] = np.arange(len(fine)) % 256
        images[:, 0, 0, 2] = 255
        data = images.transpose(0, 3, 1, 2).reshape(len(fine), 3072)
        write_pickle(folder / part, {b"filenames": [b"x.png"] * len(fine), b"batch_label": b"training batch 1 of 1",
                                     b"fine_labels": [int(x) for x in fine], b"coarse_labels": [int(x) for x in coarse],
                                     b"data": data}, py2=True)
        out[part] = (images, fine, coarse)
    write_pickle(folder / "meta", {b"fine_label_names": [n.encode() for n in FINE_NAMES],
                                   b"coarse_label_names": [n.encode() for n in COARSE_NAMES]}, py2=True)
    return out
