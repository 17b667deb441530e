"""Learners from configs and from checkpoints: the backbone in ``model`` wrapped in the learner in ``learner``
(and the distilled learner around a ``meta_teacher``); a trained checkpoint back into its learner; a
learner started from a checkpoint's backbone without meta-training (``metakd eval --learner``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from torch import nn

from ...config import SCHEMA, merge, parse_overrides, validate
from ...errors import ConfigError, MetakdError
from ...learners import build_learner
from ...learners.distilled import DistilledLearner
from ...models import build_backbone
from ...models.common import check_input_shape
from ..runs.checkpoint import find_checkpoint, load_checkpoint, state_dict_mismatch, without_locations
from .init_weights import init_backbone
from .parts import resolve_device


def make_learner(cfg: Dict[str, Any], in_channels: int, image_size: int, init: bool = True,
                 report: Optional[Dict[str, Any]] = None) -> nn.Module:
    """Backbone from ``model`` wrapped in the learner from ``learner``; with ``meta_teacher.checkpoint`` set,
    that learner is the student of a DistilledLearner around the frozen teacher the checkpoint holds.

    init: load ``model.init`` into the backbone (see ``metakd.engine.assembly.init_weights``); False when the caller
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
    path = teacher_cfg["checkpoint"]
    try:
        teacher, ckpt = load_learner(path, device="cpu")
    except MetakdError as exc:
        raise ConfigError(f"meta_teacher.checkpoint: {exc}") from None
    info = ckpt.get("data", {})
    if (info.get("in_channels"), info.get("image_size")) != (in_channels, image_size):
        raise ConfigError(f"meta_teacher.checkpoint: {path} was trained on {info.get('in_channels')}-channel "
                          f"{info.get('image_size')}px images, the student gets {in_channels}-channel {image_size}px")
    return DistilledLearner(student, teacher, **teacher_cfg["options"])


def load_learner(path: str | Path, device: str = "auto") -> Tuple[nn.Module, Dict[str, Any]]:
    """(the learner a `metakd train` checkpoint or run folder holds, in eval mode; the checkpoint dict).

    ``path``: a ``.pt`` file or a run folder (its best.pt). The learner answers ``adapt(support_x,
    support_y)`` -> fast state and ``predict(fast, query_x)`` -> logits; ``ckpt["config"]`` is its config."""
    path = find_checkpoint(path, "best")
    return learner_from_checkpoint(load_checkpoint(path, map_location="cpu"), path, device)


def learner_from_checkpoint(ckpt: Dict[str, Any], path: Path, device: str = "auto") -> Tuple[nn.Module, Dict[str, Any]]:
    """``load_learner`` for a checkpoint dict already read from ``path`` (read once, used twice)."""
    info = ckpt.get("data", {})
    cfg = ckpt["config"]
    try:
        learner = make_learner(cfg, info.get("in_channels", 3), info.get("image_size", 84), init=False)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {path}: its config no longer builds a learner: {exc}") from None
    state = ckpt["learner"]
    if not isinstance(state, Mapping):
        raise MetakdError(f"checkpoint {path}: 'learner' holds a {type(state).__name__}, not a state dict")
    what = (f"checkpoint {path} does not fit the learner its config builds ({cfg['learner']['name']}, "
            f"{cfg['model']['backbone']}, {cfg['episodes']['n_way']}-way)")
    mismatch = state_dict_mismatch(learner.state_dict(), state)
    if mismatch:
        raise MetakdError(f"{what}: {mismatch}")
    try:
        learner.load_state_dict(state)
    except RuntimeError as exc:
        raise MetakdError(f"{what}: {' '.join(str(exc).split())}") from None
    learner.to(resolve_device(device)).eval()
    return learner, ckpt


def fewshot_config_for(ckpt: Dict[str, Any], ckpt_path: Path, learner: str,
                       overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The few-shot config that evaluates ``learner`` started from the backbone in ``ckpt`` without
    meta-training: a `metakd pretrain` checkpoint's data, backbone, episodes and eval sections (or a
    `metakd train` checkpoint's config with another learner), ``model.init`` = the checkpoint,
    ``train.iterations`` 0, then ``overrides`` (e.g. learner.options.steps=50, episodes.k_shot=5)."""
    src = ckpt["config"]
    if not isinstance(src, dict) or not isinstance(src.get("model"), dict) or "backbone" not in src["model"]:
        raise MetakdError(f"checkpoint {ckpt_path}: its config lacks model.backbone (or is not a mapping); is it a "
                          "metakd checkpoint?")
    src = without_locations(src)
    raw: Dict[str, Any] = {"name": f"{src.get('name', 'run')}+{learner}", "seed": src.get("seed", 0)}
    for section in ("data", "episodes", "eval"):
        part = src.get(section, {})
        raw[section] = {k: v for k, v in (part.items() if isinstance(part, dict) else ()) if k in SCHEMA[section]}
    raw["model"] = {"backbone": src["model"]["backbone"], "options": dict(src["model"].get("options", {})),
                    "init": str(ckpt_path)}
    trained = src.get("learner") if isinstance(src.get("learner"), dict) else {}
    same = trained.get("name") == learner  # the trained options, unless overridden
    raw["learner"] = {"name": learner, "options": dict(trained.get("options") or {}) if same else {}}
    raw["train"] = {"iterations": 0}
    overrides = list(overrides)
    merge(raw, parse_overrides(overrides))
    return validate(raw, f"{ckpt_path} with --learner {learner}", overrides=overrides)


def learner_from_backbone(ckpt: Any, path: Path, learner: str, overrides: Sequence[str] = (),
                          device: str = "auto") -> Tuple[Any, Dict[str, Any]]:
    """(learner in eval mode, a checkpoint-like dict whose config is ``fewshot_config_for``'s) for
    ``metakd eval --learner``; ``ckpt`` is the dict already read from ``path``."""
    if not isinstance(ckpt, dict) or "config" not in ckpt or ("model" not in ckpt and "learner" not in ckpt):
        raise MetakdError(f"{path} is neither a `metakd pretrain` nor a `metakd train` checkpoint")
    cfg = fewshot_config_for(ckpt, path, learner, overrides)
    info = ckpt.get("data", {})
    report: Dict[str, Any] = {}
    model = make_learner(cfg, info.get("in_channels", 3), info.get("image_size", 84), report=report)
    model.to(resolve_device(device)).eval()
    return model, {"config": cfg, "step": 0, "normalize": ckpt.get("normalize"), "data": info, "init": report,
                   "source_step": ckpt.get("step")}
