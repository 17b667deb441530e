"""Atomic checkpoints and exact resume: model, optimiser, every RNG state and the step.

Checkpoints hold plain data only (tensors, numbers, strings, lists, tuples, dicts) and are read with
``torch.load(weights_only=True)``: a file that needs anything else to unpickle (a class, a function
such as ``os.system``) is refused, so opening a checkpoint from elsewhere cannot run code.
"""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np
import torch

from ...atomic import atomic_write
from ...errors import ConfigError, MetakdError

PRETRAIN_KIND = "metakd-pretrain"  # a `metakd pretrain` checkpoint: a backbone's state under "model"


def rng_state() -> Dict[str, Any]:
    """The state of Python's, NumPy's legacy and torch's (CPU and every CUDA device) generators, as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                    int(has_gauss), float(cached)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, obj: Any, what: str = "checkpoint") -> Path:
    """``torch.save`` through ``metakd.atomic.atomic_write``: a crash mid-write never leaves a truncated
    checkpoint behind; an OS error is one MetakdError naming the file (torch wraps a failed write, a
    full disk say, in a RuntimeError: the OSError under it is what is reported)."""
    return atomic_write(path, lambda f: torch_save(obj, f), what=what)


def torch_save(obj: Any, f: Any) -> None:
    """``torch.save(obj, f)`` re-raising the OSError (ENOSPC, EDQUOT, EIO) that torch wraps in a RuntimeError,
    so ``metakd.atomic`` reports it as one line ("the disk is full")."""
    try:
        torch.save(obj, f)
    except RuntimeError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            raise cause from None
        raise


def _legacy_numpy_globals() -> list:
    """What NumPy arrays need to unpickle (metakd <= 0.1 stored the legacy NumPy RNG state as one): array
    reconstruction only; any object inside still goes through the restricted unpickler."""
    core = getattr(np, "_core", None) or np.core
    out = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in ("UInt32DType", "Int64DType", "Float64DType") if hasattr(dtypes, n)]
    return out


def safe_load(path: Path, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``; MetakdError naming ``path`` when it cannot be read or
    would need objects metakd never stores (which may run code)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if re.search(r"GLOBAL |Trying to call reduce|Can only (create new object|build)", text):
            found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text))) or ["a class or function"]
            raise MetakdError(f"refused to load {what} {path}: it contains objects metakd does not store "
                              f"({', '.join(found)}); it may run code") from None
        reason = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text.strip() else ""
        raise MetakdError(f"{what} {path} could not be read (UnpicklingError: {reason}); "
                          "is it a metakd checkpoint?") from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise MetakdError(f"{what} {path} could not be read ({type(exc).__name__}: {first}); "
                          "is it a metakd checkpoint?") from None


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a metakd checkpoint, with a clear error for a missing, truncated, foreign or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise MetakdError(f"checkpoint {path} does not exist")
    return check_learner_checkpoint(safe_load(path, map_location), path)


def check_learner_checkpoint(ckpt: Any, path: Path) -> Dict[str, Any]:
    """``ckpt`` (read from ``path``) if it is a `metakd train` checkpoint, else a MetakdError naming what is
    missing. Its embedded config is validated like a config file (``checked_config``)."""
    if not isinstance(ckpt, dict) or "learner" not in ckpt or "config" not in ckpt:
        keys = sorted(map(str, ckpt))[:12] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise MetakdError(f"checkpoint {path} is not a metakd checkpoint: expected keys 'learner' and 'config', found {keys}")
    ckpt["config"] = checked_config(ckpt["config"], path)
    return ckpt


# keys of a saved config that name places on the machine that wrote it: a checkpoint never chooses where
# this machine writes (its output folder, its caches)
LOCATION_KEYS = ("output_dir", "data.options.cache_dir")


def without_locations(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg`` (a mapping read from a checkpoint) without LOCATION_KEYS and the saving machine's thread count."""
    cfg = dict(cfg)
    cfg.pop("output_dir", None)
    cfg.pop("threads", None)
    data = cfg.get("data")
    if isinstance(data, dict) and isinstance(data.get("options"), dict) and "cache_dir" in data["options"]:
        cfg["data"] = {**data, "options": {k: v for k, v in data["options"].items() if k != "cache_dir"}}
    return cfg


def checked_config(cfg: Any, path: Path, schema: Any = None) -> Dict[str, Any]:
    """A checkpoint's embedded config checked with the schema of a config file (default: the few-shot
    SCHEMA), without the places it names (``without_locations``); MetakdError naming the file otherwise."""
    from ...config import validate

    if not isinstance(cfg, dict):
        raise MetakdError(f"checkpoint {path}: its config is a {type(cfg).__name__}, not a mapping of sections")
    try:
        return validate(without_locations(cfg), f"checkpoint {path} (its config)", schema)
    except ConfigError as exc:
        raise MetakdError(f"checkpoint {path} holds a config that is not valid: {exc}") from None


def find_checkpoint(path: str | Path, which: str = "best", *, key: str = "", hint: str = "") -> Path:
    """The checkpoint file ``path`` names: the file itself, or ``<run folder>/<which>.pt``; checked to exist.

    The one resolver for `metakd eval` / `robustness` (best.pt), ``model.init`` (best.pt),
    ``meta_teacher.checkpoint`` (best.pt) and the distillation ``teacher.checkpoint`` (teacher.pt). key: the
    config key that named the path (its errors are then ConfigErrors naming it); hint: what to give instead."""
    path = Path(path)
    error = ConfigError if key else MetakdError
    prefix = f"{key}: " if key else ""
    tail = f"; {hint}" if hint else ""
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.pt"))) or "no checkpoints"
            raise error(f"{prefix}run directory {path} has no {which}.pt (found: {found}){tail}")
        return candidate
    if not path.is_file():
        raise error(f"{prefix}{'' if key else 'checkpoint '}{path} does not exist{tail}")
    return path

def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__


def state_dict_mismatch(model: Mapping[str, Any], saved: Mapping[str, Any], limit: int = 4) -> str:
    """What keeps ``saved`` from loading into ``model`` (shape differences, missing and extra keys), one
    line; empty when they fit."""
    shapes = [f"{k}: checkpoint {_shape(saved[k])} vs model {_shape(v)}" for k, v in model.items()
              if k in saved and _shape(saved[k]) != _shape(v)]
    missing = [k for k in model if k not in saved]
    extra = [k for k in saved if k not in model]
    parts = []
    for label, items in (("shape mismatch", shapes), ("missing in the checkpoint", missing), ("not in the model", extra)):
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {'; '.join(items[:limit])}{more}")
    return "; ".join(parts)
