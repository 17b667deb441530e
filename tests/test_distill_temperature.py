"""Learnable temperatures and the MKD step: parametrisation, exact hypergradient, direction of
learning on a problem with a known better temperature, BatchNorm buffers touched once."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metakd.distill import LearnableTemperature, MetaTemperatures, kd_loss, mkd_step
from metakd.errors import ConfigError, DataError


def test_learnable_temperature_init_and_bounds():
    temp = LearnableTemperature(4.0)
    assert temp().item() == pytest.approx(4.0, abs=1e-5)
    assert LearnableTemperature(2.5, 0.5, 3.0)().item() == pytest.approx(2.5, abs=1e-5)
    with torch.no_grad():
        temp.raw.fill_(1e4)
    assert temp().item() == pytest.approx(21.0)
    with torch.no_grad():
        temp.raw.fill_(-1e4)
    assert temp().item() == pytest.approx(1.0)
    assert LearnableTemperature(3.0, shape=(5, 1))().shape == (5, 1)
    with pytest.raises(ConfigError, match="init"):
        LearnableTemperature(21.0)
    with pytest.raises(ConfigError, match="t_min"):
        LearnableTemperature(2.0, 3.0, 1.0)


def test_meta_temperatures_shared_and_frozen():
    temps = MetaTemperatures(3.0, 6.0)
    tt, ts = temps()
    assert tt.item() == pytest.approx(3.0, abs=1e-5) and ts.item() == pytest.approx(6.0, abs=1e-5)
    assert len(list(temps.parameters())) == 2
    shared = MetaTemperatures(5.0, shared=True)
    assert len(list(shared.parameters())) == 1 and shared()[0] is not None
    frozen = MetaTemperatures(learn_student=False)
    assert [p.requires_grad for p in (frozen.teacher.raw, frozen.student.raw)] == [True, False]


def _problem(seed=0, n=256, d=8, c=5):
    """Linear student; teacher = 8·onehot(label) + N(0, 3²) noise, i.e. right but noisy."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g)
    make = lambda: (lambda x: (x, (x @ w.T).argmax(1)))(torch.randn(n, d, generator=g))
    train, heldout = make(), make()
    teacher = 8 * F.one_hot(train[1], c).float() + 3 * torch.randn(n, c, generator=g)
    torch.manual_seed(seed)
    return nn.Linear(d, c), teacher, train, heldout


def _lookahead_ce(student, teacher, train, heldout, tt, ts, lr):
    """Held-out CE after one KD step of size lr (written independently of mkd_step)."""
    params = dict(student.named_parameters())
    loss = kd_loss(functional_call(student, params, (train[0],)), teacher, ts, tt)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    fast = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(student, fast, (heldout[0],)), heldout[1])


def test_hypergradient_matches_finite_differences():
    student, teacher, train, heldout = _problem(1)
    student = student.double()
    teacher, train, heldout = teacher.double(), (train[0].double(), train[1]), (heldout[0].double(), heldout[1])
    temps = MetaTemperatures(3.0, 5.0).double()
    raw0 = [temps.teacher.raw.item(), temps.student.raw.item()]

    def meta_ce(raw_t, raw_s):
        probe = MetaTemperatures(3.0, 5.0).double()
        with torch.no_grad():
            probe.teacher.raw.fill_(raw_t), probe.student.raw.fill_(raw_s)
        tt, ts = probe()
        return _lookahead_ce(student, teacher, train, heldout, tt, ts, 0.5).item()

    eps = 1e-5
    fd_t = (meta_ce(raw0[0] + eps, raw0[1]) - meta_ce(raw0[0] - eps, raw0[1])) / (2 * eps)
    fd_s = (meta_ce(raw0[0], raw0[1] + eps) - meta_ce(raw0[0], raw0[1] - eps)) / (2 * eps)
    ce0 = meta_ce(*raw0)
    s_opt = torch.optim.SGD(student.parameters(), lr=0.5)
    t_opt = torch.optim.SGD(temps.parameters(), lr=1.0)
    out = mkd_step(student, teacher, train, heldout, temps, s_opt, t_opt, 0.5, ce_weight=0.0, kd_weight=1.0)
    assert out["meta_ce"] == pytest.approx(ce0, rel=1e-9)
    assert temps.teacher.raw.item() - raw0[0] == pytest.approx(-fd_t, rel=1e-5, abs=1e-9)
    assert temps.student.raw.item() - raw0[1] == pytest.approx(-fd_s, rel=1e-5, abs=1e-9)
    assert abs(fd_t) > 1e-4 and abs(fd_s) > 1e-4


def test_teacher_temperature_moves_toward_the_better_value():
    student, teacher, train, heldout = _problem(0)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(20):  # a partly trained student, as in the middle of a run
        opt.zero_grad()
        F.cross_entropy(student(train[0]), train[1]).backward()
        opt.step()
    # The known answer: a colder teacher (less of its noise) gives a lower held-out CE after the step.
    curve = {tt: _lookahead_ce(student, teacher, train, heldout, tt, 4.0, 0.5).item() for tt in (2.5, 4.0, 8.0)}
    assert curve[2.5] < curve[4.0] < curve[8.0]

    temps = MetaTemperatures(4.0, 4.0, learn_student=False)
    t_opt = torch.optim.Adam([temps.teacher.raw], lr=0.1)
    history = []
    for _ in range(12):
        out = mkd_step(student, teacher, train, heldout, temps, opt, t_opt, 0.5, ce_weight=0.0, kd_weight=1.0)
        history.append(out["t_teacher"])
    assert history[-1] < 3.2  # measured ~2.5 after 12 steps
    assert all(b < a for a, b in zip([4.0] + history[:5], history[:5]))  # decreasing from the start
    assert out["t_student"] == pytest.approx(4.0, abs=1e-5)


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.fc(x))))


def test_batchnorm_running_stats_advance_once_per_step():
    torch.manual_seed(0)
    net = _BNNet()
    before = copy.deepcopy(net)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    xh, yh = torch.randn(16, 4), torch.randint(0, 3, (16,))
    teacher = nn.Linear(4, 3)
    temps = MetaTemperatures()
    out = mkd_step(
        net, teacher, (x, y), (xh, yh), temps,
        torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.Adam(temps.parameters(), lr=0.01), 0.1,
    )
    assert net.bn.num_batches_tracked.item() == 1
    with torch.no_grad():
        before.bn(before.fc(x))  # exactly one train-mode forward of the train batch, pre-update weights
    assert torch.allclose(net.bn.running_mean, before.bn.running_mean, atol=1e-6)
    assert torch.allclose(net.bn.running_var, before.bn.running_var, atol=1e-6)
    assert set(out) == {"loss", "ce", "kd", "meta_ce", "t_teacher", "t_student"}
    assert out["t_teacher"] != pytest.approx(4.0, abs=1e-7)


def test_student_step_uses_the_weighted_loss_and_rank_term():
    torch.manual_seed(1)
    net = nn.Linear(5, 10)
    x, y = torch.randn(8, 5), torch.randint(0, 10, (8,))
    teacher = torch.randn(8, 10)
    temps = MetaTemperatures(2.0, 3.0)
    t_opt = torch.optim.SGD(temps.parameters(), lr=0.0)  # keep temperatures fixed to check the loss
    start = copy.deepcopy(net)
    out = mkd_step(
        net, teacher, (x, y), (x, y), temps, torch.optim.SGD(net.parameters(), lr=0.1), t_opt, 0.1,
        ce_weight=0.3, kd_weight=0.7, rank_weight=0.5, rank_kwargs={"form": "sigmoid"},
    )
    logits = start(x)
    from metakd.distill import rank_loss

    expected = (
        0.3 * F.cross_entropy(logits, y) + 0.7 * kd_loss(logits, teacher, 3.0, 2.0) + 0.5 * rank_loss(logits, teacher, "sigmoid")
    )
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert "rank" in out
    expected.backward()
    assert torch.allclose(net.weight, start.weight - 0.1 * start.weight.grad, atol=1e-6)


def test_mkd_step_bad_inputs():
    net = nn.Linear(3, 2)
    temps = MetaTemperatures()
    opt, t_opt = torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(temps.parameters(), lr=0.1)
    batch = (torch.randn(4, 3), torch.randint(0, 2, (4,)))
    with pytest.raises(ConfigError, match="inner_lr"):
        mkd_step(net, torch.randn(4, 2), batch, batch, temps, opt, t_opt, 0.0)
    with pytest.raises(DataError, match="heldout_batch"):
        mkd_step(net, torch.randn(4, 2), batch, batch[0], temps, opt, t_opt, 0.1)
    with pytest.raises(DataError, match="teacher logits"):
        mkd_step(net, torch.randn(3, 2), batch, batch, temps, opt, t_opt, 0.1)
    frozen = MetaTemperatures(learn_teacher=False, learn_student=False)
    with pytest.raises(ConfigError, match="learnable"):
        mkd_step(net, torch.randn(4, 2), batch, batch, frozen, opt, t_opt, 0.1)
