"""Pre-training (`metakd pretrain`), model.init, the baselines, learners without meta-training, evaluation on
cached features, and the names of the pieces (meta_teacher:, the job schemas in the engine)."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from metakd.cli import main
from metakd.config import load_config
from metakd.engine.runs import folder as run_dir
from metakd.engine.assembly import make_sampler, split_for
from metakd.engine.runs.checkpoint import safe_load
from metakd.engine.evaluation.episodes import evaluate_episodes
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.assembly.init_weights import init_backbone
from metakd.engine.training.job_config import load_pretrain_config
from metakd.engine.training.pretrain import run_pretrain
from metakd.engine.training.meta import Trainer
from metakd.errors import ConfigError, MetakdError
from metakd.learners import build_learner
from metakd.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]
# 70 glyph classes (45 train / 11 val / 14 test), Conv4-8: 2 epochs of 12 steps, about a second
PRE = ["device=cpu", "threads=1", "data.options.num_classes=70", "model.options.hidden=8", "train.epochs=2",
       "train.batch_size=80", "train.val_episodes=6", "train.log_every=3", "episodes.test_q_query=3"]
FEW = ["device=cpu", "threads=1", "data.options.num_classes=70", "model.options.hidden=8", "episodes.q_query=3",
       "episodes.test_q_query=3", "train.val_episodes=4", "train.meta_batch=2", "eval.episodes=12"]


def weights(state):
    return {k: v.detach().clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    summary = run_pretrain(load_pretrain_config("pretrain_conv4_glyphs", PRE), out, progress=False)
    return out, summary


def test_pretrain_writes_a_run_and_resumes_exactly(pretrained, tmp_path, monkeypatch):
    out, summary = pretrained
    assert summary["finished"] and summary["classes"] == 45 and summary["step"] == 2 * 12  # 900 images, batches of 80
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "curves.png"} <= {p.name for p in out.iterdir()}
    ckpt = safe_load(out / "last.pt")
    assert ckpt["kind"] == "metakd-pretrain" and ckpt["model"]["head.weight"].shape[0] == 45
    kinds = [r["kind"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert kinds.count("val") == 2 and kinds.count("epoch") == 2
    cfg = load_pretrain_config("pretrain_conv4_glyphs", PRE)
    cut = tmp_path / "cut"
    monkeypatch.setenv(run_dir.FAULT_ENV, "step:7:SIGTERM")
    with pytest.raises(MetakdError, match="terminated \\(SIGTERM\\) in pretrain epoch 1"):
        run_pretrain(cfg, cut, progress=False)
    monkeypatch.setenv(run_dir.FAULT_ENV, "val:2:SIGINT")  # the epoch-2 validation: abandoned, rerun on resume
    with pytest.raises(MetakdError, match="interrupted after pretrain epoch 2 \\(its evaluation reruns"):
        run_pretrain(cfg, cut, resume=True, progress=False)
    monkeypatch.delenv(run_dir.FAULT_ENV, raising=False)
    with pytest.raises(MetakdError, match="train.lr: checkpoint 0.05, now 0.1"):
        run_pretrain(load_pretrain_config("pretrain_conv4_glyphs", [*PRE, "train.lr=0.1"]), cut, resume=True,
                     progress=False)
    with pytest.raises(MetakdError, match="already holds a run"):
        run_pretrain(cfg, cut, progress=False)
    run_pretrain(cfg, cut, resume=True, progress=False)
    a, b = safe_load(out / "last.pt")["model"], safe_load(cut / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [{k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
                       for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())]
    assert strip(cut) == strip(out)


def test_pretrain_config_errors():
    with pytest.raises(ConfigError, match="mirrored glyph"):
        load_pretrain_config("pretrain_conv4_glyphs", ["data.augment=crop_flip"])
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_pretrain_config("pretrain_conv4_glyphs", ["train.label_smoothing=1.5"])
    for name in ("pretrain_conv4_mini", "pretrain_resnet12_mini", "pretrain_conv4_tiered", "pretrain_resnet12_tiered"):
        cfg = load_pretrain_config(name)
        assert (cfg["train"]["lr"], cfg["train"]["momentum"], cfg["train"]["weight_decay"], cfg["train"]["batch_size"]) \
            == (0.05, 0.9, 5e-4, 64) and cfg["data"]["augment"] == "crop_flip"


def test_model_init_reports_and_refuses_another_backbone(pretrained, tmp_path, capsys):
    out, _ = pretrained
    cfg = load_config("protonet_glyphs_5w1s", [*FEW, f"model.init={out}", "model.options.bn=running",
                                              "train.iterations=0", f"output_dir={tmp_path / 'p0'}"])
    trainer = Trainer(cfg, progress=False)
    assert "kept as initialised: head.weight" in capsys.readouterr().err
    report = trainer.init_report
    assert "features.0.weight" in report["loaded"] and any(k.startswith("head.weight") for k in report["kept_initial"])
    assert torch.equal(trainer.learner.model.features[0].weight, safe_load(out / "best.pt")["model"]["features.0.weight"])
    summary = trainer.fit()
    assert summary["step"] == 0 and summary["init"]["source"] == str(out / "best.pt")
    assert json.loads((tmp_path / "p0" / "init.json").read_text())["loaded"] == report["loaded"]
    # the iterations=0 run and `metakd eval --learner` evaluate the same learner on the same episodes
    a = evaluate_checkpoint(tmp_path / "p0", progress=False)
    b = evaluate_checkpoint(out, learner="protonet", overrides=["episodes.test_q_query=3", "eval.episodes=12"],
                            progress=False)
    assert a["per_episode"] == b["per_episode"] and a["episodes_fingerprint"] == b["episodes_fingerprint"]
    # a meta-training checkpoint (its run folder) starts another learner too
    cfg2 = load_config("anil_glyphs_5w1s", [*FEW, f"model.init={tmp_path / 'p0'}", "model.options.bn=running",
                                           "train.iterations=1", f"output_dir={tmp_path / 'a1'}"])
    assert {"head.weight", "features.0.weight"} <= set(Trainer(cfg2, progress=False).init_report["loaded"])
    wide = load_config("protonet_glyphs_5w1s", [*FEW, f"model.init={out}", "model.options.hidden=16"])
    with pytest.raises(ConfigError, match=r"model.init: .* holds a conv4 backbone that does not fit this conv4 "
                                          r"\(shape mismatch: features.0.weight"):
        Trainer(wide, progress=False)
    with pytest.raises(ConfigError, match="does not fit this resnet12.*missing in the checkpoint"):
        init_backbone(build_backbone("resnet12", 5, in_channels=1, image_size=28), out, "resnet12")
    assert main(["eval", str(out), "--no-progress"]) == 2
    assert "--learner protonet" in capsys.readouterr().err


@pytest.mark.parametrize("name,options", [("protonet", {}), ("anil", {"inner_lr": 0.5, "test_steps": 3}),
                                          ("linear_probe", {"steps": 20}), ("cosine_classifier", {"steps": 20})])
def test_cached_features_give_the_uncached_accuracies(pretrained, name, options):
    out, _ = pretrained
    cfg = load_config("protonet_glyphs_5w1s", FEW)
    model = build_backbone("conv4", 5, in_channels=1, image_size=28, hidden=8, bn="running")
    state = safe_load(out / "best.pt")["model"]
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
    learner = build_learner(name, model, **options)
    sampler = make_sampler(cfg, split_for(cfg, "test"), q_query=3, device=torch.device("cpu"), normalize=None)
    episodes = sampler.fixed_episodes(20, 0)
    plain = evaluate_episodes(learner, sampler, episodes, progress=False)
    cached = evaluate_episodes(learner, sampler, episodes, progress=False, cache=True)
    assert "cached_images" in cached and "cached_images" not in plain
    assert cached["per_episode"] == plain["per_episode"]
    if name != "anil":  # ANIL starts from a random head without meta-training
        assert cached["acc"] > 0.3  # well above chance (0.2) on the pre-trained features
    transductive = build_learner(name, build_backbone("conv4", 5, in_channels=1, image_size=28, hidden=8), **options)
    assert "cached_images" not in evaluate_episodes(transductive, sampler, episodes[:2], progress=False, cache=True)


def test_finetune_and_baselines_refuse_meta_training(pretrained):
    out, _ = pretrained
    res = evaluate_checkpoint(out, learner="finetune", overrides=["learner.options.steps=5", "episodes.test_q_query=3"],
                              episodes=4, progress=False)
    assert res["learner"] == "finetune" and 0 <= res["accuracy"] <= 1 and "cached_images" not in res
    cfg = load_config("protonet_glyphs_5w1s", [*FEW, "learner.name=linear_probe", "train.iterations=2"])
    with pytest.raises(ConfigError, match="not meta-trained.*--learner linear_probe"):
        Trainer(cfg, progress=False).fit()


def test_meta_teacher_is_the_new_name_of_the_few_shot_teacher_section(tmp_path):
    with pytest.warns(FutureWarning, match="'teacher:' is now called 'meta_teacher:'"):
        cfg = load_config("maml_glyphs_5w1s", ["teacher.checkpoint=runs/x"])
    assert cfg["meta_teacher"]["checkpoint"] == "runs/x" and "teacher" not in cfg
    with pytest.raises(ConfigError, match="keep only 'meta_teacher:'"):
        load_config("maml_glyphs_5w1s", ["teacher.checkpoint=a", "meta_teacher.checkpoint=b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config("distill_meta_glyphs_kd")["meta_teacher"]["checkpoint"]
    # the losses package is plain tensors: importing it loads no config or engine module
    code = "import sys, metakd.distill; print(sorted(m for m in sys.modules if m.startswith('metakd.engine') or m == 'metakd.config'))"
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "[]"
    assert not (ROOT / "metakd" / "distill" / "job_config.py").exists()


def test_the_pretrain_and_eval_learner_commands(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["pretrain", "pretrain_conv4_glyphs", *PRE, "train.epochs=1", "--output-dir", str(out), "--no-progress"]) == 0
    assert "model.init=" in capsys.readouterr().out
    assert main(["eval", str(out), "--learner", "cosine_classifier", "learner.options.steps=5", "episodes.test_q_query=3",
                 "--episodes", "4", "--no-progress"]) == 0
    got = capsys.readouterr().out
    assert "(cosine_classifier, conv4, 5-way 1-shot, test)" in got and (out / "eval_cosine_classifier_test_4ep_seed0.json").is_file()
    assert main(["eval", str(out), "learner.options.steps=5", "--no-progress"]) == 2
    assert "only apply with --learner" in capsys.readouterr().err
    assert main(["list", "pretrain-configs"]) == 0
    assert "pretrain_resnet12_mini" in capsys.readouterr().out
