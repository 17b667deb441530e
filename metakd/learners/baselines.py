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
them (``metakd.engine.evaluation.feature_cache``; ``embed`` / ``features_logits`` below).
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..data.episode import EpisodeBatch
from ..errors import ConfigError
from ..registry import LEARNERS
from .base import MetaLearner
from .options import Opt


def _encoder(model: nn.Module) -> nn.Module:
    return model.features if isinstance(getattr(model, "features", None), nn.Module) else model


class FrozenFeatureBaseline(MetaLearner):
    """A head fitted on frozen support features; subclasses write ``fit_head`` and ``head_logits``."""

    FIXED_BACKBONE: ClassVar[bool] = True  # evaluation may reuse cached features (engine/feature_cache.py)

    def embed(self, x: Tensor) -> Tensor:
        return _encoder(self.model)(x).flatten(1)

    def prepare(self, f: Tensor) -> Tensor:
        return F.normalize(f, dim=-1) if self.options.get("normalize") else f

    def fit_head(self, sf: Tensor, sy: Tensor, n_way: int) -> Dict[str, Tensor]:
        raise NotImplementedError

    def head_logits(self, head: Dict[str, Tensor], f: Tensor) -> Tensor:
        raise NotImplementedError

    def features_logits(self, support_f: Tensor, support_y: Tensor, query_f: Tensor, n_way: int) -> Tensor:
        """Query logits (Q, n_way) from support features (S, D) with labels (S,) and query features (Q, D)."""
        sf, qf = self.prepare(support_f.detach().float()), self.prepare(query_f.detach().float())
        with torch.enable_grad():
            head = self.fit_head(sf, support_y, n_way)
        return self.head_logits({k: v.detach() for k, v in head.items()}, qf)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        if training:  # e.g. as an MSD host in meta-training: nothing here would get a gradient
            raise ConfigError(_no_meta_training(self.NAME))
        with torch.no_grad():
            sf, qf = self.embed(support_x), self.embed(query_x)
        return self.features_logits(sf, support_y, qf, n_way)

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

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        if training:
            raise ConfigError(_no_meta_training(self.NAME))
        o = self.options
        enc = _encoder(self.model)
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
        with torch.no_grad():
            return self._logits(enc, {k: v.detach() for k, v in params.items()}, buffers, query_x)

    @staticmethod
    def _logits(enc: nn.Module, params: Dict[str, Tensor], buffers: Dict[str, Tensor], x: Tensor) -> Tensor:
        body = {k: v for k, v in params.items() if not k.startswith("__head.")}
        f = functional_call(enc, (body, buffers), (x,)).flatten(1)
        return F.linear(f, params["__head.weight"], params["__head.bias"])

    def meta_loss(self, batch: EpisodeBatch):
        raise ConfigError(_no_meta_training(self.NAME))
