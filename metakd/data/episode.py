"""A meta-batch of few-shot episodes as tensors: what the sampler produces and the learners consume."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class EpisodeBatch:
    """T tasks of N-way K-shot Q-query episodes.

    support_x: float (T, N*K, C, H, W), values in [0, 1] unless the sampler normalises.
    support_y: int64 (T, N*K), labels 0..N-1 remapped per episode.
    query_x:   float (T, N*Q, C, H, W).
    query_y:   int64 (T, N*Q).
    classes:   int64 (T, N), the dataset class of each episode label (episode label i -> classes[:, i]).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    n_way: int
    k_shot: int
    q_query: int
    classes: Optional[torch.Tensor] = None

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def to(self, device) -> "EpisodeBatch":
        return EpisodeBatch(
            self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
            self.query_y.to(device), self.n_way, self.k_shot, self.q_query,
            None if self.classes is None else self.classes.to(device),
        )

    def task(self, i: int) -> "EpisodeBatch":
        """The i-th task as a batch of one."""
        s = slice(i, i + 1)
        return EpisodeBatch(
            self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s],
            self.n_way, self.k_shot, self.q_query, None if self.classes is None else self.classes[s],
        )

    def split(self, chunk: int):
        """Yield consecutive sub-batches of at most ``chunk`` tasks."""
        for start in range(0, self.num_tasks, chunk):
            s = slice(start, start + chunk)
            yield EpisodeBatch(
                self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s],
                self.n_way, self.k_shot, self.q_query, None if self.classes is None else self.classes[s],
            )
