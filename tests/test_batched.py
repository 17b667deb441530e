"""Task batching (vmap over tasks), mixed precision and inner-loop checkpointing give the sequential results."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from learner_helpers import TinyNet, random_batch
from metakd.errors import ConfigError
from metakd.learners import build_learner

LR, STEPS = 0.3, 2


def _pair(name: str, seed: int = 0, **options):
    """The same learner (same weights) with task_batching off and vmap."""
    out = []
    for mode in ("off", "vmap"):
        torch.manual_seed(seed)
        learner = build_learner(name, TinyNet().double(), inner_lr=LR, train_steps=STEPS, test_steps=3,
                                task_batching=mode, **options)
        if name == "metasgd":
            with torch.no_grad():
                for lr in learner.lrs.values():
                    lr.uniform_(0.1, 0.5, generator=torch.Generator().manual_seed(seed))
        out.append(learner)
    return out


def _loss_and_grads(learner, batch):
    loss, metrics = learner.meta_loss(batch)
    return loss, metrics, torch.autograd.grad(loss, list(learner.parameters()))


@pytest.mark.parametrize("name, options", [
    ("maml", {}), ("maml", {"first_order": True}), ("fomaml", {}), ("anil", {}), ("boil", {}),
    ("metasgd", {}), ("metasgd", {"first_order": True}), ("maml", {"adapt": ["features.1", "head.bias"]}),
])
def test_vmap_loss_and_meta_gradients_equal_sequential(name, options):
    seq, vec = _pair(name, **options)
    assert not seq.uses_task_batching(torch.device("cpu")) and vec.uses_task_batching(torch.device("cpu"))
    batch = random_batch(tasks=3)
    l1, m1, g1 = _loss_and_grads(seq, batch)
    l2, m2, g2 = _loss_and_grads(vec, batch)
    torch.testing.assert_close(l2, l1, rtol=1e-12, atol=1e-12)
    assert m1["acc"] == m2["acc"]
    assert len(g1) == len(g2) == len(list(seq.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert sum(float(g.abs().sum()) for g in g1) > 0


@pytest.mark.parametrize("name", ["maml", "anil", "metasgd"])
def test_vmap_evaluate_equals_sequential(name):
    seq, vec = _pair(name)
    batch = random_batch(tasks=5, seed=3)
    a, b = seq.evaluate(batch), vec.evaluate(batch)
    assert a.shape == b.shape == (5,)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert vec.training, "evaluate restores train mode"


@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_chunks_give_the_same_result(name):
    _, whole = _pair(name)
    _, chunked = _pair(name, task_chunk=2)
    batch = random_batch(tasks=5, seed=1)
    l1, _, g1 = _loss_and_grads(whole, batch)
    l2, _, g2 = _loss_and_grads(chunked, batch)
    torch.testing.assert_close(l2, l1, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_auto_is_sequential_on_cpu():
    learner = build_learner("maml", TinyNet().double())
    assert learner.options["task_batching"] == "auto"
    assert not learner.uses_task_batching(torch.device("cpu"))
    assert learner.uses_task_batching(torch.device("cuda"))  # decided from the device type alone


def test_running_batchnorm_falls_back_with_a_warning():
    torch.manual_seed(0)
    learner = build_learner("maml", TinyNet(running_bn=True).double(), inner_lr=LR, train_steps=1,
                            task_batching="vmap")
    with pytest.warns(RuntimeWarning, match="falls back to the sequential loop.*features.1.*running"):
        loss, _ = learner.meta_loss(random_batch(tasks=2))
    loss.backward()
    learner.eval()  # in eval mode running BatchNorm only reads its buffers: vmap is fine
    assert learner.uses_task_batching(torch.device("cpu"))
    seq = build_learner("maml", TinyNet(running_bn=True).double(), inner_lr=LR, task_batching="off")
    seq.load_state_dict(learner.state_dict())
    learner.train()
    batch = random_batch(tasks=3, seed=2)
    torch.testing.assert_close(learner.evaluate(batch), seq.evaluate(batch), rtol=0, atol=0)


def test_subclass_overriding_adapt_is_not_bypassed():
    from metakd.learners import MAML

    class Shifted(MAML):
        NAME = "shifted-test"

        def predict(self, params, x):
            return super().predict(params, x) * 0.0

    with pytest.warns(RuntimeWarning, match="overrides predict"):  # decided once, when built
        learner = Shifted(TinyNet().double(), task_batching="vmap")
    loss, _ = learner.meta_loss(random_batch(tasks=2))
    assert abs(loss.item() - math.log(3.0)) < 1e-12  # the override was used


def test_msd_uses_the_batched_host():
    torch.manual_seed(0)
    batch = random_batch(tasks=2, size=8)
    batch.support_x, batch.query_x = batch.support_x.sigmoid(), batch.query_x.sigmoid()  # pixels in [0, 1]
    results = []
    for mode in ("off", "vmap"):
        torch.manual_seed(0)
        model = TinyNet(size=8).double()
        learner = build_learner("msd", model, host="maml", views=2,
                                host_options={"inner_lr": LR, "train_steps": STEPS, "task_batching": mode})
        torch.manual_seed(5)
        loss, metrics = learner.meta_loss(batch)
        results.append((loss, metrics, torch.autograd.grad(loss, list(learner.parameters()))))
    (l1, m1, g1), (l2, m2, g2) = results
    torch.testing.assert_close(l2, l1, rtol=1e-10, atol=1e-12)
    assert m1["adapted_copies"] == m2["adapted_copies"] == 4
    assert m1["consistency_loss"] > 0, "the two views differ"
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("mode", ["off", "vmap"])
def test_bf16_autocast_runs_and_is_close_to_fp32(mode):
    torch.manual_seed(0)
    batch = random_batch(tasks=2, dtype=torch.float32)
    losses, grads = [], []
    for amp in ("off", "bf16"):
        torch.manual_seed(0)
        learner = build_learner("maml", TinyNet(), inner_lr=LR, train_steps=STEPS, amp=amp, task_batching=mode)
        loss, _ = learner.meta_loss(batch)
        assert loss.dtype == torch.float32
        losses.append(loss.item())
        grads.append(torch.autograd.grad(loss, list(learner.parameters())))
        assert learner.evaluate(batch).shape == (2,)
    assert abs(losses[0] - losses[1]) < 0.05 * abs(losses[0])
    a, b = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    assert torch.isfinite(b).all()
    assert (a - b).norm() <= 0.1 * a.norm()


@pytest.mark.parametrize("name, options", [("maml", {}), ("metasgd", {}), ("maml", {"first_order": True})])
def test_checkpoint_inner_leaves_gradients_unchanged(name, options):
    batch = random_batch(tasks=2)
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        learner = build_learner(name, TinyNet().double(), inner_lr=LR, train_steps=STEPS, checkpoint_inner=ckpt,
                                **options)
        results.append(_loss_and_grads(learner, batch))
    (l1, _, g1), (l2, _, g2) = results
    torch.testing.assert_close(l2, l1, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("options, match", [
    ({"task_batching": "yes"}, "task_batching='yes'.*off, vmap, auto"),
    ({"task_chunk": 0}, "task_chunk=0"),
    ({"task_chunk": True}, "task_chunk=True"),
    ({"amp": "fp16"}, "amp='fp16'.*off, bf16"),
    ({"checkpoint_inner": "yes"}, "checkpoint_inner='yes'"),
    ({"checkpoint_inner": True, "task_batching": "vmap"}, "sequential path only"),
])
def test_performance_options_are_validated(options, match):
    with pytest.raises(ConfigError, match=match):
        build_learner("maml", TinyNet(), **options)


def test_options_flow_through_every_gradient_learner():
    for name in ("maml", "fomaml", "anil", "boil", "metasgd"):
        learner = build_learner(name, TinyNet(), task_batching="vmap", task_chunk=2, amp="off", checkpoint_inner=False)
        assert learner.options["task_chunk"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_learner("maml", TinyNet(), task_batching="off").meta_loss(random_batch(tasks=1, dtype=torch.float32))


def test_auto_chunk_divides_free_cuda_memory_by_the_measured_task_peak(monkeypatch):
    """auto_chunk's CUDA arithmetic with the torch.cuda memory queries replaced by fixed numbers."""
    from metakd.learners import batched

    state = {"allocated": 100, "peak": 100, "measured": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=100))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (30_000, 80_000))

    def measure_one():  # one task's forward peaks 1,000 bytes above what was allocated
        state["measured"] += 1
        state["peak"] = state["allocated"] + 1_000
        return torch.zeros(1)

    cache: dict = {}
    cuda = torch.device("cuda")
    chunk = batched.auto_chunk(measure_one, 32, cuda, cache, key="a")
    assert chunk == int(30_000 // (1_000 * batched.SAFETY)) == 10
    assert batched.auto_chunk(measure_one, 4, cuda, cache, key="a") == 4  # never more than the tasks
    assert state["measured"] == 1  # cached per key
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10, 80_000))
    assert batched.auto_chunk(measure_one, 32, cuda, cache, key="b") == 1  # at least one task
    assert batched.auto_chunk(measure_one, 32, torch.device("cpu"), cache, key="c") == 32  # all tasks on a CPU
