"""The one way metakd writes a file: a temporary file beside it, fsync, then rename over the target.

- A crash never leaves a half-written file under the final name (the rename is atomic).
- The file gets the permissions the umask gives any new file (``tempfile.mkstemp`` would make it
  0600, hiding a lab's shared run folders and caches from colleagues).
- Temporaries are named ``<name>.metakd.<host>.<pid>-<token>.tmp``, so ``remove_stale_temps`` can delete
  those of a writer that died (SIGKILL, power loss) at the next start without touching a live one's,
  and never touches a file it did not name (a user's ``*.tmp`` partial download, however old).
- Every OS failure (read-only folder, full disk, a name too long, a file where a folder should be)
  becomes one ``MetakdError`` naming the path and the reason.
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from .errors import MetakdError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
TEMP_TAG = "metakd"  # every temporary metakd names carries ".metakd.<host>.<pid>-<token>.tmp"
_TEMP = re.compile(r"^(?P<name>.+)\.metakd\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")


def describe_os_error(exc: OSError) -> str:
    """A short reason for an OS error, with the usual causes spelled out."""
    hints = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
             errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "a path component is longer than the file system allows",
             errno.ENOTDIR: "a path component is a file, not a folder", errno.EISDIR: "it is a folder"}
    return hints.get(exc.errno, exc.strerror or type(exc).__name__)


def write_error(path: Union[str, os.PathLike], exc: OSError, what: str = "file") -> MetakdError:
    return MetakdError(f"cannot write the {what} {str(path)!r}: {describe_os_error(exc)}")


def temp_path_for(path: Union[str, os.PathLike]) -> Path:
    """A fresh temporary name in ``path``'s folder, tagged with this host and process."""
    path = Path(path)
    return path.with_name(f"{path.name}.{TEMP_TAG}.{_HOST}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Union[str, os.PathLike], what: str = "file", fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success it is fsynced and renamed
    over ``path``, on any exception (Ctrl-C included) it is removed and ``path`` is untouched.

    For writers that want a path (``np.lib.format.open_memmap``, ``fig.savefig``); others use
    ``atomic_write``. The temporary is created empty first (mode 0666 less the umask), so a writer
    that reopens it keeps those permissions.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise write_error(path, exc, what) from None
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise write_error(path, exc, what) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, str, Callable[[Any], None]],
                 what: str = "file", fsync: bool = True) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a callable given the open binary file) to ``path``
    atomically. Returns ``path``."""
    path = Path(path)
    with atomic_path(path, what=what, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
    return path


def write_json(path: Union[str, os.PathLike], obj: Any, what: str = "JSON file", **dump_kwargs: Any) -> Path:
    """``json.dumps(obj, indent=2)`` written atomically."""
    dump_kwargs.setdefault("indent", 2)
    return atomic_write(path, json.dumps(obj, **dump_kwargs), what=what)


def check_writable(path: Union[str, os.PathLike], what: str = "file") -> None:
    """Fail now, before the work, if ``path`` cannot be written: create (and remove) a temporary beside
    it, named as this module names them. Creates the missing parent folders."""
    path = Path(path)
    probe = temp_path_for(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.remove(probe)
    except OSError as exc:
        raise write_error(path, exc, what) from None


def write_with_fallback(target: Union[str, os.PathLike], write: Callable[[Path], Any],
                        prefix: str) -> Tuple[Path, Optional[str]]:
    """``write(target)``; when that fails (MetakdError), ``write(<new temp folder>/<target name>)`` so
    the work is not lost. Returns (where it went, the first failure's message or None)."""
    try:
        write(target)
        return Path(target), None
    except MetakdError as exc:
        fallback = Path(tempfile.mkdtemp(prefix=prefix)) / Path(target).name
        write(fallback)
        return fallback, str(exc)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_metakd_temp(name: str) -> bool:
    """Whether ``name`` is a temporary named by ``temp_path_for`` (carries metakd's tag)."""
    return _TEMP.match(name) is not None


def remove_stale_temps(folder: Union[str, os.PathLike]) -> List[Path]:
    """Delete the temporaries in ``folder`` that carry metakd's tag and were left by a writer on this
    host that is no longer running. Nothing else is touched: not a live writer's temporary, not one
    from another host, not a user's own ``*.tmp`` of any age. Returns what was removed; a folder that
    does not exist or cannot be listed removes nothing."""
    removed: List[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        stale = m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
        if stale and _remove_quietly(entry.path):
            removed.append(Path(entry.path))
    return removed


def _remove_quietly(path: Union[str, os.PathLike]) -> bool:
    try:
        os.remove(path)
        return True
    except OSError:
        return False
