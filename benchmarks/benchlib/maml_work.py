"""The timed work of the speed benchmarks: Conv4 MAML meta-iterations on seeded random episodes, built the same
way for metakd and for learn2learn (clone/adapt per task), from the same weights."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import List

import torch
import torch.nn.functional as F

from metakd.atomic import atomic_write
from metakd.data.episode import EpisodeBatch
from metakd.data.learn2learn_tasks import import_learn2learn
from metakd.learners import build_learner

WAYS, SHOTS, QUERIES, SIZE, TASKS, STEPS, INNER_LR, META_LR = 5, 1, 15, 84, 4, 5, 0.01, 1e-3


def load_learn2learn():
    """The learn2learn module, or None when it is not installed."""
    try:
        return import_learn2learn()  # without gym's notice on stderr
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def make_batches(count: int, device: torch.device, seed: int, tasks: int = TASKS, shots: int = SHOTS,
                 size: int = SIZE) -> List[EpisodeBatch]:
    """``count`` seeded random meta-batches of ``tasks`` 5-way ``shots``-shot tasks at ``size`` px."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        sx = torch.rand(tasks, WAYS * shots, 3, size, size, generator=g)
        qx = torch.rand(tasks, WAYS * QUERIES, 3, size, size, generator=g)
        sy = torch.arange(WAYS).repeat_interleave(shots).repeat(tasks, 1)
        qy = torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1)
        batches.append(EpisodeBatch(sx, sy, qx, qy, WAYS, shots, QUERIES).to(device))
    return batches


def metakd_learner_step(model: torch.nn.Module, first_order: bool, **options):
    """(learner, step_fn) for metakd's MAML on a copy of ``model``; step_fn does one Adam meta-iteration
    and returns the loss. ``options`` are further learner options (task_batching, compile, ...)."""
    learner = build_learner("maml", copy.deepcopy(model), inner_lr=INNER_LR, train_steps=STEPS,
                            first_order=first_order, **options)
    opt = torch.optim.Adam(learner.parameters(), META_LR)

    def step(batch: EpisodeBatch) -> float:
        opt.zero_grad(set_to_none=True)
        loss, metrics = learner.meta_loss(batch)
        loss.backward()
        opt.step()
        return metrics["loss"]

    return learner, step


def metakd_step(model: torch.nn.Module, first_order: bool):
    """(loss_fn, step_fn) for metakd's MAML on a copy of ``model``."""
    learner, step = metakd_learner_step(model, first_order)
    return (lambda batch: learner.meta_loss(batch)[0].item()), step


def l2l_step(l2l, model: torch.nn.Module, first_order: bool):
    """(loss_fn, step_fn) for learn2learn's MAML (clone/adapt per task) on a copy of ``model``."""
    maml = l2l.algorithms.MAML(copy.deepcopy(model), lr=INNER_LR, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), META_LR)

    def meta_loss(batch: EpisodeBatch):
        losses, accs = [], []
        for t in range(batch.num_tasks):
            clone = maml.clone()
            for _ in range(STEPS):
                clone.adapt(F.cross_entropy(clone(batch.support_x[t]), batch.support_y[t]))
            logits = clone(batch.query_x[t])
            losses.append(F.cross_entropy(logits, batch.query_y[t]))
            accs.append((logits.detach().argmax(-1) == batch.query_y[t]).float().mean())
        loss = torch.stack(losses).mean()
        return loss, torch.stack([loss.detach(), torch.stack(accs).mean()]).tolist()  # same metrics as metakd

    def step(batch: EpisodeBatch) -> float:
        opt.zero_grad(set_to_none=True)
        loss, metrics = meta_loss(batch)
        loss.backward()
        opt.step()
        return metrics[0]

    return (lambda batch: meta_loss(batch)[0].item()), step


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n", what="benchmark result")
