"""Run folders and run interruption, shared by ``metakd train``, ``metakd pretrain`` and ``metakd distill``.

- ``check_output_dir`` / ``make_output_dir``: a folder that cannot hold a run (read-only, under a
  file, a file itself, on a full disk, a name too long) is one MetakdError naming it, before the work.
- ``clear_run``: what ``--overwrite`` deletes: metakd's own files of a recognisable run folder only.
- ``config_differences``: the keys by which a resumed run's config differs from its checkpoint's.
- ``StopGuard``: SIGINT and SIGTERM only set a flag; the loop stops at the next step boundary, so the
  saved state is always that of a completed step. Regions marked ``abandonable`` (validation, which
  changes no training state) are cut short at once; a signal while saving only prints a note.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

from ...atomic import atomic_write, describe_os_error, remove_stale_temps
from ...errors import MetakdError

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


def prepare_run_folder(folder: Path, config_text: str, resumed: bool, resume_flag: str = "--resume") -> None:
    """Create ``folder``, remove dead writers' temporaries, refuse to start a new run over an existing one
    (its last.pt), drop a stale metrics.jsonl of a new run, and write config.yaml atomically."""
    folder = Path(folder)
    make_output_dir(folder)
    remove_stale_temps(folder)
    if not resumed:
        if (folder / "last.pt").exists():
            raise MetakdError(f"{folder} already holds a run (last.pt): pass {resume_flag} to continue it, or choose "
                              "another output_dir")
        (folder / "metrics.jsonl").unlink(missing_ok=True)
    atomic_write(folder / "config.yaml", config_text, what="run config")


# -- --overwrite

RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "curves.png", "summary.json", "init.json")
_RUN_MARKERS = ("last.pt", "best.pt", "metrics.jsonl")
_ROBUSTNESS_FILES = ("robustness.md", "robustness.json", "robustness.png")


def _is_metakd_file(name: str) -> bool:
    if name.endswith((".tmp", ".tmp.png")):  # a temporary of one of metakd's files
        return any(name.startswith(f + ".") or name.startswith(Path(f).stem + ".tmp") for f in RUN_FILES) \
            or name.startswith("eval_")
    return name in RUN_FILES or (name.startswith("eval_") and name.endswith(".json"))


def check_run_folder(folder: Path) -> bool:
    """False when ``folder`` does not exist, True when it is recognisably a metakd run folder, else MetakdError."""
    folder = Path(folder)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise MetakdError(f"--overwrite refused: {folder} is a file, not a run folder")
    try:
        names = set(os.listdir(folder))
    except OSError as exc:
        raise MetakdError(f"--overwrite: cannot list {folder}: {describe_os_error(exc)}") from None
    if "config.yaml" not in names or not names & set(_RUN_MARKERS):
        raise MetakdError(f"--overwrite refused: {folder} is not a metakd run folder (it has no config.yaml with "
                          "last.pt, best.pt or metrics.jsonl); nothing was deleted — choose another --output-dir "
                          "or delete it yourself")
    return True


def clear_run(folder: Path) -> List[str]:
    """Delete the files metakd wrote in the run folder ``folder`` (for ``--overwrite``); returns the names of
    the entries left in place. Refuses (MetakdError) a folder that is not recognisably a metakd run:
    config.yaml and at least one of last.pt, best.pt, metrics.jsonl."""
    folder = Path(folder)
    if not check_run_folder(folder):
        return []
    names = set(os.listdir(folder))
    kept: List[str] = []
    try:
        for name in sorted(names):
            path = folder / name
            if name == "robustness" and path.is_dir() and not path.is_symlink():
                for sub in _ROBUSTNESS_FILES:
                    (path / sub).unlink(missing_ok=True)
                rest = os.listdir(path)
                if rest:
                    kept.extend(f"robustness/{r}" for r in sorted(rest))
                else:
                    path.rmdir()
            elif _is_metakd_file(name) and (path.is_file() or path.is_symlink()):
                path.unlink()
            else:
                kept.append(name)
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
RESUME_FREE_BASE = ("name", "description", "output_dir", "device", "threads", "tensorboard")


def default_output_dir(cfg: Dict[str, Any]) -> Path:
    """``output_dir`` when the config sets one, else ``runs/<name>`` (the one default of every job)."""
    return Path(cfg["output_dir"] or Path("runs") / cfg["name"])
