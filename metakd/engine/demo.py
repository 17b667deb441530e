"""``metakd demo``: MAML, MAML + Meta Self-Distillation and ProtoNet trained on the built-in glyph
dataset, compared on the same fixed test episodes with 95% confidence intervals, both standard and
under the augmented test scenario (weak and strong perturbations of the support set, the side MSD
trains on; ``metakd robustness`` gives all sides). A few minutes on a laptop CPU. Writes results.{md,json}
and one figure, accuracy.png (``metakd.plots.plot_demo_accuracy``), and says where."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..atomic import atomic_write, write_json
from ..config import load_config
from ..errors import MetakdError
from ..plots import method_label, plot_demo_accuracy
from .assembly import resolve_device
from .evaluation.checkpoint_eval import evaluate_checkpoint
from .evaluation.robustness import evaluate_robustness
from .runs.folder import clear_run, run_lock
from .runs.metrics import format_acc
from .training.meta import Trainer

DEMO_CONFIGS = ("demo_maml", "demo_msd", "demo_protonet")
SCENARIOS = (("weak", "support"), ("strong", "support"))


def results_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown table of demo results."""
    names = [k for k in rows[0].get("scenarios", {})] if rows else []
    lines = ["| method | backbone | task | train iterations | train time (s) | test accuracy (%) ± 95% CI | "
             + "".join(f"{n} (%) | " for n in names) + "episodes |",
             "|---|---|---|---|---|---|" + "---|" * len(names) + "---|"]
    for r in rows:
        method = method_label(r)
        cells = "".join(f"{format_acc(r['scenarios'][n]['accuracy'], r['scenarios'][n]['ci95'])} | " for n in names)
        lines.append(f"| {method} | {r['backbone']} | {r['n_way']}-way {r['k_shot']}-shot | {r['iterations']} | "
                     f"{r['train_seconds']:.0f} | {format_acc(r['accuracy'], r['ci95'])} | {cells}{r['episodes']} |")
    return "\n".join(lines)


def run_demo(output_dir: Path = Path("runs/demo"), iterations: Optional[int] = None, episodes: int = 600,
             device: str = "auto", progress: bool = True, configs=DEMO_CONFIGS,
             scenarios=SCENARIOS, threads: Optional[int] = None) -> List[Dict[str, Any]]:
    """Train each demo config from scratch, evaluate all on one fixed episode list (standard and under
    each (level, side) of ``scenarios``; () skips them), print the table.

    threads: torch intra-op threads; None = 1 on a CPU (the demo's 28x28 Conv4 ops are too small
    for a second thread to pay off, and on a busy 2-core machine OpenMP spin-waiting makes it far
    slower), torch's default on a GPU."""
    if threads is None and resolve_device(device).type == "cpu":
        threads = 1
    if threads:
        torch.set_num_threads(threads)
    output_dir = Path(output_dir)
    rows: List[Dict[str, Any]] = []
    for name in configs:
        overrides = [f"device={device}"] + ([f"train.iterations={iterations}"] if iterations else [])
        cfg = load_config(name, overrides)
        run_dir = output_dir / cfg["name"]
        print(f"== {cfg['name']}: {cfg['learner']['name']} on {cfg['data']['dataset']} "
              f"({cfg['train']['iterations']} meta-iterations)")
        tic = time.perf_counter()
        with run_lock(run_dir):  # one writer; a previous demo's run is replaced, a folder without a manifest refused
            clear_run(run_dir)
            Trainer(cfg, output_dir=run_dir, progress=progress).fit()
        train_seconds = time.perf_counter() - tic
        res = evaluate_checkpoint(run_dir, episodes=episodes, device=device, progress=progress)
        res["train_seconds"] = train_seconds
        res["iterations"] = cfg["train"]["iterations"]
        if scenarios:
            robust = evaluate_robustness(run_dir, episodes=episodes, levels=sorted({lv for lv, _ in scenarios}),
                                         sides=sorted({sd for _, sd in scenarios}), consistency_views=0,
                                         device=device, progress=progress)
            res["scenarios"] = {f"{r['level']} {r['side']}": {"accuracy": r["accuracy"], "ci95": r["ci95"]}
                                for r in robust["rows"] if (r["level"], r["side"]) in scenarios}
        rows.append(res)
    if len({r["episodes_fingerprint"] for r in rows}) != 1:
        raise MetakdError("demo learners were evaluated on different episode lists; their configs must share the "
                          "dataset, split, N-way, K-shot, queries and eval seed")
    table = results_table(rows)
    print()
    print(f"Test episodes: {rows[0]['episodes']} fixed episodes (seed {rows[0]['episode_seed']}, "
          f"fingerprint {rows[0]['episodes_fingerprint'][:12]}), device: {rows[0]['device']}")
    print(table)
    if scenarios:
        print("Scenario columns: the same episodes with the support set perturbed at the weak / strong level "
              "(the data's augmentation preset, glyph here: no flips; metakd.data.augment.PRESETS, seeded per episode).")
    atomic_write(output_dir / "results.md", table + "\n", what="demo results")
    write_json(output_dir / "results.json", [{k: v for k, v in r.items() if k != "config"} for r in rows],
               what="demo results")
    plot_demo_accuracy(rows, output_dir / "accuracy.png")
    print(f"\nwritten: {output_dir / 'results.md'}, {output_dir / 'results.json'}")
    print(f"plots: {output_dir / 'accuracy.png'} (test accuracy ± 95% CI, standard and perturbed, side by side); "
          f"training curves: {', '.join(str(output_dir / r['name'] / 'curves.png') for r in rows)}")
    return rows
