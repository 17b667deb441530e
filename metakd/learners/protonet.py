"""Prototypical networks (Snell et al. 2017): the metric baseline, no inner loop.

Prototypes are the mean support embeddings of each class; query logits are the negative squared
Euclidean distances to them. The embedding is ``model.features`` when the model has that submodule
(the built-in backbones do), else the model's own output. Support and query are embedded as two
separate batches, so transductive BatchNorm uses each set's own statistics, as in MAML.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from ..registry import LEARNERS
from .base import FeatureLogits, MetaLearner, episode_ways, overridden
from .heads import flat_features


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means (n_way, D) of embeddings (S, D) with labels (S,) in 0..n_way-1."""
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # (S, n_way)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"support set has no example of episode class(es) {missing} of {n_way}")
    return onehot.t() @ embeddings / counts[:, None]


def squared_distances(queries: Tensor, protos: Tensor) -> Tensor:
    """(Q, P) squared Euclidean distances between queries (Q, D) and prototypes (P, D)."""
    return (queries[:, None, :] - protos[None, :, :]).pow(2).sum(-1)


@LEARNERS.register("protonet")
class ProtoNet(MetaLearner):
    """Logits = −‖f(x_q) − c_k‖², c_k = mean of f over the support examples of class k. No options.

    Fast state: the prototypes (n_way, D). No inner loop, so ``training`` changes nothing."""

    NAME = "protonet"

    def embed(self, x: Tensor) -> Tensor:
        """Flat embeddings (B, D) of x (B, C, H, W)."""
        return flat_features(self.model, x)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, training: bool = False,
              n_way: Optional[int] = None) -> Tensor:
        """The prototypes (n_way, D) of the support set (S, C, H, W) with labels (S,)."""
        return prototypes(self.embed(support_x), support_y, episode_ways(support_y, n_way))

    def predict(self, fast: Tensor, query_x: Tensor) -> Tensor:
        """Logits (Q, n_way) of query_x (Q, C, H, W): minus the squared distances to the prototypes ``fast``."""
        return -squared_distances(self.embed(query_x), fast)

    def features_logits(self, support_f: Tensor, support_y: Tensor, query_f: Tensor, n_way: int) -> Tensor:
        """The same logits from support features (S, D) and query features (Q, D)."""
        return -squared_distances(query_f, prototypes(support_f, support_y, n_way))

    def feature_head(self) -> Optional[Tuple[Callable[[Tensor], Tensor], FeatureLogits]]:
        if overridden(self, ProtoNet, ("task_logits", "adapt", "predict")):
            return None  # a subclass computes its logits otherwise
        return self.embed, self.features_logits

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training, n_way=n_way), query_x)
