"""Shared by the learner tests: a tiny BatchNorm convnet, its hand-written functional twin, and episodes."""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metakd.data.episode import EpisodeBatch


class TinyNet(nn.Module):
    """conv3x3(C->width) -> BatchNorm -> ReLU -> maxpool2 -> flatten -> Linear(n_way); x (B, C, S, S)."""

    def __init__(self, n_way: int = 3, in_channels: int = 1, size: int = 4, width: int = 3, running_bn: bool = False):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width, track_running_stats=running_bn),
            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.head = nn.Linear(width * (size // 2) ** 2, n_way)
        with torch.no_grad():  # BN affine away from (1, 0) so its gradients matter
            self.features[1].weight.uniform_(0.5, 1.5)
            self.features[1].bias.uniform_(-0.5, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallConvNet(nn.Module):
    """Two conv blocks (conv3x3 -> BatchNorm -> ReLU -> maxpool2) and a linear head, for 1 x 12 x 12 images."""

    def __init__(self, n_way: int = 5, width: int = 8):
        super().__init__()
        layers: List[nn.Module] = []
        for cin in (1, width):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width, track_running_stats=False),
                       nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(width * 9, n_way)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_and_evaluate(learner, iterations: int = 100, meta_lr: float = 3e-3, seed: int = 1):
    """Query accuracy on 50 fixed TemplateTasks episodes before and after ``iterations`` Adam steps
    of meta_loss at meta-batch 4 (5-way 1-shot, 5 queries)."""
    train, test = TemplateTasks(seed=seed), TemplateTasks(seed=seed)
    test.g.manual_seed(seed + 1000)
    held_out = test.batch(50)
    before = learner.evaluate(held_out).mean().item()
    opt = torch.optim.Adam(learner.parameters(), meta_lr)
    for _ in range(iterations):
        loss, _ = learner.meta_loss(train.batch(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, learner.evaluate(held_out).mean().item()


def reference_forward(w: Sequence[Tensor], x: Tensor) -> Tensor:
    """TinyNet's forward written out by hand; w = [conv.w, conv.b, bn.w, bn.b, head.w, head.b]."""
    h = F.conv2d(x, w[0], w[1], padding=1)
    h = F.batch_norm(h, None, None, w[2], w[3], training=True)
    h = F.max_pool2d(F.relu(h), 2).flatten(1)
    return F.linear(h, w[4], w[5])


def reference_meta_grads(weights: List[Tensor], batch: EpisodeBatch, lr: float, steps: int, adapted: Sequence[int],
                         second_order: bool, lrs: List[Tensor] | None = None) -> List[Tensor]:
    """d(mean query CE)/d(weights [+ lrs]) by an explicit inner loop over the hand-written forward."""
    total = 0.0
    for t in range(batch.num_tasks):
        fast = list(weights)
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[i] for i in adapted], create_graph=second_order)
            for i, g in zip(adapted, grads):
                fast[i] = fast[i] - (lrs[i] if lrs is not None else lr) * g
        total = total + F.cross_entropy(reference_forward(fast, batch.query_x[t]), batch.query_y[t])
    total = total / batch.num_tasks
    return list(torch.autograd.grad(total, weights + (lrs or [])))


def random_batch(tasks: int = 2, n_way: int = 3, k_shot: int = 2, q_query: int = 3, channels: int = 1, size: int = 4,
                 seed: int = 0, dtype: torch.dtype = torch.float64) -> EpisodeBatch:
    """Random images with balanced episode labels."""
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(n_way).repeat_interleave(k_shot).repeat(tasks, 1)
    qy = torch.arange(n_way).repeat_interleave(q_query).repeat(tasks, 1)
    sx = torch.randn(tasks, n_way * k_shot, channels, size, size, generator=g, dtype=dtype)
    qx = torch.randn(tasks, n_way * q_query, channels, size, size, generator=g, dtype=dtype)
    return EpisodeBatch(sx, sy, qx, qy, n_way, k_shot, q_query)


class TemplateTasks:
    """A learnable few-shot problem: each of ``classes`` classes is a random template in one image quadrant;
    every image adds strong noise to the other three quadrants, so a learner must find where the signal is.
    Episode labels are a fresh random permutation of the sampled classes."""

    def __init__(self, classes: int = 40, size: int = 12, noise: float = 0.4, clutter: float = 1.0, seed: int = 0):
        self.g = torch.Generator().manual_seed(seed)
        self.size, self.noise, self.clutter = size, noise, clutter
        half = size // 2
        self.templates = torch.zeros(classes, 1, size, size)
        self.templates[:, :, :half, :half] = torch.randn(classes, 1, half, half, generator=self.g).sign()
        self.signal = torch.zeros(1, size, size, dtype=torch.bool)
        self.signal[:, :half, :half] = True

    def _images(self, cls: Tensor, per_class: int) -> Tensor:
        x = self.templates[cls].repeat_interleave(per_class, 0)
        noise = torch.randn(x.shape, generator=self.g)
        return x + torch.where(self.signal, self.noise * noise, self.clutter * noise)

    def batch(self, tasks: int, n_way: int = 5, k_shot: int = 1, q_query: int = 5) -> EpisodeBatch:
        sx, qx = [], []
        for _ in range(tasks):
            cls = torch.randperm(len(self.templates), generator=self.g)[:n_way]
            sx.append(self._images(cls, k_shot))
            qx.append(self._images(cls, q_query))
        sy = torch.arange(n_way).repeat_interleave(k_shot).repeat(tasks, 1)
        qy = torch.arange(n_way).repeat_interleave(q_query).repeat(tasks, 1)
        return EpisodeBatch(torch.stack(sx), sy, torch.stack(qx), qy, n_way, k_shot, q_query)
