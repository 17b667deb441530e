"""Meta-learning distillation: DistilledLearner's loss by hand, frozen teacher, learned temperatures, engine."""
import math

import pytest
import torch
import torch.nn.functional as F

from learner_helpers import TinyNet, random_batch
from metakd.config import load_config
from metakd import load_learner
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint
from metakd.engine.training.meta import Trainer
from metakd.errors import ConfigError
from metakd.learners import build_learner
from metakd.learners.distilled import DistilledLearner


def make_pair(seed=0, **options):
    torch.manual_seed(seed)
    student = build_learner("maml", TinyNet(n_way=3, width=3), inner_lr=0.3, train_steps=2, test_steps=2)
    teacher = build_learner("maml", TinyNet(n_way=3, width=5), inner_lr=0.3, train_steps=1, test_steps=3)
    return DistilledLearner(student, teacher, **options), student, teacher


def test_loss_equals_student_ce_plus_weighted_kd_and_rank_by_hand():
    learner, student, teacher = make_pair(ce_weight=0.7, kd_weight=0.5, rank_weight=0.3, temperature=3.0,
                                          rank_form="sigmoid", rank_beta=2.0)
    batch = random_batch(tasks=2, dtype=torch.float32, seed=3)
    loss, metrics = learner.meta_loss(batch)
    T = 3.0
    expected = []
    for t in range(2):
        sx, sy, qx, qy = batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t]
        fast_t = teacher.adapt(sx, sy, training=False)          # the teacher's own test_steps (3)
        tl = teacher.predict(fast_t, qx).detach()
        sl = student.predict(student.adapt(sx, sy, training=True), qx)
        ce = F.cross_entropy(sl, qy)
        pt, log_ps = F.softmax(tl / T, -1), F.log_softmax(sl / T, -1)
        kd = T * T * (pt * (pt.log() - log_ps)).sum(-1).mean()
        ds, dt = sl[:, :, None] - sl[:, None, :], tl[:, :, None] - tl[:, None, :]
        iu = torch.triu_indices(3, 3, 1)
        pair = 2 * torch.sigmoid(2.0 * ds * dt) - 1
        tau = pair[:, iu[0], iu[1]].mean(-1)
        rank = (1 - tau).mean()
        expected.append(0.7 * ce + 0.5 * kd + 0.3 * rank)
    assert float(loss.detach()) == pytest.approx(float(torch.stack(expected).mean().detach()), rel=1e-5)
    assert {"ce", "kd", "rank", "t_teacher", "t_student"} <= set(metrics)
    assert metrics["t_teacher"] == pytest.approx(3.0)


def test_teacher_is_frozen_and_kept_out_of_parameters_and_state():
    learner, student, teacher = make_pair(rank_weight=0.5, rank_form="sigmoid")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert not any(p is q for p in learner.parameters() for q in teacher.parameters())
    assert not any(k.startswith("teacher") or "_teacher" in k for k in learner.state_dict())
    opt = torch.optim.SGD(learner.parameters(), lr=0.5)
    for seed in range(3):
        loss, _ = learner.meta_loss(random_batch(dtype=torch.float32, seed=seed))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    learner.train()
    assert not teacher.training
    learner.to(torch.float64)                # .to() moves the teacher along
    assert next(teacher.parameters()).dtype == torch.float64


def test_learned_temperatures_get_gradient_through_the_inner_loop_and_move():
    learner, student, teacher = make_pair(kd_on="both", learn_temperature=True, temperature=4.0, support_kd_weight=2.0)
    temps = [learner.temperatures.teacher.raw, learner.temperatures.student.raw]
    assert all(p.requires_grad for p in temps)
    loss, _ = learner.meta_loss(random_batch(dtype=torch.float32, seed=1))
    grads = torch.autograd.grad(loss, temps)
    assert all(torch.isfinite(g) and g.abs() > 0 for g in grads)
    # no direct path: with the temperatures out of the inner loop, the outer KD term (temperatures detached
    # there) gives them no gradient at all
    direct, _, _ = make_pair(kd_on="both", learn_temperature=True, temperature=4.0, support_kd_weight=0.0)
    loss_d, _ = direct.meta_loss(random_batch(dtype=torch.float32, seed=1))
    grads_d = torch.autograd.grad(loss_d, [direct.temperatures.teacher.raw, direct.temperatures.student.raw],
                                  allow_unused=True)
    assert all(g is None or float(g) == 0.0 for g in grads_d)
    opt = torch.optim.Adam(learner.parameters(), lr=0.05)
    start = learner.temperatures()
    for seed in range(5):
        loss, _ = learner.meta_loss(random_batch(dtype=torch.float32, seed=seed))
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = learner.temperatures()
    assert all(abs(float(a.detach()) - float(b.detach())) > 1e-3 for a, b in zip(start, end))


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="learn_temperature"):
        make_pair(learn_temperature=True)                        # kd_on=query: no meaningful gradient
    with pytest.raises(ConfigError, match="kd_on"):
        make_pair(kd_on="sideways")
    with pytest.raises(ConfigError, match="bogus"):
        make_pair(bogus=1)
    with pytest.raises(ConfigError, match="strictly inside"):
        make_pair(temperature=30.0)
    proto = build_learner("protonet", TinyNet(n_way=3))
    teacher = build_learner("maml", TinyNet(n_way=3))
    with pytest.raises(ConfigError, match="gradient-based"):
        DistilledLearner(proto, teacher, kd_on="support")
    fo = build_learner("fomaml", TinyNet(n_way=3))
    with pytest.raises(ConfigError, match="second-order"):
        DistilledLearner(fo, teacher, kd_on="both", learn_temperature=True)


def tiny(tmp_path, name, *extra):
    return load_config("maml_glyphs_5w1s", [
        "device=cpu", f"output_dir={tmp_path / name}", "model.options.hidden=8", "learner.options.train_steps=1",
        "learner.options.test_steps=2", "train.meta_batch=2", "train.iterations=4", "train.val_every=2",
        "train.val_episodes=4", "train.checkpoint_every=2", "train.log_every=2", "episodes.q_query=3",
        "episodes.test_q_query=3", *extra])


def test_end_to_end_through_the_engine_with_a_teacher_checkpoint(tmp_path):
    Trainer(tiny(tmp_path, "teacher", "model.options.hidden=16"), progress=False).fit()
    cfg = tiny(tmp_path, "student", f"meta_teacher.checkpoint={tmp_path / 'teacher'}", "meta_teacher.options.kd_on=both",
               "meta_teacher.options.learn_temperature=true", "meta_teacher.options.rank_weight=0.5",
               "meta_teacher.options.rank_form=sigmoid")
    trainer = Trainer(cfg, progress=False)
    assert isinstance(trainer.learner, DistilledLearner)
    t0 = trainer.learner.temperatures()
    trainer.fit()
    t1 = trainer.learner.temperatures()
    assert all(float(a.detach()) != float(b.detach()) for a, b in zip(t0, t1))
    res = evaluate_checkpoint(tmp_path / "student", episodes=4, device="cpu", progress=False)
    assert 0 <= res["accuracy"] <= 1 and not math.isnan(res["ci95"])
    learner, ckpt = load_learner(tmp_path / "student" / "last.pt", device="cpu")
    assert isinstance(learner, DistilledLearner)
    assert torch.equal(learner.temperatures.teacher.raw, trainer.learner.temperatures.teacher.raw)

    missing = tiny(tmp_path, "s2", f"meta_teacher.checkpoint={tmp_path / 'nope.pt'}")
    with pytest.raises(ConfigError, match="teacher.checkpoint"):
        Trainer(missing, progress=False)
