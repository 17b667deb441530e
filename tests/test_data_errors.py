"""Bad input to the dataset loaders gives DataError / ConfigError naming the file or key and what was expected."""
from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _format_fixtures as fx  # noqa: E402

from metakd.data.cache import default_cache_dir  # noqa: E402
from metakd.data.inspect import detect_format, inspect_root  # noqa: E402
from metakd.errors import ConfigError, DataError  # noqa: E402
from metakd.registry import DATASETS  # noqa: E402

LOADERS = ["mini_imagenet", "tiered_imagenet", "folder", "cifar_fs", "fc100", "cifar100"]


def load(name: str, root: Path, split: str = "train", **kw):
    return DATASETS.build(name, str(root), split, **kw)


def raises_data_error(*fragments: str):
    """pytest.raises(DataError) whose message must contain every fragment (regex-escaped)."""
    return pytest.raises(DataError, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


# ------------------------------------------------------------------ options and roots


@pytest.mark.parametrize("name", LOADERS)
def test_unknown_option_names_it_and_the_valid_ones(tmp_path, name):
    with pytest.raises(ConfigError, match=r"'imagesize'.*valid options: .*image_size.*cache_dir"):
        load(name, tmp_path, imagesize=32)


@pytest.mark.parametrize("name", LOADERS)
def test_bad_split_and_image_size(tmp_path, name):
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        load(name, tmp_path, "dev")
    with pytest.raises(ConfigError, match="image_size must be >= 1"):
        load(name, tmp_path, image_size=0)


@pytest.mark.parametrize("name", LOADERS)
def test_missing_root(tmp_path, name):
    with raises_data_error(str(tmp_path / "nope"), "does not exist"):
        load(name, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with raises_data_error("is not a folder"):
        load(name, tmp_path / "file")


def test_bad_choices(tmp_path):
    with pytest.raises(ConfigError, match="channels must be one of 1, 3"):
        load("folder", tmp_path, channels=2)
    with pytest.raises(ConfigError, match="layout must be one of"):
        load("mini_imagenet", tmp_path, layout="hdf5")
    with pytest.raises(ConfigError, match="val_alphabets must be >= 0"):
        load("folder", tmp_path, val_alphabets=-1)


def test_empty_root_names_what_was_looked_for(tmp_path):
    with raises_data_error("mini-imagenet-cache-train.pkl", "train.csv", "miniImageNet_category_split_train"):
        load("mini_imagenet", tmp_path)
    with raises_data_error("train_images_png.pkl", "train_images.npz", "train_labels.pkl"):
        load("tiered_imagenet", tmp_path)
    with raises_data_error("cifar-100-python", "{train,test,meta}"):
        load("cifar_fs", tmp_path)
    with raises_data_error("class-folder tree", "images_background"):
        load("folder", tmp_path)
    with raises_data_error("no known dataset layout", "cifar-100-python"):
        detect_format(tmp_path)


# ------------------------------------------------------------------ missing split files


def test_missing_split_file_names_the_files(tmp_path):
    fx.write_mini_pickle_cache(tmp_path, "train")
    with raises_data_error("'val'", "mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"):
        load("mini_imagenet", tmp_path, "validation")
    fx.write_tiered_ren(tmp_path / "t", "train")
    with raises_data_error("'test'", "test_images_png.pkl", "test_labels.pkl"):
        load("tiered_imagenet", tmp_path / "t", "test")
    (tmp_path / "t" / "train_labels.pkl").unlink()
    with raises_data_error("train_labels.pkl"):
        load("tiered_imagenet", tmp_path / "t", "train")
    fx.write_class_folders(tmp_path / "f", splits=("train",), size=4)
    with raises_data_error(str(tmp_path / "f" / "test")):
        load("folder", tmp_path / "f", "test")


def test_missing_cifar_meta_or_part(tmp_path):
    fx.write_fake_cifar100(tmp_path, 1, 1)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with raises_data_error("meta", "fine_label_names"):
        load("cifar_fs", tmp_path)
    fx.write_fake_cifar100(tmp_path, 1, 1)
    (tmp_path / "cifar-100-python" / "test").unlink()
    with raises_data_error("cifar-100-python/test", "not found"):
        load("fc100", tmp_path)


def test_omniglot_split_folder_missing(tmp_path):
    fx.write_omniglot(tmp_path, background=1, evaluation=0, chars=1, drawers=1, size=4)
    with raises_data_error("images_evaluation", "does not exist"):
        load("folder", tmp_path, "test")


# ------------------------------------------------------------------ corrupt / truncated / unsafe pickles


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_pickles(tmp_path, damage):
    fx.write_mini_pickle_cache(tmp_path, "train")
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    raw = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a pickle at all" * 10, "truncated": raw[: len(raw) // 2], "empty": b""}[damage])
    expected = "truncated" if damage != "garbage" else "corrupt"
    with raises_data_error(str(path), expected):
        load("mini_imagenet", tmp_path)


def test_truncated_label_and_png_pickles(tmp_path):
    fx.write_tiered_ren(tmp_path, "val")
    png = tmp_path / "val_images_png.pkl"
    png.write_bytes(png.read_bytes()[:-500])
    with raises_data_error(str(png), "truncated"):
        load("tiered_imagenet", tmp_path, "val")
    lab = tmp_path / "val_labels.pkl"
    lab.write_bytes(lab.read_bytes()[:10])
    with raises_data_error(str(lab), "label file"):
        load("tiered_imagenet", tmp_path, "val")


def test_pickle_with_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps({"image_data": Evil()}))
    with raises_data_error("mini-imagenet-cache-train.pkl", "refusing to load", "plain data"):
        load("mini_imagenet", tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------ wrong keys


def test_wrong_keys_name_found_and_expected(tmp_path):
    fx.write_pickle(tmp_path / "mini-imagenet-cache-train.pkl", {"images": np.zeros((1, 84, 84, 3), np.uint8)})
    with raises_data_error("'class_dict'", "expected keys 'image_data', 'class_dict'", "found 'images'"):
        load("mini_imagenet", tmp_path)
    fx.write_pickle(tmp_path / "mini-imagenet-cache-train.pkl", [1, 2])
    with raises_data_error("expected the pickle to be a dict, got list"):
        load("mini_imagenet", tmp_path)
    fx.write_pickle(tmp_path / "m" / "miniImageNet_category_split_test.pickle", {b"data": np.zeros((1, 84, 84, 3), np.uint8)},
                    py2=True)
    with raises_data_error("'labels'", "found 'data'"):
        load("mini_imagenet", tmp_path / "m", "test")


def test_tiered_label_files_not_interchangeable(tmp_path):
    fx.write_tiered_metaoptnet(tmp_path / "a", "train")
    fx.write_tiered_ren(tmp_path / "b", "train")
    (tmp_path / "a" / "train_labels.pkl").write_bytes((tmp_path / "b" / "train_labels.pkl").read_bytes())
    with raises_data_error("train_labels.pkl", "'labels'", "found 'label_general'", "label_specific",
                           "Ren et al.", "train_images_png.pkl"):
        load("tiered_imagenet", tmp_path / "a")
    fx.write_tiered_metaoptnet(tmp_path / "c", "train")
    (tmp_path / "b" / "train_labels.pkl").write_bytes((tmp_path / "c" / "train_labels.pkl").read_bytes())
    with raises_data_error("'label_specific'", "found 'labels'", "MetaOptNet"):
        load("tiered_imagenet", tmp_path / "b")


def test_npz_without_images_key_and_corrupt_npz(tmp_path):
    fx.write_tiered_metaoptnet(tmp_path, "test")
    np.savez(tmp_path / "test_images.npz", data=np.zeros((12, 84, 84, 3), np.uint8))
    with raises_data_error("test_images.npz", "no array 'images'", "found 'data'"):
        load("tiered_imagenet", tmp_path, "test")
    (tmp_path / "test_images.npz").write_bytes(b"PK\x03\x04 broken")
    with raises_data_error("test_images.npz", "not a readable .npz"):
        load("tiered_imagenet", tmp_path, "test")


def test_truncated_npz(tmp_path):
    fx.write_tiered_metaoptnet(tmp_path, "val", compressed=True)
    npz = tmp_path / "val_images.npz"
    npz.write_bytes(npz.read_bytes()[:-100])  # central directory lost
    with raises_data_error("val_images.npz"):
        load("tiered_imagenet", tmp_path, "val")


def test_cifar_wrong_keys(tmp_path):
    fx.write_fake_cifar100(tmp_path, 1, 1)
    fx.write_pickle(tmp_path / "cifar-100-python" / "train", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},
                    py2=True)
    with raises_data_error("cifar-100-python/train", "'fine_labels'", "'coarse_labels'", "found 'data', 'labels'"):
        load("cifar100", tmp_path)


def test_cifar_meta_with_other_names(tmp_path):
    fx.write_fake_cifar100(tmp_path, 1, 1)
    names = [f"thing{i}" for i in range(100)]
    fx.write_pickle(tmp_path / "cifar-100-python" / "meta",
                    {"fine_label_names": names, "coarse_label_names": fx.COARSE_NAMES})
    with raises_data_error("fine_label_names lacks", "standard CIFAR-100"):
        load("cifar_fs", tmp_path, "val")


# ------------------------------------------------------------------ wrong shapes / dtypes / lengths


@pytest.mark.parametrize("images", [np.zeros((2, 84, 84, 3), np.float32), np.zeros((2, 84, 84), np.uint8), "abc"])
def test_wrong_image_arrays(tmp_path, images):
    fx.write_pickle(tmp_path / "mini-imagenet-cache-test.pkl", {"image_data": images, "class_dict": {"n1": [0, 1]}})
    with raises_data_error("mini-imagenet-cache-test.pkl", "'image_data' must be a uint8 array"):
        load("mini_imagenet", tmp_path, "test")


def test_class_dict_rows_checked(tmp_path):
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    imgs = np.zeros((3, 84, 84, 3), np.uint8)
    fx.write_pickle(path, {"image_data": imgs, "class_dict": {"n1": [0, 5]}})
    with raises_data_error("class_dict['n1']", "row index 5", "3 rows"):
        load("mini_imagenet", tmp_path)
    fx.write_pickle(path, {"image_data": imgs, "class_dict": {"n1": [0, 1]}})
    with raises_data_error("1 of 3 rows", "belong to no class"):
        load("mini_imagenet", tmp_path)
    fx.write_pickle(path, {"image_data": imgs, "class_dict": {"n1": [0, 1], "n2": [1, 2]}})
    with raises_data_error("class_dict['n2']", "already given"):
        load("mini_imagenet", tmp_path)
    fx.write_pickle(path, {"image_data": imgs, "class_dict": {"n1": ["a", "b", "c"]}})
    with raises_data_error("class_dict['n1']", "integer labels"):
        load("mini_imagenet", tmp_path)


def test_label_count_mismatches(tmp_path):
    fx.write_pickle(tmp_path / "miniImageNet_category_split_test.pickle",
                    {"data": np.zeros((4, 84, 84, 3), np.uint8), "labels": [1, 2, 3], "catname2label": {}})
    with raises_data_error("'labels' has 3 labels but there are 4 images"):
        load("mini_imagenet", tmp_path, "test")
    fx.write_pickle(tmp_path / "miniImageNet_category_split_test.pickle",
                    {"data": np.zeros((2, 84, 84, 3), np.uint8), "labels": [1, 2], "catname2label": {"n1": 1}})
    with raises_data_error("labels [2] have no entry in catname2label"):
        load("mini_imagenet", tmp_path, "test")

    fx.write_tiered_ren(tmp_path / "r", "train", n_classes=2, per_class=2)
    fx.write_pickle(tmp_path / "r" / "train_images_png.pkl", [fx.png_bytes(np.zeros((84, 84, 3), np.uint8))] * 3)
    with raises_data_error("train_images_png.pkl", "holds 3 images", "4 labels"):
        load("tiered_imagenet", tmp_path / "r")

    fx.write_tiered_metaoptnet(tmp_path / "m", "train", n_classes=2, per_class=2)
    fx.write_pickle(tmp_path / "m" / "train_labels.pkl", {"labels": [0, 1, 1]})
    with raises_data_error("train_labels.pkl", "'labels' has 3 labels but there are 4 images"):
        load("tiered_imagenet", tmp_path / "m")


def test_npz_wrong_dtype_and_cifar_wrong_shape(tmp_path):
    fx.write_tiered_metaoptnet(tmp_path, "train", n_classes=2, per_class=2)
    np.savez(tmp_path / "train_images.npz", images=np.zeros((4, 84, 84, 3), np.float32))
    with raises_data_error("train_images.npz", "'images' must be uint8 of shape (N, H, W, 3)", "float32"):
        load("tiered_imagenet", tmp_path)
    fx.write_fake_cifar100(tmp_path / "c", 1, 1)
    fx.write_pickle(tmp_path / "c" / "cifar-100-python" / "test",
                    {b"data": np.zeros((2, 1024), np.uint8), b"fine_labels": [0, 1], b"coarse_labels": [0, 1]}, py2=True)
    with raises_data_error("cifar-100-python/test", "(N, 3072)", "(2, 1024)"):
        load("cifar100", tmp_path / "c", "test")


# ------------------------------------------------------------------ CSV and image files


def test_csv_wrong_header_bad_row_missing_image(tmp_path):
    fx.write_mini_csv(tmp_path, splits=("train",), n_classes=1, per_class=1)
    good = (tmp_path / "train.csv").read_text()
    (tmp_path / "train.csv").write_text(good.replace("filename,label", "file,class"))
    with raises_data_error("train.csv", "expected the header 'filename,label'", "'file,class'"):
        load("mini_imagenet", tmp_path)
    (tmp_path / "train.csv").write_text(good + "only_one_field\n")
    with raises_data_error("train.csv", "line 3", "expected 'filename,label'"):
        load("mini_imagenet", tmp_path)
    (tmp_path / "train.csv").write_text(good + "missing.jpg,n1\n")
    with raises_data_error("1 listed image(s) not found", "missing.jpg"):
        load("mini_imagenet", tmp_path)
    (tmp_path / "train.csv").write_text("filename,label\n")
    with raises_data_error("no image rows"):
        load("mini_imagenet", tmp_path)


def test_undecodable_images_name_the_file(tmp_path):
    fx.write_mini_csv(tmp_path, splits=("test",), n_classes=1, per_class=2)
    bad = sorted((tmp_path / "images").iterdir())[1]
    bad.write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    with raises_data_error(str(bad), "cannot decode image"):
        load("mini_imagenet", tmp_path, "test", image_size=8)
    cache = default_cache_dir(tmp_path)
    assert not list(cache.glob("*.npy"))  # no half-built cache left behind
    assert not list(cache.glob("*.tmp"))

    fx.write_class_folders(tmp_path / "f", splits=("train",), size=4)
    (tmp_path / "f" / "train" / "train_class1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with raises_data_error("broken.png", "cannot decode image"):
        load("folder", tmp_path / "f", image_size=4)

    fx.write_tiered_ren(tmp_path / "t", "test", n_classes=2, per_class=1)
    items = [fx.png_bytes(np.zeros((84, 84, 3), np.uint8)), np.frombuffer(b"not a png", np.uint8)]
    fx.write_pickle(tmp_path / "t" / "test_images_png.pkl", items)
    with raises_data_error("test_images_png.pkl (image #1)", "cannot decode image"):
        load("tiered_imagenet", tmp_path / "t", "test")


def test_png_list_of_wrong_type(tmp_path):
    fx.write_tiered_ren(tmp_path, "train", n_classes=1, per_class=1)
    fx.write_pickle(tmp_path / "train_images_png.pkl", {"not": "a list"})
    with raises_data_error("expected a list of PNG byte arrays, got dict"):
        load("tiered_imagenet", tmp_path)


def test_empty_class_folder(tmp_path):
    fx.write_class_folders(tmp_path, splits=("train",), size=4)
    (tmp_path / "train" / "zz_empty").mkdir()
    (tmp_path / "train" / "zz_empty" / "readme.txt").write_text("no images here")
    with raises_data_error(str(tmp_path / "train" / "zz_empty"), "contains no image files"):
        load("folder", tmp_path)
    (tmp_path / "test").mkdir()
    with raises_data_error("has no class sub-folders"):
        load("folder", tmp_path, "test")


def test_cache_dir_not_writable(tmp_path):
    fx.write_class_folders(tmp_path, splits=("train",), size=4)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with raises_data_error("cannot write the cache", "cache_dir="):
        load("folder", tmp_path, image_size=4, cache_dir=str(blocker / "sub"))


def test_inspect_unknown_dataset_and_root(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet21k'"):
        inspect_root(tmp_path, dataset="imagenet21k")
    with raises_data_error("does not exist"):
        inspect_root(tmp_path / "missing")
