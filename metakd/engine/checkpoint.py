"""Atomic checkpoints and exact resume: model, optimiser, every RNG state and the step."""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..errors import MetakdError


def rng_state() -> Dict[str, Any]:
    """The state of Python's, NumPy's legacy and torch's (CPU and every CUDA device) generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``: a crash
    mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a metakd checkpoint, with a clear error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise MetakdError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, pickle error, ...
        raise MetakdError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc}); is it a metakd checkpoint?") from None
    if not isinstance(ckpt, dict) or "learner" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise MetakdError(f"checkpoint {path} is not a metakd checkpoint: expected keys 'learner' and 'config', found {keys}")
    return ckpt
