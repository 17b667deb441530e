"""Omniglot end to end on small zips in the official layout: train on the minimal set, score the official
runs (`metakd eval RUN --episodes omniglot-runs`), another way through the head rule, a user's episode list,
item-by-item comparison, and the public path checkpoint -> learner, files -> episode -> predict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import _omniglot_fixtures as ofx
import metakd
from metakd.cli import main
from metakd.data import strokes
from metakd.data.preprocess import episode_from_files, preprocess_for

TINY = ["device=cpu", "threads=1", "model.options.hidden=4", "episodes.q_query=2", "episodes.test_q_query=2",
        "train.iterations=2", "train.val_every=2", "train.val_episodes=2", "train.checkpoint_every=2",
        "eval.episodes=2", "tensorboard=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """small1, small2 and the evaluation set as zips, and all_runs.zip with two 3-way runs."""
    r = tmp_path_factory.mktemp("omniglot")
    ofx.write_sets(r, ["images_background_small1", "images_background_small2", "images_evaluation"])
    ofx.write_zip(r / "all_runs.zip", ofx.runs_members(runs=2, way=3))
    return r


@pytest.fixture(scope="module")
def runs(root, tmp_path_factory):
    """A ProtoNet trained 3-way and a MAML trained 5-way on small1 (2 iterations each)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "protonet_omniglot_small1_20w1s", f"data.root={root}", "episodes.n_way=3", *TINY,
                 "--output-dir", str(out / "pn"), "--no-progress"]) == 0
    assert main(["train", "maml_omniglot_small1_5w1s", f"data.root={root}", "train.meta_batch=2", *TINY,
                 "--output-dir", str(out / "maml"), "--no-progress"]) == 0
    return out


def test_protonet_scores_the_official_runs(runs, capsys):
    assert main(["eval", str(runs / "pn"), "--episodes", "omniglot-runs"]) == 0
    out = capsys.readouterr().out
    assert "error" in out and "Wilson 95%" in out and "run01" in out and "learner options" in out
    res = json.loads((runs / "pn" / "eval_omniglot-runs.json").read_text())
    assert res["items"] == 6 and res["episodes"] == 2 and len(res["per_item_correct"]) == 6
    assert res["errors"] == 6 - sum(res["per_item_correct"])
    lo, hi = res["error_wilson95"]
    assert 0 <= lo <= res["error_rate"] <= hi <= 1
    assert set(res["per_episode_error"]) == {"run01", "run02"}
    assert [r["id"] for r in res["per_item"]][:3] == [f"run01/test/item{m:02d}.png" for m in (1, 2, 3)]


def test_maml_trained_5way_meets_3way_runs_through_its_head_rule(runs, root, capsys):
    assert main(["eval", str(runs / "maml"), "--episodes", "omniglot-runs"]) == 0
    out = capsys.readouterr().out
    assert "head_rule=prototype" in out and "trained 5-way" in out
    # the same model told to refuse another way: one line, no traceback
    assert main(["eval", str(runs / "maml"), "--episodes", "omniglot-runs", "--learner", "maml",
                 "learner.options.head_rule=error", "--out", str(runs / "x.json")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "head_rule" in errors[0] and "3-way" in errors[0] and "Traceback" not in err


def test_compare_pairs_two_models_item_by_item(runs, capsys):
    for name in ("pn", "maml"):
        assert main(["eval", str(runs / name), "--episodes", "omniglot-runs", "--out", str(runs / f"{name}.json")]) == 0
    capsys.readouterr()
    assert main(["compare", str(runs / "pn.json"), str(runs / "maml.json")]) == 0
    out = capsys.readouterr().out
    assert "per item" in out


def test_a_users_episode_list_is_evaluated(runs, tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = ["episode,role,path,label"]
    for c in ("a", "b", "c"):
        for i, role in enumerate(("support", "query", "query")):
            (tmp_path / f"{c}{i}.png").write_bytes(ofx.png(rng))
            lines.append(f"ep1,{role},{c}{i}.png,{c}")
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    assert main(["eval", str(runs / "pn"), "--episodes", str(tmp_path / "mine.csv"), "--out",
                 str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["items"] == 6 and res["episode_source"].endswith("mine.csv")
    assert main(["eval", str(runs / "pn"), "--episodes", "not-a-list"]) == 2
    assert "episode-list .csv" in capsys.readouterr().err


def test_checkpoint_to_learner_and_files_to_episode(runs, tmp_path):
    learner, ckpt = metakd.load_learner(runs / "pn")
    pre = preprocess_for(ckpt["config"]["data"]["dataset"], ckpt["data"]["image_size"], ckpt["data"]["in_channels"],
                         ckpt.get("normalize"))
    assert isinstance(pre, strokes.StrokePreprocess)  # the training images' own preprocessing
    rng = np.random.default_rng(1)
    files = []
    for i in range(5):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(ofx.png(rng))
    assert np.array_equal(pre.image(files[0]), strokes.stroke_image(files[0], 28, 1))
    batch, classes = episode_from_files(files[:3], ["x", "y", "z"], files[3:], pre)
    assert classes == ["x", "y", "z"] and batch.support_x.shape == (1, 3, 1, 28, 28)
    with torch.no_grad():
        logits = learner.predict(learner.adapt(batch.support_x[0], batch.support_y[0]), batch.query_x[0])
    assert logits.shape == (2, 3)
