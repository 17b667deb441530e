"""Reading the pickled dicts that few-shot benchmarks ship, safely and with clear errors.

Benchmark pickles come from mirrors of unknown origin, and unpickling can run arbitrary code, so
``load_pickle`` only accepts plain data: numpy arrays and scalars, lists, tuples, dicts, sets,
str/bytes/numbers. Python-2 pickles are read with ``encoding="bytes"`` (py2 ``str`` -> ``bytes``)
or ``"latin1"``; ``text_keys`` then turns bytes keys into str so both kinds of copy look alike.
"""
from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import DataError
from ..limits import human, memory_limit

_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"

# (module, name) pairs a data pickle may reference; py2 module names are mapped by pickle itself.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
    ]
    + [
        ("builtins", n)
        for n in ("object", "list", "dict", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str",
                  "bytes", "bytearray", "slice", "range")
    ]
)
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _DataOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that refuses any global outside ``_ALLOWED_GLOBALS`` and a ``bytes``/``bytearray`` call
    asking for more than ``_max_bytes``."""

    _max_bytes = 1 << 40

    def find_class(self, module: str, name: str) -> Any:
        canonical = _PY2_MODULES.get(module, module)
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: metakd only unpickles plain data (numpy arrays, lists, dicts)"
            )
        if canonical.startswith("numpy.core."):
            canonical = _NUMPY_CORE + canonical[len("numpy.core"):]  # avoids numpy 2's deprecation shim
        if canonical == "builtins" and name in ("bytearray", "bytes"):
            return _sized(getattr(builtins, name), self._max_bytes)
        return super().find_class(canonical, name)


def _sized(kind: type, max_bytes: int) -> Any:
    """``bytes`` / ``bytearray`` that refuse a requested size over ``max_bytes`` (a pickle can ask for
    ``bytearray(10**15)`` in a few bytes)."""

    def make(*args: Any) -> Any:
        if args and isinstance(args[0], int) and args[0] > max_bytes:
            raise pickle.UnpicklingError(f"it asks for a {args[0]}-byte {kind.__name__}, more than the file could hold "
                                         "or this process may use")
        return kind(*args)

    return make


def load_pickle(path: Path, *, encoding: str = "bytes", what: str = "pickle") -> Any:
    """Unpickle ``path`` (plain data only); DataError naming the file if missing, truncated or corrupt."""
    try:
        with open(path, "rb") as f:
            unpickler = _DataOnlyUnpickler(f, encoding=encoding)
            unpickler._max_bytes = min(memory_limit() // 2, max(os.fstat(f.fileno()).st_size, 1) * 1024)
            return unpickler.load()
    except FileNotFoundError:
        raise DataError(f"{str(path)!r}: {what} file not found") from None
    except MemoryError:  # a corrupt or hostile length field: one line, never a MemoryError traceback
        raise DataError(f"{str(path)!r}: cannot read {what}: it asks for more memory than this process may use "
                        f"({human(memory_limit())}); is the file corrupt?") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... all mean "not a readable pickle"
        kind = "truncated" if isinstance(exc, EOFError) else "corrupt or not a pickle"
        raise DataError(f"{str(path)!r}: cannot read {what} ({kind}): {type(exc).__name__}: {exc}") from exc


def as_text(value: Any) -> str:
    """str of a key or name that may be py2 bytes (decoded as UTF-8, latin-1 as a fallback)."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).decode("latin-1")
    return str(value)


def text_keys(obj: Any, path: Path, what: str) -> dict[str, Any]:
    """``obj`` as a dict with str keys (bytes keys decoded); DataError if it is not a dict."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{str(path)!r}: expected the {what} to be a dict, got {type(obj).__name__}")
    return {as_text(k): v for k, v in obj.items()}


def require_keys(d: Mapping[str, Any], keys: Iterable[str], path: Path, what: str, hint: str = "") -> None:
    """DataError naming the keys found and the keys expected when any of ``keys`` is absent."""
    keys = list(keys)
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(
            f"{str(path)!r}: {what} lacks key(s) {', '.join(map(repr, missing))}; expected keys "
            f"{', '.join(map(repr, keys))}, found {', '.join(map(repr, sorted(d))) or '(none)'}"
            + (f". {hint}" if hint else "")
        )


def uint8_images(value: Any, path: Path, key: str) -> np.ndarray:
    """``value`` checked to be a uint8 (N, H, W, 3) array; DataError naming the key otherwise."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{str(path)!r}: {key!r} must be a uint8 array (N, H, W, 3), got {type(value).__name__}")
    if value.dtype != np.uint8 or value.ndim != 4 or value.shape[-1] != 3:
        raise DataError(
            f"{str(path)!r}: {key!r} must be a uint8 array of shape (N, H, W, 3), got {value.dtype} {value.shape}"
        )
    return value


def int_labels(value: Any, path: Path, key: str, count: int | None = None) -> np.ndarray:
    """``value`` (list or array of ints) as int64 (N,); DataError on non-integers or a length mismatch."""
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise DataError(f"{str(path)!r}: {key!r} must be a list of integer labels ({exc})") from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(
            f"{str(path)!r}: {key!r} must be a 1-D list of integer labels, got {arr.dtype} of shape {arr.shape}"
        )
    if count is not None and arr.shape[0] != count:
        raise DataError(f"{str(path)!r}: {key!r} has {arr.shape[0]} labels but there are {count} images")
    return arr.astype(np.int64, copy=False)


def remap_sorted(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary int labels to 0..C-1 in sorted order: returns (new labels (N,), original ids (C,))."""
    ids, new = np.unique(labels, return_inverse=True)
    return new.astype(np.int64).reshape(-1), ids
