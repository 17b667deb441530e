"""Checkpoints are read with weights_only=True: a pickle that would run code is refused with an error naming
the file (eval, train --resume, distill teacher and resume), and everything metakd saves loads that way."""
import os

import pytest
import torch

from metakd.cli import main
from metakd.config import load_config
from metakd.engine.runs.checkpoint import load_checkpoint
from metakd.engine.training.meta import Trainer
from metakd.errors import MetakdError

TRAIN = ["device=cpu", "threads=1", "model.options.hidden=4", "learner.options.train_steps=1",
         "learner.options.test_steps=1", "train.meta_batch=1", "train.iterations=2", "train.val_every=2",
         "train.val_episodes=2", "episodes.q_query=1", "episodes.test_q_query=1"]


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path, marker, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"learner": Evil(marker), "config": {}, "model": Evil(marker), **extra}, path)
    return path


def test_the_evil_pickle_would_run_code_without_weights_only(tmp_path):
    write_evil(tmp_path / "x.pt", tmp_path / "ran")
    torch.load(tmp_path / "x.pt", weights_only=False)  # what metakd did before
    assert (tmp_path / "ran").exists()


def test_eval_refuses_a_checkpoint_that_runs_code(tmp_path, capsys):
    run = tmp_path / "run"
    best = write_evil(run / "best.pt", tmp_path / "MARKER")
    (run / "config.yaml").write_text("name: x\n")
    assert main(["eval", str(run), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "MARKER").exists()
    assert str(best) in err and "refused to load" in err and "may run code" in err and "posix.system" in err
    assert len(err.strip().splitlines()) == 1


def test_train_resume_refuses_a_last_pt_that_runs_code(tmp_path, capsys):
    out = tmp_path / "run"
    last = write_evil(out / "last.pt", tmp_path / "MARKER")
    assert main(["train", "maml_glyphs_5w1s", *TRAIN, "--output-dir", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "MARKER").exists()
    assert str(last) in err and "refused to load" in err


DISTILL = ["data.max_classes=4", "data.image_size=16", "teacher.arch=resnet20", "student.arch=resnet20",
           "train.batch_size=16", "device=cpu", "train.epochs=1", "teacher.epochs=1", "train.lr_milestones=[]"]


def test_distill_refuses_a_teacher_that_runs_code(tmp_path, capsys):
    teacher = write_evil(tmp_path / "teacher.pt", tmp_path / "MARKER", kind="metakd-distill-teacher")
    assert main(["distill", "distill_glyphs_kd", *DISTILL, f"teacher.checkpoint={teacher}",
                 "--output-dir", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "MARKER").exists()
    assert str(teacher) in err and "refused to load" in err


def test_distill_resume_refuses_a_last_pt_that_runs_code(tmp_path, capsys):
    out = tmp_path / "d"
    last = write_evil(out / "teacher" / "last.pt", tmp_path / "MARKER", kind="metakd-distill-state")
    assert main(["distill", "distill_glyphs_kd", *DISTILL, "--output-dir", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "MARKER").exists()
    assert str(last) in err and "refused to load" in err


def test_what_metakd_saves_loads_with_weights_only(tmp_path):
    cfg = load_config("maml_glyphs_5w1s", [*TRAIN, f"output_dir={tmp_path}", "data.normalize=dataset"])
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    for name in ("last.pt", "best.pt"):
        torch.load(tmp_path / name, weights_only=True)
        assert load_checkpoint(tmp_path / name)["step"] == 2


def test_a_legacy_numpy_rng_state_still_loads(tmp_path):
    """metakd <= 0.1 stored np.random.get_state() (an ndarray): array reconstruction only is allowed."""
    import numpy as np

    torch.save({"learner": {}, "config": {}, "rng": {"numpy": np.random.get_state()}}, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")["rng"]["numpy"]
    assert state[0] == "MT19937" and len(state[1]) == 624


def test_truncated_checkpoint_is_a_read_error_not_a_refusal(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MetakdError, match="bad.pt could not be read"):
        load_checkpoint(tmp_path / "bad.pt")
