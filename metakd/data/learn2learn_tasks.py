"""Episodes from learn2learn: a ``TaskDataset`` (or the tasksets of ``l2l.vision.benchmarks``) as an
episode source for metakd's learners.

learn2learn's ``taskset.sample()`` returns one task as ``(data, labels)``: N classes × (K + Q)
samples in any order, labels either remapped or the dataset's own. ``TaskDatasetEpisodes`` splits
each task per class into K support and Q query samples (in the order the task lists them), remaps
the labels to 0..N−1 (sorted label values) and stacks tasks into a metakd ``EpisodeBatch``, so the
rest of a learn2learn script becomes ``learner.meta_loss(episodes.sample(meta_batch))``.

learn2learn is not imported by this module (only by ``import_learn2learn``, on request): any object with a
``sample()`` returning ``(data, labels)`` works, so metakd runs without learn2learn installed.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch

from ..errors import DataError
from ..validate import positive_int
from .episode import EpisodeBatch


class TaskDatasetEpisodes:
    """Meta-batches of EpisodeBatch from a learn2learn ``TaskDataset``.

    k_shot: support samples per class; the rest of each class's samples (or the first ``q_query``
        of them) form the query set. Tasks must hold the same N and K + Q every time (a meta-batch
        is one tensor).
    device: where the batches go (default: where the task tensors are).
    """

    def __init__(self, taskset: Any, k_shot: int, q_query: Optional[int] = None,
                 device: Optional[Union[str, torch.device]] = None, name: str = "learn2learn taskset"):
        if not callable(getattr(taskset, "sample", None)):
            raise DataError(f"{name}: expected a learn2learn TaskDataset (an object with sample()), got {type(taskset).__name__}")
        positive_int(k_shot, "k_shot", source=name)
        if q_query is not None:
            positive_int(q_query, "q_query (or None)", source=name)
        self.taskset, self.k_shot, self.q_query, self.name = taskset, k_shot, q_query, name
        self.device = None if device is None else torch.device(device)

    def _split(self, data: torch.Tensor, labels: torch.Tensor):
        labels = torch.as_tensor(labels).reshape(-1)
        if data.shape[0] != labels.shape[0]:
            raise DataError(f"{self.name}: a task has {data.shape[0]} samples but {labels.shape[0]} labels")
        values = torch.unique(labels)  # sorted
        support, query = [], []
        for cls in values:
            rows = torch.nonzero(labels == cls).reshape(-1)
            q = rows.numel() - self.k_shot if self.q_query is None else self.q_query
            if q < 1 or rows.numel() < self.k_shot + q:
                raise DataError(f"{self.name}: class {int(cls)} of a task has {rows.numel()} samples; k_shot "
                                f"{self.k_shot} + q_query {self.q_query or 1} needs at least {self.k_shot + max(q, 1)} "
                                "(set the taskset's KShots to k_shot + q_query)")
            support.append(rows[:self.k_shot])
            query.append(rows[self.k_shot:self.k_shot + q])
        n = values.numel()
        s_idx, q_idx = torch.cat(support), torch.cat(query)
        s_y = torch.arange(n).repeat_interleave(self.k_shot)
        q_y = torch.arange(n).repeat_interleave(query[0].numel())
        return data[s_idx], s_y, data[q_idx], q_y, values

    def sample(self, num_tasks: int = 1) -> EpisodeBatch:
        """``num_tasks`` tasks drawn from the taskset, as one EpisodeBatch (T, N·K, C, H, W) / (T, N·Q, ...)."""
        positive_int(num_tasks, "num_tasks", source=self.name)
        tasks = [self._split(*self.taskset.sample()[:2]) for _ in range(num_tasks)]
        shapes = {(t[0].shape, t[2].shape) for t in tasks}
        if len(shapes) > 1:
            raise DataError(f"{self.name}: tasks of one meta-batch differ in shape ({sorted(map(str, shapes))}); "
                            "use fixed NWays and KShots transforms")
        sx, sy, qx, qy, cls = (torch.stack([t[i] for t in tasks]) for i in range(5))
        n = cls.shape[1]
        batch = EpisodeBatch(sx.float(), sy, qx.float(), qy, n_way=n, k_shot=self.k_shot,
                             q_query=qx.shape[1] // n, classes=cls.long())
        return batch.to(self.device) if self.device is not None else batch

    def __repr__(self) -> str:
        return f"TaskDatasetEpisodes({self.name}, k_shot={self.k_shot}, q_query={self.q_query})"


def episodes_from_tasksets(tasksets: Any, k_shot: int, q_query: Optional[int] = None,
                           device: Optional[Union[str, torch.device]] = None) -> Dict[str, TaskDatasetEpisodes]:
    """The train / validation / test tasksets of ``l2l.vision.benchmarks.get_tasksets(...)`` (a named
    tuple with those fields) as ``{"train": ..., "validation": ..., "test": ...}`` episode sources."""
    out = {}
    for split in ("train", "validation", "test"):
        if not hasattr(tasksets, split):
            raise DataError(f"tasksets: expected l2l.vision.benchmarks tasksets with a {split!r} field, got "
                            f"{type(tasksets).__name__}")
        out[split] = TaskDatasetEpisodes(getattr(tasksets, split), k_shot, q_query, device, name=f"tasksets.{split}")
    return out


def import_learn2learn():
    """``import learn2learn``, without the notice gym 0.26 prints to stderr on every import ("Gym has been
    unmaintained since 2022 ..."): learn2learn imports gym for its reinforcement-learning part, which
    metakd does not use. Only that notice (and gym's DeprecationWarnings) is dropped; anything else the
    import writes to stderr is passed on. Raises ImportError when learn2learn is not installed."""
    import contextlib
    import importlib
    import io
    import sys
    import warnings

    buf = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buf):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"gym(\.|$)")
            return importlib.import_module("learn2learn")
    finally:
        text = buf.getvalue()
        notice = _gym_notice()
        if notice:
            text = text.replace(notice.rstrip("\n") + "\n", "").replace(notice.rstrip("\n"), "")
        if text.strip():
            sys.stderr.write(text)


def _gym_notice() -> Optional[str]:
    """The text gym prints on import for its installed version (from the gym_notices package), or None."""
    try:
        import gym
        from gym_notices import notices

        return notices.notices.get(gym.__version__)
    except Exception:  # noqa: BLE001 - no gym, no notices package, another layout: nothing to remove
        return None
