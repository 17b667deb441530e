"""A meta-batch of few-shot episodes as tensors: what the sampler produces and the learners consume."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch


@dataclass
class EpisodeBatch:
    """T tasks of N-way K-shot Q-query episodes.

    support_x: float (T, N*K, C, H, W), values in [0, 1] unless the sampler normalises.
    support_y: int64 (T, N*K), labels 0..N-1 remapped per episode.
    query_x:   float (T, N*Q, C, H, W).
    query_y:   int64 (T, N*Q).
    classes:   int64 (T, N), the dataset class of each episode label (episode label i -> classes[:, i]).
    augment_preset: the augmentation preset that fits these images ("natural" or "glyph",
               ``metakd.data.augment.PRESETS``), as the sampler's split records it; None when unknown
               (batches built by hand: users of augmentations then take "natural").
    mean, std: the per-channel normalisation applied to the pixels (``x = (p - mean) / std`` for
               pixels p in [0, 1]), or None when the images are plain [0, 1] pixels. Augmentations
               de-normalise with them, augment, and normalise again.

    ``to``, ``task`` and ``split`` keep the last three fields.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    n_way: int
    k_shot: int
    q_query: int
    classes: Optional[torch.Tensor] = None
    augment_preset: Optional[str] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def _select(self, s: slice) -> "EpisodeBatch":
        return replace(self, support_x=self.support_x[s], support_y=self.support_y[s], query_x=self.query_x[s],
                       query_y=self.query_y[s], classes=None if self.classes is None else self.classes[s])

    def to(self, device) -> "EpisodeBatch":
        return replace(self, support_x=self.support_x.to(device), support_y=self.support_y.to(device),
                       query_x=self.query_x.to(device), query_y=self.query_y.to(device),
                       classes=None if self.classes is None else self.classes.to(device))

    def task(self, i: int) -> "EpisodeBatch":
        """The i-th task as a batch of one."""
        return self._select(slice(i, i + 1))

    def split(self, chunk: int):
        """Yield consecutive sub-batches of at most ``chunk`` tasks."""
        for start in range(0, self.num_tasks, chunk):
            yield self._select(slice(start, start + chunk))
