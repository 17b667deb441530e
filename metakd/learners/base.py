"""MetaLearner: the one abstract base of every learner. A new learner writes ``task_logits``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.episode import EpisodeBatch
from ..errors import ConfigError, DataError
from ..models.common import check_input_shape
from .options import resolve


FeatureLogits = Callable[[Tensor, Tensor, Tensor, int], Tensor]


@dataclass
class SupportSet:
    """The default fast state (``MetaLearner.adapt``): one task's support set, labels and way."""

    x: Tensor
    y: Tensor
    n_way: int
    training: bool


class MetaLearner(nn.Module):
    """model: nn.Module mapping (B,C,H,W) -> (B, n_way) logits (features for ProtoNet).

    Subclasses set ``NAME`` (their registry name, used in messages) and ``OPTIONS`` (every option
    they accept: an ``Opt`` with default and check (``options.py``), or a plain default);
    ``self.options`` holds the resolved, checked values.
    ``meta_loss`` and ``evaluate`` loop over the tasks of a batch and call ``task_logits`` on each.
    """

    NAME: ClassVar[str] = "meta-learner"
    OPTIONS: ClassVar[Dict[str, Any]] = {}

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"learner {self.NAME!r} needs a torch.nn.Module as model, got {type(model).__name__}")
        self.options: Dict[str, Any] = resolve(self.NAME, self.OPTIONS, options)
        self.model = model

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        """Logits (N*Q, n_way) of one task's query set, from its support set.

        support_x (N*K, C, H, W), support_y (N*K,) in 0..n_way-1, query_x (N*Q, C, H, W).
        ``training`` is True in ``meta_loss`` (the result must be differentiable w.r.t. the learner's
        parameters) and False in ``evaluate``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement task_logits")

    def check_way(self, n_way: int, training: bool) -> bool:
        """Called with the episode's way before any task is run: ConfigError if this learner cannot serve an
        ``n_way`` episode; True when it serves it with a per-episode head (``GradientLearner.head_rule``).
        The base learner (ProtoNet, the baselines) builds its classifier per episode: any way, False."""
        return False

    def _task_logits(self, batch: EpisodeBatch, t: int, training: bool) -> Tensor:
        logits = self.task_logits(batch.support_x[t], batch.support_y[t], batch.query_x[t], batch.n_way, training)
        return check_query_logits(self.NAME, logits, batch, per_task=True)

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """Mean query cross-entropy over the batch's tasks (training=True), differentiable w.r.t.
        ``self.parameters()``; metrics {"loss", "acc"} as python floats (acc: mean query accuracy)."""
        check_batch(batch, self.model)
        self.check_way(batch.n_way, training=True)
        losses, accs = [], []
        for t in range(batch.num_tasks):
            logits = self._task_logits(batch, t, training=True)
            losses.append(F.cross_entropy(logits, batch.query_y[t]))
            accs.append((logits.detach().argmax(-1) == batch.query_y[t]).float().mean())
        loss = torch.stack(losses).mean()
        loss_value, acc_value = torch.stack([loss.detach(), torch.stack(accs).mean()]).tolist()
        return loss, {"loss": loss_value, "acc": acc_value}

    def evaluate(self, batch: EpisodeBatch) -> Tensor:
        """Query accuracy of each task, shape (T,), with training=False (e.g. test_steps inner steps).

        Runs in eval() mode (restored afterwards) and keeps no outer graph; an inner loop may still use
        autograd (so do not call it under torch.inference_mode).
        """
        check_batch(batch, self.model)
        self.check_way(batch.n_way, training=False)
        was_training = self.training
        self.eval()
        try:
            accs = []
            with torch.no_grad():
                for t in range(batch.num_tasks):
                    logits = self._task_logits(batch, t, training=False)
                    accs.append((logits.argmax(-1) == batch.query_y[t]).float().mean())
        finally:
            self.train(was_training)
        return torch.stack(accs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())

    # The two verbs every learner answers, and the cached-feature hook ----------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, *, training: bool = False,
              n_way: Optional[int] = None) -> Any:
        """The fast state of one task from its support set: support_x (S, C, H, W), support_y (S,) in
        0..n_way-1 (``n_way`` default: support_y.max() + 1). What it holds is the learner's own (adapted
        weights, prototypes, a fitted head); ``predict`` reads it. This default keeps the support set, so a
        learner that writes only ``task_logits`` answers both verbs."""
        return SupportSet(support_x, support_y, episode_ways(support_y, n_way), training)

    def predict(self, fast: Any, query_x: Tensor) -> Tensor:
        """Logits (Q, n_way) of query_x (Q, C, H, W) from a fast state made by ``adapt``."""
        return self.task_logits(fast.x, fast.y, query_x, fast.n_way, fast.training)

    def feature_head(self) -> Optional[Tuple[Callable[[Tensor], Tensor], FeatureLogits]]:
        """(embed: images (B, C, H, W) -> features (B, D), logits on features: (support_f, support_y, query_f,
        n_way) -> (Q, n_way)) when this learner's backbone does not change inside an episode, so evaluation
        may embed every image once and run the episodes on cached features
        (``metakd.engine.evaluation.feature_cache``); None (the default): it may not."""
        return None


def check_batch(batch: EpisodeBatch, model: Optional[nn.Module] = None) -> None:
    """DataError unless the batch's tensors have consistent episode shapes (no device sync); with
    ``model``, ConfigError unless its images fit the backbone (``models.common.check_input_shape``)."""
    sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
    if sx.dim() != 5 or qx.dim() != 5:
        raise DataError(f"episode images must be (T, N*K, C, H, W); got support {tuple(sx.shape)}, query {tuple(qx.shape)}")
    if model is not None:
        check_input_shape(model, sx.shape[2:], "the episode batch")
    if sy.shape != sx.shape[:2] or qy.shape != qx.shape[:2]:
        raise DataError(
            f"episode labels must be (T, N*K) and (T, N*Q) matching the images; got support_y {tuple(sy.shape)} "
            f"for support_x {tuple(sx.shape)}, query_y {tuple(qy.shape)} for query_x {tuple(qx.shape)}"
        )
    if qx.shape[0] != sx.shape[0] or qx.shape[2:] != sx.shape[2:]:
        raise DataError(f"support {tuple(sx.shape)} and query {tuple(qx.shape)} differ in tasks or image shape")
    if sy.dtype != torch.long or qy.dtype != torch.long:
        raise DataError(f"episode labels must be int64, got {sy.dtype} / {qy.dtype}")


def check_query_logits(learner: str, logits: Tensor, batch: EpisodeBatch, per_task: bool) -> Tensor:
    """``logits`` unchanged if shaped (Q, n_way) (``per_task``) or (T, Q, n_way); else a ConfigError
    naming the learner, the shape and the backbone's n_way to fix."""
    q, n = batch.query_x.shape[1], batch.n_way
    expected = (q, n) if per_task else (batch.num_tasks, q, n)
    if logits.shape != expected:
        episodes = f"a {n}-way episode" if per_task else f"{batch.num_tasks} {n}-way episodes"
        raise ConfigError(
            f"learner {learner!r} produced query logits of shape {tuple(logits.shape)} for {episodes} with {q} "
            f"queries; expected {expected}: build the backbone with n_way={n}"
        )
    return logits


def episode_ways(support_y: Tensor, n_way: Optional[int] = None) -> int:
    """``n_way`` if given, else the number of classes of episode labels support_y (0..N-1): max + 1."""
    return int(n_way) if n_way is not None else int(support_y.max()) + 1


def overridden(obj: Any, base: type, names: Sequence[str]) -> List[str]:
    """Those of the methods ``names`` that ``type(obj)`` defines differently from ``base``."""
    cls = type(obj)
    return [m for m in names if getattr(cls, m) is not getattr(base, m)]
