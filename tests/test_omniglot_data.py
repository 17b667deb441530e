"""The omniglot loader: official zips and the same trees unzipped, options, validation rules, the Vinyals
split, the one stroke preprocessing, errors, and ``metakd data ROOT``."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

import _omniglot_fixtures as ofx
from metakd.cli import main
from metakd.data import load_split
from metakd.data import omniglot
from metakd.data.inspect import detect_format, format_report, inspect_root
from metakd.data.strokes import stroke_image
from metakd.errors import ConfigError, DataError


def load(root, split, **kw):
    return load_split("omniglot", str(root), split, **kw)


@pytest.fixture(scope="module")
def zroot(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni_zip")
    members = ofx.write_sets(root)
    ofx.write_zip(root / "all_runs.zip", ofx.runs_members())
    return root, members


def test_zip_and_unzipped_trees_read_identically(zroot, tmp_path):
    root, _ = zroot
    ofx.write_sets(tmp_path, unzipped=True)
    for kw in (dict(background="small1"), dict(background="full"), dict(protocol="vinyals")):
        for split in ("train", "val", "test"):
            z, t = load(root, split, **kw), load(tmp_path, split, **kw)
            assert z.class_names == t.class_names and np.array_equal(z.labels, t.labels), (kw, split)
            assert np.array_equal(np.asarray(z.images), np.asarray(t.images)), (kw, split)
    assert z.meta["format"] == "zips" and t.meta["format"] == "trees"


def test_default_validation_rules(zroot):
    root, _ = zroot
    per = ofx.CHARS * ofx.DRAWERS
    train1, val1 = load(root, "train", background="small1"), load(root, "val", background="small1")
    assert train1.meta["alphabets"] == list(ofx.SETS["images_background_small1"]) and len(train1) == 4 * per
    assert train1.num_classes == 4 * ofx.CHARS and train1.meta["val_alphabets"] == list(omniglot.DEFAULT_VAL["small1"])
    # the alphabets of small2 not in small1, read from small2 (before the full set)
    assert val1.meta["alphabets"] == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert list(val1.meta["sets"]) == ["images_background_small2"]
    # small2: the mirror rule (small1's own alphabets), all four of small2's kept for training
    train2, val2 = load(root, "train", background="small2"), load(root, "val", background="small2")
    assert train2.meta["alphabets"] == list(ofx.SETS["images_background_small2"])
    assert val2.meta["alphabets"] == ["Balinese", "Early_Aramaic", "Korean"]
    # full: the five Vinyals validation alphabets held out of the background set
    full_train, full_val = load(root, "train", background="full"), load(root, "val", background="full")
    assert full_val.meta["alphabets"] == list(omniglot.VINYALS_VAL)
    assert full_train.meta["alphabets"] == ["Balinese", "Greek", "Japanese_(katakana)", "Korean", "Sanskrit", "Tagalog"]
    assert set(full_train.class_names).isdisjoint(full_val.class_names)
    test = load(root, "test", background="small1")
    assert test.meta["alphabets"] == ["Angelic", "Kannada"] and test.num_classes == 2 * ofx.CHARS
    assert load(root, "train").meta["background"] == "full"  # auto: the full set when present


def test_default_validation_alphabet_missing_everywhere(tmp_path):
    ofx.write_sets(tmp_path, sets=("images_background_small1", "images_evaluation"))
    assert load(tmp_path, "train").meta["background"] == "small1"  # auto: small1 when it is the only one
    with pytest.raises(DataError, match=r"validation alphabet 'Japanese_\(katakana\)'.*val_alphabets"):
        load(tmp_path, "val", background="small1")


def test_named_validation_alphabets(zroot):
    root, _ = zroot
    kw = dict(background="full", val_alphabets=["Greek", "Tagalog"])
    train, val = load(root, "train", **kw), load(root, "val", **kw)
    assert val.meta["alphabets"] == ["Greek", "Tagalog"] and val.meta["val_rule"] == "given"
    assert "Greek" not in train.meta["alphabets"] and "Hebrew" in train.meta["alphabets"]  # not default-held
    own = load(root, "val", background="small1", val_alphabets=["Greek"])  # held out of small1 itself
    assert own.meta["alphabets"] == ["Greek"] and "Greek" not in load(root, "train", background="small1",
                                                                       val_alphabets=["Greek"]).meta["alphabets"]
    none = load(root, "train", background="small1", val_alphabets=[])
    assert none.meta["alphabets"] == list(ofx.SETS["images_background_small1"])
    with pytest.raises(ConfigError, match="no validation split"):
        load(root, "val", background="small1", val_alphabets=[])


@pytest.mark.parametrize("kw, match", [
    (dict(val_alphabets=["Klingon"]), r"unknown alphabet 'Klingon'.*: Armenian, Balinese, Bengali, Early_Aramaic, Greek"),
    (dict(val_alphabets=["Angelic"]), "evaluation alphabet"),
    (dict(val_alphabets="Greek"), "must be a list of alphabet names"),
    (dict(background="small3"), "background must be one of 'full', 'small1', 'small2'"),
    (dict(protocol="lake"), "protocol must be one of"),
    (dict(rotations="yes"), "rotations must be true or false"),
    (dict(protocol="vinyals", val_alphabets=["Greek"]), "val_alphabets applies to protocol=challenge"),
    (dict(trainval=True), "trainval applies to protocol=vinyals"),
    (dict(background="small2", val_alphabets=list(ofx.SETS["images_background_small2"])), "every alphabet"),
    (dict(colour=True), r"unknown option\(s\) 'colour'"),
])
def test_option_errors_are_one_line(zroot, kw, match):
    root, _ = zroot
    with pytest.raises(ConfigError, match=match) as err:
        load(root, "train", **kw)
    assert "\n" not in str(err.value)


def test_missing_sets_and_bad_zip(tmp_path):
    ofx.write_sets(tmp_path, sets=("images_background_small1",))
    with pytest.raises(DataError, match=r"test split needs images_evaluation\.zip or the folder images_evaluation/"):
        load(tmp_path, "test")
    with pytest.raises(DataError, match="background=full needs images_background.zip"):
        load(tmp_path, "train", background="full")
    with pytest.raises(DataError, match="protocol=vinyals needs images_background.zip"):
        load(tmp_path, "train", protocol="vinyals")
    (tmp_path / "images_evaluation.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="images_evaluation.zip.*not a readable zip"):
        load(tmp_path, "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no background set"):
        load(empty, "train")


def test_corrupt_image_names_the_member(tmp_path):
    members = ofx.set_members("images_background_small1", ("Greek",))
    members["images_background_small1/Greek/character02/0002_03.png"] = b"garbage"
    ofx.write_zip(tmp_path / "images_background_small1.zip", members)
    with pytest.raises(DataError, match=r"images_background_small1\.zip:images_background_small1/Greek/character02/"
                                        r"0002_03\.png'?: cannot decode"):
        load(tmp_path, "train", val_alphabets=[])


def test_zip_without_directory_entries_nested_tree_and_torchvision_folder(tmp_path):
    members = ofx.set_members("images_background_small1", ("Greek",))
    ofx.write_zip(tmp_path / "a" / "images_background_small1.zip", members, directories=False)
    ofx.write_tree(tmp_path / "b" / "images_background_small1", members)  # unzipped into a folder of its name
    ofx.write_tree(tmp_path / "c" / "omniglot-py", members)
    a, b, c = (load(tmp_path / x, "train", val_alphabets=[]) for x in "abc")
    assert a.class_names == b.class_names == c.class_names == [f"Greek/character{i:02d}" for i in range(1, ofx.CHARS + 1)]
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))


def test_rotations_and_vinyals_protocol(zroot):
    root, _ = zroot
    plain = load(root, "train", protocol="vinyals", rotations=False)
    rot = load(root, "train", protocol="vinyals")  # rotations default on for vinyals
    assert rot.num_classes == 4 * plain.num_classes and len(rot) == 4 * len(plain)
    assert rot.class_names[:4] == [f"{plain.class_names[0]}/rot{r:03d}" for r in (0, 90, 180, 270)]
    n = ofx.DRAWERS
    first = np.asarray(plain.images[:n])
    for k in range(4):
        assert np.array_equal(np.asarray(rot.images[k * n:(k + 1) * n]), np.rot90(first, k, axes=(1, 2)))
    # Vinyals roles: the five validation alphabets, Kannada a test alphabet, Angelic (evaluation set) train
    assert {c.split("/")[0] for c in plain.class_names} == {"Balinese", "Greek", "Japanese_(katakana)", "Korean",
                                                            "Sanskrit", "Tagalog", "Angelic"}
    assert load(root, "val", protocol="vinyals").meta["alphabets"] == list(omniglot.VINYALS_VAL)
    assert load(root, "test", protocol="vinyals").meta["alphabets"] == ["Kannada"]
    both = load(root, "train", protocol="vinyals", trainval=True, rotations=False)
    assert set(both.class_names) == set(plain.class_names) | set(load(
        root, "val", protocol="vinyals", rotations=False).class_names)
    with pytest.raises(ConfigError, match="no 'val' split"):
        load(root, "val", protocol="vinyals", trainval=True)
    assert load(root, "train", background="small1", rotations=True).num_classes == 4 * 4 * ofx.CHARS


def test_vinyals_rule_reproduces_the_published_lists():
    """ProtoNet's released train/val/test lists (their sha256 in VINYALS_DIGESTS) from the rule alone."""
    chars = [f"{a}/character{i:02d}" for table in (omniglot.BACKGROUND_ALPHABETS, omniglot.EVALUATION_ALPHABETS)
             for a, n in table.items() for i in range(1, n + 1)]
    assert len(chars) == 1623
    for role, digest in omniglot.VINYALS_DIGESTS.items():
        mine = sorted(c for c in chars if omniglot.vinyals_role(c) == role)
        assert hashlib.sha256("\n".join(mine).encode()).hexdigest() == digest, role
    assert sum(omniglot.vinyals_role(c) != "test" for c in chars) == 1200


def test_stroke_preprocessing_polarity_size_and_folder_loader(zroot, tmp_path):
    root, members = zroot
    train = load(root, "train", background="small1", image_size=20)
    assert train.image_shape == (20, 20, 1) and train.meta["polarity"] == "white_on_black"
    raw = members["images_background_small1"]["images_background_small1/Balinese/character01/0001_01.png"]  # row 0
    expected = stroke_image(raw, 20, 1)
    assert np.array_equal(train.images[0], expected)
    original = np.asarray(Image.open(io.BytesIO(raw)).convert("L"))
    assert original.mean() > 128 and expected.mean() < 128  # black on white in, white on black out
    assert load(root, "train", background="small1", channels=3).image_shape == (28, 28, 3)
    # the folder loader reads an Omniglot tree through the same function
    ofx.write_tree(tmp_path, {k.replace("images_background_small1", "images_background"): v
                              for k, v in members["images_background_small1"].items()})
    folder = load_split("folder", str(tmp_path), "train", image_size=20, channels=1)
    assert folder.meta["polarity"] == "white_on_black"
    assert np.array_equal(folder.images[0], expected)


def test_split_is_cached_and_reused(zroot):
    root, _ = zroot
    first = load(root, "train", background="small2")
    again = load(root, "train", background="small2")
    assert first.meta["cache"] == again.meta["cache"] and isinstance(again.images, np.memmap)


def test_data_command_with_a_config(zroot, tmp_path, capsys):
    root, _ = zroot
    cfg = tmp_path / "omni.yaml"
    cfg.write_text("data:\n  dataset: omniglot\n  image_size: 24\n  options: {background: small2}\n")
    assert main(["data", str(root), "--config", str(cfg), "data.options.val_alphabets=[Korean]"]) == 0
    out = capsys.readouterr().out
    assert "24x24x1" in out and "val: 1 alphabets: Korean" in out and "background small2" in out


def test_detect_and_inspect(zroot, capsys):
    root, _ = zroot
    assert detect_format(root) == ("omniglot", "zips")
    info = inspect_root(root, background="small1")
    assert not info["unreadable"]
    assert info["splits"]["val"]["alphabets"] == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert info["splits"]["train"]["image_shape"] == [28, 28, 1]
    found = "\n".join(info["found"])
    assert "images_background_small1: 4 alphabets, 8 characters, 24 images (zip" in found
    assert "one-shot runs: 2 runs, 6 query items" in found and "white strokes on black" in found
    report = format_report(info)
    assert "val: 3 alphabets: Japanese_(katakana), Sanskrit, Tagalog" in report
    assert "28x28x1 uint8, white_on_black" in report
    assert main(["data", str(root), "background=small2", "image_size=20"]) == 0
    out = capsys.readouterr().out
    assert "train: 4 alphabets: Greek, Japanese_(katakana), Sanskrit, Tagalog" in out and "20x20x1" in out
