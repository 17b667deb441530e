"""Run folders and run interruption, shared by ``metakd train``, ``metakd pretrain`` and ``metakd distill``.

- ``check_output_dir`` / ``make_output_dir``: a folder that cannot hold a run (read-only, under a
  file, a file itself, on a full disk, a name too long) is one MetakdError naming it, before the work.
- ``run_lock``: the one-writer lock of a run folder (``metakd.engine.runs.lock``), held for a run's life.
- ``prepare_run_folder``: a new run refuses a folder holding any of metakd's names; the run writes a
  manifest (``metakd-manifest.json``) listing the files it creates.
- ``clear_run``: what ``--overwrite`` deletes: the manifest's entries only; a folder without one is refused.
- ``config_differences``: the keys by which a resumed run's config differs from its checkpoint's.
- ``StopGuard``: SIGINT and SIGTERM only set a flag; the loop stops at the next step boundary, so the
  saved state is always that of a completed step. Regions marked ``abandonable`` (validation, which
  changes no training state) are cut short at once; a signal while saving only prints a note.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from ...atomic import atomic_write, describe_os_error, is_metakd_temp, remove_stale_temps, write_json
from ...errors import MetakdError
from .lock import LOCK_NAME, drop_lock_file, hold_folder

MIN_FREE_BYTES = 1 << 20


def _fail(folder: Path, reason: str) -> MetakdError:
    return MetakdError(f"cannot use the output folder {str(folder)!r}: {reason}")


def check_output_dir(folder: Path) -> None:
    """Raise unless ``folder`` exists as a writable folder or can be created; creates nothing."""
    folder = Path(os.path.abspath(folder))
    if folder.exists() and not folder.is_dir():
        raise _fail(folder, "it is a file, not a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise _fail(folder, f"{probe} is a file, not a folder")
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in folder.relative_to(probe).parts:
        if len(os.fsencode(part)) > name_max:
            raise _fail(folder, f"the name {part[:40]!r}... is longer than the file system allows ({name_max} bytes)")
    if not os.access(probe, os.W_OK | os.X_OK):
        reason = "the file system is read-only" if _read_only(probe) else "permission denied"
        raise _fail(folder, reason)
    try:
        st = os.statvfs(probe)
        if st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
            raise _fail(folder, f"the disk is full ({st.f_bavail * st.f_frsize} bytes free)")
    except OSError:
        pass


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def make_output_dir(folder: Path) -> None:
    """``check_output_dir``, then create the folder (MetakdError naming it on failure)."""
    check_output_dir(folder)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(Path(folder), describe_os_error(exc)) from None


@contextmanager
def run_lock(folder: Path, active: bool = True, what: str = "run folder") -> Iterator[None]:
    """Create ``folder`` and hold its one-writer lock within the block (``active`` False: do nothing, e.g.
    on the ranks of a distributed run that write no file)."""
    if not active:
        with nullcontext():
            yield
        return
    created = not Path(folder).exists()
    make_output_dir(folder)
    with hold_folder(folder, what):
        try:
            yield
        finally:
            if not (Path(folder) / MANIFEST).exists():  # not (yet) a run: leave the folder as it was
                drop_lock_file(folder, remove_folder=created)


# -- what metakd writes into a run folder

MANIFEST = "metakd-manifest.json"
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "curves.png", "summary.json", "init.json",
             "tensorboard/")
# names no new run may find in its folder: a run's files, other jobs' (distill, eval, robustness) and the manifest
METAKD_NAMES = RUN_FILES + ("result.json", "teacher", "student", "robustness", "tensorboard", MANIFEST, "eval_*.json")


def run_files(tensorboard: bool = False) -> tuple:
    """The names a `metakd train` / `metakd pretrain` run creates (``tensorboard/`` when it writes events)."""
    return tuple(n for n in RUN_FILES if tensorboard or n != "tensorboard/")


def metakd_names_in(folder: Path) -> List[str]:
    """The entries of ``folder`` that carry one of metakd's names (not the lock, not temporaries)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    pats = [n.rstrip("/") for n in METAKD_NAMES]
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def read_manifest(folder: Path) -> Optional[List[str]]:
    """The entries ``folder``'s manifest lists (paths relative to it), or None without a readable one."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return files


def record_outputs(folder: Path, names: Sequence[str], job: str = "") -> None:
    """Add ``names`` (relative to ``folder``; a trailing "/" marks a folder metakd created) to its manifest."""
    folder = Path(folder)
    have = read_manifest(folder) or []
    added = [n for n in names if n not in have]
    if added or not (folder / MANIFEST).exists():
        write_json(folder / MANIFEST, {"metakd_manifest": 1, "job": job, "files": have + added}, what="run manifest")


def prepare_run_folder(folder: Path, config_text: str, resumed: bool, resume_flag: str = "--resume",
                       names: Sequence[str] = run_files(), job: str = "train",
                       overwrite_flag: Optional[str] = "--overwrite") -> None:
    """Create ``folder``, remove dead writers' temporaries, refuse to start a new run in a folder that holds
    any of metakd's names (a run's, an evaluation's), record ``names`` in the manifest and write
    config.yaml atomically. The caller holds the folder's lock (``run_lock``)."""
    folder = Path(folder)
    make_output_dir(folder)
    remove_stale_temps(folder)
    if not resumed and os.path.abspath(folder) not in _cleared:
        found = metakd_names_in(folder)
        if found:
            raise MetakdError(f"{folder} already holds a run (metakd files {', '.join(found[:6])}{' ...' if len(found) > 6 else ''}): "
                              f"pass {resume_flag} to continue that run, "
                              f"{overwrite_flag + ' to replace it' if overwrite_flag else 'delete its files yourself'}, "
                              "or choose another output folder; nothing was changed")
    _cleared.discard(os.path.abspath(folder))
    record_outputs(folder, [MANIFEST, *names], job)
    atomic_write(folder / "config.yaml", config_text, what="run config")


@contextmanager
def writing_into_run(folder: Path, names: Sequence[str], active: bool = True) -> Iterator[Any]:
    """For a job writing ``names`` into an existing run folder (eval_*.json, robustness/): hold the run's
    lock within the block (refused while the run is live) and list ``names`` in its manifest; yields a
    function that lists more names (known only after the work). A folder that is not a metakd run (a
    checkpoint kept elsewhere) gets neither lock file nor manifest."""
    folder = Path(folder)

    def record(more: Sequence[str]) -> None:
        if more and (folder / MANIFEST).exists():
            record_outputs(folder, more)

    if not active or not (_exists(folder / MANIFEST) or _exists(folder / "config.yaml")):
        yield lambda more: None
        return
    with hold_folder(folder):
        record(names)
        yield record


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long, a permission: not a run folder metakd can use
        return False


def discard_new_run(folder: Path) -> None:
    """Remove what a new run wrote before its first step (it was interrupted with nothing to resume), so
    that starting it again finds the folder as it was."""
    try:
        _delete_entries(Path(folder), read_manifest(folder) or [])
    except OSError:
        pass


# -- --overwrite

_cleared: set = set()  # folders --overwrite emptied of their run in this process (what is left there is not metakd's)


def check_run_folder(folder: Path) -> bool:
    """False when ``folder`` does not exist or holds nothing, True when it holds a metakd manifest, else
    MetakdError (``--overwrite`` deletes only what a manifest lists)."""
    folder = Path(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise MetakdError(f"--overwrite refused: {folder} is a file, not a run folder")
    try:
        names = [n for n in os.listdir(folder) if n != LOCK_NAME and not is_metakd_temp(n)]
    except OSError as exc:
        raise MetakdError(f"--overwrite: cannot list {folder}: {describe_os_error(exc)}") from None
    if not names:
        return False
    if read_manifest(folder) is None:
        raise MetakdError(f"--overwrite refused: {folder} is not a metakd run folder: it has no {MANIFEST} (the list of "
                          "files a metakd run wrote), so "
                          "metakd cannot tell its files from yours; nothing was deleted — choose another --output-dir "
                          "or delete it yourself")
    return True


def _delete_entries(folder: Path, entries: Sequence[str]) -> None:
    root = os.path.realpath(folder)
    for entry in sorted(entries, key=lambda e: (e == MANIFEST, -e.count("/"))):  # the manifest last
        path = folder / entry.rstrip("/")
        real = os.path.realpath(path)
        if entry.startswith("/") or ".." in Path(entry).parts or not real.startswith(root + os.sep):
            continue  # never outside the folder, whatever the manifest says
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir() and entry.endswith("/"):
            shutil.rmtree(path)
        elif path.is_dir():
            try:
                path.rmdir()  # a folder of listed files: removed once empty
            except OSError:
                pass


def clear_run(folder: Path) -> List[str]:
    """Delete the entries ``folder``'s manifest lists (for ``--overwrite``); returns the names of the entries
    left in place. Refuses (MetakdError) a non-empty folder without a manifest. The caller holds the lock."""
    folder = Path(folder)
    if not check_run_folder(folder):
        return []
    try:
        _delete_entries(folder, read_manifest(folder) or [])
        _cleared.add(os.path.abspath(folder))
        kept = sorted(n for n in os.listdir(folder) if n != LOCK_NAME and not is_metakd_temp(n))
    except OSError as exc:
        raise MetakdError(f"--overwrite: cannot delete files in {folder}: {describe_os_error(exc)}") from None
    return kept


# -- resume: which config keys may change

def _flatten(cfg: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved: Dict[str, Any], now: Dict[str, Any], free: Iterable[str]) -> List[str]:
    """``"train.lr: checkpoint 0.001, now 0.01"`` for each key that differs and is not ``free`` (a key, or a
    section ending in "." such as "eval.")."""
    free = tuple(free)
    a, b = _flatten(saved), _flatten(now)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in free or any(f.endswith(".") and key.startswith(f) for f in free):
            continue
        if a.get(key, "(unset)") != b.get(key, "(unset)"):
            diffs.append(f"{key}: checkpoint {a.get(key, '(unset)')!r}, now {b.get(key, '(unset)')!r}")
    return diffs


def data_differences(saved: Any, now: Dict[str, Any], root: Any) -> List[str]:
    """For each split whose content fingerprint (``ImageSplit.content_fingerprint``) differs from the one the
    checkpoint recorded: a line naming it (checkpoints of metakd before 0.4 recorded none: nothing to compare)."""
    old = saved.get("fingerprints") if isinstance(saved, dict) else None
    if not isinstance(old, dict):
        return []
    return [f"data: the {split} split at {root!r} holds other images than the one trained on (content fingerprint "
            f"{old[split]} when saved, {fp} now; same class names and counts are not enough)"
            for split, fp in now.get("fingerprints", {}).items() if split in old and old[split] != fp]


# -- signals

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class StopGuard:
    """Within ``with StopGuard():``, SIGINT and SIGTERM set ``signum`` instead of raising; previous handlers
    are restored on exit. Outside the main thread it installs nothing (KeyboardInterrupt stays as is)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.saving: Optional[str] = None
        self._abandonable = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNAL_NAMES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return SIGNAL_NAMES.get(self.signum, "SIGINT")

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self._abandonable:
            self._abandonable = False
            raise KeyboardInterrupt
        if self.saving:
            note = f"still saving {self.saving}; please wait"
        elif first:
            note = f"{SIGNAL_NAMES.get(signum, signum)}: stopping after the current step"
        else:
            note = "already stopping after the current step; please wait"
        print(f"metakd: {note}", file=sys.stderr, flush=True)

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """A region a signal cuts short with KeyboardInterrupt (also raised on entry once stopping)."""
        if self.stopping:
            raise KeyboardInterrupt
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False

    @contextmanager
    def saving_file(self, what: str) -> Iterator[None]:
        """A region where signals only print "still saving"."""
        self._abandonable, before, self.saving = False, self.saving, what
        try:
            yield
        finally:
            self.saving = before


# -- fault injection (tests only)

FAULT_ENV = "METAKD_FAULT_AT"


def fault_point(phase: str, step: int) -> None:
    """Test hook: with ``METAKD_FAULT_AT="<phase>:<step>:<signal>"`` (e.g. ``val:3:SIGINT``) the process
    sends itself that signal when it reaches ``phase`` ("sample", "step", "val", "save") at ``step``.
    Unset (always, outside tests) this does nothing."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_phase, want_step, sig = spec.split(":")
    if want_phase == phase and int(want_step) == step:
        os.environ.pop(FAULT_ENV)  # once
        os.kill(os.getpid(), getattr(signal, sig))


# Config keys every job lets a resume change: names, places and the device change no trained weight.
RESUME_FREE_BASE = ("name", "description", "output_dir", "device", "threads", "tensorboard", "data.options.cache_dir")


def default_output_dir(cfg: Dict[str, Any]) -> Path:
    """``output_dir`` when the config sets one, else ``runs/<name>`` (the one default of every job)."""
    return Path(cfg["output_dir"] or Path("runs") / cfg["name"])
