"""Accuracy summaries, JSON-lines logs and the training-curve plot."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from ...atomic import atomic_write, write_error
from ...errors import MetakdError
from ...plots import save_figure


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width over episodes: 1.96·std/√n (std with ddof=0, as in the
    original MAML evaluation code). Both in the units of ``values``."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    return float(arr.mean()), float(1.96 * arr.std() / math.sqrt(arr.size))


def format_acc(mean: float, ci: float) -> str:
    """``0.4870, 0.0184`` -> ``'48.70 ± 1.84'`` (percent)."""
    return f"{100 * mean:.2f} ± {100 * ci:.2f}"


class JsonlLogger:
    """Appends one JSON object per line; safe to reopen after a resume. A last line torn by a crash
    mid-write is skipped when reading and removed by ``truncate_after``.

    tensorboard: a folder to mirror every record into as TensorBoard scalars (tag ``<kind>/<key>`` for
    each number, at the record's step); needs the ``tensorboard`` package (extra ``metakd[tensorboard]``).
    The first record a process logs rewrites the event files from the records already in the log (none
    for a new run; the kept ones after a resume), so they always show exactly what metrics.jsonl holds.
    """

    def __init__(self, path: Path, tensorboard: Optional[Path] = None):
        self.path = Path(path)
        self.tb_dir = None if tensorboard is None else Path(tensorboard)
        self._tb: Any = None
        if self.tb_dir is not None:
            _summary_writer_class()  # fail now, not at the first record, when the package is missing

    def _tb_writer(self) -> Any:
        if self._tb is None:
            self._tb = _summary_writer_class()(log_dir=str(self.tb_dir))
        return self._tb

    def _tb_log(self, record: Dict[str, object]) -> None:
        step = record.get("step")
        writer = self._tb_writer()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"{record.get('kind', 'log')}/{key}", float(value), global_step=step)
        writer.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _rewrite_tensorboard(self, records: List[Dict[str, object]]) -> None:
        self.close()
        if self.tb_dir.is_dir():
            for old in self.tb_dir.glob("events.out.tfevents.*"):
                old.unlink()
        for rec in records:
            self._tb_log(rec)

    def log(self, record: Dict[str, object]) -> None:
        if self.tb_dir is not None:
            if self._tb is None:  # first record of this process: the event files start as a copy of the log
                self._rewrite_tensorboard(self._records())
            self._tb_log(record)
        line = json.dumps(record) + "\n"
        try:
            try:
                f = open(self.path, "a")
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                f = open(self.path, "a")
            with f:
                f.write(line)
                f.flush()
        except OSError as exc:
            raise write_error(self.path, exc, "metrics log") from None

    def _records(self) -> List[Dict[str, object]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise MetakdError(f"cannot read the metrics log {self.path}: {exc}") from None
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # torn by a crash mid-write
                    break
                raise MetakdError(f"the metrics log {self.path} is damaged at line {i + 1} (not JSON)") from None
            out.append(rec)
        return out

    def truncate_after(self, step: int, drop_at_step: Sequence[str] = ()) -> None:
        """Drop records written after ``step``, and those of the kinds ``drop_at_step`` at ``step`` (a resumed
        run rewrites them), and a torn last line."""
        if not self.path.exists():
            return
        keep = [r for r in self._records()
                if r.get("step", 0) < step or (r.get("step", 0) == step and r.get("kind") not in drop_at_step)]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep), what="metrics log")
        self.close()  # the next record rewrites the event files from the kept records

    def read(self) -> List[Dict[str, object]]:
        return self._records()


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MetakdError("tensorboard: true needs the tensorboard package: pip install 'metakd[tensorboard]' "
                          "(or pip install tensorboard)") from None
    return SummaryWriter


def plot_curves(records: Iterable[Dict[str, object]], path: Path, title: str = "") -> Path:
    """Training loss/accuracy and validation accuracy (with CI band) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        ax_acc.plot([r["step"] for r in train], [100 * r["acc"] for r in train], lw=1, label="train (query)")
    if val:
        steps = np.array([r["step"] for r in val])
        acc = 100 * np.array([r["acc"] for r in val])
        ci = 100 * np.array([r["ci95"] for r in val])
        ax_acc.plot(steps, acc, marker="o", ms=3, label="validation")
        ax_acc.fill_between(steps, acc - ci, acc + ci, alpha=0.25)
    ax_loss.set(xlabel="meta-iteration", ylabel="meta-loss", title="training loss")
    ax_acc.set(xlabel="meta-iteration", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, "training curves")
