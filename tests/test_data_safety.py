"""Dataset handling that must not surprise: inspection reads only and fails loudly, layout choices are
explained, written files respect the umask, malicious pickles do not run, hints name settable keys."""
from __future__ import annotations

import logging
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import _format_fixtures as fx  # noqa: E402

from metakd import atomic  # noqa: E402
from metakd.data import cache as cache_mod  # noqa: E402
from metakd.data import glyphs, load_split  # noqa: E402
from metakd.data.inspect import check_report, format_report, inspect_root  # noqa: E402
from metakd.data.sampler import EpisodeSampler  # noqa: E402
from metakd.errors import DataError  # noqa: E402
from metakd.registry import DATASETS  # noqa: E402


def load(name: str, root: Path, split: str = "train", **kw):
    return DATASETS.build(name, str(root), split, **kw)


def snapshot(*folders: Path) -> dict:
    """Every file and folder below ``folders`` (hidden ones included) with its size and mtime."""
    out = {}
    for base in folders:
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """The per-user fallback cache, redirected into tmp_path."""
    folder = tmp_path / "user_cache"
    folder.mkdir()
    monkeypatch.setenv("METAKD_CACHE", str(folder))
    return folder


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------ 1. `metakd data ROOT` fails on an unreadable split


def test_check_report_fails_when_a_split_cannot_be_read(tmp_path):
    fx.write_mini_pickle_cache(tmp_path, "train")
    fx.write_mini_pickle_cache(tmp_path, "test")
    info = inspect_root(tmp_path)
    assert info["unreadable"] == ["val"] and info["splits"]["train"]["classes"] == 5
    with pytest.raises(DataError, match=r"1 of 3 splits cannot be read as mini_imagenet \(val\)"):
        check_report(info)
    fx.write_mini_pickle_cache(tmp_path, "val")
    check_report(inspect_root(tmp_path))  # all three readable: no error


def test_data_command_exit_code(tmp_path, capsys):
    from metakd.cli import main

    fx.write_mini_pickle_cache(tmp_path, "train")
    assert main(["data", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "train" in captured.out and "mini-imagenet-cache-test.pkl" in captured.out  # the report is still printed
    assert "cannot be read" in captured.err
    for split in ("val", "test"):
        fx.write_mini_pickle_cache(tmp_path, split)
    assert main(["data", str(tmp_path)]) == 0


# ------------------------------------------------------------------ 2. ambiguous roots say what was chosen


def test_mini_val_and_validation_pickles(tmp_path, caplog):
    fx.write_mini_pickle_cache(tmp_path, "validation", n_classes=2, per_class=3)
    fx.write_mini_pickle_cache(tmp_path, "val", n_classes=3, per_class=3, seed=1)
    info = inspect_root(tmp_path)
    assert info["splits"]["val"]["classes"] == 2
    [msg] = [n for n in info["notes"] if "mini-imagenet-cache-val.pkl" in n]
    assert "using mini-imagenet-cache-validation.pkl" in msg and "move mini-imagenet-cache-val.pkl" in msg
    assert msg in format_report(info)
    with caplog.at_level(logging.WARNING, logger="metakd.data"):
        load("mini_imagenet", tmp_path, "val")
    assert msg in caplog.text  # a training run says it too


def test_mini_pickles_and_csv_in_one_folder(tmp_path, caplog):
    fx.write_mini_pickle_cache(tmp_path, "train")
    fx.write_mini_csv(tmp_path, splits=("train",))
    info = inspect_root(tmp_path)
    assert info["splits"]["train"]["format"] == "pickle_cache"
    assert any("using pickle_cache" in n and "data.options.layout=csv_images" in n for n in info["notes"])
    with caplog.at_level(logging.WARNING, logger="metakd.data"):
        load("mini_imagenet", tmp_path, image_size=8)
    assert "data.options.layout=csv_images" in caplog.text
    assert load("mini_imagenet", tmp_path, layout="csv_images", image_size=8).meta["format"] == "csv_images"


def test_tiered_both_releases_in_one_folder(tmp_path):
    fx.write_tiered_ren(tmp_path, "train")
    fx.write_tiered_metaoptnet(tmp_path / "mo", "train")
    (tmp_path / "mo" / "train_images.npz").rename(tmp_path / "train_images.npz")  # Ren's labels stay
    info = inspect_root(tmp_path)
    assert info["splits"]["train"]["format"] == "ren_png"
    assert any("both releases" in n and "using ren_png" in n and "data.options.layout=metaoptnet_npz" in n
               for n in info["notes"])


def test_omniglot_and_class_folders_in_one_folder(tmp_path):
    fx.write_omniglot(tmp_path, 2, 1, 2, 2, 8)
    fx.write_class_folders(tmp_path, size=8)
    notes = inspect_root(tmp_path, dataset="folder", image_size=8)["notes"]
    assert any("using omniglot" in n and "data.options.layout=class_folders" in n for n in notes)


def test_other_dataset_families_are_named(tmp_path):
    fx.write_mini_pickle_cache(tmp_path, "train")
    fx.write_tiered_ren(tmp_path, "train")
    notes = inspect_root(tmp_path)["notes"]
    assert any("tiered_imagenet" in n and "--dataset tiered_imagenet" in n for n in notes)


# ------------------------------------------------------------------ 3. written files respect the umask; stale temps


def test_cache_files_respect_the_umask(tmp_path, umask022):
    a = cache_mod.cached_uint8_array(tmp_path / "a.npy", (2, 3), lambda out: out.fill(1))
    b = cache_mod.cached_uint8_array(tmp_path / "b.npy", None, lambda: np.ones(3, np.uint8))
    cache_mod.save_npy(tmp_path / "c.npy", np.zeros(2, np.uint8))
    fx.write_tiered_ren(tmp_path / "t", "val", n_classes=2, per_class=1)
    s = load("tiered_imagenet", tmp_path / "t", "val")
    assert int(a.sum()) == 6 and int(b.sum()) == 3
    for p in [tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy", Path(s.meta["cache"])]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_glyph_cache_files_respect_the_umask(tmp_path, umask022):
    glyphs._write_json(tmp_path / "x.json", {"a": 1})
    packed = glyphs._pack({(0, 0): np.ones((2, 3), np.uint8)})
    glyphs._atomic_write(tmp_path / "x.atlas.npz", lambda tmp: glyphs._save_packed(tmp, packed))
    glyphs._atomic_write(tmp_path / "x.npy", lambda tmp: np.lib.format.open_memmap(tmp, mode="w+", shape=(2,)))
    for name in ("x.json", "x.atlas.npz", "x.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.atlas.npz", "x.json", "x.npy"]


def test_glyph_write_error_is_one_data_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="glyphs: cannot write the cache file"):
        glyphs._write_json(tmp_path / "file" / "x.json", {})


def _temp_of(folder: Path, name: str, pid: int) -> Path:
    p = folder / f"{name}.metakd.{atomic._HOST}.{pid}-0123abcd.tmp"
    p.write_bytes(b"half a cache")
    return p


def test_dead_writers_temps_removed_before_a_build(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_tmp = _temp_of(tmp_path, "x-84px-0123456789abcdef.npy", done.pid)
        live_tmp = _temp_of(tmp_path, "y-84px-0123456789abcdef.npy", live.pid)
        cache_mod.cached_uint8_array(tmp_path / "z.npy", (2,), lambda out: out.fill(0))
        assert not dead_tmp.exists() and live_tmp.exists()
        glyph_dead, glyph_live = _temp_of(tmp_path, "glyphs-train.npy", done.pid), _temp_of(tmp_path, "c.json", live.pid)
        glyphs._cache_folder(tmp_path)
        assert not glyph_dead.exists() and glyph_live.exists()
    finally:
        live.kill()
        live.wait()


def test_cache_dir_not_writable_names_the_option(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="(?s)cannot write the cache.*cache_dir="):
        cache_mod.cached_uint8_array(blocker / "sub" / "a.npy", (1,), lambda out: None)


# ------------------------------------------------------------------ 4. inspecting reads only


LAYOUTS = {
    "mini_pickle": lambda r: [fx.write_mini_pickle_cache(r, s, seed=i) for i, s in enumerate(("train", "val", "test"))],
    "mini_metaoptnet": lambda r: [fx.write_mini_metaoptnet(r, s, seed=i) for i, s in enumerate(("train", "val", "test"))],
    "mini_csv": lambda r: fx.write_mini_csv(r),
    "tiered_ren": lambda r: [fx.write_tiered_ren(r, s, seed=i) for i, s in enumerate(("train", "val", "test"))],
    "tiered_npz": lambda r: [fx.write_tiered_metaoptnet(r, s, seed=i) for i, s in enumerate(("train", "val", "test"))],
    "tiered_npz_compressed": lambda r: [fx.write_tiered_metaoptnet(r, s, seed=i, compressed=True)
                                        for i, s in enumerate(("train", "val", "test"))],
    "class_folders": lambda r: fx.write_class_folders(r, size=8),
    "omniglot": lambda r: _omniglot_with_default_val(r),
    "cifar100": lambda r: fx.write_fake_cifar100(r, train_per_class=1, test_per_class=1),
}


def _omniglot_with_default_val(root):
    """A full-layout Omniglot tree whose background holds the default validation alphabets (and one more)."""
    from metakd.data.omniglot import DEFAULT_VAL

    fx.write_omniglot(root, len(DEFAULT_VAL["full"]) + 1, 1, 2, 2, 8)
    background = sorted((root / "images_background").iterdir())
    for folder, name in zip(background, DEFAULT_VAL["full"]):
        folder.rename(folder.with_name(name))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("image_size", [None, 16])
def test_inspect_writes_nothing(tmp_path, user_cache, layout, image_size):
    root = tmp_path / "data"
    root.mkdir()
    LAYOUTS[layout](root)
    before = snapshot(root, user_cache)
    options = {} if image_size is None else {"image_size": image_size}
    info = inspect_root(root, **options)
    assert snapshot(root, user_cache) == before, "inspect_root wrote into the dataset or the user cache"
    assert not info["unreadable"], info
    check_report(info)
    for split, summary in info["splits"].items():  # the same counts as a real load, which then builds its cache
        real = load_split(info["dataset"], str(root), split, **options)
        assert summary["classes"] == real.num_classes and summary["images"] == len(real)
        assert summary["image_shape"] == list(real.image_shape)
        assert not np.all(np.asarray(real.images) == 0)


def test_inspect_reports_pending_caches_and_decodes_a_sample(tmp_path, user_cache):
    fx.write_mini_csv(tmp_path, n_classes=2, per_class=2)
    info = inspect_root(tmp_path)
    assert {s["cache"] for s in info["splits"].values()} == {"not built yet"}
    assert any("not built yet" in n for n in info["notes"])
    load("mini_imagenet", tmp_path, "train")
    assert inspect_root(tmp_path)["splits"]["train"]["cache"] == "built"
    first = sorted((tmp_path / "images").iterdir())[0]  # a train image (the first of the first class)
    first.write_bytes(b"not a JPEG")
    info = inspect_root(tmp_path)
    assert info["unreadable"] == ["train"] and "cannot decode image" in info["splits"]["train"]["error"]


# ------------------------------------------------------------------ 5. the small-class hint names a settable key


def test_skip_small_classes_through_data_options(tmp_path):
    from metakd.config import load_config
    from metakd.engine.assembly import make_sampler, split_for

    fx.write_class_folders(tmp_path, n_classes=6, per_class=2, size=8)
    for k in range(2, 5):  # classes 0-4 get 5 images, class 5 keeps 2
        for c in range(5):
            fx.write_png(tmp_path / "train" / f"train_class{c}" / f"extra{k}.png", np.zeros((8, 8, 3), np.uint8))
    base = ["data.dataset=folder", f"data.root={tmp_path}", "data.image_size=8", "episodes.k_shot=1",
            "episodes.q_query=4"]
    cfg = load_config(None, base)
    with pytest.raises(DataError, match="set data.options.skip_small_classes=true in the config") as err:
        make_sampler(cfg, split_for(cfg, "train"), q_query=4, device=torch.device("cpu"), normalize=None)
    assert "'train_class5' has 2" in str(err.value)
    cfg = load_config(None, base + ["data.options.skip_small_classes=true"])
    sampler = make_sampler(cfg, split_for(cfg, "train"), q_query=4, device=torch.device("cpu"), normalize=None)
    assert sampler.skipped == {"train_class5": 2} and len(sampler.classes) == 5
    assert EpisodeSampler(load_split("folder", str(tmp_path), "train", image_size=8), 5, 1, 4,
                          skip_small_classes=True).skipped == {"train_class5": 2}
    with pytest.raises(Exception, match="skip_small_classes must be true or false"):
        load_split("folder", str(tmp_path), "train", image_size=8, skip_small_classes="yes")


# ------------------------------------------------------------------ 6. malicious pickles are refused, not run


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.mark.parametrize("case", ["mini_pickle_cache", "mini_metaoptnet", "tiered_labels", "tiered_png_list",
                                  "cifar_part"])
def test_pickle_that_runs_a_command_is_refused(tmp_path, case):
    marker = tmp_path / "pwned"
    root = tmp_path / "data"
    evil = _Evil(marker)
    if case == "mini_pickle_cache":
        target = root / "mini-imagenet-cache-train.pkl"
        _plant(target, {"image_data": evil, "class_dict": {}})
        dataset = "mini_imagenet"
    elif case == "mini_metaoptnet":
        target = root / "miniImageNet_category_split_train_phase_train.pickle"
        _plant(target, {"data": np.zeros((1, 84, 84, 3), np.uint8), "labels": evil})
        dataset = "mini_imagenet"
    elif case == "tiered_labels":
        fx.write_tiered_ren(root, "train", n_classes=1, per_class=1)
        target = root / "train_labels.pkl"
        _plant(target, {"label_specific": evil})
        dataset = "tiered_imagenet"
    elif case == "tiered_png_list":
        fx.write_tiered_ren(root, "train", n_classes=1, per_class=1)
        target = root / "train_images_png.pkl"
        _plant(target, [evil])
        dataset = "tiered_imagenet"
    else:
        fx.write_fake_cifar100(root, 1, 1)
        target = root / "cifar-100-python" / "train"
        _plant(target, {"data": evil})
        dataset = "cifar_fs"
    with pytest.raises(DataError, match=f"(?s){target.name}.*refusing to load posix.system"):
        load(dataset, root, "train")
    info = inspect_root(root)
    assert "refusing to load" in info["splits"]["train"]["error"] and str(target) in info["splits"]["train"]["error"]
    assert not marker.exists()


def test_split_repr_is_one_line_without_pixels(tmp_path):
    import numpy as np

    from metakd.data.base import ImageSplit

    split = ImageSplit(np.zeros((6, 28, 28, 1), np.uint8), np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"],
                       name="glyphs/train", source="/data/g")
    assert repr(split) == ("ImageSplit(glyphs/train: 3 classes, 6 images of 28x28x1 uint8, in memory, "
                           "source='/data/g')")
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8, 3), np.uint8))
    mm = ImageSplit(np.load(tmp_path / "x.npy", mmap_mode="r"), np.array([0, 1, 0, 1]), ["a", "b"], name="m/val")
    assert "\n" not in repr(mm) and "memory-mapped" in repr(mm) and "4 images of 8x8x3" in repr(mm)
    assert str(split) == repr(split)
