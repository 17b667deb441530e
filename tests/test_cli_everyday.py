"""Issue 16, the command line: overrides anywhere, --threads on every command, runs labelled by folder,
and `metakd compare` end to end on two real runs."""
from __future__ import annotations

import json

import pytest
import torch

from metakd.cli import build_parser, main
from metakd.config import load_config
from metakd.engine.training.meta import Trainer

TINY = ["device=cpu", "model.options.hidden=4", "learner.options.train_steps=1", "learner.options.test_steps=1",
        "train.meta_batch=1", "train.iterations=2", "train.val_every=2", "train.val_episodes=2",
        "train.checkpoint_every=2", "train.log_every=1", "episodes.q_query=1", "episodes.test_q_query=1"]
EVAL = ["--episodes", "6", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of one config (seeds 0 and 1) in folders named for the seed."""
    root = tmp_path_factory.mktemp("everyday")
    for seed in (0, 1):
        cfg = load_config("maml_glyphs_5w1s", [*TINY, f"seed={seed}", f"output_dir={root / f'maml_seed{seed}'}"])
        Trainer(cfg, progress=False).fit()
    return root


def test_overrides_before_and_after_flags(capsys):
    assert main(["config", "maml_glyphs_5w1s", "train.iterations=5", "--threads", "2", "train.lr=0.01"]) == 0
    out = capsys.readouterr().out
    assert "iterations: 5" in out and "lr: 0.01" in out and "threads: 2" in out
    # still an error: a stray word that is no override, and overrides on a command that takes none
    assert main(["config", "maml_glyphs_5w1s", "--threads", "1", "oops"]) == 2
    assert "unrecognized arguments: oops" in capsys.readouterr().err
    assert main(["list", "learners", "a=1"]) == 2
    assert "unrecognized arguments: a=1" in capsys.readouterr().err


def test_every_command_takes_threads():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices)
    for name, command in sub.choices.items():
        assert any("--threads" in a.option_strings for a in command._actions), name
        if name != "demo":
            assert "1 on a machine without CUDA" in command.format_help().replace("\n", " ").replace("  ", " ")


def test_eval_uses_the_threads_asked_for(runs, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["eval", str(runs / "maml_seed0"), *EVAL, "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        if not torch.cuda.is_available():
            assert main(["eval", str(runs / "maml_seed0"), *EVAL]) == 0
            assert torch.get_num_threads() == 1  # the CPU default
    finally:
        torch.set_num_threads(before)
    capsys.readouterr()


def test_train_overrides_after_flags(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "maml_glyphs_5w1s", "--output-dir", str(out), "--no-progress", *TINY,
                 "train.iterations=1", "train.val_every=1", "train.checkpoint_every=1"]) == 0
    assert "done: 1 iterations" in capsys.readouterr().out
    assert (out / "last.pt").is_file()


def test_runs_of_one_config_are_labelled_by_folder_and_compared(runs, tmp_path, capsys):
    for seed in (0, 1):
        assert main(["eval", str(runs / f"maml_seed{seed}"), *EVAL]) == 0
    printed = capsys.readouterr().out
    assert "maml_seed0 [maml_glyphs_5w1s] (maml" in printed and "maml_seed1 [maml_glyphs_5w1s] (maml" in printed
    result = json.loads(next((runs / "maml_seed0").glob("eval_test_6ep_*.json")).read_text())
    assert len(result["per_episode"]) == 6 and result["run"] == "maml_seed0 [maml_glyphs_5w1s]"

    assert main(["compare", str(runs / "maml_seed0"), str(runs / "maml_seed1"), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "baseline: maml_seed0 [maml_glyphs_5w1s]" in table
    assert "| maml_seed1 [maml_glyphs_5w1s] | standard |" in table
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    a = json.loads(next((runs / "maml_seed1").glob("eval_test_6ep_*.json")).read_text())["per_episode"]
    assert report["rows"][0]["difference"]["mean"] == pytest.approx(sum(x - y for x, y in zip(a, result["per_episode"])) / 6)

    rob = tmp_path / "rob"
    assert main(["robustness", str(runs / "maml_seed0"), str(runs / "maml_seed1"), "--levels", "standard", "strong",
                 "--sides", "support", "--consistency-views", "0", "--out", str(rob), *EVAL]) == 0
    assert "maml_seed1 [maml_glyphs_5w1s] (maml)" in (rob / "robustness.md").read_text()
    assert main(["compare", str(rob / "robustness.json")]) == 0
    table = capsys.readouterr().out
    assert "| standard |" in table and "| strong / support |" in table


def test_resume_flag_followed_by_an_override(runs, capsys, monkeypatch):
    from metakd import cli

    args = cli._parse(build_parser(), ["train", "maml_glyphs_5w1s", "--resume", "train.iterations=9"])
    assert args.resume is True and "train.iterations=9" in args.overrides
    ckpt = runs / "maml_seed0" / "last.pt"
    args = cli._parse(build_parser(), ["train", "maml_glyphs_5w1s", "--resume", str(ckpt), "seed=0"])
    assert args.resume == str(ckpt) and args.overrides == ["seed=0"]
