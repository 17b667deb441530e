"""Experiment configs: YAML files with inheritance, ``key=value`` overrides, and strict validation.

A config is a nested dict whose sections and keys are fixed by ``SCHEMA`` (unknown keys and wrong
types are errors naming the key and the valid choices). The ``options`` dicts of ``data``, ``model``
and ``learner`` are passed to the registered component, which validates them itself.

A YAML file may start with ``inherit: other.yaml`` (a path relative to it, or a config name in the
configs folder); its keys override the parent's, section by section. Only ``.yaml``/``.yml`` files are
inherited, found relative to the including file or in the configs folders (an absolute path must lie
in a configs folder), and an error never quotes another file's content.

Hostile input is bounded: a document over ``MAX_YAML_BYTES`` or whose aliases expand to more than
``MAX_YAML_NODES`` values ("billion laughs") is refused before it is built, and values in error
messages are cut to a few dozen characters.
"""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
import re
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import yaml

from .errors import ConfigError
from .limits import check_run_sizes, check_threads
from .validate import in_range, positive_int, short_repr

ANY = object()  # a value of any type (free-form dicts)
_NUM = (int, float)

# section -> key -> (allowed types, default). ``None`` in the types means "may be null".
SCHEMA: Dict[str, Dict[str, Tuple[tuple, Any]]] = {
    "": {
        "name": ((str,), "experiment"),
        "seed": ((int,), 0),
        "device": ((str,), "auto"),
        "threads": ((int, None), None),
        "output_dir": ((str, None), None),
        "description": ((str,), ""),
        "tensorboard": ((bool,), False),  # also write TensorBoard event files to output_dir/tensorboard/
    },
    "data": {
        "dataset": ((str,), "glyphs"),
        "root": ((str, None), None),
        "image_size": ((int,), 84),
        "normalize": ((str, list, None), None),
        "train_split": ((str,), "train"),
        "val_split": ((str,), "val"),
        "test_split": ((str,), "test"),
        "storage": ((str,), "auto"),
        "options": ((dict,), {}),
    },
    "episodes": {
        "n_way": ((int,), 5),
        "train_n_way": ((int, None), None),
        "k_shot": ((int,), 1),
        "q_query": ((int,), 15),
        "test_q_query": ((int,), 15),
    },
    "model": {
        "backbone": ((str,), "conv4"),
        "options": ((dict,), {}),
        # start from these weights: a `metakd pretrain` or `metakd train` checkpoint, or its run folder (best.pt);
        # the head is rebuilt where its shape differs (see metakd.engine.assembly.init_weights)
        "init": ((str, None), None),
    },
    "learner": {
        "name": ((str,), "maml"),
        "options": ((dict,), {}),
    },
    "train": {
        "iterations": ((int,), 60000),
        "meta_batch": ((int,), 4),
        "optimizer": ((str,), "adam"),
        "lr": (_NUM, 1e-3),
        "weight_decay": (_NUM, 0.0),
        "momentum": (_NUM, 0.9),
        "lr_schedule": ((str,), "constant"),
        "lr_step": ((int,), 2000),
        "lr_gamma": (_NUM, 0.5),
        "grad_clip": ((int, float, None), None),
        "val_every": ((int,), 1000),
        "val_episodes": ((int,), 300),
        "checkpoint_every": ((int,), 1000),
        "log_every": ((int,), 50),
    },
    "eval": {
        "episodes": ((int,), 600),
        "seed": ((int,), 0),
        "batch_size": ((int,), 8),
        # evaluate on features computed once per image when the learner allows it (metakd.engine.evaluation.feature_cache)
        "cache_features": ((bool,), True),
    },
    # Teacher -> student meta-learning ("meta-distillation"): a trained teacher meta-learner (a `metakd train`
    # checkpoint or run folder, whose best.pt is used) wraps the learner in
    # metakd.learners.distilled.DistilledLearner with ``options``. Called ``teacher:`` before metakd 0.3; that
    # spelling is still read, with a note (``teacher:`` now only means the `metakd distill` job's teacher).
    "meta_teacher": {
        "checkpoint": ((str, None), None),
        "options": ((dict,), {}),
    },
}

VALID_CHOICES = {
    ("", "device"): None,  # free: "auto", "cpu", "cuda", "cuda:1"
    ("train", "optimizer"): ("adam", "adamw", "sgd"),
    ("train", "lr_schedule"): ("constant", "cosine", "step"),
    ("data", "storage"): ("auto", "host", "device"),
}

# keys of earlier metakd versions that are no longer read: dropped when a saved config is validated
RETIRED_KEYS = (("eval", "checkpoint"),)


def defaults(schema: Optional[Dict[str, Dict[str, Tuple[tuple, Any]]]] = None) -> Dict[str, Any]:
    """The full default config of ``schema`` (default: the few-shot SCHEMA) as a nested dict."""
    schema = SCHEMA if schema is None else schema
    out: Dict[str, Any] = {}
    for section, keys in schema.items():
        target = out if section == "" else out.setdefault(section, {})
        for key, (_, default) in keys.items():
            target[key] = copy.deepcopy(default)
    return out


def config_dirs() -> List[Path]:
    """Where config names are looked up: $METAKD_CONFIGS, ./configs (your own), then the configs shipped
    inside the package (``metakd/configs/``, so an installed metakd finds them)."""
    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parent / "configs"]
    extra = os.environ.get("METAKD_CONFIGS")
    if extra:
        dirs.insert(0, Path(extra))
    seen, out = set(), []
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def available_configs() -> List[str]:
    """Names of the config files shipped in the configs folders (without .yaml)."""
    names = set()
    for d in config_dirs():
        names.update(p.stem for p in d.glob("*.yaml") if not p.stem.startswith("_"))
    return sorted(names)


def all_config_names() -> List[str]:
    """Every shipped config name: few-shot, distillation (``distill/``) and pre-training (``pretrain/``)."""
    names = set(available_configs())
    for d in config_dirs():
        for sub in ("distill", "pretrain"):
            names.update(p.stem for p in (d / sub).glob("*.yaml") if not p.stem.startswith("_"))
    return sorted(names)


def not_found_hint(name: str, names: Iterable[str], what: str = "config", list_hint: str = "metakd list configs") -> str:
    """``closest: a, b, c; `metakd list configs` lists all N`` for a name that matched nothing (never the
    whole list: a typo should not print a hundred names)."""
    names = list(names)
    close = difflib.get_close_matches(str(name)[:200], names, n=4, cutoff=0.5)
    near = f"closest {what}s: {', '.join(close)}; " if close else ""
    return f"{near}`{list_hint}` lists all {len(names)}"


def resolve_config_path(name_or_path: str, relative_to: Optional[Path] = None) -> Path:
    """A path to an existing YAML file, or the name of one in the configs folders."""
    p = Path(name_or_path)
    candidates = []
    if relative_to is not None and not p.is_absolute():
        candidates += [relative_to / p, relative_to / f"{name_or_path}.yaml"]
    candidates += [p, Path(f"{name_or_path}.yaml")]
    for d in config_dirs():
        candidates += [d / p, d / f"{name_or_path}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    dirs = ', '.join(map(str, config_dirs())) or 'no configs folder'
    raise ConfigError(f"config {short_repr(name_or_path)} not found (no such file, nor a config of that name in {dirs}); "
                      f"{not_found_hint(name_or_path, all_config_names(), list_hint='metakd list configs (or distill-configs, pretrain-configs)')}")


def resolve_inherited(item: str, including: Path) -> Path:
    """The file ``inherit: item`` in ``including`` names: a ``.yaml``/``.yml`` file relative to the including
    file, or a config name / file in the configs folders. Anything else (``/etc/passwd``, a device, a
    folder) is refused without reading it."""
    p = Path(item)
    dirs = [d.resolve() for d in config_dirs()]
    candidates = [] if p.is_absolute() else [including.parent / p, including.parent / f"{item}.yaml"]
    for d in dirs:  # the few-shot configs, then the pre-training and distillation jobs' folders
        for sub in (d, d / "pretrain", d / "distill"):
            candidates += [sub / p, sub / f"{item}.yaml"] if not p.is_absolute() else []
    if p.is_absolute():
        candidates.append(p)
    for c in candidates:
        if not c.exists():
            continue
        if c.suffix not in (".yaml", ".yml") or not c.is_file():
            raise ConfigError(f"{including}: 'inherit' may only name a .yaml/.yml config file, got {short_repr(item)}")
        if p.is_absolute() and not any(c.resolve().is_relative_to(d) for d in dirs):
            raise ConfigError(f"{including}: 'inherit' with an absolute path must name a file in a configs folder "
                              f"({', '.join(map(str, dirs))}; add one with METAKD_CONFIGS), got {short_repr(item)}; "
                              "or give a path relative to the including file")
        return c
    raise ConfigError(f"{including}: inherited config {short_repr(item)} not found (relative to the including file or "
                      f"in the configs folders); {not_found_hint(item, all_config_names())}")


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document over the size or alias-expansion bounds (a "billion laughs" document)."""


MAX_YAML_BYTES = 1 << 20       # a config file or override: 1 MiB of text
MAX_YAML_NODES = 100_000       # values after expanding every alias


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """How many values ``root`` holds with every alias expanded (memoised per node, so the count is cheap
    even when the expansion is astronomically large); YAMLTooLarge past ``limit`` or on a recursive alias."""
    sizes: Dict[int, int] = {}
    active: set = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLTooLarge("a recursive alias (an anchor used inside itself); configs are trees")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(key)
        if total > limit:
            raise YAMLTooLarge(f"its aliases expand to more than {limit} values (a 'billion laughs' document?); "
                               "write the values out or use fewer aliases")
        sizes[key] = total
        return total

    return size(root)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. PyYAML's YAML 1.1 reading turns the option
    values off/on/yes/no into booleans, so ``amp: off`` or MSD's ``on: prob`` key would change meaning.
    A key given twice in one mapping is an error (PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                first = seen.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r} (first at line {first.start_mark.line + 1}); "
                        "each key may appear once in a mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, MAX_YAML_NODES)
        return self.construct_document(node)


_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def load_yaml(text: str) -> Any:
    """YAML text parsed with YAML 1.2 booleans (see ``_Loader``); YAMLTooLarge over MAX_YAML_BYTES or
    MAX_YAML_NODES expanded values."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLTooLarge(f"{len(text)} characters, more than the {MAX_YAML_BYTES} a config may hold")
    return yaml.load(text, Loader=_Loader)


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A PyYAML error (several lines, with a source excerpt) as one line: where, then what."""
    if isinstance(exc, YAMLTooLarge):
        return f"refused: {exc}"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(p) for p in (exc.problem, exc.context) if p)
        return f"not valid YAML{where}: {what}"
    return f"not valid YAML: {' '.join(str(exc).split())}"


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: not a regular file; a config is a .yaml file")
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than the {MAX_YAML_BYTES} bytes a config file may hold")
    except OSError as exc:
        from .atomic import describe_os_error

        raise ConfigError(f"{path}: cannot read the config file: {describe_os_error(exc)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at line {line}); "
                          "save the config as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {yaml_error_line(exc)}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty; expected a mapping of sections "
                          "(e.g. 'inherit: maml_glyphs_5w1s' or 'train: {iterations: 100}')")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    if "inherit" in data and not isinstance(data["inherit"], (str, list)):
        raise ConfigError(f"{path}: 'inherit' must be a config name or path, got {type(data['inherit']).__name__}")
    return data


def _load_raw(path: Path, chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: circular 'inherit' ({' -> '.join(map(str, chain + (path,)))})")
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    parents = parent if isinstance(parent, list) else [parent]
    merged: Dict[str, Any] = {}
    for item in parents:
        if not isinstance(item, str):
            raise ConfigError(f"{path}: 'inherit' must be a config name or path, got {type(item).__name__}")
        merge(merged, _load_raw(resolve_inherited(item, path), chain + (path,)))
    return merge(merged, data)


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge ``update`` into ``base`` (in place) and return ``base``."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_overrides(items: Iterable[str]) -> Dict[str, Any]:
    """``["train.lr=0.01", "learner.options.first_order=true"]`` -> a nested dict (values parsed as YAML)."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {short_repr(item)} must look like section.key=value (e.g. train.lr=0.01)")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw != "" else ""
        except YAMLTooLarge as exc:
            raise ConfigError(f"override {short_repr(item)}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {short_repr(item)} has an empty key")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {short_repr(item)} conflicts with an earlier override of {short_repr(p)}")
        node[parts[-1]] = value
    return out


def _type_name(types: tuple) -> str:
    return " or ".join("null" if t is None else t.__name__ for t in types)


class Origins:
    """Where each key's value came from, for error messages: the ``key=value`` override that set it,
    else ``source`` (the config file, or "defaults"). Called with a dotted key, returns the source."""

    def __init__(self, source: str, overrides: Iterable[str] = ()):
        self.source = source
        self.items: Dict[str, str] = {}
        for item in overrides:
            key = ".".join(p for p in item.split("=", 1)[0].strip().split(".") if p)
            self.items.pop(key, None)
            self.items[key] = item

    def __call__(self, key: str) -> str:
        if key in self.items:
            return f"override {short_repr(self.items[key])}"
        for k, item in reversed(list(self.items.items())):
            if k.startswith(key + "."):
                return f"override {short_repr(item)}"
        return self.source


Source = Union[str, Callable[[str], str]]


def as_origins(source: Source, overrides: Iterable[str] = ()) -> Callable[[str], str]:
    return source if callable(source) else Origins(source, overrides)


def validate(cfg: Dict[str, Any], source: Source = "config",
             schema: Optional[Dict[str, Dict[str, Tuple[tuple, Any]]]] = None,
             choices: Optional[Dict[Tuple[str, str], Any]] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Check every section and key against ``schema`` and return a full config (defaults filled in).

    schema: section -> key -> (types, default); default the few-shot SCHEMA, whose range checks then
    apply too. choices: (section, key) -> allowed values (default VALID_CHOICES with SCHEMA).
    source: the file name errors start with (or an ``Origins``); keys set by one of ``overrides`` are
    blamed on that override instead.
    """
    where = as_origins(source, overrides)
    if schema is not None:
        return _check_common(_validate_keys(cfg, where, schema, choices or {}), where)
    cfg = renamed_sections(cfg, where)
    for section, key in RETIRED_KEYS:
        if isinstance(cfg.get(section), dict) and key in cfg[section]:
            cfg = {**cfg, section: {k: v for k, v in cfg[section].items() if k != key}}
    out = _validate_keys(cfg, where, SCHEMA, VALID_CHOICES)

    def check(key: str, fn, *args, **kwargs) -> None:
        section, _, sub = key.rpartition(".")
        value = out[section][sub] if section else out[sub]
        if value is not None:
            fn(value, key, *args, source=where(key), **kwargs)

    check("threads", positive_int)
    check("data.image_size", positive_int)
    for key in ("n_way", "train_n_way", "k_shot", "q_query", "test_q_query"):
        check(f"episodes.{key}", positive_int)
    for key in ("meta_batch", "lr_step", "val_every", "val_episodes", "checkpoint_every", "log_every"):
        check(f"train.{key}", positive_int)
    # 0: no meta-training; the run saves the initial (e.g. model.init) weights as best.pt / last.pt
    check("train.iterations", in_range, 0)
    check("train.lr", in_range, 0, lo_open=True)
    check("train.weight_decay", in_range, 0)
    check("train.momentum", in_range, 0, 1, hi_open=True)
    check("train.lr_gamma", in_range, 0, lo_open=True)
    check("train.grad_clip", in_range, 0, lo_open=True)
    check("eval.episodes", positive_int)
    check("eval.batch_size", positive_int)
    check_run_sizes(out, where)
    return _check_common(out, where)


def check_run_name(name: Any, source: str = "config") -> str:
    """A run ``name`` is one path component (it names the folder ``runs/<name>``): no ``/``, no ``..``."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name \
            or "\0" in name or len(name.encode("utf-8", "surrogateescape")) > 200:
        raise ConfigError(f"{source}: 'name' must be a single folder name (no '/', not '.' or '..', at most 200 "
                          f"bytes; it names runs/<name>), got {short_repr(name)}")
    return name


def _check_common(out: Dict[str, Any], where: Callable[[str], str]) -> Dict[str, Any]:
    """Keys every job shares: the run name and the CPU thread count (bounded to the machine)."""
    if "name" in out:
        check_run_name(out["name"], where("name"))
    if out.get("threads") is not None:
        check_threads(out["threads"], "threads", where("threads"))
    return out


# few-shot sections that were renamed: old name -> new name
RENAMED_SECTIONS = {"teacher": "meta_teacher"}


def renamed_sections(cfg: Dict[str, Any], where: Callable[[str], str] = lambda key: "config") -> Dict[str, Any]:
    """``cfg`` with the old spelling of a renamed section (``teacher:`` in a few-shot config, now
    ``meta_teacher:``) moved to the new one, with a FutureWarning naming both; both spellings at once is an error."""
    if not any(old in cfg for old in RENAMED_SECTIONS):
        return cfg
    cfg = dict(cfg)
    for old, new in RENAMED_SECTIONS.items():
        if old not in cfg:
            continue
        if new in cfg:
            raise ConfigError(f"{where(old)}: both '{old}:' and '{new}:' are set; '{old}:' is the old name of "
                              f"'{new}:' (teacher -> student meta-learning): keep only '{new}:'")
        warnings.warn(f"{where(old)}: the few-shot section '{old}:' is now called '{new}:' (teacher -> student "
                      f"meta-learning); rename it ('{old}:' in a `metakd distill` config is the classification teacher)",
                      FutureWarning, stacklevel=3)
        cfg[new] = cfg.pop(old)
    return cfg


def _validate_keys(cfg: Dict[str, Any], where: Callable[[str], str], schema, choices) -> Dict[str, Any]:
    out = defaults(schema)
    sections = [s for s in schema if s]
    for key, value in cfg.items():
        if key in schema[""]:
            out[key] = _check(where(key), key, value, schema[""][key], ("", key), choices)
        elif key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{where(key)}: section {key!r} must be a mapping, got {short_repr(value)}")
            for sub, subval in value.items():
                if sub not in schema[key]:
                    raise ConfigError(
                        f"{where(f'{key}.{sub}')}: unknown key {short_repr(f'{key}.{sub}')}; valid keys of '{key}': {', '.join(schema[key])}"
                    )
                out[key][sub] = _check(where(f"{key}.{sub}"), f"{key}.{sub}", subval, schema[key][sub], (key, sub), choices)
        else:
            raise ConfigError(
                f"{where(str(key))}: unknown key {short_repr(key)}; valid top-level keys: {', '.join(list(schema['']) + sections)}"
            )
    return out


def _check(source: str, key: str, value: Any, spec: Tuple[tuple, Any], where: Tuple[str, str],
           choices_by_key: Dict[Tuple[str, str], Any]) -> Any:
    types, _ = spec
    if value is None:
        if None in types:
            return None
        raise ConfigError(f"{source}: '{key}' may not be null; expected {_type_name(types)}")
    real = tuple(t for t in types if t is not None)
    ok = isinstance(value, real) and not (isinstance(value, bool) and bool not in real)
    if not ok and float in real and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{source}: '{key}' expected {_type_name(types)}, got {short_repr(value)} ({type(value).__name__})")
    choices = choices_by_key.get(where)
    if choices and value not in choices:
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(choices)}, got {short_repr(value)}")
    return copy.deepcopy(value)


def load_config(name_or_path: Optional[str] = None, overrides: Iterable[str] = (),
                schema: Optional[Dict[str, Dict[str, Tuple[tuple, Any]]]] = None,
                choices: Optional[Dict[Tuple[str, str], Any]] = None) -> Dict[str, Any]:
    """Load a config by name or path (or the defaults), apply ``key=value`` overrides, validate
    against ``schema`` (default: the few-shot SCHEMA; other jobs such as distillation pass theirs).
    Errors name the override that set a bad value, else the file."""
    raw: Dict[str, Any] = {}
    label = "defaults"
    if name_or_path:
        path = resolve_config_path(name_or_path)
        raw = _load_raw(path)
        label = str(path)
        raw.setdefault("name", path.stem)
    overrides = list(overrides)
    if overrides:
        merge(raw, parse_overrides(overrides))
    return validate(raw, Origins(label, overrides), schema, choices)


def dump_config(cfg: Dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
