"""Short training runs for the accuracy benchmarks: one config, fresh run folder, timed."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from metakd.config import load_config  # noqa: E402
from metakd.engine.training.meta import Trainer  # noqa: E402


def train_fresh(config: str, run: Path, seed: int, iterations: int, overrides: Sequence[str] = (),
                log_every: int = 100) -> float:
    """Train ``config`` for ``iterations`` meta-iterations into an emptied ``run`` folder (validation on 50
    episodes and a checkpoint at the end only); returns the training seconds. ``run/last.pt`` holds the model."""
    run = Path(run)
    cfg = load_config(config, [f"seed={seed}", f"output_dir={run}", f"train.iterations={iterations}",
                               f"train.val_every={iterations}", "train.val_episodes=50",
                               f"train.checkpoint_every={iterations}", f"train.log_every={log_every}", *overrides])
    if run.exists():
        for f in run.iterdir():
            f.unlink()
    tic = time.perf_counter()
    Trainer(cfg, progress=False).fit()
    return time.perf_counter() - tic


def train_resumable(config: str, run: Path, overrides: Sequence[str] = ()) -> dict:
    """Train ``config`` into ``run``, resuming its last.pt when an earlier call was cut. Returns the training
    seconds (summed over the calls, kept in ``run/train_seconds.json``) and the validation curve
    [(step, acc)] from ``run/metrics.jsonl``."""
    import json

    from metakd.atomic import atomic_write

    run = Path(run)
    cfg = load_config(config, [f"output_dir={run}", *overrides])
    tic = time.perf_counter()
    Trainer(cfg, progress=False).fit(resume=(run / "last.pt").is_file())
    spent = run / "train_seconds.json"
    seconds = time.perf_counter() - tic + (json.loads(spent.read_text()) if spent.is_file() else 0.0)
    atomic_write(spent, json.dumps(seconds), what="training seconds")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"train_seconds": seconds, "curve": [(r["step"], r["acc"]) for r in recs if r.get("kind") == "val"]}


def phases(values: list, iterations: int) -> dict:
    """Mean of [(step, value)] over the first, middle and last third of ``iterations`` (NaNs skipped)."""
    out = {}
    for i, name in enumerate(("early", "middle", "late")):
        got = [v for step, v in values if i * iterations / 3 <= step - 1 < (i + 1) * iterations / 3 and v == v]
        out[name] = sum(got) / len(got) if got else None
    return out


def grad_phases(run: Path, iterations: int) -> dict:
    """MSD's logged gradient diagnostics of ``run`` (``grad_ratio_every``): {"grad_ratio": ‖g_cons‖/‖g_ce‖,
    "grad_cos": cos(g_cons, g_ce)}, each early / middle / late over ``iterations``."""
    import json

    recs = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in recs if r.get("kind") == "diagnostic"]
    return {"grad_ratio": phases([(r["step"], r["msd_grad_ratio"]) for r in diag], iterations),
            "grad_cos": phases([(r["step"], r["msd_grad_cos"]) for r in diag], iterations)}
