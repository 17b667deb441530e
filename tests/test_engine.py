"""Engine: training lifts accuracy above chance, exact resume, atomic checkpoints, evaluation JSON."""
import json

import pytest
import torch

from metakd.config import load_config
from metakd.engine.runs.checkpoint import load_checkpoint, save_checkpoint
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.runs.metrics import mean_ci95
from metakd.engine.training.meta import Trainer
from metakd.errors import MetakdError


def tiny_cfg(tmp_path, *extra):
    """A seconds-long glyph config: Conv4 with 8 channels, 2 inner steps, validation every 3 steps."""
    return load_config("maml_glyphs_5w1s", [
        "device=cpu", f"output_dir={tmp_path / 'run'}", "model.options.hidden=8", "learner.options.train_steps=2",
        "learner.options.test_steps=2", "train.meta_batch=2", "train.iterations=6", "train.val_every=3",
        "train.val_episodes=4", "train.checkpoint_every=3", "train.log_every=2", "episodes.q_query=3",
        "episodes.test_q_query=3", *extra])


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.learner.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    full = Trainer(tiny_cfg(tmp_path / "a"), progress=False)
    full.fit()
    interrupted = Trainer(tiny_cfg(tmp_path / "b"), progress=False)
    interrupted.fit(max_steps=4)           # stops mid-way (after a validation and a checkpoint at step 3)
    interrupted.save("last.pt")
    resumed = Trainer(tiny_cfg(tmp_path / "b"), progress=False)
    resumed.fit(resume=True)
    assert resumed.step == full.step == 6
    a, b = params(full), params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the logs of the resumed run match the uninterrupted one
    train_a = [r for r in full.logger.read() if r["kind"] == "train"]
    train_b = [r for r in resumed.logger.read() if r["kind"] == "train"]
    assert [r["step"] for r in train_a] == [r["step"] for r in train_b]
    assert [r["loss"] for r in train_a] == pytest.approx([r["loss"] for r in train_b])


def test_interrupt_saves_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path)
    trainer = Trainer(cfg, progress=False)
    real = trainer.train_step
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(trainer, "train_step", flaky)
    with pytest.raises(MetakdError, match="interrupted at step 2.*--resume"):
        trainer.fit()
    assert load_checkpoint(trainer.out / "last.pt")["step"] == 2
    with pytest.raises(MetakdError, match="already holds a run"):
        Trainer(cfg, progress=False).fit()
    done = Trainer(cfg, progress=False)
    done.fit(resume=True)
    assert done.step == 6
    out = trainer.out
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "summary.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.tmp"))


def test_resume_refuses_other_experiment(tmp_path):
    Trainer(tiny_cfg(tmp_path), progress=False).fit(max_steps=3)
    other = Trainer(tiny_cfg(tmp_path, "learner.options.inner_lr=0.5"), progress=False)
    with pytest.raises(MetakdError, match="different experiment config"):
        other.fit(resume=True)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(MetakdError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MetakdError, match="bad.pt could not be read"):
        load_checkpoint(bad)
    save_checkpoint(tmp_path / "foreign.pt", {"weights": 1})
    with pytest.raises(MetakdError, match="expected keys 'learner' and 'config'"):
        load_checkpoint(tmp_path / "foreign.pt")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_evaluation_json_and_same_episodes(tmp_path):
    cfg = tiny_cfg(tmp_path)
    Trainer(cfg, progress=False).fit()
    res = evaluate_checkpoint(tmp_path / "run", episodes=10, device="cpu", progress=False)
    saved = json.loads((tmp_path / "run" / "eval_test_10ep_seed0.json").read_text())
    for key in ("accuracy", "ci95", "episodes", "episode_seed", "train_seed", "seconds", "device", "config",
                "episodes_fingerprint"):
        assert key in saved
    assert saved["episodes"] == 10 and 0.0 <= saved["accuracy"] <= 1.0
    again = evaluate_checkpoint(tmp_path / "run", episodes=10, device="cpu", progress=False)
    assert again["accuracy"] == res["accuracy"] and again["episodes_fingerprint"] == res["episodes_fingerprint"]


def test_mean_ci95_matches_protocol():
    mean, ci = mean_ci95([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and ci == pytest.approx(1.96 * 0.5 / 2)


@pytest.mark.parametrize("name, iterations", [("protonet_glyphs_5w1s", 60), ("maml_glyphs_5w1s", 150)])
def test_short_training_beats_chance_on_glyphs(tmp_path, name, iterations):
    cfg = load_config(name, ["device=cpu", f"output_dir={tmp_path}", f"train.iterations={iterations}", "train.lr=0.003",
                             "train.val_every=1000", "train.val_episodes=20", "episodes.train_n_way=5",
                             "episodes.q_query=5", "model.options.hidden=32"])
    Trainer(cfg, progress=False).fit()
    res = evaluate_checkpoint(tmp_path, episodes=100, device="cpu", progress=False)
    assert res["accuracy"] - res["ci95"] > 0.45, res["accuracy"]  # 5-way chance is 0.20
