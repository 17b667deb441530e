"""Meta Self-Distillation: reduces to its host, separate fast weights per view, consistency, budgets."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from learner_helpers import TinyNet, random_batch
from metakd.data.augment import AugmentStrengths, augment_views
from metakd.distill.consistency import prediction_consistency
from metakd.errors import ConfigError
from metakd.learners import GradientLearner, MetaLearner, build_learner
from metakd.registry import LEARNERS


def images(tasks=2, n_way=3, k_shot=2, q_query=3, size=8, seed=0):
    """Random episodes with pixels in [0, 1] (what augmentations expect)."""
    b = random_batch(tasks, n_way, k_shot, q_query, size=size, seed=seed, dtype=torch.float32)
    b.support_x, b.query_x = b.support_x.sigmoid(), b.query_x.sigmoid()
    return b


def pair(host, **msd_options):
    torch.manual_seed(0)
    model = TinyNet(n_way=3, size=8)
    opts = {} if host == "protonet" else {"inner_lr": 0.3, "train_steps": 2}
    plain = build_learner(host, copy.deepcopy(model), **opts)
    msd = build_learner("msd", model, host=host, **opts, **msd_options)
    return plain, msd


@pytest.mark.parametrize("host", ["maml", "anil", "fomaml", "boil", "metasgd"])
def test_one_identity_view_without_consistency_is_the_host(host):
    plain, msd = pair(host, views=1, lam=0.0, augment="identity")
    batch = images()
    loss_a, _ = plain.meta_loss(batch)
    loss_b, _ = msd.meta_loss(batch)
    assert torch.equal(loss_a, loss_b)
    grads_a = dict(zip([n for n, _ in plain.named_parameters()],
                       torch.autograd.grad(loss_a, list(plain.parameters()))))
    names_b = [n for n, _ in msd.named_parameters()]
    grads_b = dict(zip(names_b, torch.autograd.grad(loss_b, list(msd.parameters()))))
    assert {f"host.{n}" for n in grads_a} == set(grads_b)
    for n, g in grads_a.items():
        assert torch.equal(g, grads_b[f"host.{n}"]), n
    assert torch.equal(plain.evaluate(batch), msd.evaluate(batch))


def test_each_view_adapts_its_own_fast_weights_and_every_view_reaches_theta():
    _, msd = pair("maml", views=3)
    batch = images(tasks=1)
    views = augment_views(batch.support_x[0], 3, msd.strengths, seed=123)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])
    host = msd.host
    fast = [host.adapt(v, batch.support_y[0], training=True) for v in views]
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        assert any(not torch.allclose(fast[a][n], fast[b][n]) for n in fast[a])
    v = msd.view_logits(views, batch.support_y[0], batch.query_x[0], 3, training=True)
    params = list(host.model.parameters())
    for j in range(3):
        grads = torch.autograd.grad(F.cross_entropy(v[j], batch.query_y[0]), params, retain_graph=True, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads), j


@pytest.mark.parametrize("kind", ["cosine", "kl", "rank"])
def test_identical_views_have_zero_consistency_loss(kind):
    _, msd = pair("maml", views=3, lam=1.0, augment="identity", consistency=kind)
    loss, metrics = msd.meta_loss(images())
    assert metrics["consistency_loss"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["consistency"] == pytest.approx(1.0, abs=1e-6)
    assert loss.item() == pytest.approx(metrics["ce"], abs=1e-6)
    if kind == "cosine":  # ½‖a − b‖² of identical unit vectors: zero up to the rounding of the view mean
        assert metrics["consistency_loss"] < 1e-12
    same = torch.randn(1, 5, 3).expand(4, 5, 3)
    assert prediction_consistency(same).item() == pytest.approx(1.0, abs=1e-6)


def test_different_views_give_positive_consistency_loss_and_logit_mode():
    _, msd = pair("maml", views=3, on="logit")
    loss, metrics = msd.meta_loss(images())
    assert metrics["consistency_loss"] > 0 and loss.item() > metrics["ce"]
    assert 0 < metrics["consistency"] < 1


def test_in_place_of_tasks_uses_the_hosts_number_of_adapted_copies(monkeypatch):
    plain, msd = pair("maml", views=2, budget="in_place_of_tasks")
    batch = images(tasks=4)
    counts = {"plain": 0, "msd": 0}

    def counting(learner, key):  # tasks adapted by the learner's executor
        real = learner.run_tasks

        def run_tasks(support_x, *args, **kwargs):
            counts[key] += support_x.shape[0]
            return real(support_x, *args, **kwargs)
        monkeypatch.setattr(learner, "run_tasks", run_tasks)

    counting(plain, "plain")
    counting(msd.host, "msd")
    plain.meta_loss(batch)
    _, metrics = msd.meta_loss(batch)
    assert counts["plain"] == counts["msd"] == 4 and metrics["adapted_copies"] == 4
    _, per_task = pair("maml", views=2)
    assert per_task.meta_loss(batch)[1]["adapted_copies"] == 8


def test_learn_temperature_is_refused():
    """T only scales the consistency term, so learning it would switch the term off: a ConfigError, as the
    distilled learner refuses a KD temperature the student cannot learn from."""
    with pytest.raises(ConfigError, match="learn_temperature=true is refused"):
        pair("maml", views=2, learn_temperature=True, temperature=2.0)
    _, fixed = pair("maml", views=2, temperature=2.0)
    assert fixed.temperature() == 2.0 and not any("temperature" in n for n, _ in fixed.named_parameters())


# -- float64 second-order reference of the whole MSD meta-loss ---------------------------------------------------

LAM, LR, STEPS = 0.37, 0.3, 2


def fixed_views(batch):
    """Two different views of every task's support set (n=2, T, S, C, H, W): the images, and a flipped,
    contrast-changed copy (so the adapted models and their predictions differ)."""
    s = batch.support_x
    return torch.stack([s, 0.2 + 0.6 * s.flip(-1)])


def reference_msd(weights, batch, views, lam):
    """mean_t [ mean_j CE(f(θ'_j), y_Q) + λ · mean_j mean_q (1 − cos(p_j, p̄)) ], p = softmax of the query
    logits, θ'_j = STEPS second-order SGD steps on view j, written with plain tensors and F.cosine_similarity."""
    from learner_helpers import reference_forward

    total = 0.0
    for t in range(batch.num_tasks):
        logits = []
        for j in range(views.shape[0]):
            fast = list(weights)
            for _ in range(STEPS):
                loss = F.cross_entropy(reference_forward(fast, views[j, t]), batch.support_y[t])
                grads = torch.autograd.grad(loss, fast, create_graph=True)
                fast = [w - LR * g for w, g in zip(fast, grads)]
            logits.append(reference_forward(fast, batch.query_x[t]))
        ce = torch.stack([F.cross_entropy(v, batch.query_y[t]) for v in logits]).mean()
        probs = [F.softmax(v, dim=-1) for v in logits]
        mean = torch.stack(probs).mean(0)
        cons = torch.stack([(1 - F.cosine_similarity(p, mean, dim=-1)).mean() for p in probs]).mean()
        total = total + ce + lam * cons
    return total / batch.num_tasks


def msd_and_reference(monkeypatch, lam=LAM, **options):
    import metakd.learners.msd as msd_module

    torch.manual_seed(0)
    model = TinyNet(n_way=3, size=8).double()
    msd = build_learner("msd", model, host="maml", inner_lr=LR, train_steps=STEPS, views=2, lam=lam,
                        consistency="cosine", on="prob", **options)
    batch = images(tasks=2)
    batch.support_x, batch.query_x = batch.support_x.double(), batch.query_x.double()
    views = fixed_views(batch)
    monkeypatch.setattr(msd_module, "augment_views", lambda sx, n, *a, **k: views[:, : sx.shape[0]])
    weights = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    return msd, batch, views, weights


def test_msd_loss_and_meta_gradient_equal_a_float64_second_order_reference(monkeypatch):
    """Fails if the consistency term's gradient to the weights is cut, if λ is ignored, or if the views share
    fast weights: the loss and every meta-gradient must match the reference to 1e-10."""
    msd, batch, views, weights = msd_and_reference(monkeypatch)
    assert not torch.equal(views[0], views[1])
    loss, metrics = msd.meta_loss(batch)
    grads = torch.autograd.grad(loss, list(msd.parameters()))
    ref = reference_msd(weights, batch, views, LAM)
    ref_grads = torch.autograd.grad(ref, weights)
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    # the test has teeth: at this λ the consistency term moves the loss and the meta-gradient far beyond the
    # tolerance, so a detached term (same loss, CE-only gradient) or an ignored λ cannot pass
    ce_only = reference_msd(weights, batch, views, 0.0)
    ce_grads = torch.autograd.grad(ce_only, weights)
    assert metrics["consistency_loss"] > 1e-3 and loss.item() - ce_only.item() > 1e-4
    assert max(float((g - c).abs().max()) for g, c in zip(ref_grads, ce_grads)) > 1e-5


def test_gradient_split_measures_the_consistency_terms_share(monkeypatch):
    """msd_grad_ratio / msd_grad_cos against the reference's two parts, every K-th call only, and measuring
    leaves the loss and its gradient unchanged."""
    msd, batch, views, weights = msd_and_reference(monkeypatch, grad_ratio_every=2)
    g_ce = torch.cat([g.reshape(-1) for g in torch.autograd.grad(reference_msd(weights, batch, views, 0.0), weights)])
    g_all = torch.cat([g.reshape(-1) for g in torch.autograd.grad(reference_msd(weights, batch, views, LAM), weights)])
    g_cons = g_all - g_ce
    seen = []
    for call in range(3):
        loss, metrics = msd.meta_loss(batch)
        seen.append("msd_grad_ratio" in metrics)
        grads = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(msd.parameters()))])
        torch.testing.assert_close(grads, g_all, rtol=1e-10, atol=1e-12)
        if call == 0:
            assert metrics["msd_grad_ratio"] == pytest.approx(float(g_cons.norm() / g_ce.norm()), rel=1e-8)
            assert metrics["msd_grad_cos"] == pytest.approx(float(F.cosine_similarity(g_cons, g_ce, dim=0)), abs=1e-8)
            assert metrics["msd_grad_norm_ce"] == pytest.approx(float(g_ce.norm()), rel=1e-8)
    assert seen == [True, False, True]  # calls 1 and 3 of every 2
    on_demand = msd.measure_gradients(batch)
    assert set(on_demand) == {"msd_grad_ratio", "msd_grad_cos", "msd_grad_norm_ce", "msd_grad_norm_cons"}
    assert on_demand["msd_grad_ratio"] == pytest.approx(float(g_cons.norm() / g_ce.norm()), rel=1e-8)
    off, batch, _, _ = msd_and_reference(monkeypatch)
    assert not any(k.startswith("msd_grad") for k in off.meta_loss(batch)[1])  # off by default
    lam0, batch, _, _ = msd_and_reference(monkeypatch, lam=0.0)
    assert lam0.measure_gradients(batch)["msd_grad_ratio"] == 0.0


def test_trainer_logs_the_gradient_split_as_diagnostic_records(tmp_path):
    import json

    from metakd.config import load_config
    from metakd.engine.training.meta import Trainer

    cfg = load_config("msd_maml_glyphs_5w1s", [
        "device=cpu", "model.options.hidden=8", "data.options.num_classes=70", "learner.options.train_steps=1",
        "learner.options.test_steps=1", "learner.options.views=2", "learner.options.grad_ratio_every=2",
        "train.meta_batch=2", "train.iterations=3", "train.val_every=3", "train.val_episodes=2",
        "train.checkpoint_every=3", "train.log_every=3", "episodes.q_query=2", "episodes.test_q_query=2",
        "tensorboard=false", f"output_dir={tmp_path}"])
    Trainer(cfg, progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in records if r["kind"] == "diagnostic"]
    assert [r["step"] for r in diag] == [1, 3]
    assert all(r["msd_grad_ratio"] > 0 and -1 <= r["msd_grad_cos"] <= 1 for r in diag)


@LEARNERS.register("msd_test_centroid")
class Centroid(MetaLearner):
    """A user learner without an inner loop: negative distances to class means of the raw features."""

    NAME = "msd_test_centroid"

    def task_logits(self, support_x, support_y, query_x, n_way, training):
        s, q = self.model.features(support_x), self.model.features(query_x)
        protos = torch.stack([s[support_y == c].mean(0) for c in range(n_way)])
        return -torch.cdist(q, protos)


@LEARNERS.register("msd_test_headonly")
class HeadOnly(GradientLearner):
    """A user gradient learner: adapts the head with a fixed lr."""

    NAME = "msd_test_headonly"
    ADAPT = "head"


@pytest.mark.parametrize("host", ["maml", "fomaml", "anil", "boil", "metasgd", "protonet", "msd_test_centroid",
                                  "msd_test_headonly"])
def test_every_host_trains(host):
    opts = {"inner_lr": 0.3, "train_steps": 1, "test_steps": 1} if host not in ("protonet", "msd_test_centroid") else {}
    torch.manual_seed(0)
    msd = build_learner("msd", TinyNet(n_way=3, size=8), host=host, views=2, host_options=opts)
    batch = images()
    loss, metrics = msd.meta_loss(batch)
    assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in msd.host.model.features.parameters())
    assert msd.evaluate(batch).shape == (2,)


def test_options_are_validated():
    m = TinyNet()
    with pytest.raises(ConfigError, match="not a registered learner"):
        build_learner("msd", m, host="nope")
    with pytest.raises(ConfigError, match="another registered learner"):
        build_learner("msd", m, host="msd")
    with pytest.raises(ConfigError, match="views"):
        build_learner("msd", m, views=0)
    with pytest.raises(ConfigError, match="consistency"):
        build_learner("msd", m, consistency="l2")
    with pytest.raises(ConfigError, match="budget"):
        build_learner("msd", m, budget="free")
    with pytest.raises(ConfigError, match=r"msd.*host 'maml'.*unknown option.*'inner_steps'"):
        build_learner("msd", m, inner_steps=3)
    with pytest.raises(ConfigError, match="both in host_options"):
        build_learner("msd", m, inner_lr=0.1, host_options={"inner_lr": 0.2})
    with pytest.raises(ConfigError, match="augment"):
        build_learner("msd", m, augment={"crop_p": 2.0})
    with pytest.raises(ConfigError, match="unknown augmentation key"):
        build_learner("msd", m, augment={"zoom": 1})
    msd = build_learner("msd", m, inner_lr=0.1, augment={"crop_scale": [0.5, 1.0]})
    assert msd.host.lr == 0.1 and msd.strengths.crop_scale == (0.5, 1.0)
    assert isinstance(msd.strengths, AugmentStrengths)
