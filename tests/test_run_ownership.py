"""Issue 21, run folders no one can corrupt: one writer per folder (real concurrent processes), a manifest
of what a run wrote (--overwrite deletes only that; a new run refuses a folder holding metakd's names),
checkpoint configs validated and never choosing where to write, one-line errors for broken checkpoints
and teacher files and for a disk filling during a checkpoint save, and --resume refusing other data."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import _format_fixtures as fx
import metakd
from metakd import atomic
from metakd.cli import main
from metakd.errors import ConfigError, MetakdError

MANIFEST = "metakd-manifest.json"  # metakd.engine.runs.folder.MANIFEST
LOCK_NAME = ".metakd.lock"  # metakd.engine.runs.lock.LOCK_NAME

ROOT = Path(metakd.__file__).resolve().parents[1]
TINY = ["device=cpu", "threads=1", "model.options.hidden=8", "learner.options.train_steps=1",
        "learner.options.test_steps=1", "train.meta_batch=2", "train.iterations=2", "train.val_every=2",
        "train.val_episodes=4", "train.checkpoint_every=2", "train.log_every=1", "episodes.q_query=2",
        "episodes.test_q_query=2", "data.image_size=28", "eval.episodes=4"]


def spawn(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metakd", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def one_line(err):
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


# ------------------------------------------------------------------------------------------ one writer


def test_two_trainings_into_one_new_folder_one_is_refused(tmp_path):
    out = tmp_path / "run"
    runs = [spawn("train", "maml_glyphs_5w1s", *TINY, "train.iterations=30", "train.val_every=30", f"seed={s}",
                  "--output-dir", str(out), "--no-progress") for s in (0, 1)]
    results = [p.communicate(timeout=300) for p in runs]
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(runs, results) if p.returncode == 2)
    winner = next(p for p in runs if p.returncode == 0)
    line = one_line(loser)
    assert str(out) in line and f"pid {winner.pid}" in line and "host" in line and "in use" in line
    seed = int(__import__("yaml").safe_load((out / "config.yaml").read_text())["seed"])
    assert torch.load(out / "last.pt", weights_only=True)["config"]["seed"] == seed  # one run's files only
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert steps == sorted(set(steps))  # no metric line twice


def test_overwrite_resume_and_eval_of_a_live_run_are_refused_and_a_killed_run_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    live = spawn("train", "maml_glyphs_5w1s", *TINY, "train.iterations=100000",
                 "--output-dir", str(out), "--no-progress")
    try:
        wait_for(lambda: (out / "last.pt").exists() and (out / "best.pt").exists() or live.poll() is not None)
        assert live.poll() is None, live.communicate()
        for extra in (["--overwrite"], ["--resume"]):
            assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress", *extra]) == 2
            line = one_line(capsys.readouterr().err)
            assert str(out) in line and f"pid {live.pid}" in line, line
        assert main(["eval", str(out), "--no-progress"]) == 2  # writing eval_*.json into the live folder
        assert f"pid {live.pid}" in one_line(capsys.readouterr().err)
        assert main(["eval", str(out), "--out", str(tmp_path / "elsewhere.json"), "--no-progress"]) == 0
        capsys.readouterr()
    finally:
        live.send_signal(signal.SIGKILL)
        live.communicate()
    assert (out / LOCK_NAME).exists()  # left behind by the killed run; the kernel released its lock
    assert main(["train", "maml_glyphs_5w1s", *TINY, "train.iterations=1", "--output-dir", str(out), "--resume",
                 "--no-progress"]) == 0


def test_a_study_piece_has_one_writer(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchlib.results import run_piece

    (tmp_path / "pieces").mkdir()
    code = ("import sys, time; from metakd.engine.runs.lock import hold; from pathlib import Path\n"
            "with hold(Path(sys.argv[1]), 'piece'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "pieces" / ".a.lock")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MetakdError, match=f"study piece 'a'.*pid {holder.pid}"):
            run_piece(tmp_path, "a", lambda: pytest.fail("computed while another process holds the piece"))
    finally:
        holder.kill()
        holder.wait()
    assert run_piece(tmp_path, "a", lambda: {"x": 1})["x"] == 1


# ------------------------------------------------------------------------------------------ manifest


@pytest.mark.parametrize("name", ["best.pt", "config.yaml", "metrics.jsonl", "summary.json", "eval_test_4ep_seed0.json"])
def test_a_new_run_refuses_a_folder_holding_metakd_names(tmp_path, capsys, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(b"precious")
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert name in line and "--resume" in line and "--overwrite" in line
    assert (out / name).read_bytes() == b"precious" and sorted(os.listdir(out)) == [name]


def test_overwrite_refuses_a_folder_without_a_manifest_and_keeps_everything(tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    names = ["config.yaml", "metrics.jsonl", "summary.json", "eval_mine.json", "best.pt"]
    for n in names:
        (out / n).write_text("user data")
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--overwrite", "--no-progress"]) == 2
    assert MANIFEST in one_line(capsys.readouterr().err)
    assert sorted(os.listdir(out)) == sorted(names)  # nothing deleted, no lock file left in their folder


def test_overwrite_deletes_exactly_the_manifest_entries(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress"]) == 0
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert {"config.yaml", "last.pt", "best.pt", "metrics.jsonl", "summary.json", MANIFEST} <= set(listed)
    (out / "notes.md").write_text("mine")
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--overwrite", "--no-progress"]) == 0
    assert (out / "notes.md").read_text() == "mine"
    capsys.readouterr()


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress"]) == 0
    return out


def _edited_copy(trained, tmp_path, edit):
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


def test_a_checkpoints_cache_dir_is_never_used(trained, tmp_path, capsys):
    evil = tmp_path / "chosen_by_the_checkpoint"

    def edit(ckpt):
        ckpt["config"]["data"]["options"]["cache_dir"] = str(evil)
        ckpt["config"]["output_dir"] = str(tmp_path / "elsewhere")
    path = _edited_copy(trained, tmp_path, edit)
    assert main(["eval", str(path), "--episodes", "4", "--no-progress"]) == 0
    assert not evil.exists() and not (tmp_path / "elsewhere").exists()
    capsys.readouterr()


@pytest.mark.parametrize("config, message", [("not a mapping", "not a mapping"), ({"train": {"lr": "fast"}}, "train.lr"),
                                             ({"unknown_section": {}}, "unknown key"), (None, "not a mapping")])
def test_a_checkpoint_with_a_broken_config_is_one_line(trained, tmp_path, capsys, config, message):
    path = _edited_copy(trained, tmp_path, lambda ckpt: ckpt.__setitem__("config", config))
    assert main(["eval", str(path), "--episodes", "4", "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and message in line


def test_a_checkpoint_config_lacking_keys_is_one_line(trained, tmp_path, capsys):
    def edit(ckpt):
        del ckpt["config"]["model"], ckpt["config"]["episodes"]  # defaults then build another learner
    path = _edited_copy(trained, tmp_path, edit)
    assert main(["eval", str(path), "--episodes", "4", "--no-progress"]) == 2
    assert str(path) in one_line(capsys.readouterr().err)
    assert main(["eval", str(path), "--learner", "protonet", "--episodes", "4", "--no-progress"]) == 2
    assert "model.backbone" in one_line(capsys.readouterr().err)


def test_a_teacher_file_missing_keys_is_one_config_error(tmp_path):
    from metakd.engine.training.distill import TEACHER_KIND, load_teacher

    path = tmp_path / "teacher.pt"
    torch.save({"kind": TEACHER_KIND, "arch": "resnet20", "model": {}}, path)
    with pytest.raises(ConfigError, match="teacher.checkpoint: .*lacks the key.*class_names"):
        load_teacher(path, {"teacher": {"arch": "resnet20"}}, None)


def test_a_disk_filling_during_a_checkpoint_save_is_the_disk_full_line(tmp_path, capsys, monkeypatch):
    real_open = open

    class Filling(io.FileIO):
        def write(self, b):
            if self.tell() + len(b) > 2000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    def fake_open(path, mode="r", *a, **k):
        if ".pt." in str(path) and str(path).endswith(".tmp") and "w" in mode:
            return Filling(path, "w")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", *TINY, "--output-dir", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "disk is full" in line and ".pt" in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ resume data


def test_resume_refuses_other_images_under_the_same_class_names(tmp_path, capsys):
    data = tmp_path / "data"
    fx.write_class_folders(data, n_classes=5, per_class=3, size=16)
    base = ["data.dataset=folder", f"data.root={data}", "data.image_size=16", "episodes.k_shot=1", "episodes.q_query=2",
            "episodes.test_q_query=2", "device=cpu", "threads=1", "model.options.hidden=4", "train.meta_batch=1",
            "train.val_episodes=2", "train.val_every=2", "train.checkpoint_every=2", "learner.options.train_steps=1",
            "learner.options.test_steps=1"]
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", *base, "train.iterations=2", "--output-dir", str(out), "--no-progress"]) == 0
    for png in sorted((data / "train").rglob("*.png"))[::2]:  # same names and counts, other pixels
        fx.write_png(png, np.full((16, 16, 3), 200, np.uint8))
    capsys.readouterr()
    assert main(["train", "maml_glyphs_5w1s", *base, "train.iterations=4", "--output-dir", str(out), "--resume",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err  # after the new cache's decoding progress bar
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and line.startswith("metakd train: error:")
    assert "train split" in line and "other images" in line
