"""Classification distillation on Omniglot-layout data: several splits' classes together, a per-class
drawer split into train / validation / test, a smaller training size, and validation every epoch with the
test part scored once at the end (item by item). Small zips in the official layout, built here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import _omniglot_fixtures as ofx
from metakd.data import load_split
from metakd.engine.training.distill import run_distill
from metakd.engine.training.distill_data import load_classification
from metakd.engine.training.job_config import load_distill_config
from metakd.errors import ConfigError, DataError

DRAWERS = 5


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(ofx, "DRAWERS", DRAWERS)
    r = tmp_path_factory.mktemp("omni_drawers")
    ofx.write_sets(r, ("images_background_small1", "images_background_small2", "images_evaluation"))
    mp.undo()
    return r


def cfg(root, *extra):
    return load_distill_config("distill_omniglot_minimal_kd", [
        f"data.root={root}", "data.image_size=16", "data.holdout_per_class=2", "data.val_per_class=1",
        "device=cpu", "teacher.arch=resnet20", "train.epochs=2", "teacher.epochs=1", "train.lr_milestones=[]",
        "teacher.lr_milestones=[]", "train.batch_size=8", "train.log_every=1", *extra])


def test_splits_together_and_drawers_split_per_class(root):
    d = load_classification(cfg(root))
    train = load_split("omniglot", str(root), "train", image_size=16, channels=1, background="small1")
    val = load_split("omniglot", str(root), "val", image_size=16, channels=1, background="small1")
    assert d.class_names == list(train.class_names) + list(val.class_names)
    n = len(d.class_names)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (2 * n, n, 2 * n)  # drawers 1-2 / 3 / 4-5
    for c, split, k in [(0, train, 0), (n - 1, val, val.num_classes - 1)]:
        files = np.asarray(split.images)[split.labels == k]  # the class's images in drawer order
        assert torch.equal(d.train_x[d.train_y == c], torch.from_numpy(files[:2]).permute(0, 3, 1, 2))
        assert torch.equal(d.val_x[d.val_y == c], torch.from_numpy(files[2:3]).permute(0, 3, 1, 2))
        assert torch.equal(d.test_x[d.test_y == c], torch.from_numpy(files[3:]).permute(0, 3, 1, 2))
    small = load_classification(cfg(root, "data.train_per_class=1"))
    assert len(small.train_y) == n and torch.equal(small.train_x, d.train_x[::2])  # drawer 1 of each class
    assert torch.equal(small.test_x, d.test_x) and torch.equal(small.val_x, d.val_x)


@pytest.mark.parametrize("extra, error, match", [
    (["data.holdout_per_class=null"], ConfigError, "need data.holdout_per_class"),
    (["data.holdout_per_class=3", "data.val_per_class=2"], DataError, "would leave none for training"),
    (["data.train_split=[train, train]"], DataError, "share class names"),
    (["data.train_split=[]"], ConfigError, "non-empty list"),
    (["data.val_per_class=0"], ConfigError, "val_per_class"),
])
def test_bad_split_settings_are_one_line_errors(root, extra, error, match):
    with pytest.raises(error, match=match):
        load_classification(cfg(root, *extra))


def test_validation_every_epoch_and_the_test_part_once(root, tmp_path):
    res = run_distill(cfg(root), tmp_path / "run", progress=False)
    s, t = res["student"], res["teacher"]
    assert res["finished"] and 0 <= t["val_acc"] <= 1 and 0 <= t["test_acc"] <= 1
    n_test = len(load_classification(cfg(root)).test_y)
    assert len(s["test_correct"]) == n_test == s["test_images"]
    assert s["test_acc"] == pytest.approx(sum(s["test_correct"]) / n_test)
    assert s["best_val_acc"] >= s["val_acc"] and "best_test_acc" not in s
    epochs = [json.loads(line) for line in (tmp_path / "run" / "student" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all("val_acc" in r and "test_acc" not in r for r in epochs)
