"""Issue 14: no command ends in a traceback; every error is one line naming the file, key or flag (exit 2)."""
from __future__ import annotations

import errno
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

import metakd.engine.evaluation.checkpoint_eval as ec
import metakd.engine.evaluation.robustness as rb
from metakd.atomic import write_error
from metakd.cli import main
from metakd.config import load_config
from metakd.engine.assembly import make_optimizer
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.training.meta import Trainer
from metakd.errors import ConfigError

TINY = ["device=cpu", "model.options.hidden=4", "learner.options.train_steps=1", "learner.options.test_steps=1",
        "train.meta_batch=1", "train.iterations=1", "train.val_every=1", "train.val_episodes=2",
        "train.checkpoint_every=1", "train.log_every=1", "episodes.q_query=1", "episodes.test_q_query=1"]
EVAL = ["--episodes", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    Trainer(load_config("maml_glyphs_5w1s", [*TINY, f"output_dir={out}"]), progress=False).fit()
    return out


def error_of(capsys, argv, code=2):
    """Run ``metakd argv``, check the exit status and that stderr holds one error line, no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: usage, then the one error line
        lines = [line for line in lines if line.startswith("metakd ")]
    assert len(lines) == 1, err
    return lines[0]


def no_evaluation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("evaluated before checking the output path")
    monkeypatch.setattr(ec, "evaluate_sharded", fail)
    monkeypatch.setattr(rb, "evaluate_episodes", fail)


# 1. optimiser values torch rejects
@pytest.mark.parametrize("override", ["train.lr=-1", "train.weight_decay=-0.1", "train.momentum=1.5",
                                      "train.lr_gamma=0", "train.lr_step=0", "train.grad_clip=-1", "train.lr=.nan"])
def test_optimiser_values_name_the_override(capsys, override):
    err = error_of(capsys, ["config", "maml_glyphs_5w1s", override])
    assert f"override {override!r}" in err and override.split("=")[0] in err


def test_make_optimizer_turns_torch_errors_into_config_errors():
    cfg = load_config("maml_glyphs_5w1s", ["train.optimizer=sgd", "train.momentum=0"])
    params = [torch.nn.Parameter(torch.zeros(2))]
    make_optimizer(cfg, params)  # plain SGD: Nesterov needs momentum > 0 (torch raised before)
    cfg["train"]["lr"] = -1.0
    with pytest.raises(ConfigError, match="train.lr=-1.0.*Invalid learning rate"):
        make_optimizer(cfg, params)


# 2. YAML files: not UTF-8, empty, duplicated keys
@pytest.mark.parametrize("content, match", [
    (b"train:\n  lr: 0.1\xff\n", "not a UTF-8 text file"),
    (b"", "the config file is empty"),
    (b"# only a comment\n", "the config file is empty"),
    (b"train:\n  lr: 0.1\ntrain:\n  iterations: 5\n", r"duplicate key 'train' \(first at line 1\)"),
    (b"train:\n  lr: 0.1\n  lr: 0.2\n", r"line 3.*duplicate key 'lr' \(first at line 2\)"),
    (b"train: [1,\n", "not valid YAML at line 2"),
])
def test_bad_yaml_files_name_the_file(tmp_path, capsys, content, match):
    path = tmp_path / "mine.yaml"
    path.write_bytes(content)
    err = error_of(capsys, ["config", str(path)])
    assert str(path) in err
    assert re.search(match, err), err


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("train:\n  <<: {lr: 0.5, iterations: 3}\n  lr: 0.25\n")
    cfg = load_config(str(path))
    assert (cfg["train"]["lr"], cfg["train"]["iterations"]) == (0.25, 3)


# 3. a checkpoint that no longer fits its config
def test_eval_of_mismatched_checkpoint_names_keys_and_shapes(run, tmp_path, capsys):
    ckpt = torch.load(run / "best.pt", weights_only=False)
    ckpt["config"]["episodes"]["n_way"] = 3
    torch.save(ckpt, tmp_path / "changed.pt")
    err = error_of(capsys, ["eval", str(tmp_path / "changed.pt"), *EVAL])
    assert "changed.pt does not fit" in err and "3-way" in err
    assert "checkpoint (5," in err and "vs model (3," in err


# 4. unwritable --out: refused before evaluating; a late failure falls back to a temporary folder
def unwritable_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    return {"under a file": tmp_path / "file" / "r.json", "name too long": tmp_path / ("n" * 300) / "r.json"}


def test_eval_and_robustness_refuse_unwritable_out_before_the_work(run, tmp_path, capsys, monkeypatch):
    no_evaluation(monkeypatch)
    for why, path in unwritable_paths(tmp_path).items():
        err = error_of(capsys, ["eval", str(run), "--out", str(path), *EVAL])
        assert "cannot write the evaluation result" in err and str(path) in err, why
        err = error_of(capsys, ["robustness", str(run), "--out", str(path.parent / "rob"), *EVAL])
        assert "cannot write the robustness report" in err, why


@pytest.fixture()
def readonly_dir(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_eval_refuses_a_read_only_file_system(run, readonly_dir, capsys, monkeypatch):
    no_evaluation(monkeypatch)
    err = error_of(capsys, ["eval", str(run), "--out", str(readonly_dir / "r.json"), *EVAL])
    assert "read-only" in err and str(readonly_dir) in err
    err = error_of(capsys, ["robustness", str(run), "--out", str(readonly_dir / "rob"), *EVAL])
    assert "read-only" in err


def test_a_late_write_failure_keeps_the_result(run, tmp_path, capsys, monkeypatch):
    real_json, real_write = ec.write_json, rb.atomic_write
    target = tmp_path / "out" / "r.json"

    def json_fails_at_target(path, obj, what="JSON file", **kw):
        if Path(path) == target:
            raise write_error(path, OSError(errno.ENOSPC, "No space left on device"), what)
        return real_json(path, obj, what=what, **kw)

    def write_fails_in_out(path, data, what="file", **kw):
        if Path(path).parent == tmp_path / "rob":
            raise write_error(path, OSError(errno.ENOSPC, "No space left on device"), what)
        return real_write(path, data, what=what, **kw)

    monkeypatch.setattr(ec, "write_json", json_fails_at_target)
    err = error_of(capsys, ["eval", str(run), "--out", str(target), *EVAL])
    assert "the disk is full" in err and "written to" in err
    fallback = Path(err.split("written to ")[1].split(" instead")[0])
    assert json.loads(fallback.read_text())["episodes"] == 2
    monkeypatch.setattr(rb, "atomic_write", write_fails_in_out)
    err = error_of(capsys, ["robustness", str(run), "--out", str(tmp_path / "rob"), "--levels", "standard",
                            "--consistency-views", "0", *EVAL])
    folder = Path(err.split("written to ")[1].split(" instead")[0])
    assert (folder / "robustness.json").is_file() and (folder / "robustness.md").is_file()


# 5. counts: config keys and flags
def test_zero_counts_name_the_key_or_flag(run, capsys, monkeypatch):
    assert "train.val_episodes must be >= 1" in error_of(capsys, ["config", "maml_glyphs_5w1s", "train.val_episodes=0"])
    no_evaluation(monkeypatch)
    for argv, flag in [(["eval", "--episodes", "0"], "--episodes"), (["eval", "--episodes", "-3"], "--episodes"),
                       (["eval", "--batch-size", "0"], "--batch-size"),
                       (["robustness", "--episodes", "0"], "--episodes"),
                       (["robustness", "--batch-size", "0"], "--batch-size"),
                       (["robustness", "--consistency-views", "-1"], "--consistency-views"),
                       (["robustness", "--consistency-views", "1"], "--consistency-views")]:
        err = error_of(capsys, [argv[0], str(run), *argv[1:], "--device", "cpu"])
        assert f"argument {flag}:" in err, err
    for kwargs, name in [({"episodes": 0}, "episodes"), ({"batch_size": 0}, "batch_size"), ({"episodes": -3}, "episodes")]:
        with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
            evaluate_checkpoint(run, device="cpu", progress=False, **kwargs)
        with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
            rb.run_robustness([run], device="cpu", progress=False, **kwargs)


# 6. a wrong type on the command line is the override's fault, not the file's
def test_override_errors_name_the_override_not_the_file(tmp_path, capsys):
    err = error_of(capsys, ["config", "maml_glyphs_5w1s", "train.iterations=abc"])
    assert "override 'train.iterations=abc'" in err and ".yaml" not in err
    err = error_of(capsys, ["config", "maml_glyphs_5w1s", "trian.lr=1"])
    assert "override 'trian.lr=1'" in err
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: maml_glyphs_5w1s\ntrain:\n  iterations: abc\n")
    err = error_of(capsys, ["config", str(path), "train.lr=0.1"])
    assert f"{path}: 'train.iterations'" in err
    with pytest.raises(ConfigError, match="override 'train.lr=0'"):
        from metakd.engine.training.job_config import load_distill_config
        load_distill_config("distill_glyphs_kd", ["train.lr=0"])


# 7. Ctrl-C and stray OS errors
def test_ctrl_c_during_start_up_and_stray_os_errors(run, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ec, "split_for", interrupt)  # while loading the data
    assert error_of(capsys, ["eval", str(run), *EVAL], code=130) == "metakd eval: interrupted"
    monkeypatch.setattr("metakd.config.load_config", interrupt)
    assert error_of(capsys, ["train", "maml_glyphs_5w1s"], code=130) == "metakd train: interrupted"

    def io_error(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", "/data/mini/train.pkl")

    monkeypatch.setattr(ec, "split_for", io_error)
    assert error_of(capsys, ["eval", str(run), *EVAL]) == "metakd eval: error: /data/mini/train.pkl: permission denied"
