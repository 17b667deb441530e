"""One writer per run folder: an OS lock (``fcntl.flock``) on ``<folder>/.metakd.lock``, held for the run's life.

Two ``metakd train`` into one folder, ``--overwrite`` or ``--resume`` of a run that is still writing,
an evaluation writing next to a live run's checkpoint: the second process gets one MetakdError naming
the folder and the holder (its PID, host and command, which the holder writes into the lock file).
The kernel releases the lock when the holder exits, however it dies (SIGKILL, OOM, power loss of a
client), so a killed run resumes without manual cleanup; the lock file itself stays, empty of
meaning until the next holder locks it. Holding is re-entrant within one process (the CLI takes the
lock before ``--overwrite`` deletes anything, the trainer takes it again for the run).

On network file systems ``flock`` is forwarded to the server (NFSv4, Lustre, GPFS with locking on).
"""
from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

from ...atomic import describe_os_error
from ...errors import MetakdError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are then unguarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".metakd.lock"

_held: Dict[str, List] = {}  # lock file path -> [fd, depth]


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 400).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return " ".join(text.split()) or "pid and host unknown"


@contextmanager
def hold(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) within the block; MetakdError naming
    ``what`` and the holder when another process holds it."""
    key = os.path.abspath(lock_path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _release(key)
        return
    fd = _acquire(key, what)
    try:
        os.ftruncate(fd, 0)
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:3]))[:120]
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     f"{', command ' + command if command else ''}\n".encode())
    except OSError:
        pass  # the lock holds without the note
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        _release(key)


def _acquire(key: str, what: str) -> int:
    """An open descriptor of ``key`` holding its exclusive flock. A lock file that its previous holder
    removed while we waited to lock it is opened again (the lock must be on the file the name names)."""
    for _ in range(100):
        try:
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise MetakdError(f"cannot lock {what}: cannot create {key}: {describe_os_error(exc)}") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise MetakdError(f"{what} is in use by another metakd process ({holder}); one folder takes one writer: "
                              "wait for it to finish or stop it, or choose another output folder") from None
        except OSError as exc:
            os.close(fd)
            raise MetakdError(f"cannot lock {what} ({key}): {describe_os_error(exc)}") from None
        try:
            if os.stat(key).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise MetakdError(f"cannot lock {what}: its lock file {key} keeps being replaced")


def drop_lock_file(folder: Path, remove_folder: bool = False) -> None:
    """While holding ``folder``'s lock as its only user in this process: remove the lock file (a folder
    metakd did not make a run folder keeps no trace of it), and with ``remove_folder`` the folder too
    when nothing else is in it."""
    key = os.path.abspath(Path(folder) / LOCK_NAME)
    if _held.get(key, [None, 0])[1] != 1:
        return
    try:
        os.remove(key)
        if remove_folder and not os.listdir(folder):
            os.rmdir(folder)
    except OSError:
        pass


def _release(key: str) -> None:
    entry = _held[key]
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        os.close(entry[0])  # closing the last descriptor releases the flock


def hold_folder(folder: Path, what: str = "run folder") -> "contextmanager":
    """``hold`` on ``<folder>/.metakd.lock``; the folder must exist."""
    return hold(Path(folder) / LOCK_NAME, f"the {what} {str(folder)!r}")


def holds(folder: Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return os.path.abspath(Path(folder) / LOCK_NAME) in _held
