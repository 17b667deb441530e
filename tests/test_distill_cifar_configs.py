"""Every shipped CIFAR-100 distillation config runs end to end (teacher phase, then student phase) on a tiny
CIFAR-100 python-pickle copy written by the test (all 100 classes, 2 training / 1 test image each): each
config's own method, architectures and loss settings, with only the budget cut (1 epoch, the first 10
classes, batch 50, so one step per phase). Each teacher is trained once, by its family's kd config, and
loaded by the family's other configs."""
import json

import pytest

from _format_fixtures import write_fake_cifar100
from metakd.engine.training.distill import run_distill
from metakd.engine.training.job_config import available_distill_configs, load_distill_config

CIFAR_CONFIGS = [n for n in available_distill_configs() if n.startswith("distill_cifar100_")]
BUDGET = ["device=cpu", "threads=1", "data.max_classes=10", "train.epochs=1", "teacher.epochs=1", "train.lr_milestones=[]",
          "teacher.lr_milestones=[]", "train.batch_size=50", "train.eval_batch_size=100", "train.log_every=1"]


def test_every_family_has_kd_kd_rank_and_mkd():
    families = {}
    for name in CIFAR_CONFIGS:
        family, method = name.rsplit("_", 1) if not name.endswith("_kd_rank") else (name[: -len("_kd_rank")], "kd_rank")
        families.setdefault(family, set()).add(method)
    assert len(families) >= 2 and all(m == {"kd", "kd_rank", "mkd"} for m in families.values()), families


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar100(root, train_per_class=2, test_per_class=1)
    return root


def _family(name):
    for suffix in ("_kd_rank", "_mkd", "_kd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise AssertionError(name)


@pytest.fixture(scope="module")
def teachers(cifar_root, tmp_path_factory):
    """One teacher per family, trained by the family's kd config (both phases run)."""
    out = {}
    for name in CIFAR_CONFIGS:
        if name.endswith("_kd") and not name.endswith("_kd_rank"):
            folder = tmp_path_factory.mktemp(name)
            cfg = load_distill_config(name, [f"data.root={cifar_root}", *BUDGET])
            res = run_distill(cfg, folder, progress=False)
            out[_family(name)] = (folder, res)
    return out


@pytest.mark.parametrize("name", CIFAR_CONFIGS)
def test_shipped_cifar100_config_end_to_end(name, cifar_root, teachers, tmp_path):
    shipped = load_distill_config(name, [])
    folder, res = teachers[_family(name)]
    if name.endswith("_kd") and not name.endswith("_kd_rank"):
        out = folder  # this config trained the family's teacher: check both of its phases
        assert (folder / "teacher" / "teacher.pt").is_file()
        assert json.loads((folder / "teacher" / "result.json").read_text())["arch"] == shipped["teacher"]["arch"]
    else:
        out = tmp_path / name
        cfg = load_distill_config(name, [f"data.root={cifar_root}", *BUDGET,
                                         f"teacher.checkpoint={folder / 'teacher' / 'teacher.pt'}"])
        res = run_distill(cfg, out, progress=False)
        assert not (out / "teacher").exists()  # loaded, not retrained
    assert res["finished"] and res["method"] == shipped["distill"]["method"]
    assert res["classes"] == 10 and res["data"]["train"]["images"] == 20 and res["data"]["test"]["images"] == 10
    assert res["teacher"]["arch"] == shipped["teacher"]["arch"] and res["student"]["arch"] == shipped["student"]["arch"]
    assert 0 <= res["student"]["test_acc"] <= 1 and res["student"]["steps"] == 1
    recs = [json.loads(x) for x in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert train and all(r["loss"] == r["loss"] for r in train)  # finite, not NaN
    if shipped["distill"]["method"].endswith("rank"):
        assert all(0 <= r["rank"] <= 2 for r in train)
    if shipped["distill"]["method"].startswith("mkd"):
        assert all("meta_ce" in r and "t_teacher" in r for r in train)
        # MKD's held-out split: 10 % of each class's 2 training images rounds to 1 per class
        assert res["student"]["train_images"] == 10
    assert (out / "student" / "student.pt").is_file()
    assert json.loads((out / "result.json").read_text())["student"]["test_acc"] == res["student"]["test_acc"]
