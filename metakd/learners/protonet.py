"""Prototypical networks (Snell et al. 2017): the metric baseline, no inner loop.

Prototypes are the mean support embeddings of each class; query logits are the negative squared
Euclidean distances to them. The embedding is ``model.features`` when the model has that submodule
(the built-in backbones do), else the model's own output. Support and query are embedded as two
separate batches, so transductive BatchNorm uses each set's own statistics, as in MAML.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError
from ..registry import LEARNERS
from .base import MetaLearner


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
    """Logits = −‖f(x_q) − c_k‖², c_k = mean of f over the support examples of class k. No options."""

    NAME = "protonet"

    def embed(self, x: Tensor) -> Tensor:
        """Flat embeddings (B, D) of x (B, C, H, W)."""
        encoder = self.model.features if isinstance(getattr(self.model, "features", None), nn.Module) else self.model
        return encoder(x).flatten(1)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        protos = prototypes(self.embed(support_x), support_y, n_way)
        return -squared_distances(self.embed(query_x), protos)
