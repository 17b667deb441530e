"""`metakd distill`: CIFAR-100 / glyphs end to end for kd, kd_rank, mkd; teacher trained then loaded; exact
resume; config and checkpoint errors; the CIFAR classification backbones; tensor augmentation."""
import json

import pytest
import torch

from _format_fixtures import write_fake_cifar100
from metakd.cli import main
from metakd.engine.training.job_config import load_distill_config
from metakd.engine.training.distill_data import prepare
from metakd.engine.training.distill import run_distill
from metakd.errors import ConfigError, MetakdError
from metakd.models import build_backbone
from metakd.registry import BACKBONES

FAST = ["device=cpu", "train.epochs=1", "teacher.epochs=1", "train.lr_milestones=[]", "train.log_every=1",
        "train.eval_batch_size=100"]


def cifar_cfg(root, *extra):
    return load_distill_config("distill_cifar100_resnet32x4_resnet8x4_kd", [
        f"data.root={root}", "teacher.arch=resnet20", "student.arch=resnet20", "train.batch_size=50", *FAST, *extra])


def glyph_cfg(*extra):
    return load_distill_config("distill_glyphs_kd", [
        "data.max_classes=8", "data.image_size=16", "teacher.arch=resnet20", "train.batch_size=32", *FAST, *extra])


def student_weights(out):
    return torch.load(out / "student" / "student.pt", weights_only=False)["model"]


def test_cifar100_kd_then_kd_rank_and_mkd_with_the_trained_teacher(tmp_path):
    write_fake_cifar100(tmp_path / "data", train_per_class=2, test_per_class=1)
    res = run_distill(cifar_cfg(tmp_path / "data"), tmp_path / "kd", progress=False)
    assert res["finished"] and res["classes"] == 100
    assert res["data"]["train"]["images"] == 200 and res["data"]["test"]["images"] == 100
    assert 0 <= res["student"]["test_acc"] <= 1
    assert json.loads((tmp_path / "kd" / "result.json").read_text())["student"]["test_acc"] == res["student"]["test_acc"]
    teacher_pt = tmp_path / "kd" / "teacher" / "teacher.pt"
    assert teacher_pt.is_file()
    epochs = [r for r in map(json.loads, (tmp_path / "kd" / "student" / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "epoch"]
    assert len(epochs) == 1 and "test_acc" in epochs[0]
    for method in ("kd_rank", "mkd"):
        res = run_distill(cifar_cfg(tmp_path / "data", f"distill.method={method}", f"teacher.checkpoint={teacher_pt}"),
                          tmp_path / method, progress=False)
        assert res["teacher"]["checkpoint"] == str(teacher_pt)
        assert not (tmp_path / method / "teacher").exists()          # loaded, not retrained
        recs = [json.loads(x) for x in (tmp_path / method / "student" / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in recs if r["kind"] == "train"]
        if method == "kd_rank":
            assert all(0 <= r["rank"] <= 2 for r in train)
        else:
            assert all("meta_ce" in r for r in train)
            assert res["student"]["t_teacher"] != 4.0 and res["student"]["t_student"] != 4.0


def test_glyphs_classification_split_and_cli(tmp_path, capsys):
    out = tmp_path / "g"
    code = main(["distill", "distill_glyphs_kd", "data.max_classes=8", "data.image_size=16", "teacher.arch=resnet20",
                 "train.batch_size=32", *FAST, "--output-dir", str(out), "--no-progress"])
    assert code == 0
    assert "test top-1" in capsys.readouterr().out
    res = json.loads((out / "result.json").read_text())
    assert res["classes"] == 8
    assert (res["data"]["train"]["images"], res["data"]["test"]["images"]) == (8 * 16, 8 * 4)
    # the same folder again without --resume is refused
    with pytest.raises(MetakdError, match="--resume"):
        run_distill(glyph_cfg(), out, progress=False)


def test_resume_is_exact_across_both_phases(tmp_path):
    cfg = glyph_cfg("distill.method=mkd", "train.epochs=2", "teacher.epochs=1")
    full = run_distill(cfg, tmp_path / "full", progress=False)
    steps = []
    res = run_distill(cfg, tmp_path / "cut", progress=False, max_steps=2)        # stops inside the teacher epoch
    steps.append((res["phase"], res["step"]))
    res = run_distill(cfg, tmp_path / "cut", resume=True, progress=False, max_steps=6)  # into the student phase
    steps.append((res["phase"], res["step"]))
    res = run_distill(cfg, tmp_path / "cut", resume=True, progress=False)
    assert steps == [("teacher", 2), ("student", 4)] and res["finished"]
    a, b = student_weights(tmp_path / "full"), student_weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res["student"]["test_acc"] == full["student"]["test_acc"]
    assert res["student"]["t_teacher"] == full["student"]["t_teacher"]


def test_bad_keys_and_missing_teacher_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.bogus"):
        glyph_cfg("train.bogus=1")
    with pytest.raises(ConfigError, match="unknown key 'optimizer'"):
        glyph_cfg("optimizer=adam")
    with pytest.raises(ConfigError, match="distill.method"):
        glyph_cfg("distill.method=fitnet")
    with pytest.raises(ConfigError, match="holdout_per_class"):
        run_distill(glyph_cfg("data.holdout_per_class=null"), tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="unknown option.*'width'"):
        run_distill(glyph_cfg("student.options={width: 2}"), tmp_path / "y", progress=False)
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        run_distill(glyph_cfg(f"teacher.checkpoint={tmp_path / 'nope.pt'}"), tmp_path / "z", progress=False)
    assert main(["distill", "distill_glyphs_kd", f"teacher.checkpoint={tmp_path / 'nope.pt'}", "--no-progress"]) == 2
    assert "teacher.checkpoint" in capsys.readouterr().err
    not_a_teacher = tmp_path / "junk.pt"
    torch.save({"model": {}}, not_a_teacher)
    with pytest.raises(ConfigError, match="not a distillation teacher"):
        run_distill(glyph_cfg(f"teacher.checkpoint={not_a_teacher}"), tmp_path / "w", progress=False)


@pytest.mark.parametrize("name,params", [("resnet20", 0.278), ("resnet56", 0.862), ("resnet8x4", 1.234),
                                         ("resnet32x4", 7.434), ("wrn_16_2", 0.703), ("wrn_40_2", 2.255),
                                         ("vgg8", 3.965), ("vgg13", 9.462)])
def test_cifar_backbones(name, params):
    assert name in BACKBONES
    model = build_backbone(name, 100, in_channels=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params, abs=2e-3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert build_backbone(name, 7, in_channels=1, image_size=16)(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    with pytest.raises(ConfigError, match="hidden"):
        build_backbone(name, 10, hidden=3)


def test_crop_flip_augmentation_takes_windows_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6).to(torch.uint8)
    mean, std = torch.zeros(3), torch.ones(3)
    assert torch.equal(prepare(x, mean, std, torch.device("cpu")), x.float() / 255)
    g = torch.Generator().manual_seed(0)
    padded = torch.nn.functional.pad(x.float() / 255, (2, 2, 2, 2))
    for _ in range(5):
        out = prepare(x, mean, std, torch.device("cpu"), "crop_flip", 2, g)
        for b in range(2):
            windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
            windows += [w.flip(-1) for w in windows]
            assert any(torch.equal(out[b], w) for w in windows)
