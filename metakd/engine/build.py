"""From a validated config to the parts of a run: device, data splits, samplers, model, learner, optimiser."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from ..data import load_split
from ..data.base import ImageSplit
from ..data.sampler import EpisodeSampler, channel_stats
from ..errors import ConfigError
from ..learners import build_learner
from ..models import build_backbone
from ..models.common import check_input_shape

Normalize = Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; otherwise the named device (checked to exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use device=cpu or device=auto")
    return device


def describe_device(device: torch.device) -> str:
    """What results record as the device: the GPU's name, or the CPU's kind, cores and torch version."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import os
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"


def split_for(cfg: Dict[str, Any], which: str) -> ImageSplit:
    """Load the split named by ``data.<which>_split`` (which: train / val / test)."""
    data = cfg["data"]
    return load_split(data["dataset"], data["root"], data[f"{which}_split"], image_size=data["image_size"], **data["options"])


def normalization(cfg: Dict[str, Any], train_split: Optional[ImageSplit]) -> Normalize:
    """Per-channel (mean, std) from ``data.normalize``: null, "dataset" (the training split's statistics,
    applied to every split) or [mean, std] lists."""
    spec = cfg["data"]["normalize"]
    if spec is None:
        return None
    if spec == "dataset":
        if train_split is None:
            raise ConfigError("data.normalize=dataset needs the training split to compute its statistics")
        mean, std = channel_stats(train_split)
        return tuple(mean), tuple(std)
    if isinstance(spec, list) and len(spec) == 2 and all(isinstance(v, (list, tuple)) for v in spec):
        return tuple(float(v) for v in spec[0]), tuple(float(v) for v in spec[1])
    raise ConfigError(f"data.normalize must be null, 'dataset' or [[mean...], [std...]], got {spec!r}")


def storage_for(cfg: Dict[str, Any], device: torch.device) -> str:
    """"auto": keep uint8 images on the GPU when training on CUDA, else gather on the host."""
    storage = cfg["data"]["storage"]
    if storage == "auto":
        return "device" if device.type == "cuda" else "host"
    return storage


def make_sampler(cfg: Dict[str, Any], split: ImageSplit, *, q_query: int, device: torch.device,
                 normalize: Normalize, seed: int = 0, training: bool = False) -> EpisodeSampler:
    """Episodes of ``episodes.n_way`` classes (``train_n_way`` when set and ``training``, e.g. ProtoNet's
    higher-way training episodes)."""
    ep = cfg["episodes"]
    n_way = ep["train_n_way"] if training and ep["train_n_way"] else ep["n_way"]
    return EpisodeSampler(split, n_way, ep["k_shot"], q_query, seed=seed, device=device,
                          storage=storage_for(cfg, device), normalize=normalize)


def make_learner(cfg: Dict[str, Any], in_channels: int, image_size: int, init: bool = True,
                 report: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Backbone from ``model`` wrapped in the learner from ``learner``; with ``meta_teacher.checkpoint`` set,
    that learner is the student of a DistilledLearner around the frozen teacher the checkpoint holds.

    init: load ``model.init`` into the backbone (see ``metakd.engine.init_weights``); False when the caller
    loads a full state dict next (evaluating or resuming a checkpoint). report: filled with what was loaded."""
    for key, value in (("in_channels", in_channels), ("image_size", image_size)):
        if key in cfg["model"]["options"] and cfg["model"]["options"][key] != value:
            raise ConfigError(f"model.options.{key}={cfg['model']['options'][key]!r} does not match the data "
                              f"({key} {value}: from data.image_size and the dataset's channels); remove it, the "
                              "backbone is built for the data")
    options = {k: v for k, v in cfg["model"]["options"].items() if k not in ("in_channels", "image_size")}
    model = build_backbone(cfg["model"]["backbone"], cfg["episodes"]["n_way"], in_channels=in_channels,
                           image_size=image_size, **options)
    check_input_shape(model, (in_channels, image_size, image_size), f"the data (data.image_size={image_size}, "
                      f"{in_channels} channel(s))")
    if init and cfg["model"].get("init"):
        from .init_weights import init_backbone

        got = init_backbone(model, cfg["model"]["init"], cfg["model"]["backbone"])
        if report is not None:
            report.update(got)
    learner = build_learner(cfg["learner"]["name"], model, **cfg["learner"]["options"])
    teacher = cfg.get("meta_teacher") or cfg.get("teacher") or {}  # "teacher": configs saved before the rename
    if teacher.get("checkpoint"):
        learner = make_distilled(learner, teacher, in_channels, image_size)
    return learner


def make_distilled(student: nn.Module, teacher_cfg: Dict[str, Any], in_channels: int, image_size: int) -> nn.Module:
    """The DistilledLearner of ``student`` and the teacher learner in ``teacher_cfg["checkpoint"]`` (the
    few-shot config's ``meta_teacher`` section)."""
    from ..errors import MetakdError
    from ..learners.distilled import DistilledLearner
    from .evaluate_checkpoint import find_checkpoint, load_learner

    path = teacher_cfg["checkpoint"]
    try:
        teacher, ckpt = load_learner(find_checkpoint(path, "best"), device="cpu")
    except MetakdError as exc:
        raise ConfigError(f"meta_teacher.checkpoint: {exc}") from None
    info = ckpt.get("data", {})
    if (info.get("in_channels"), info.get("image_size")) != (in_channels, image_size):
        raise ConfigError(f"meta_teacher.checkpoint: {path} was trained on {info.get('in_channels')}-channel "
                          f"{info.get('image_size')}px images, the student gets {in_channels}-channel {image_size}px")
    return DistilledLearner(student, teacher, **teacher_cfg["options"])


def make_optimizer(cfg: Dict[str, Any], params) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov momentum when ``train.momentum`` > 0) from the ``train`` section."""
    t = cfg["train"]
    params = [p for p in params if p.requires_grad]
    try:
        if t["optimizer"] == "adam":
            return torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])
        if t["optimizer"] == "adamw":
            return torch.optim.AdamW(params, lr=t["lr"], weight_decay=t["weight_decay"])
        return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                               nesterov=t["momentum"] > 0)
    except ValueError as exc:  # torch's own range checks
        raise ConfigError(f"train.optimizer={t['optimizer']} rejects train.lr={t['lr']}, train.weight_decay="
                          f"{t['weight_decay']}, train.momentum={t['momentum']}: {exc}") from None


def make_scheduler(cfg: Dict[str, Any], optimizer: torch.optim.Optimizer):
    """The ``train.lr_schedule``: cosine over the iterations, step (``lr_step``, ``lr_gamma``; both range
    checked by ``metakd.config.validate``, torch checks neither) or constant (None)."""
    t = cfg["train"]
    if t["lr_schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t["iterations"])
    if t["lr_schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t["lr_step"], gamma=t["lr_gamma"])
    return None
