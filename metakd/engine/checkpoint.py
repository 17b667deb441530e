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
from typing import Any, Dict

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import MetakdError


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


def save_atomic(obj: Any, path: Path, what: str = "checkpoint") -> Path:
    """``torch.save`` through ``metakd.atomic.atomic_write``: a crash mid-write never leaves a truncated
    checkpoint behind; an OS error is one MetakdError naming the file."""
    return atomic_write(path, lambda f: torch.save(obj, f), what=what)


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
    ckpt = safe_load(path, map_location)
    if not isinstance(ckpt, dict) or "learner" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise MetakdError(f"checkpoint {path} is not a metakd checkpoint: expected keys 'learner' and 'config', found {keys}")
    return ckpt
