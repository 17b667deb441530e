"""Every on-disk layout of data-formats.md is read correctly (tiny copies written in tmp_path)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _format_fixtures as fx  # noqa: E402

from metakd.data import cache as cache_mod  # noqa: E402
from metakd.data import image_io  # noqa: E402
from metakd.data.cifar import CIFAR_FS_CLASSES, COARSE_LABEL_NAMES, FC100_SUPERCLASSES  # noqa: E402
from metakd.data.inspect import detect_format, format_report, inspect_root  # noqa: E402
from metakd.errors import ConfigError  # noqa: E402
from metakd.registry import DATASETS  # noqa: E402


def load(name: str, root: Path, split: str, **kw):
    return DATASETS.build(name, str(root), split, **kw)


def class_images(split, label: int) -> np.ndarray:
    return np.asarray(split.images)[split.labels == label]


# ------------------------------------------------------------------ miniImageNet


@pytest.mark.parametrize("py2", [False, True])
def test_mini_pickle_cache_labels_follow_class_dict_order(tmp_path, py2):
    images, labels, names = fx.write_mini_pickle_cache(tmp_path, "train", py2=py2)
    s = load("mini_imagenet", tmp_path, "train")
    assert s.class_names == names and names != sorted(names)  # key order, not sorted order
    assert all(isinstance(n, str) for n in s.class_names)
    np.testing.assert_array_equal(s.labels, labels)
    np.testing.assert_array_equal(s.images, images)
    assert s.images.dtype == np.uint8 and s.image_shape == (84, 84, 3)
    assert s.meta["format"] == "pickle_cache" and s.name == "mini_imagenet/train"


@pytest.mark.parametrize("file_split", ["validation", "val"])
@pytest.mark.parametrize("asked", ["val", "validation"])
def test_mini_pickle_cache_val_naming(tmp_path, file_split, asked):
    images, labels, _ = fx.write_mini_pickle_cache(tmp_path, "val", file_split=file_split, seed=3)
    s = load("mini_imagenet", tmp_path, asked)
    np.testing.assert_array_equal(s.images, images)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.source.endswith(f"mini-imagenet-cache-{file_split}.pkl")


def test_mini_pickle_cache_resized_once_into_cache(tmp_path):
    images, labels, _ = fx.write_mini_pickle_cache(tmp_path, "test", n_classes=2, per_class=2)
    s = load("mini_imagenet", tmp_path, "test", image_size=21)
    assert s.images.shape == (4, 21, 21, 3)
    np.testing.assert_array_equal(s.labels, labels)
    cached = list(cache_mod.default_cache_dir(tmp_path).glob("mini_imagenet-*-21px-*.npy"))
    assert len(cached) == 1
    again = load("mini_imagenet", tmp_path, "test", image_size=21)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, s.images)


@pytest.mark.parametrize("py2", [True, False])
def test_mini_metaoptnet_remaps_arbitrary_labels(tmp_path, py2):
    images, labels, names = fx.write_mini_metaoptnet(tmp_path, "val", label_offset=64, py2=py2)
    s = load("mini_imagenet", tmp_path, "validation")
    assert s.meta["format"] == "metaoptnet_pickle"
    np.testing.assert_array_equal(s.images, images)
    np.testing.assert_array_equal(s.labels, labels)
    assert s.class_names == names
    assert s.meta["original_labels"] == sorted(s.meta["original_labels"]) and min(s.meta["original_labels"]) == 64


def test_mini_metaoptnet_train_file_name(tmp_path):
    fx.write_mini_metaoptnet(tmp_path, "train", label_offset=0)
    s = load("mini_imagenet", tmp_path, "train")
    assert s.source.endswith("miniImageNet_category_split_train_phase_train.pickle") and s.num_classes == 5


def test_mini_csv_decodes_resizes_and_caches(tmp_path, monkeypatch):
    written = fx.write_mini_csv(tmp_path, n_classes=3, per_class=2)
    s = load("mini_imagenet", tmp_path, "val", image_size=16)
    names, colors = written["val"]
    assert s.meta["format"] == "csv_images" and s.class_names == names
    assert s.images.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(s.labels, [0, 0, 1, 1, 2, 2])
    for i, color in enumerate(colors):  # solid JPEGs of varied sizes -> solid 16x16 of (nearly) that colour
        assert np.abs(s.images[i].astype(int) - np.array(color)).max() <= 4
    assert Path(s.meta["cache"]).is_file()

    def no_decoding(*a, **k):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr("metakd.data.mini_imagenet.decode_many_into", no_decoding)
    again = load("mini_imagenet", tmp_path, "val", image_size=16)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, s.images)


def test_mini_csv_images_in_class_subfolders(tmp_path):
    fx.write_jpeg(tmp_path / "images" / "n01" / "a.jpg", (200, 10, 10), (40, 40))
    (tmp_path / "test.csv").write_text("filename,label\na.jpg,n01\n")
    s = load("mini_imagenet", tmp_path, "test", image_size=8)
    assert s.class_names == ["n01"] and s.images[0, 0, 0, 0] > 190


def test_mini_layout_preference_and_override(tmp_path):
    images, _, _ = fx.write_mini_pickle_cache(tmp_path, "train")
    fx.write_mini_csv(tmp_path, splits=("train",))
    assert load("mini_imagenet", tmp_path, "train").meta["format"] == "pickle_cache"
    forced = load("mini_imagenet", tmp_path, "train", layout="csv_images", image_size=8)
    assert forced.meta["format"] == "csv_images" and forced.images.shape == (6, 8, 8, 3)


# ------------------------------------------------------------------ tieredImageNet


@pytest.mark.parametrize("py2", [False, True])
def test_tiered_ren_png_decoded_once_then_memory_mapped(tmp_path, monkeypatch, py2):
    images, specific, names = fx.write_tiered_ren(tmp_path, "train", py2=py2)
    s = load("tiered_imagenet", tmp_path, "train")
    assert s.meta["format"] == "ren_png"
    np.testing.assert_array_equal(s.images, images)  # PNG is lossless: exact pixels, RGB order kept
    np.testing.assert_array_equal(s.labels, specific)
    assert s.class_names == names
    assert s.meta["superclass_of_class"] == [0, 0, 1, 1]
    assert s.meta["superclass_names"] == ["super-0", "super-1"]
    cache_file = Path(s.meta["cache"])
    assert cache_file.parent == cache_mod.default_cache_dir(tmp_path) and cache_file.is_file()

    monkeypatch.setattr("metakd.data.tiered_imagenet.decode_many_into",
                        lambda *a, **k: pytest.fail("PNGs decoded twice"))
    again = load("tiered_imagenet", tmp_path, "train")
    assert isinstance(again.images, np.memmap) and Path(again.images.filename) == cache_file.resolve()
    np.testing.assert_array_equal(again.images, images)


def test_tiered_cache_rebuilt_when_corrupt_or_wrong_shape(tmp_path):
    images, _, _ = fx.write_tiered_ren(tmp_path, "val", n_classes=2, per_class=2)
    cache_file = Path(load("tiered_imagenet", tmp_path, "val").meta["cache"])
    cache_file.write_bytes(cache_file.read_bytes()[:200])  # truncated
    np.testing.assert_array_equal(load("tiered_imagenet", tmp_path, "val").images, images)
    np.save(cache_file, np.zeros((3, 84, 84, 3), np.uint8))  # stale shape
    np.testing.assert_array_equal(load("tiered_imagenet", tmp_path, "val").images, images)
    assert not list(cache_file.parent.glob("*.tmp"))


def test_tiered_cache_dir_option_and_resize(tmp_path):
    fx.write_tiered_ren(tmp_path / "data", "test", n_classes=2, per_class=2)
    s = load("tiered_imagenet", tmp_path / "data", "test", image_size=10, cache_dir=str(tmp_path / "c"))
    assert s.images.shape == (4, 10, 10, 3) and Path(s.meta["cache"]).parent == tmp_path / "c"
    assert not (tmp_path / "data" / ".metakd_cache").exists()


def test_default_cache_dir_is_never_inside_the_data_root(tmp_path, monkeypatch):
    """Caches live under $METAKD_CACHE (else $XDG_CACHE_HOME/metakd), even when the root is writable (issue 21)."""
    monkeypatch.delenv("METAKD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "data").mkdir()
    d = cache_mod.default_cache_dir(tmp_path / "data")
    assert d.parent == tmp_path / "xdg" / "metakd" and d.name.startswith("data-")
    monkeypatch.setenv("METAKD_CACHE", str(tmp_path / "mk"))
    assert cache_mod.default_cache_dir(tmp_path / "data").parent == tmp_path / "mk"
    assert tmp_path / "data" not in cache_mod.default_cache_dir(tmp_path / "data").parents
    fx.write_class_folders(tmp_path / "data", splits=("test",), size=8)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*"))
    load("folder", tmp_path / "data", "test", image_size=8)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "data").rglob("*")) == before  # nothing written there


@pytest.mark.parametrize("compressed", [False, True])
def test_tiered_metaoptnet_npz(tmp_path, compressed):
    images, raw = fx.write_tiered_metaoptnet(tmp_path, "train", compressed=compressed, label_offset=10)
    s = load("tiered_imagenet", tmp_path, "train")
    assert s.meta["format"] == "metaoptnet_npz"
    np.testing.assert_array_equal(s.images, images)
    np.testing.assert_array_equal(s.labels, raw - 10)
    assert s.class_names == [f"class_{i}" for i in range(10, 14)]
    assert isinstance(s.images, np.memmap)  # in place in the npz, or in the unpacked cache
    assert ("cache" in s.meta) == compressed


def test_tiered_both_releases_present_label_keys_decide(tmp_path):
    images, _ = fx.write_tiered_metaoptnet(tmp_path, "test")
    fx.write_tiered_ren(tmp_path / "ren_only", "test")
    (tmp_path / "test_images_png.pkl").write_bytes((tmp_path / "ren_only" / "test_images_png.pkl").read_bytes())
    s = load("tiered_imagenet", tmp_path, "test")
    assert s.meta["format"] == "metaoptnet_npz"
    np.testing.assert_array_equal(s.images, images)


# ------------------------------------------------------------------ class folders and Omniglot


def test_class_folders_rgb_and_gray_skip_non_images(tmp_path):
    written = fx.write_class_folders(tmp_path, splits=("train", "validation"), size=12)
    (tmp_path / "train" / "train_class0" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "train_class0" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "README.md").write_text("loose file next to the class folders")
    names, imgs = written["train"]
    s = load("folder", tmp_path, "train", image_size=12)
    assert s.meta["format"] == "class_folders" and s.class_names == names
    np.testing.assert_array_equal(s.images, imgs)
    np.testing.assert_array_equal(s.labels, [0, 0, 1, 1, 2, 2])
    gray = load("folder", tmp_path, "val", image_size=6, channels=1)
    assert gray.images.shape == (6, 6, 6, 1) and gray.class_names == written["validation"][0]


def test_folder_cache_rebuilt_when_tree_changes(tmp_path):
    fx.write_class_folders(tmp_path, splits=("test",), size=8)
    first = load("folder", tmp_path, "test", image_size=8)
    fx.write_png(tmp_path / "test" / "test_class1" / "img999.png", np.full((8, 8, 3), 7, np.uint8))
    second = load("folder", tmp_path, "test", image_size=8)
    assert len(second) == len(first) + 1 and second.images[4].max() == 7
    caches = list(cache_mod.default_cache_dir(tmp_path).glob("folder-*-test-8px-3ch-*.npy"))
    assert caches == [Path(second.meta["cache"])]  # the stale version was removed


@pytest.mark.parametrize("nested", [False, True])
def test_omniglot_layout(tmp_path, nested):
    base = tmp_path / "omniglot-py" if nested else tmp_path
    written = fx.write_omniglot(base, background=4, evaluation=2, chars=2, drawers=3)
    train = load("folder", tmp_path, "train", image_size=10, channels=1)
    test = load("folder", tmp_path, "test", image_size=10, channels=1)
    assert train.meta["format"] == "omniglot"
    assert train.class_names == written["images_background"]
    assert test.class_names == written["images_evaluation"] and "/" in test.class_names[0]
    assert train.images.shape == (24, 10, 10, 1) and len(test) == 12
    assert set(np.unique(train.images)) <= set(range(256)) and train.images.max() == 255
    with pytest.raises(ConfigError, match="val_alphabets"):
        load("folder", tmp_path, "val")


def test_omniglot_val_alphabets_seeded_and_disjoint(tmp_path):
    written = fx.write_omniglot(tmp_path, background=5, evaluation=1, chars=2, drawers=2, size=8)
    kw = dict(image_size=8, channels=1, val_alphabets=2, split_seed=3)
    val, train = load("folder", tmp_path, "val", **kw), load("folder", tmp_path, "train", **kw)
    assert val.num_classes == 4 and train.num_classes == 6
    assert set(val.class_names).isdisjoint(train.class_names)
    assert sorted(val.class_names + train.class_names) == written["images_background"]
    assert load("folder", tmp_path, "val", **kw).class_names == val.class_names  # same seed, same split
    assert {n.split("/")[0] for n in val.class_names} == set(val.meta["val_alphabets"])


# ------------------------------------------------------------------ CIFAR-FS, FC100, CIFAR-100


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    written = fx.write_fake_cifar100(root, train_per_class=2, test_per_class=1)
    return root, written


def test_cifar_fs_split_sizes_disjoint_and_named(cifar_root):
    root, _ = cifar_root
    splits = {s: load("cifar_fs", root, s) for s in ("train", "val", "test")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [64 * 3, 16 * 3, 20 * 3]  # train + test pooled
    for s, split in splits.items():
        assert split.class_names == sorted(CIFAR_FS_CLASSES[s])
        assert split.images.shape[1:] == (32, 32, 3) and split.meta["format"] == "cifar100_python"
    names = [set(splits[s].class_names) for s in splits]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(names[0] | names[1] | names[2]) == 100


def test_cifar_pixels_channels_last_and_labels_match_names(cifar_root):
    root, _ = cifar_root
    s = load("cifar_fs", root, "test")
    fine_ids = s.images[:, 0, 0, 0]  # the fixture wrote the fine id into red of pixel (0, 0)
    assert np.all(s.images[:, 0, 0, 2] == 255)
    for label, name in enumerate(s.class_names):
        assert set(fine_ids[s.labels == label]) == {fx.FINE_NAMES.index(name)}


def test_fc100_split_by_superclass(cifar_root):
    root, _ = cifar_root
    assert [COARSE_LABEL_NAMES[i] for i in FC100_SUPERCLASSES["test"]] == [
        "aquatic_mammals", "insects", "medium_mammals", "people"]
    assert COARSE_LABEL_NAMES == tuple(fx.COARSE_NAMES)
    seen = set()
    for split, n_super in (("train", 12), ("val", 4), ("test", 4)):
        s = load("fc100", root, split)
        assert s.num_classes == 5 * n_super and len(s) == 3 * 5 * n_super
        supers = {fx.COARSE_OF_FINE[n] for n in s.class_names}
        assert supers == set(FC100_SUPERCLASSES[split])
        assert s.meta["superclasses"] == [COARSE_LABEL_NAMES[i] for i in FC100_SUPERCLASSES[split]]
        assert seen.isdisjoint(s.class_names)
        seen |= set(s.class_names)
    assert len(seen) == 100


def test_cifar100_classic_split_and_root_is_python_dir(cifar_root):
    root, written = cifar_root
    train = load("cifar100", root / "cifar-100-python", "train")
    images, fine, coarse = written["train"]
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, fine)
    np.testing.assert_array_equal(train.meta["coarse_labels"], coarse)
    assert train.class_names == fx.FINE_NAMES and len(load("cifar100", root, "test")) == 100
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        load("cifar100", root, "val")


def test_cifar_resize_option(cifar_root, tmp_path):
    root, _ = cifar_root
    s = load("fc100", root, "val", image_size=12, cache_dir=str(tmp_path))
    assert s.images.shape == (60, 12, 12, 3) and Path(s.meta["cache"]).parent == tmp_path


# ------------------------------------------------------------------ detection and inspection


def test_detect_format_every_family(tmp_path, cifar_root):
    cases = {
        "mini_l2l": (lambda r: fx.write_mini_pickle_cache(r, "train"), ("mini_imagenet", "pickle_cache")),
        "mini_mo": (lambda r: fx.write_mini_metaoptnet(r, "test"), ("mini_imagenet", "metaoptnet_pickle")),
        "mini_csv": (lambda r: fx.write_mini_csv(r, splits=("train",)), ("mini_imagenet", "csv_images")),
        "tiered_ren": (lambda r: fx.write_tiered_ren(r, "val"), ("tiered_imagenet", "ren_png")),
        "tiered_mo": (lambda r: fx.write_tiered_metaoptnet(r, "val"), ("tiered_imagenet", "metaoptnet_npz")),
        "omni": (lambda r: fx.write_omniglot(r, 1, 1, 1, 1, 8), ("omniglot", "trees")),  # the omniglot loader
        "tree": (lambda r: fx.write_class_folders(r, splits=("train",), size=8), ("folder", "class_folders")),
    }
    for name, (write, expected) in cases.items():
        write(tmp_path / name)
        assert detect_format(tmp_path / name) == expected, name
    assert detect_format(cifar_root[0]) == ("cifar100", "cifar100_python")
    assert detect_format(cifar_root[0] / "cifar-100-python") == ("cifar100", "cifar100_python")


def test_inspect_root_and_report(tmp_path):
    fx.write_mini_pickle_cache(tmp_path, "train", n_classes=3, per_class=4)
    fx.write_mini_pickle_cache(tmp_path, "validation", n_classes=2, per_class=5, seed=2)
    info = inspect_root(tmp_path)
    assert info["dataset"] == "mini_imagenet" and info["format"] == "pickle_cache"
    train = info["splits"]["train"]
    assert (train["classes"], train["images"], train["images_per_class_min"], train["images_per_class_max"]) == (3, 12, 4, 4)
    assert train["image_shape"] == [84, 84, 3] and info["splits"]["val"]["images"] == 10
    assert "error" in info["splits"]["test"] and "mini-imagenet-cache-test.pkl" in info["splits"]["test"]["error"]
    report = format_report(info)
    lines = report.splitlines()
    assert any(line.split()[:4] == ["train", "pickle_cache", "3", "12"] for line in lines)
    assert any("84x84x3" in line for line in lines)
    assert any(line.startswith("test: ") and "looked for" in line for line in lines)


def test_inspect_omniglot_and_cifar(tmp_path, cifar_root):
    fx.write_omniglot(tmp_path, background=2, evaluation=1, chars=2, drawers=2, size=8)
    info = inspect_root(tmp_path, dataset="folder", image_size=8, channels=1)  # detected as omniglot otherwise
    assert info["splits"]["train"]["classes"] == 4 and info["splits"]["train"]["image_shape"] == [8, 8, 1]
    assert list(info["splits"]) == ["train", "test"] and not info["unreadable"]  # Omniglot has no val split
    assert any("val_alphabets" in n for n in info["notes"]) and "val_alphabets=K" in format_report(info)
    held = inspect_root(tmp_path, dataset="folder", image_size=8, channels=1, val_alphabets=1)
    assert held["splits"]["val"]["classes"] == 2 and held["splits"]["train"]["classes"] == 2
    cinfo = inspect_root(cifar_root[0])
    assert list(cinfo["splits"]) == ["train", "test"] and cinfo["also_readable_as"] == ["cifar_fs", "fc100"]
    fs = inspect_root(cifar_root[0], dataset="cifar_fs")
    assert [fs["splits"][s]["classes"] for s in ("train", "val", "test")] == [64, 16, 20]
    assert "also readable as" in format_report(cinfo)


# ------------------------------------------------------------------ shared helpers


def test_cached_uint8_array_build_modes(tmp_path):
    calls = []
    fill = lambda out: (calls.append(1), out.__setitem__(..., 9))  # noqa: E731
    a = cache_mod.cached_uint8_array(tmp_path / "a.npy", (2, 3), fill, "test fill")
    b = cache_mod.cached_uint8_array(tmp_path / "a.npy", (2, 3), fill, "test fill")
    assert calls == [1] and isinstance(b, np.memmap) and int(a.sum()) == 54
    c = cache_mod.cached_uint8_array(tmp_path / "b.npy", None, lambda: np.ones((4,), np.uint8))
    assert c.shape == (4,) and not c.flags.writeable
    e = cache_mod.cached_uint8_array(tmp_path / "e.npy", (0, 5), fill)
    assert e.shape == (0, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "e.npy"]


def test_cache_file_names_and_stale_glob(tmp_path):
    path, stale = cache_mod.cache_file(tmp_path, "ds-abc-train-84px", "0123456789abcdef")
    assert path.name == "ds-abc-train-84px-0123456789abcdef.npy"
    (tmp_path / "ds-abc-train-84px-ffffffffffffffff.npy").touch()
    (tmp_path / "ds-abc-train-84px-3ch-ffffffffffffffff.npy").touch()
    assert [p.name for p in tmp_path.glob(stale)] == ["ds-abc-train-84px-ffffffffffffffff.npy"]


def test_decode_image_modes(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 250, 255
    fx.write_png(tmp_path / "x.png", rgba)
    out = image_io.decode_image(tmp_path / "x.png", 4, 3)
    assert out.shape == (4, 4, 3) and out[..., 0].min() >= 245
    assert image_io.decode_image((tmp_path / "x.png").read_bytes(), 4, 1).shape == (4, 4, 1)


def test_all_loaders_registered():
    assert {"mini_imagenet", "tiered_imagenet", "folder", "cifar_fs", "fc100", "cifar100"} <= set(DATASETS.names())
