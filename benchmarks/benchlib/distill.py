"""Shared pieces of the classic-distillation benchmarks: a teacher trained once, resumable (method, seed)
pieces saved atomically as they finish, CPU-time accounting and the machine record.

A piece is one ``run_distill`` call in its own folder. Its summary (accuracies, seconds, CPU seconds,
load average) is written with ``metakd.atomic.write_json`` to ``<work>/pieces/<name>.json`` when it
finishes; a rerun finds that file and skips the piece. A piece stopped half-way resumes from the
engine's own ``last.pt`` (bit-exact on the same device).
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from metakd.atomic import write_json  # noqa: E402
from metakd.engine.training.job_config import load_distill_config  # noqa: E402
from metakd.engine.training.distill import run_distill  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    return time.process_time()


def machine(device: str, threads: int) -> Dict[str, Any]:
    return {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "device": device, "threads": threads,
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None}


def milestones(epochs: int, fractions=(0.67, 0.9)) -> List[int]:
    """Step-decay epochs at the given fractions of the schedule (at least 1, increasing, < epochs when possible)."""
    out: List[int] = []
    for f in fractions:
        m = max(1, int(epochs * f))
        if out and m <= out[-1]:
            m = out[-1] + 1
        out.append(m)
    return out


class CpuLedger:
    """CPU seconds of one piece summed over the invocations that worked on it: a piece cut by a signal or
    a time limit leaves ``<record>.partial.json`` with what it spent, and the finishing call adds it."""

    def __init__(self, record: Path):
        self.path = record.with_name(record.stem + ".partial.json")
        self.before = json.loads(self.path.read_text())["cpu_seconds"] if self.path.exists() else 0.0
        self.start = cpu_seconds()

    def total(self) -> float:
        return self.before + cpu_seconds() - self.start

    def save_partial(self) -> None:
        write_json(self.path, {"cpu_seconds": self.total()}, what="partial CPU record")

    def done(self) -> None:
        self.path.unlink(missing_ok=True)


def ensure_teacher(base: str, overrides: Sequence[str], folder: Path, teacher_steps: int) -> Dict[str, Any]:
    """Train the teacher into ``folder/teacher`` once (or find it); returns its result record + path + CPU seconds.

    The engine always runs a student after the teacher; ``max_steps=teacher_steps`` stops right after the
    teacher phase (the student's last.pt that this leaves is never used). A call interrupted during the
    teacher phase resumes it.
    """
    pt = folder / "teacher" / "teacher.pt"
    record = folder / "teacher_piece.json"
    cfg = load_distill_config(base, list(overrides) + ["distill.method=kd", "distill.ce_weight=1.0",
                                                       "distill.kd_weight=0.0"])
    if pt.exists():
        saved = torch.load(pt, map_location="cpu", weights_only=True)["config"]
        keep = ("data", "teacher", "seed")
        if any(saved.get(k) != cfg.get(k) for k in keep):
            raise SystemExit(f"{pt} was trained with other data/teacher settings; use another --work folder")
    if pt.exists() and record.exists():
        return json.loads(record.read_text())
    ledger, wall0, load0 = CpuLedger(record), time.perf_counter(), os.getloadavg()[0]
    if not pt.exists():
        resume = (folder / "teacher" / "last.pt").exists()
        try:
            run_distill(cfg, folder, resume=resume, progress=False, max_steps=teacher_steps)
        except BaseException:
            ledger.save_partial()
            raise
    res = json.loads((folder / "teacher" / "result.json").read_text())
    out = {"path": str(pt), "arch": res["arch"], "test_acc": res["test_acc"], "val_acc": res.get("val_acc"),
           "epochs": res["epochs"],
           "steps": res["steps"], "train_images": res["train_images"], "test_images": res["test_images"],
           "seconds": res["seconds"], "cpu_seconds": ledger.total(), "wall_seconds_last_call": time.perf_counter() - wall0,
           "load_average_start": load0, "load_average_end": os.getloadavg()[0]}
    write_json(record, out, what="teacher record")
    ledger.done()
    return out


def run_piece(name: str, base: str, overrides: Sequence[str], work: Path, extra: Optional[Dict[str, Any]] = None
              ) -> Dict[str, Any]:
    """One student run (or its saved record): ``work/pieces/<name>.json`` once finished."""
    record = work / "pieces" / f"{name}.json"
    if record.exists():
        row = json.loads(record.read_text())
        if row.get("overrides") != list(overrides):
            raise SystemExit(f"{record} was run with other settings ({row.get('overrides')} vs {list(overrides)}); "
                             "use another --work folder (or delete that piece) to change them")
        return row
    out = work / "runs" / name
    cfg = load_distill_config(base, list(overrides))
    ledger, wall0, load0 = CpuLedger(record), time.perf_counter(), os.getloadavg()[0]
    try:
        res = run_distill(cfg, out, resume=(out / "student" / "last.pt").exists() or (out / "result.json").exists(),
                          progress=False)
    except BaseException:
        ledger.save_partial()
        raise
    s = res["student"]
    epochs = [json.loads(x) for x in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in epochs if r["kind"] == "epoch"]
    row = {"name": name, "test_acc": s["test_acc"], "best_test_acc": s.get("best_test_acc"), "steps": s["steps"],
           "val_acc": s.get("val_acc"), "best_val_acc": s.get("best_val_acc"), "test_correct": s.get("test_correct"),
           "train_images": s["train_images"], "test_images": s["test_images"],
           "final_train_acc": epochs[-1].get("train_acc") if epochs else None,
           "final_train_loss": epochs[-1].get("train_loss") if epochs else None,
           "t_teacher": s.get("t_teacher"), "t_student": s.get("t_student"), "seconds": s["seconds"],
           "cpu_seconds": ledger.total(), "wall_seconds_last_call": time.perf_counter() - wall0,
           "load_average_start": load0, "load_average_end": os.getloadavg()[0], "overrides": list(overrides),
           **(extra or {})}
    write_json(record, row, what="benchmark piece")
    ledger.done()
    return row


def fmt(x: Optional[float], scale: float = 100.0, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{scale * x:.{digits}f}"
