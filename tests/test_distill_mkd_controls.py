"""The controls of MKD's harm in meta-learning, as distilled-learner options: T_t and T_s fixed apart, the
inner-loop KD term's T_t·T_s factor on / off, KD on the query side only, temperature bounds; and the
measurement of the first inner step's CE and KD gradients."""
import pytest
import torch
import torch.nn.functional as F

from learner_helpers import TinyNet, random_batch
from metakd.errors import ConfigError
from metakd.learners import build_learner
from metakd.learners.distilled import DistilledLearner

TT, TS, W = 2.0, 5.5, 1.5  # teacher / student temperature (MKD's learned values on the glyphs), inner KD weight


def make(**options):
    torch.manual_seed(0)
    student = build_learner("maml", TinyNet(n_way=3, width=3), inner_lr=0.3, train_steps=2, test_steps=2)
    teacher = build_learner("maml", TinyNet(n_way=3, width=5), inner_lr=0.3, train_steps=1, test_steps=3)
    return DistilledLearner(student, teacher, **options), student, teacher


def kl(student_logits, teacher_logits, ts, tt, factor):
    """factor · KL(softmax(t/T_t) ‖ softmax(s/T_s)), summed over classes, mean over rows (by hand)."""
    pt = F.softmax(teacher_logits / tt, -1)
    return factor * (pt * (pt.log() - F.log_softmax(student_logits / ts, -1))).sum(-1).mean()


def by_hand(student, teacher, batch, inner_factor, inner=True):
    """The distilled outer loss with fixed T_t = TT, T_s = TS: the student's inner loop minimises
    CE + W·inner_factor·KL on the support set (when ``inner``), the outer loss is CE + TT·TS·KL on the queries."""
    out = []
    for t in range(batch.num_tasks):
        sx, sy, qx, qy = batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.query_y[t]
        fast_t = teacher.adapt(sx, sy, training=False)
        t_q, t_s = teacher.predict(fast_t, qx).detach(), teacher.predict(fast_t, sx).detach()

        def support_loss(logits, labels):
            return F.cross_entropy(logits, labels) + W * kl(logits, t_s, TS, TT, inner_factor)
        fast = student.adapt(sx, sy, training=True, loss=support_loss if inner else None)
        s_q = student.predict(fast, qx)
        out.append(F.cross_entropy(s_q, qy) + kl(s_q, t_q, TS, TT, TT * TS))
    return torch.stack(out).mean()


def test_fixed_temperatures_apart_and_the_inner_factor_on_or_off():
    batch = random_batch(tasks=2, dtype=torch.float32, seed=3)
    losses = {}
    for scale, factor in (("product", TT * TS), ("none", 1.0)):
        learner, student, teacher = make(kd_on="both", teacher_temperature=TT, student_temperature=TS,
                                         support_kd_weight=W, support_kd_scale=scale)
        tt, ts = learner.temperatures()
        assert float(tt) == pytest.approx(TT, rel=1e-6) and float(ts) == pytest.approx(TS, rel=1e-6)
        assert not any(p.requires_grad for p in learner.temperatures.parameters())  # fixed: not learned
        loss, metrics = learner.meta_loss(batch)
        assert metrics["t_teacher"] == pytest.approx(TT, rel=1e-6) and metrics["t_student"] == pytest.approx(TS, rel=1e-6)
        assert loss.item() == pytest.approx(by_hand(student, teacher, batch, factor).item(), rel=1e-5)
        losses[scale] = loss.item()
    assert abs(losses["product"] - losses["none"]) > 1e-3  # the factor changes what the student learns
    # null support_kd_scale follows kd_scale (the outer term's factor), as before the option existed
    learner, student, teacher = make(kd_on="both", teacher_temperature=TT, student_temperature=TS, support_kd_weight=W)
    assert learner.support_kd_scale == "product"
    assert learner.meta_loss(batch)[0].item() == pytest.approx(losses["product"], rel=1e-6)


def test_kd_on_the_query_side_only_leaves_the_inner_loop_alone():
    batch = random_batch(tasks=2, dtype=torch.float32, seed=4)
    learner, student, teacher = make(kd_on="query", teacher_temperature=TT, student_temperature=TS)
    loss, _ = learner.meta_loss(batch)
    assert loss.item() == pytest.approx(by_hand(student, teacher, batch, 0.0, inner=False).item(), rel=1e-5)


def test_temperature_bounds_hold_learned_and_fixed_temperatures():
    learner, _, _ = make(kd_on="both", learn_temperature=True, temperature=4.0, t_min=3.0, t_max=6.0,
                         support_kd_weight=5.0)
    opt = torch.optim.SGD(learner.temperatures.parameters(), lr=1e4)  # huge steps: the bounds must hold
    for seed in range(4):
        loss, _ = learner.meta_loss(random_batch(dtype=torch.float32, seed=seed))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(3.0 <= float(t.detach()) <= 6.0 for t in learner.temperatures())
    with pytest.raises(ConfigError, match=r"teacher temperature 2 must lie strictly inside the bounds \(t_min, t_max\) = \(3, 6\)"):
        make(kd_on="both", teacher_temperature=2.0, t_min=3.0, t_max=6.0)
    with pytest.raises(ConfigError, match="student temperature 0.5"):
        make(student_temperature=0.5)


def test_control_options_refuse_what_they_cannot_mean():
    with pytest.raises(ConfigError, match="shared_temperature=true uses one temperature"):
        make(shared_temperature=True, teacher_temperature=2.0, student_temperature=5.0)
    with pytest.raises(ConfigError, match="support_kd_scale='none' scales the inner-loop KD term"):
        make(kd_on="query", support_kd_scale="none")
    with pytest.raises(ConfigError, match="support_kd_scale"):
        make(kd_on="both", support_kd_scale="twice")
    with pytest.raises(ConfigError, match="kd_scale"):
        make(kd_scale="twice")
    with pytest.raises(ConfigError, match="student_temperature"):
        make(student_temperature=-1.0)
    learner, _, _ = make(kd_on="query")
    with pytest.raises(ConfigError, match="inner loop"):
        learner.support_gradient_split(random_batch(dtype=torch.float32))


def test_support_gradient_split_measures_the_inner_kd_gradient_and_its_factor():
    batch = random_batch(tasks=2, dtype=torch.float32, seed=5)
    split = {}
    for scale in ("product", "none"):
        learner, student, teacher = make(kd_on="both", teacher_temperature=TT, student_temperature=TS,
                                         support_kd_weight=W, support_kd_scale=scale)
        split[scale] = learner.support_gradient_split(batch)
    # the factor scales the KD gradient by exactly T_t·T_s and leaves the CE gradient alone
    assert split["product"]["kd_inner_grad_norm_kd"] == pytest.approx(TT * TS * split["none"]["kd_inner_grad_norm_kd"],
                                                                      rel=1e-5)
    assert split["product"]["kd_inner_grad_norm_ce"] == pytest.approx(split["none"]["kd_inner_grad_norm_ce"], rel=1e-6)
    assert split["product"]["kd_inner_grad_cos"] == pytest.approx(split["none"]["kd_inner_grad_cos"], abs=1e-5)
    # against the gradients written out by hand (mean over the tasks)
    params = dict(student.model.named_parameters())
    want = {"ce": [], "kd": [], "step": []}
    for t in range(2):
        sx, sy = batch.support_x[t], batch.support_y[t]
        t_s = teacher.predict(teacher.adapt(sx, sy, training=False), sx).detach()
        logits = student.predict(params, sx)
        g_ce = torch.cat([g.reshape(-1) for g in torch.autograd.grad(F.cross_entropy(logits, sy), list(params.values()),
                                                                     retain_graph=True)])
        g_kd = torch.cat([g.reshape(-1) for g in torch.autograd.grad(W * kl(logits, t_s, TS, TT, 1.0),
                                                                     list(params.values()))])
        want["ce"].append(float(g_ce.norm()))
        want["kd"].append(float(g_kd.norm()))
        want["step"].append(0.3 * float((g_ce + g_kd).norm()))
    got = split["none"]
    assert got["kd_inner_grad_norm_ce"] == pytest.approx(sum(want["ce"]) / 2, rel=1e-5)
    assert got["kd_inner_grad_norm_kd"] == pytest.approx(sum(want["kd"]) / 2, rel=1e-5)
    assert got["kd_inner_step_norm"] == pytest.approx(sum(want["step"]) / 2, rel=1e-5)
    assert split["product"]["kd_inner_step_norm"] > got["kd_inner_step_norm"]
