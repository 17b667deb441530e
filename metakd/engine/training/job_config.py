"""The config schemas of the supervised jobs: ``metakd distill`` (classification distillation, teacher ->
student) and ``metakd pretrain`` (a backbone pre-trained by classification over all meta-training classes;
``PRETRAIN_SCHEMA`` at the end). Both run on ``metakd.engine.training.supervised.SupervisedTrainer``.

``metakd distill``:

Sections (every key, its type and default; unknown keys are errors naming the key):

- top level: name, seed, device, threads, output_dir, description (as in the few-shot configs).
- data: dataset ("cifar100", "folder", "glyphs", "omniglot" or any registered dataset), root, image_size, options (passed to the loader),
  train_split (a name, or a list whose classes are put together) / test_split, holdout_per_class (int:
  carve the test set out of the *train* split, the last ``holdout_per_class`` instances of every class;
  required for glyphs and omniglot, whose splits hold disjoint classes), val_per_class (the instances
  before those: a validation part, evaluated every epoch; the test part is then scored once, at the end),
  train_per_class (keep the first N training instances of every class), max_classes (keep the first N classes), normalize (null, "dataset" or
  [[mean], [std]]), augment ("crop_flip": random crop with zero padding ``crop_padding`` and
  horizontal flip; "crop": no flip, for glyphs whose mirror images are other characters; "none").
- teacher: arch, options, checkpoint (a ``teacher.pt`` written by this command; null = train one
  first into ``<output_dir>/teacher``), epochs / lr / lr_milestones (null = the train section's values).
- student: arch, options.
- distill: method ("kd", "kd_rank", "mkd", "mkd_rank"), ce_weight, kd_weight, temperature (T),
  kd_scale (see ``metakd.distill.kd``), rank_weight (null = kd_weight, RKKD's default),
  rank_form / rank_k / rank_beta / rank_subset / rank_fraction / rank_k_scale (see ``metakd.distill.rank``).
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

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

from ...config import SCHEMA, Origins, Source, as_origins, config_dirs, load_config
from ...errors import ConfigError
from ...limits import check_bytes, episode_list_bytes
from ...validate import in_range, positive_int

_NUM = (int, float)

DISTILL_SCHEMA: Dict[str, Dict[str, Tuple[tuple, Any]]] = {
    "": {**SCHEMA[""], "name": ((str,), "distill")},  # the few-shot configs' top-level keys
    "data": {
        "dataset": ((str,), "cifar100"),
        "root": ((str, None), None),
        "image_size": ((int,), 32),
        "options": ((dict,), {}),
        "train_split": ((str, list), "train"),
        "test_split": ((str,), "test"),
        "holdout_per_class": ((int, None), None),
        "val_per_class": ((int, None), None),
        "train_per_class": ((int, None), None),
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
        "rank_k_scale": ((str,), "absolute"),
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
    ("distill", "rank_k_scale"): ("absolute", "std"),
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
    positive("data", "val_per_class")
    positive("data", "train_per_class")
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


def resolve_distill_config(name_or_path: str, folder: str = "distill") -> str:
    """A path, or a name looked up in ``configs/<folder>/`` (kept apart from the few-shot configs, whose
    schema differs), else left to the few-shot lookup (which lists what exists when nothing matches)."""
    if Path(name_or_path).is_file():
        return name_or_path
    for d in config_dirs():
        for candidate in (d / folder / name_or_path, d / folder / f"{name_or_path}.yaml"):
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


# -- metakd pretrain

PRETRAIN_SCHEMA: Dict[str, Dict[str, Tuple[tuple, Any]]] = {
    "": {**SCHEMA[""], "name": ((str,), "pretrain")},
    # the few-shot data section (the train split's classes are the labels; the val split gives the
    # validation episodes), plus the training augmentation
    "data": {**SCHEMA["data"],
             "augment": ((str,), "crop_flip"),   # crop_flip | crop (no flip: glyphs) | none
             "crop_padding": ((int,), 8),         # random crop of the image zero-padded by this many pixels
             "color_jitter": (_NUM, 0.0)},        # brightness / contrast / saturation strength (3 channels)
    "model": {"backbone": ((str,), "conv4"), "options": ((dict,), {"bn": "running"})},
    "episodes": dict(SCHEMA["episodes"]),        # the validation episodes (n_way, k_shot, test_q_query)
    "train": {
        "epochs": ((int,), 90),
        "batch_size": ((int,), 64),
        "optimizer": ((str,), "sgd"),
        "lr": (_NUM, 0.05),
        "momentum": (_NUM, 0.9),
        "weight_decay": (_NUM, 5e-4),
        "nesterov": ((bool,), False),
        "lr_schedule": ((str,), "step"),          # step (lr_milestones, lr_gamma) | cosine (over the epochs) | constant
        "lr_milestones": ((list,), [60, 80]),
        "lr_gamma": (_NUM, 0.1),
        "label_smoothing": (_NUM, 0.0),
        "val_every": ((int,), 1),                 # epochs
        "val_episodes": ((int,), 300),
        "log_every": ((int,), 50),                # steps
        "checkpoint_every": ((int,), 1),          # epochs
    },
    "eval": dict(SCHEMA["eval"]),
}

PRETRAIN_CHOICES: Dict[Tuple[str, str], Any] = {
    ("data", "augment"): ("crop_flip", "crop", "none"),
    ("data", "storage"): ("auto", "host", "device"),
    ("train", "optimizer"): ("sgd", "adam", "adamw"),
    ("train", "lr_schedule"): ("step", "cosine", "constant"),
}


def check_pretrain_config(cfg: Dict[str, Any], source: Source = "config") -> Dict[str, Any]:
    """Range checks of a pre-training config; returns ``cfg``."""
    where = as_origins(source)

    def check(section: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        value = cfg[section][key] if section else cfg[key]
        if value is not None:
            fn(value, f"{section}.{key}" if section else key, *args, source=where(f"{section}.{key}"), **kwargs)

    for key in ("epochs", "batch_size", "val_every", "val_episodes", "log_every", "checkpoint_every"):
        check("train", key, positive_int)
    check("", "threads", positive_int)
    check("data", "image_size", positive_int)
    check("data", "crop_padding", in_range, 0)
    check("data", "color_jitter", in_range, 0, 1)
    for key in ("n_way", "k_shot", "test_q_query"):
        check("episodes", key, positive_int)
    check("train", "lr", in_range, 0, lo_open=True)
    check("train", "momentum", in_range, 0, 1, hi_open=True)
    check("train", "weight_decay", in_range, 0)
    check("train", "lr_gamma", in_range, 0, lo_open=True)
    check("train", "label_smoothing", in_range, 0, 1, hi_open=True)
    check("eval", "episodes", positive_int)
    check("eval", "batch_size", positive_int)
    ep = cfg["episodes"]
    for key, count in (("train.val_episodes", cfg["train"]["val_episodes"]), ("eval.episodes", cfg["eval"]["episodes"])):
        check_bytes(key, episode_list_bytes(count, ep["n_way"], ep["k_shot"], ep["test_q_query"]),
                    f"{count} fixed episodes", where(key))
    ms = cfg["train"]["lr_milestones"]
    if not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in ms) or ms != sorted(ms):
        raise ConfigError(f"{where('train.lr_milestones')}: train.lr_milestones must be increasing positive epoch "
                          f"numbers, got {ms!r}")
    if cfg["train"]["nesterov"] and cfg["train"]["momentum"] == 0:
        raise ConfigError(f"{where('train.nesterov')}: train.nesterov=true needs train.momentum > 0")
    if cfg["data"]["dataset"] == "glyphs" and cfg["data"]["augment"] == "crop_flip":
        raise ConfigError(f"{where('data.augment')}: data.augment=crop_flip on glyphs: a mirrored glyph is another "
                          "character; use data.augment=crop")
    return cfg


def available_pretrain_configs() -> list:
    """Names of the shipped pre-training configs (``configs/pretrain/*.yaml``, not starting with ``_``)."""
    return sorted({p.stem for d in config_dirs() for p in (d / "pretrain").glob("*.yaml") if not p.stem.startswith("_")})


def load_pretrain_config(name_or_path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Load, override and validate a ``metakd pretrain`` config (names are looked up in ``configs/pretrain/``)."""
    if name_or_path:
        name_or_path = resolve_distill_config(name_or_path, folder="pretrain")
    overrides = list(overrides)
    cfg = load_config(name_or_path, overrides, schema=PRETRAIN_SCHEMA, choices=PRETRAIN_CHOICES)
    return check_pretrain_config(cfg, Origins(name_or_path or "defaults", overrides))


def job_of(name_or_path: str) -> str:
    """Which job a config belongs to: "pretrain" / "distill" for the shipped configs of those jobs and for
    files in a ``pretrain/`` or ``distill/`` folder, else "train" (the few-shot schema)."""
    path = Path(name_or_path)
    for job, names in (("pretrain", available_pretrain_configs()), ("distill", available_distill_configs())):
        if (not path.is_file() and name_or_path in names) or (path.is_file() and path.resolve().parent.name == job):
            return job
    return "train"


def load_job_config(name_or_path: str, overrides: Iterable[str] = (), job: Optional[str] = None) -> Dict[str, Any]:
    """A config validated by its job's schema (``job``, default ``job_of``): what ``metakd config`` prints."""
    job = job or job_of(name_or_path)
    if job == "pretrain":
        return load_pretrain_config(name_or_path, overrides)
    if job == "distill":
        return load_distill_config(name_or_path, overrides)
    return load_config(name_or_path, overrides)
