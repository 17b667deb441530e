"""A decode-once disk cache of uint8 image arrays: atomic .npy writes, memory-mapped reads, shape checks.

Typical use (decode slow PNG/JPEG data once, then memory-map it on every later run):

    arr = cached_uint8_array(cache_dir / "name-<key>.npy", (N, 84, 84, 3), fill, desc="decoding once")

``fill(out)`` receives a writable uint8 memory map of that shape (so building never needs the
whole array in RAM) and writes every row. With ``shape=None``, ``build()`` takes no argument and
returns the array. Either way the file is written to a temporary name in the same folder and
moved into place with ``os.replace``, so an interrupted build never leaves a half-written cache;
a cache whose header, dtype or shape is wrong is rebuilt. Put everything that should invalidate a
cache (source file sizes and mtimes, image size, channels) into its file name with
``fingerprint`` / ``files_fingerprint``.

Inside ``with inspection():`` (what ``metakd data ROOT`` uses) nothing is built or written: a missing
cache is stood in for by a zero-memory placeholder of the right shape, so a loader can report the
classes and image counts of a split without decoding it, and loader notes are collected, not logged.
"""
from __future__ import annotations

import contextvars
import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write, remove_stale_temps
from ..errors import DataError, MetakdError

log = logging.getLogger("metakd.data")

def user_cache_base() -> Path:
    """``$METAKD_CACHE`` if set, else ``$XDG_CACHE_HOME/metakd``, else ``~/.cache/metakd``."""
    if os.environ.get("METAKD_CACHE"):
        return Path(os.environ["METAKD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metakd"


def default_cache_dir(root: str | os.PathLike) -> Path:
    """``user_cache_base()/<root name>-<hash of root path>``: caches of a dataset live under the cache
    directory, never inside the data root (a shared, possibly read-only folder that is not metakd's)."""
    root = Path(root).expanduser().resolve()
    return user_cache_base() / f"{root.name or 'root'}-{fingerprint(str(root))[:12]}"


def resolve_cache_dir(root: str | os.PathLike, cache_dir: str | os.PathLike | None) -> Path:
    """The folder caches of ``root`` go to: ``cache_dir`` if given, else ``default_cache_dir(root)``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(root)


def fingerprint(*parts: object) -> str:
    """A short stable hex digest of ``repr(parts)`` (use str/int/tuple parts only)."""
    return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:16]


def files_fingerprint(paths: Iterable[Path], base: Optional[Path] = None) -> str:
    """Digest of each file's (path relative to ``base``, size, mtime): changes when a file is added, removed or edited."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        name = os.path.relpath(p, base) if base is not None else str(p)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def load_cached(path: str | os.PathLike, shape: Optional[Sequence[int]] = None) -> Optional[np.ndarray]:
    """Memory-map a cached uint8 .npy read-only; None if missing, unreadable, not uint8 or not of ``shape``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        return None
    if shape is not None and tuple(arr.shape) != tuple(int(s) for s in shape):
        return None
    return arr


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as .npy atomically (``metakd.atomic``: umask-respecting mode)."""
    atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False), what="cache")


class _Inspection:
    def __init__(self) -> None:
        self.notes: List[str] = []
        self.unbuilt: List[str] = []


_INSPECTING: contextvars.ContextVar[Optional[_Inspection]] = contextvars.ContextVar("metakd_inspection", default=None)
_noted: set = set()


@contextmanager
def inspection() -> Iterator[_Inspection]:
    """Within: no cache is built or written and ``note`` collects into ``.notes`` (``.unbuilt``: caches not built)."""
    token = _INSPECTING.set(_Inspection())
    try:
        yield _INSPECTING.get()
    finally:
        _INSPECTING.reset(token)


def inspecting() -> bool:
    return _INSPECTING.get() is not None


def note(message: str) -> None:
    """A loader's remark on what it chose (e.g. one of two layouts): collected while inspecting, else
    logged as a warning once per process."""
    current = _INSPECTING.get()
    if current is not None:
        if message not in current.notes:
            current.notes.append(message)
    elif message not in _noted:
        _noted.add(message)
        log.warning("%s", message)


def _placeholder(shape: Sequence[int]) -> np.ndarray:
    return np.broadcast_to(np.zeros((1,) * len(shape), np.uint8), tuple(shape))


def _cache_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{exc}; pass cache_dir= a writable folder" if isinstance(exc, MetakdError)
                     else f"cannot write the cache {str(path)!r} ({exc}); pass cache_dir= a writable folder")


def cached_uint8_array(
    path: str | os.PathLike,
    shape: Optional[Sequence[int]],
    build: Callable[..., Optional[np.ndarray]],
    desc: str = "",
    stale_glob: Optional[str] = None,
    probe: Optional[Callable[[], None]] = None,
) -> np.ndarray:
    """Return the uint8 array cached at ``path`` (read-only memory map), building it first if needed.

    shape: the expected shape; a cached file of another shape is rebuilt. With a shape, ``build(out)``
        fills the writable uint8 array ``out`` in place; with ``shape=None``, ``build()`` returns the array.
    desc: what is being cached (for the log line and errors).
    stale_glob: after a successful build, other files in the cache folder matching this pattern
        (older versions of the same cache) are deleted.
    probe: while inspecting (see ``inspection``), called instead of building a missing cache (e.g. decode
        one image) so that an unreadable source is still reported; the result is then a placeholder.
    """
    path = Path(path)
    want = tuple(int(s) for s in shape) if shape is not None else None
    cached = load_cached(path, want)
    if cached is not None:
        return cached
    current = _INSPECTING.get()
    if current is not None:  # inspecting: read only
        if want is None:
            return build()
        if probe is not None:
            probe()
        current.unbuilt.append(str(path))
        return _placeholder(want)
    if path.exists():
        log.warning("cache %s is stale or unreadable; rebuilding it", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_error(path, exc) from exc
    for old in remove_stale_temps(path.parent):
        log.info("removed %s, left by an interrupted cache build", old)
    log.info("%s -> %s", desc or "building cache", path)
    try:
        with atomic_path(path, what="cache") as tmp:
            if want is None:
                arr = build()
                if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
                    raise DataError(f"{desc or path}: cache builder must return a uint8 array, got {type(arr).__name__}")
                with open(tmp, "wb") as f:
                    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            elif int(np.prod(want)) == 0:
                with open(tmp, "wb") as f:
                    np.save(f, np.zeros(want, np.uint8), allow_pickle=False)
            else:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=want)
                build(out)
                out.flush()
                del out
    except MetakdError as exc:
        if type(exc) is MetakdError:  # an OS error writing the cache, not a DataError from build
            raise _cache_error(path, exc) from None
        raise
    if stale_glob:
        for old in path.parent.glob(stale_glob):
            if old != path and old.suffix == ".npy":
                try:
                    os.remove(old)
                except OSError:
                    pass
    result = load_cached(path, want)
    if result is None:
        raise DataError(f"cache {str(path)!r} could not be read back after writing it")
    return result


def root_tag(root: str | os.PathLike) -> str:
    """8 hex chars identifying a dataset root, so roots sharing one cache_dir never clash."""
    return fingerprint(str(Path(root).expanduser().resolve()))[:8]


def cache_file(cache_dir: Path, stem: str, key: str) -> tuple[Path, str]:
    """(``cache_dir/<stem>-<key>.npy``, a glob matching ``<stem>-<any 16-hex key>.npy``: its older versions).

    stem names what is cached (dataset, root_tag, split, layout, size...); key (16 hex chars, from
    ``fingerprint``) changes whenever the source does.
    """
    if len(key) != 16:
        raise ValueError(f"cache key must be 16 hex characters, got {key!r}")
    return Path(cache_dir) / f"{stem}-{key}.npy", f"{stem}-{'[0-9a-f]' * 16}.npy"
