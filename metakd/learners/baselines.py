"""The baselines few-shot papers compare against: a pre-trained backbone (``metakd pretrain``, then
``model.init``) and, per episode, a classifier fitted on the support set only. No meta-training:
evaluate them with ``metakd eval <pretrain run> --learner NAME`` or a few-shot config with
``train.iterations: 0`` (``meta_loss`` refuses, naming both).

- ``linear_probe`` (Chen et al., ICLR 2019, "A Closer Look at Few-shot Classification": Baseline;
  ``normalize: true`` gives RFS's L2-normalised features, Tian et al., ECCV 2020): frozen features, a
  multinomial logistic-regression head fitted on the support features.
- ``cosine_classifier`` (Chen et al.'s Baseline++): logits = scale · cos(feature, w_k), the class
  vectors w_k fitted on the support features (started from the class means).
- ``finetune``: the whole backbone fine-tuned on the support set with a new zero-initialised head,
  ``steps`` steps of SGD with momentum on a functional copy of the weights (the learner's own
  weights never change).

Fitting is full-batch and deterministic (fixed start, fixed number of Adam or SGD steps, no sampling),
so an episode gives the same accuracy on every run. ``linear_probe`` and ``cosine_classifier`` never
change the backbone inside an episode: evaluation computes each image's features once and reuses
them (``metakd.engine.evaluation.feature_cache``; ``feature_head`` below).

Fast state (``adapt``): the fitted head (a dict of tensors); for ``finetune``, the fine-tuned copy of the
weights with its new head.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..data.episode import EpisodeBatch
from ..errors import ConfigError
from ..registry import LEARNERS
from ..validate import Opt
from .base import FeatureLogits, MetaLearner, episode_ways
from .heads import encoder, flat_features


class FrozenFeatureBaseline(MetaLearner):
    """A head fitted on frozen support features; subclasses write ``fit_head`` and ``head_logits``."""

    def embed(self, x: Tensor) -> Tensor:
        return flat_features(self.model, x)

    def prepare(self, f: Tensor) -> Tensor:
        return F.normalize(f, dim=-1) if self.options.get("normalize") else f

    def fit_head(self, sf: Tensor, sy: Tensor, n_way: int) -> Dict[str, Tensor]:
        raise NotImplementedError

    def head_logits(self, head: Dict[str, Tensor], f: Tensor) -> Tensor:
        raise NotImplementedError

    def fit(self, support_f: Tensor, support_y: Tensor, n_way: int) -> Dict[str, Tensor]:
        """The head (detached) fitted on support features (S, D) with labels (S,)."""
        sf = self.prepare(support_f.detach().float())
        with torch.enable_grad():
            head = self.fit_head(sf, support_y, n_way)
        return {k: v.detach() for k, v in head.items()}

    def features_logits(self, support_f: Tensor, support_y: Tensor, query_f: Tensor, n_way: int) -> Tensor:
        """Query logits (Q, n_way) from support features (S, D) with labels (S,) and query features (Q, D)."""
        return self.head_logits(self.fit(support_f, support_y, n_way), self.prepare(query_f.detach().float()))

    def feature_head(self) -> Optional[Tuple[Callable[[Tensor], Tensor], FeatureLogits]]:
        return self.embed, self.features_logits

    def adapt(self, support_x: Tensor, support_y: Tensor, *, training: bool = False,
              n_way: Optional[int] = None) -> Dict[str, Tensor]:
        """The head fitted on the frozen features of the support set (S, C, H, W) with labels (S,)."""
        if training:  # e.g. as an MSD host in meta-training: nothing here would get a gradient
            raise ConfigError(_no_meta_training(self.NAME))
        with torch.no_grad():
            sf = self.embed(support_x)
        return self.fit(sf, support_y, episode_ways(support_y, n_way))

    def predict(self, fast: Dict[str, Tensor], query_x: Tensor) -> Tensor:
        """Logits (Q, n_way) of query_x (Q, C, H, W) under the fitted head ``fast``."""
        with torch.no_grad():
            qf = self.embed(query_x)
        return self.head_logits(fast, self.prepare(qf.detach().float()))

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training, n_way=n_way), query_x)

    def meta_loss(self, batch: EpisodeBatch):
        raise ConfigError(_no_meta_training(self.NAME))

    def _adam_fit(self, params: Dict[str, Tensor], loss_fn: Any) -> Dict[str, Tensor]:
        o = self.options
        opt = torch.optim.Adam(list(params.values()), lr=o["lr"])
        for _ in range(o["steps"]):
            opt.zero_grad(set_to_none=True)
            loss_fn(params).backward()
            opt.step()
        return params


def _no_meta_training(name: str) -> str:
    return (f"learner {name!r} is not meta-trained: it fits a classifier on each episode's support set. Evaluate "
            f"it from a pre-trained backbone with `metakd eval <pretrain run> --learner {name}`, or with a config "
            "that sets model.init and train.iterations=0")


@LEARNERS.register("linear_probe")
class LinearProbe(FrozenFeatureBaseline):
    """Logistic regression on frozen features: W, b from zero by ``steps`` full-batch Adam steps (``lr``) on
    the support cross-entropy + ``weight_decay``/2 · ‖W‖²; ``normalize`` L2-normalises the features (RFS)."""

    NAME = "linear_probe"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        "steps": Opt(100, "int>=1"),
        "lr": Opt(0.1, "positive"),
        "weight_decay": Opt(1e-3, "number>=0"),
        "normalize": Opt(False, "bool"),
    }

    def fit_head(self, sf: Tensor, sy: Tensor, n_way: int) -> Dict[str, Tensor]:
        w = torch.zeros(n_way, sf.shape[1], device=sf.device, requires_grad=True)
        b = torch.zeros(n_way, device=sf.device, requires_grad=True)
        wd = float(self.options["weight_decay"])
        return self._adam_fit({"w": w, "b": b},
                              lambda p: F.cross_entropy(F.linear(sf, p["w"], p["b"]), sy) + 0.5 * wd * p["w"].pow(2).sum())

    def head_logits(self, head: Dict[str, Tensor], f: Tensor) -> Tensor:
        return F.linear(f, head["w"], head["b"])


@LEARNERS.register("cosine_classifier")
class CosineClassifier(FrozenFeatureBaseline):
    """Baseline++: logits = ``scale`` · cos(f, w_k); w_k start at the class means of the support features
    and are fitted by ``steps`` full-batch Adam steps (``lr``) on the support cross-entropy."""

    NAME = "cosine_classifier"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        "steps": Opt(100, "int>=1"),
        "lr": Opt(0.01, "positive"),
        "scale": Opt(10.0, "positive"),
    }

    def fit_head(self, sf: Tensor, sy: Tensor, n_way: int) -> Dict[str, Tensor]:
        onehot = F.one_hot(sy, n_way).to(sf.dtype)
        means = onehot.t() @ F.normalize(sf, dim=-1) / onehot.sum(0).clamp_min(1)[:, None]
        w = means.clone().requires_grad_(True)
        return self._adam_fit({"w": w}, lambda p: F.cross_entropy(self.head_logits(p, sf), sy))

    def head_logits(self, head: Dict[str, Tensor], f: Tensor) -> Tensor:
        return float(self.options["scale"]) * F.normalize(f, dim=-1) @ F.normalize(head["w"], dim=-1).t()


@LEARNERS.register("finetune")
class FineTune(MetaLearner):
    """The whole backbone (its ``features``) and a new zero-initialised linear head fine-tuned on the
    support set: ``steps`` full-batch SGD steps (``lr``, ``momentum``, ``weight_decay``) on the support
    cross-entropy, on a copy of the weights; the query logits come from the fine-tuned copy. BatchNorm
    behaves as the backbone's ``bn`` mode says in eval mode (running statistics: fixed)."""

    NAME = "finetune"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        "steps": Opt(100, "int>=1"),
        "lr": Opt(0.01, "positive"),
        "momentum": Opt(0.9, "number>=0"),
        "weight_decay": Opt(0.0, "number>=0"),
    }

    def adapt(self, support_x: Tensor, support_y: Tensor, *, training: bool = False,
              n_way: Optional[int] = None) -> Dict[str, Tensor]:
        """The fine-tuned copy of the embedding's weights, with the new head as ``__head.weight`` /
        ``__head.bias`` (detached), from the support set (S, C, H, W) with labels (S,)."""
        if training:
            raise ConfigError(_no_meta_training(self.NAME))
        n_way = episode_ways(support_y, n_way)
        o = self.options
        enc = encoder(self.model)
        buffers = dict(enc.named_buffers())
        with torch.enable_grad():
            params = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
            with torch.no_grad():
                dim = functional_call(enc, ({**params}, buffers), (support_x[:1],)).flatten(1).shape[1]
            params["__head.weight"] = torch.zeros(n_way, dim, device=support_x.device, requires_grad=True)
            params["__head.bias"] = torch.zeros(n_way, device=support_x.device, requires_grad=True)
            opt = torch.optim.SGD(list(params.values()), lr=o["lr"], momentum=o["momentum"],
                                  weight_decay=o["weight_decay"])
            for _ in range(o["steps"]):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(self._logits(enc, params, buffers, support_x), support_y).backward()
                opt.step()
        return {k: v.detach() for k, v in params.items()}

    def predict(self, fast: Dict[str, Tensor], query_x: Tensor) -> Tensor:
        """Logits (Q, n_way) of query_x (Q, C, H, W) under the fine-tuned weights ``fast``."""
        enc = encoder(self.model)
        with torch.no_grad():
            return self._logits(enc, fast, dict(enc.named_buffers()), query_x)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training, n_way=n_way), query_x)

    @staticmethod
    def _logits(enc: nn.Module, params: Dict[str, Tensor], buffers: Dict[str, Tensor], x: Tensor) -> Tensor:
        body = {k: v for k, v in params.items() if not k.startswith("__head.")}
        f = functional_call(enc, (body, buffers), (x,)).flatten(1)
        return F.linear(f, params["__head.weight"], params["__head.bias"])

    def meta_loss(self, batch: EpisodeBatch):
        raise ConfigError(_no_meta_training(self.NAME))
