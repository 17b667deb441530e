"""TensorBoard event files mirror metrics.jsonl (train and distill), read back with tensorboard's own reader."""
from __future__ import annotations

import json

import pytest

from metakd.cli import main
from metakd.engine.runs.metrics import JsonlLogger

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY = ["device=cpu", "model.options.hidden=4", "learner.options.train_steps=1", "learner.options.test_steps=1",
        "train.meta_batch=1", "train.iterations=4", "train.val_every=2", "train.val_episodes=2",
        "train.checkpoint_every=2", "train.log_every=1", "episodes.q_query=1", "episodes.test_q_query=1"]


def scalars(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def from_jsonl(path, kind, key):
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in recs if r["kind"] == kind]


def test_train_writes_the_same_scalars_as_metrics_jsonl(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", "--output-dir", str(out), "--no-progress", "--tensorboard", *TINY]) == 0
    got = scalars(out / "tensorboard")
    assert {"train/loss", "train/acc", "train/tasks_per_s", "train/lr", "val/acc", "val/ci95", "val/episodes"} <= set(got)
    for tag in ("train/loss", "train/acc", "val/acc"):
        assert got[tag] == from_jsonl(out / "metrics.jsonl", *tag.split("/"))
    assert [s for s, _ in got["val/acc"]] == [2, 4]
    capsys.readouterr()


def test_resume_rewrites_the_events_to_match_the_log(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", "--output-dir", str(out), "--no-progress", "--tensorboard", *TINY,
                 "train.iterations=2"]) == 0
    assert main(["train", "maml_glyphs_5w1s", "--output-dir", str(out), "--no-progress", "--tensorboard", *TINY,
                 "--resume"]) == 0
    got = scalars(out / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3, 4]  # no duplicated steps after the resume
    assert got["train/loss"] == from_jsonl(out / "metrics.jsonl", "train", "loss")
    capsys.readouterr()


def test_off_by_default_and_logger_replay(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "maml_glyphs_5w1s", "--output-dir", str(out), "--no-progress", *TINY, "train.iterations=1",
                 "train.val_every=1", "train.checkpoint_every=1"]) == 0
    assert not (out / "tensorboard").exists()
    capsys.readouterr()
    log = JsonlLogger(tmp_path / "m.jsonl")
    log.log({"kind": "train", "step": 1, "loss": 2.0})
    mirrored = JsonlLogger(tmp_path / "m.jsonl", tensorboard=tmp_path / "tb")  # switched on later: replays the log
    mirrored.log({"kind": "train", "step": 2, "loss": 1.5, "flag": True})
    mirrored.close()
    assert scalars(tmp_path / "tb") == {"train/loss": [(1, 2.0), (2, 1.5)]}


def test_distill_writes_events_per_phase(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["distill", "distill_glyphs_kd", "--output-dir", str(out), "--no-progress", "--tensorboard",
                 "device=cpu", "data.max_classes=8", "data.image_size=16", "teacher.arch=resnet20", "train.batch_size=32",
                 "train.epochs=1", "teacher.epochs=1", "train.lr_milestones=[]", "train.log_every=1",
                 "train.eval_batch_size=100"]) == 0, capsys.readouterr().err
    for phase in ("teacher", "student"):
        got = scalars(out / phase / "tensorboard")
        kinds = {tag.split("/")[0] for tag in got}
        recs = [json.loads(line) for line in (out / phase / "metrics.jsonl").read_text().splitlines()]
        assert kinds == {r["kind"] for r in recs}
    capsys.readouterr()
