"""From a validated config to the parts of a run: device, data splits, normalisation, samplers, optimiser and
scheduler (the learner: ``build.learner``)."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ...data import load_split
from ...data.base import ImageSplit
from ...data.sampler import EpisodeSampler, channel_stats
from ...errors import ConfigError

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


def make_optimizer(cfg: Dict[str, Any], params, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """The one optimiser builder of every job: Adam, AdamW or SGD from the ``train`` section (``optimizer``,
    default sgd where a job's section has none; ``lr``, or the one given; ``weight_decay``; ``momentum``;
    ``nesterov``, default momentum > 0), over the parameters that require a gradient."""
    t = cfg["train"]
    lr = t["lr"] if lr is None else lr
    params = [p for p in params if p.requires_grad]
    name = t.get("optimizer", "sgd")
    try:
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=t["weight_decay"])
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=t["weight_decay"])
        return torch.optim.SGD(params, lr=lr, momentum=t["momentum"], weight_decay=t["weight_decay"],
                               nesterov=t.get("nesterov", t["momentum"] > 0))
    except ValueError as exc:  # torch's own range checks
        raise ConfigError(f"train.optimizer={name} rejects train.lr={lr}, train.weight_decay="
                          f"{t['weight_decay']}, train.momentum={t['momentum']}: {exc}") from None


def make_scheduler(cfg: Dict[str, Any], optimizer: torch.optim.Optimizer, length: int,
                   milestones: Optional[Sequence[int]] = None):
    """The one scheduler builder: ``train.lr_schedule`` (default step where a job's section has none) --
    cosine over ``length`` (iterations or epochs), step (multiplied by ``lr_gamma`` at ``milestones`` /
    ``train.lr_milestones`` when the job has them, else every ``train.lr_step``) or constant (None)."""
    t = cfg["train"]
    schedule = t.get("lr_schedule", "step")
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=length)
    if schedule == "step":
        milestones = t.get("lr_milestones") if milestones is None else milestones
        if milestones is not None:
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), t["lr_gamma"])
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t["lr_step"], gamma=t["lr_gamma"])
    return None
