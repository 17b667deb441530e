"""Every built-in learner answers the same two verbs, adapt(support) -> fast state and predict(fast, query) ->
logits, and they score an episode as ``evaluate`` does; one executor choice, one inner update, one
cached-feature hook."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from learner_helpers import TinyNet, random_batch
from metakd.engine.evaluation.feature_cache import feature_head
from metakd.learners import GradientLearner, MetaLearner, build_learner
from metakd.learners.gradient import FIRST_ORDER, SEQUENTIAL, VECTORISED
from metakd.learners.inner_loop import update
from metakd.registry import LEARNERS

N_WAY, Q = 3, 3
BUILT_IN = sorted(n for n in LEARNERS.names() if LEARNERS.get(n).__module__.startswith("metakd."))


def _build(name: str, model=None) -> MetaLearner:
    torch.manual_seed(0)
    model = model if model is not None else TinyNet(n_way=N_WAY).double()
    if name == "distilled":
        teacher = build_learner("maml", TinyNet(n_way=N_WAY).double(), test_steps=2)
        return LEARNERS.build(name, build_learner("maml", model, test_steps=2), teacher)
    cls = LEARNERS.get(name)
    if name == "msd" or issubclass(cls, GradientLearner):
        return build_learner(name, model, inner_lr=0.3, test_steps=2)
    return build_learner(name, model, **({"steps": 5} if "steps" in cls.OPTIONS else {}))


def test_the_package_registers_the_learners_this_test_covers():
    assert {"maml", "anil", "protonet", "linear_probe", "cosine_classifier", "finetune", "msd", "distilled",
            "reptile", "maml++", "protomaml", "unicorn_maml"} <= set(BUILT_IN)


@pytest.mark.parametrize("name", BUILT_IN)
def test_adapt_then_predict_scores_the_episode_as_evaluate_does(name):
    learner = _build(name).float()  # float32: finetune's new head is float32
    batch = random_batch(tasks=2, n_way=N_WAY, k_shot=2, q_query=Q, dtype=torch.float32)
    scored = learner.evaluate(batch)
    learner.eval()
    for t in range(batch.num_tasks):
        with torch.no_grad():
            fast = learner.adapt(batch.support_x[t], batch.support_y[t])
            logits = learner.predict(fast, batch.query_x[t])
        assert logits.shape == (N_WAY * Q, N_WAY), name
        acc = (logits.argmax(-1) == batch.query_y[t]).float().mean()
        assert float(acc) == float(scored[t]), f"{name}: task {t}"


def test_protonet_fast_state_is_the_prototypes():
    learner = _build("protonet")
    batch = random_batch(tasks=1, n_way=N_WAY, k_shot=2, q_query=Q)
    sx, sy = batch.support_x[0], batch.support_y[0]
    protos = learner.adapt(sx, sy)
    z = learner.model.features(sx)
    assert protos.shape == (N_WAY, z.shape[1])
    torch.testing.assert_close(protos[1], z[sy == 1].mean(0))
    logits = learner.predict(protos, batch.query_x[0])
    torch.testing.assert_close(logits, learner.task_logits(sx, sy, batch.query_x[0], N_WAY, training=False))


def test_a_learner_writing_only_task_logits_answers_both_verbs():
    class Centroid(MetaLearner):
        NAME = "centroid"

        def task_logits(self, support_x, support_y, query_x, n_way, training):
            c = F.one_hot(support_y, n_way).t().to(support_x.dtype) @ self.model.features(support_x)
            return self.model.features(query_x) @ c.t()

    learner = Centroid(TinyNet(n_way=N_WAY).double())
    batch = random_batch(tasks=1, n_way=N_WAY, k_shot=2, q_query=Q)
    fast = learner.adapt(batch.support_x[0], batch.support_y[0])
    assert fast.n_way == N_WAY and fast.training is False
    torch.testing.assert_close(learner.predict(fast, batch.query_x[0]),
                               learner.task_logits(batch.support_x[0], batch.support_y[0], batch.query_x[0], N_WAY,
                                                   False))


def test_one_method_chooses_the_executor():
    cpu = torch.device("cpu")
    seq = _build("maml")
    assert seq.executor(False, cpu).kind == SEQUENTIAL and seq.executor(True).kind == SEQUENTIAL
    vec = build_learner("maml", TinyNet().double(), task_batching="vmap")
    assert (vec.executor(False, cpu).kind, vec.executor(False, cpu).batched) == (VECTORISED, True)
    first = vec.executor(True, cpu)
    assert first.kind == FIRST_ORDER and first.batched and first.inner is not None and not first.inner.compile
    assert vec.executor(True).kind == SEQUENTIAL  # one task, not compiled
    bf16 = build_learner("maml", TinyNet(), task_batching="vmap", amp="bf16")
    assert bf16.executor(True, cpu).kind == VECTORISED  # eager bf16 keeps the vectorised executor
    comp = build_learner("maml", TinyNet().double(), compile=True)
    one = comp.executor(True)
    assert one.kind == FIRST_ORDER and not one.batched and one.inner is comp.compiled_inner() and one.inner.compile
    assert comp.executor(False).kind == SEQUENTIAL, "second order never compiles"
    assert comp.executor(True, own_loss=True).kind == SEQUENTIAL, "a call's own support loss runs eagerly"
    assert not comp.compiled_inner()._fns, "choosing compiles nothing"


def test_the_one_update_is_p_minus_rate_g_and_maps_over_tasks():
    torch.manual_seed(0)
    fast = {"w": torch.randn(4, 3), "b": torch.randn(4, 2), "frozen": torch.randn(4)}
    grads = {"w": torch.randn(4, 3), "b": torch.randn(4, 2)}
    rates = {"w": 0.5, "b": torch.tensor([0.1, 0.2])}
    one = update(fast, grads, rates)
    assert one["frozen"] is fast["frozen"] and set(one) == set(fast)
    torch.testing.assert_close(one["w"], fast["w"] - 0.5 * grads["w"], rtol=0, atol=0)
    mapped = vmap(lambda f, g: update(f, g, rates))(fast, grads)
    for k in fast:
        torch.testing.assert_close(mapped[k], one[k], rtol=0, atol=0)
    assert update(fast, {"w": None}, rates)["w"] is fast["w"]


@pytest.mark.parametrize("name", ["protonet", "anil", "linear_probe", "cosine_classifier"])
def test_cached_evaluation_asks_the_learner(name):
    learner = _build(name, TinyNet(n_way=N_WAY, running_bn=True).double())
    learner.eval()
    embed, logits_fn = feature_head(learner)
    batch = random_batch(tasks=1, n_way=N_WAY, k_shot=2, q_query=Q)
    sx, sy, qx = batch.support_x[0], batch.support_y[0], batch.query_x[0]
    with torch.no_grad():
        cached = logits_fn(embed(sx), sy, embed(qx), N_WAY)
        direct = learner.predict(learner.adapt(sx, sy, n_way=N_WAY), qx)
    torch.testing.assert_close(cached, direct, rtol=0, atol=0)
    assert feature_head(_build(name)) is None, "transductive BatchNorm: features are per episode"


def test_learners_without_the_hook_are_not_cached():
    running = TinyNet(n_way=N_WAY, running_bn=True).double()
    assert feature_head(_build("maml", running)) is None
    assert feature_head(build_learner("msd", TinyNet(n_way=N_WAY, running_bn=True).double(), host="protonet")) is None

    class Mine(MetaLearner):
        NAME = "mine"

        def feature_head(self):
            return "embed", "logits"

    assert feature_head(Mine(running)) == ("embed", "logits")
