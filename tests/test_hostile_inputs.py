"""Issue 21, inputs that exhaust memory or reach outside metakd's places: YAML alias bombs, `inherit:` of
arbitrary files, run names with '/', huge counts, --threads, image and pickle bombs, caches in a data
root. Memory cases run in a subprocess under RLIMIT_AS, so a regression fails the test instead of
taking the machine down."""
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from metakd.config import load_config
from metakd.errors import ConfigError, DataError

import metakd

ROOT = Path(metakd.__file__).resolve().parents[1]  # the metakd under test, for the child processes
LIMIT = 6 << 30  # address space of a limited child: torch alone maps ~3.2 GB
TINY = ["device=cpu", "threads=1", "model.options.hidden=8", "learner.options.train_steps=1",
        "learner.options.test_steps=1", "train.meta_batch=2", "train.iterations=2", "train.val_every=2",
        "train.val_episodes=4", "train.checkpoint_every=2", "train.log_every=1", "episodes.q_query=2",
        "episodes.test_q_query=2", "data.image_size=28"]


def run_limited(argv, limit=LIMIT, timeout=240, cwd=None):
    """``metakd <argv>`` in a child limited to ``limit`` bytes of address space: (exit status, stderr)."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from metakd.cli import main; sys.exit(main(sys.argv[1:]))" % (limit, limit))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=cwd or ROOT)
    return p.returncode, p.stderr


def one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def bomb(levels=9):
    """A 'billion laughs' YAML flow sequence: 10**levels values from ~30 * levels characters."""
    parts = ["&a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "[" + ", ".join(parts) + "]"


# ------------------------------------------------------------------------------------------ YAML


def test_alias_bomb_in_a_config_file_is_refused_in_one_short_line(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(f"inherit: maml_glyphs_5w1s\ndescription: {bomb()}\n")
    rc, err = run_limited(["config", str(cfg)])
    line = one_error_line(err)
    assert rc == 2 and "aliases expand" in line and str(cfg) in line and len(line) < 400


def test_alias_bomb_in_an_override_is_refused_in_one_short_line():
    rc, err = run_limited(["config", "maml_glyphs_5w1s", f"description={bomb()}"])
    line = one_error_line(err)
    assert rc == 2 and "aliases expand" in line and "override" in line and len(line) < 400


def test_recursive_alias_and_huge_documents_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="recursive alias"):
        load_config("maml_glyphs_5w1s", ["description=&a [*a]"])
    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(ConfigError, match="bytes a config file may hold"):
        load_config(str(big))


def test_long_values_are_cut_in_messages():
    with pytest.raises(ConfigError) as err:
        load_config("maml_glyphs_5w1s", ["train.lr=" + "[" + ",".join(["123456789"] * 5000) + "]"])
    assert len(str(err.value)) < 400 and "..." in str(err.value)


# ------------------------------------------------------------------------------------------ inherit


def test_inherit_reads_only_yaml_config_files_and_never_echoes_them(tmp_path):
    (tmp_path / "secret.txt").write_text("password: hunter2\n")
    cfg = tmp_path / "a.yaml"
    for target in ("secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd", "/dev/zero", str(tmp_path)):
        cfg.write_text(f"inherit: {target}\n")
        with pytest.raises(ConfigError) as err:
            load_config(str(cfg))
        text = str(err.value)
        assert "hunter2" not in text and "password" not in text and "root:" not in text, text
        assert "inherit" in text
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text("train: {lr: 0.5}\n")
    cfg.write_text(f"inherit: {outside}\n")  # absolute and outside the configs folders
    with pytest.raises(ConfigError, match="configs folder"):
        load_config(str(cfg))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("inherit: ../elsewhere.yaml\n")  # relative to the including file
    assert load_config(str(tmp_path / "sub" / "child.yaml"))["train"]["lr"] == 0.5
    (tmp_path / "named.yaml").write_text("inherit: maml_glyphs_5w1s\n")  # a config name
    assert load_config(str(tmp_path / "named.yaml"))["learner"]["name"] == "maml"


# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs", ""])
def test_run_name_is_one_path_component(name):
    with pytest.raises(ConfigError, match="'name' must be a single folder name"):
        load_config("maml_glyphs_5w1s", [f"name={name}"])


def test_unknown_config_name_suggests_a_few_not_all():
    with pytest.raises(ConfigError) as err:
        load_config("maml_glyphs_5w1")
    text = str(err.value)
    assert "maml_glyphs_5w1s" in text and "metakd list configs" in text
    assert "protonet_glyphs_5w5s" not in text and text.count(",") < 12, text


# ------------------------------------------------------------------------------------------ sizes


def test_huge_val_episodes_is_refused_up_front_naming_the_key(tmp_path):
    rc, err = run_limited(["train", "maml_glyphs_5w1s", *TINY, "train.val_episodes=1000000000",
                           "--output-dir", str(tmp_path / "run"), "--no-progress"])
    line = one_error_line(err)
    assert rc == 2 and "train.val_episodes" in line and ("GB" in line or "TB" in line), line
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("key", ["train.meta_batch=100000000", "eval.episodes=1000000000", "eval.batch_size=100000000"])
def test_huge_counts_in_a_config_name_the_key_and_the_estimate(key):
    with pytest.raises(ConfigError) as err:
        load_config("maml_glyphs_5w1s", [key])
    assert key.split("=")[0] in str(err.value) and "would take about" in str(err.value)


def test_huge_pretrain_validation_episodes_name_the_key():
    from metakd.engine.training.job_config import load_pretrain_config

    with pytest.raises(ConfigError, match="train.val_episodes is too large.*would take about"):
        load_pretrain_config("pretrain_conv4_glyphs", ["train.val_episodes=1000000000"])


def test_threads_are_bounded_to_the_machine():
    from metakd.limits import max_threads

    rc, err = run_limited(["config", "maml_glyphs_5w1s", "--threads", "100000"])
    assert rc == 2 and "--threads" in err and f"1..{max_threads()}" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="threads must be in 1.."):
        load_config("maml_glyphs_5w1s", ["threads=100000"])
    assert load_config("maml_glyphs_5w1s", [f"threads={max_threads()}"])["threads"] == max_threads()


def test_overwrite_and_resume_together_are_refused(tmp_path, capsys):
    from metakd.cli import main

    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(tmp_path), "--overwrite", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite and --resume together" in one_error_line(err)


# ------------------------------------------------------------------------------------------ data


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no real pixel data): what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def test_a_decompression_bomb_png_is_one_data_error_naming_the_file(tmp_path):
    import _format_fixtures as fx
    from metakd.data.image_io import decode_image
    from metakd.registry import DATASETS

    bad = tmp_path / "bomb.png"
    _png_header_only(bad, 20000, 20000)
    with pytest.raises(DataError, match="bomb.png.*too large"):
        decode_image(bad, 8)
    fx.write_class_folders(tmp_path / "data", splits=("test",), size=8)
    target = sorted((tmp_path / "data" / "test").iterdir())[0] / "zz_bomb.png"
    _png_header_only(target, 20000, 20000)
    with pytest.raises(DataError, match="zz_bomb.png"):
        DATASETS.get("folder")(str(tmp_path / "data"), "test", image_size=8)


def test_a_pickle_asking_for_a_huge_buffer_is_one_data_error(tmp_path):
    from metakd.data.pickle_io import load_pickle

    path = tmp_path / "evil.pkl"
    # bytearray(10**15) as plain pickle opcodes: GLOBAL builtins.bytearray, the int, TUPLE1, REDUCE
    path.write_bytes(b"\x80\x02cbuiltins\nbytearray\n" + pickle.dumps(10**15, protocol=2)[2:-1] + b"\x85R.")
    with pytest.raises(DataError, match="evil.pkl.*byte bytearray"):
        load_pickle(path)
    huge_len = tmp_path / "len.pkl"  # BINBYTES8 with a 2**50-byte length
    huge_len.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 50) + b"abc")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from metakd.data.pickle_io import load_pickle; from metakd.errors import DataError\n"
            "try:\n    load_pickle(sys.argv[1])\nexcept DataError as e:\n    print('DataError', e); sys.exit(3)" % (LIMIT, LIMIT))
    p = subprocess.run([sys.executable, "-c", code, str(huge_len)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 3 and "len.pkl" in p.stdout and "Traceback" not in p.stderr, p.stderr[-1500:]


def test_glyph_eval_root_is_never_written(tmp_path):
    from metakd.registry import DATASETS
    import metakd.data  # noqa: F401

    data = tmp_path / "my_data"
    data.mkdir()
    (data / "keep.txt").write_text("mine")
    DATASETS.get("glyphs")(str(data), "val", image_size=16, num_classes=20, instances_per_class=2)
    assert sorted(p.name for p in data.iterdir()) == ["keep.txt"]
