"""The metakd command end to end: data inspection, train and eval on a real miniImageNet layout, list, errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from _format_fixtures import write_mini_pickle_cache
from metakd.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def mini_root(tmp_path):
    root = tmp_path / "mini"
    for split in ("train", "validation", "test"):
        write_mini_pickle_cache(root, split, n_classes=6, per_class=8)
    return root


def test_data_command_reports_format_and_splits(mini_root, capsys):
    assert main(["data", str(mini_root)]) == 0
    out = capsys.readouterr().out
    assert "mini_imagenet" in out and "train" in out and "test" in out
    assert main(["data", str(mini_root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dataset"] == "mini_imagenet"


def test_train_then_eval_on_mini_imagenet_pickles(mini_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "maml_mini_5w1s", f"data.root={mini_root}", "device=cpu", "train.iterations=2", "train.val_every=2",
            "train.val_episodes=2", "model.options.hidden=4", "learner.options.train_steps=1",
            "learner.options.test_steps=1", "episodes.q_query=2", "episodes.test_q_query=2", "--output-dir", str(run),
            "--no-progress"]
    assert main(args) == 0
    assert "evaluate with: metakd eval" in capsys.readouterr().out
    assert main(args) == 2  # the run folder exists: refuse to clobber it
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "over 3 episodes" in out
    result = json.loads((run / "eval_test_3ep_seed0.json").read_text())
    assert result["dataset"] == "mini_imagenet" and result["episodes"] == 3


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "maml_mini_5w1s", f"data.root={tmp_path / 'nowhere'}", "device=cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err
    assert main(["train", "maml_mini_5w1s", "train.lerning_rate=1"]) == 2
    assert "train.lerning_rate" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_list_and_config(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("maml", "fomaml", "anil", "boil", "metasgd", "protonet", "conv4", "resnet12", "mini_imagenet",
                 "tiered_imagenet", "glyphs", "maml_mini_5w1s"):
        assert name in out
    assert main(["config", "maml_mini_5w1s", "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "metakd", "list", "learners"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("learners:") and "maml" in proc.stdout
