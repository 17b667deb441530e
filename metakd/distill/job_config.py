"""The config schema of ``metakd distill`` (classic teacher -> student distillation for classification).

Sections (every key, its type and default; unknown keys are errors naming the key):

- top level: name, seed, device, threads, output_dir, description (as in the few-shot configs).
- data: dataset ("cifar100", "folder" or "glyphs"), root, image_size, options (passed to the loader),
  train_split / test_split, holdout_per_class (int: carve the test set out of the *train* split,
  the last ``holdout_per_class`` instances of every class; required for glyphs, whose splits hold
  disjoint classes), max_classes (keep the first N classes), normalize (null, "dataset" or
  [[mean], [std]]), augment ("crop_flip": random crop with zero padding ``crop_padding`` and
  horizontal flip; "crop": no flip, for glyphs whose mirror images are other characters; "none").
- teacher: arch, options, checkpoint (a ``teacher.pt`` written by this command; null = train one
  first into ``<output_dir>/teacher``), epochs / lr / lr_milestones (null = the train section's values).
- student: arch, options.
- distill: method ("kd", "kd_rank", "mkd", "mkd_rank"), ce_weight, kd_weight, temperature (T),
  kd_scale (see ``metakd.distill.kd``), rank_weight (null = kd_weight, RKKD's default),
  rank_form / rank_k / rank_beta / rank_subset / rank_fraction (see ``metakd.distill.rank``).
- mkd: temperature meta-learning (methods mkd*): t_min, t_max, shared, lr (Adam on the raw
  temperature parameters), heldout ("split": a ``heldout_fraction`` of every class's training
  images is set aside for the meta-objective and never used for student steps, as in MKD;
  "train": the held-out batch is another random batch of the training set), heldout_fraction,
  lookahead_lr (null = the student's current learning rate), lookahead_ce (include CE in the
  look-ahead loss), every (meta-update the temperatures every N steps).
- train: epochs, batch_size, lr, momentum, weight_decay, nesterov, lr_milestones (epochs),
  lr_gamma, eval_every (epochs; test accuracy logged), eval_batch_size, log_every (steps),
  checkpoint_every (epochs).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from pathlib import Path

from ..config import SCHEMA, Origins, Source, as_origins, config_dirs, load_config
from ..errors import ConfigError
from ..validate import in_range, positive_int

_NUM = (int, float)

DISTILL_SCHEMA: Dict[str, Dict[str, Tuple[tuple, Any]]] = {
    "": {**SCHEMA[""], "name": ((str,), "distill")},  # the few-shot configs' top-level keys
    "data": {
        "dataset": ((str,), "cifar100"),
        "root": ((str, None), None),
        "image_size": ((int,), 32),
        "options": ((dict,), {}),
        "train_split": ((str,), "train"),
        "test_split": ((str,), "test"),
        "holdout_per_class": ((int, None), None),
        "max_classes": ((int, None), None),
        "normalize": ((str, list, None), "dataset"),
        "augment": ((str,), "crop_flip"),
        "crop_padding": ((int,), 4),
    },
    "teacher": {
        "arch": ((str,), "resnet32x4"),
        "options": ((dict,), {}),
        "checkpoint": ((str, None), None),
        "epochs": ((int, None), None),
        "lr": ((int, float, None), None),
        "lr_milestones": ((list, None), None),
    },
    "student": {
        "arch": ((str,), "resnet8x4"),
        "options": ((dict,), {}),
    },
    "distill": {
        "method": ((str,), "kd"),
        "ce_weight": (_NUM, 0.1),
        "kd_weight": (_NUM, 0.9),
        "temperature": (_NUM, 4.0),
        "kd_scale": ((str,), "product"),
        "rank_weight": ((int, float, None), None),
        "rank_form": ((str,), "tanh"),
        "rank_k": (_NUM, 100.0),
        "rank_beta": (_NUM, 1.0),
        "rank_subset": ((str,), "all"),
        "rank_fraction": (_NUM, 0.1),
    },
    "mkd": {
        "t_min": (_NUM, 1.0),
        "t_max": (_NUM, 21.0),
        "shared": ((bool,), False),
        "lr": (_NUM, 0.01),
        "heldout": ((str,), "split"),
        "heldout_fraction": (_NUM, 0.1),
        "lookahead_lr": ((int, float, None), None),
        "lookahead_ce": ((bool,), True),
        "every": ((int,), 1),
    },
    "train": {
        "epochs": ((int,), 240),
        "batch_size": ((int,), 64),
        "lr": (_NUM, 0.05),
        "momentum": (_NUM, 0.9),
        "weight_decay": (_NUM, 5e-4),
        "nesterov": ((bool,), False),
        "lr_milestones": ((list,), [150, 180, 210]),
        "lr_gamma": (_NUM, 0.1),
        "eval_every": ((int,), 1),
        "eval_batch_size": ((int,), 256),
        "log_every": ((int,), 50),
        "checkpoint_every": ((int,), 1),
    },
}

METHODS = ("kd", "kd_rank", "mkd", "mkd_rank")
DISTILL_CHOICES: Dict[Tuple[str, str], Any] = {
    ("data", "augment"): ("crop_flip", "crop", "none"),
    ("distill", "method"): METHODS,
    ("distill", "kd_scale"): ("product", "student", "teacher", "none"),
    ("distill", "rank_form"): ("tanh", "sigmoid"),
    ("distill", "rank_subset"): ("all", "top", "bottom"),
    ("mkd", "heldout"): ("split", "train"),
}


def check_distill_config(cfg: Dict[str, Any], source: Source = "config") -> Dict[str, Any]:
    """Range checks the type schema cannot express; returns ``cfg``. ``source``: the file name, or an
    ``Origins`` that blames the override that set a key."""
    where = as_origins(source)

    def positive(section: str, key: str, strict: bool = True, hi: Any = None) -> None:
        value = cfg[section][key]
        if value is not None:
            in_range(value, f"{section}.{key}", 0, hi, lo_open=strict, hi_open=True, source=where(f"{section}.{key}"))

    for key in ("epochs", "batch_size", "lr", "eval_every", "eval_batch_size", "log_every", "checkpoint_every"):
        positive("train", key)
    positive("train", "momentum", strict=False, hi=1)
    positive("train", "weight_decay", strict=False)
    positive("train", "lr_gamma")
    if cfg["train"]["nesterov"] and cfg["train"]["momentum"] == 0:
        raise ConfigError(f"{where('train.nesterov')}: train.nesterov=true needs train.momentum > 0")
    if cfg["threads"] is not None:
        positive_int(cfg["threads"], "threads", source=where("threads"))
    positive("data", "image_size")
    positive("data", "crop_padding", strict=False)
    positive("data", "holdout_per_class")
    positive("data", "max_classes")
    positive("teacher", "epochs")
    positive("teacher", "lr")
    for key in ("ce_weight", "kd_weight", "rank_weight"):
        positive("distill", key, strict=False)
    for key in ("temperature", "rank_k", "rank_beta", "rank_fraction"):
        positive("distill", key)
    for key in ("t_min", "lr", "heldout_fraction", "lookahead_lr", "every"):
        positive("mkd", key)
    for section in ("train", "teacher"):
        ms = cfg[section]["lr_milestones"]
        if ms is not None and (not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in ms)
                               or ms != sorted(ms)):
            raise ConfigError(f"{where(section + '.lr_milestones')}: {section}.lr_milestones must be increasing positive epoch numbers, got {ms!r}")
    mkd = cfg["mkd"]
    if not mkd["t_min"] < cfg["distill"]["temperature"] < mkd["t_max"]:
        raise ConfigError(f"{where('distill.temperature')}: distill.temperature={cfg['distill']['temperature']} must lie strictly inside "
                          f"(mkd.t_min, mkd.t_max) = ({mkd['t_min']}, {mkd['t_max']})")
    if not mkd["heldout_fraction"] < 1:
        raise ConfigError(f"{where('mkd.heldout_fraction')}: mkd.heldout_fraction must be in (0, 1), got {mkd['heldout_fraction']}")
    if cfg["distill"]["rank_fraction"] > 1:
        raise ConfigError(f"{where('distill.rank_fraction')}: distill.rank_fraction must be in (0, 1], got {cfg['distill']['rank_fraction']}")
    return cfg


def available_distill_configs() -> list:
    """Names of the shipped distillation configs (``configs/distill/*.yaml``, not starting with ``_``)."""
    return sorted({p.stem for d in config_dirs() for p in (d / "distill").glob("*.yaml") if not p.stem.startswith("_")})


def resolve_distill_config(name_or_path: str) -> str:
    """A path, or a name looked up in ``configs/distill/`` (kept apart from the few-shot configs, whose
    schema differs), else left to the few-shot lookup (which lists what exists when nothing matches)."""
    if Path(name_or_path).is_file():
        return name_or_path
    for d in config_dirs():
        for candidate in (d / "distill" / name_or_path, d / "distill" / f"{name_or_path}.yaml"):
            if candidate.is_file():
                return str(candidate)
    return name_or_path


def load_distill_config(name_or_path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load, override and validate a ``metakd distill`` config (see the module docstring)."""
    if name_or_path:
        name_or_path = resolve_distill_config(name_or_path)
    overrides = list(overrides)
    cfg = load_config(name_or_path, overrides, schema=DISTILL_SCHEMA, choices=DISTILL_CHOICES)
    return check_distill_config(cfg, Origins(name_or_path or "defaults", overrides))
