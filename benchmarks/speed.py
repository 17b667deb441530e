"""Seconds per meta-iteration and peak memory of metakd's MAML against learn2learn's, on identical work.

Work: Conv4-32, 5-way 1-shot, 15 queries per class, 84x84x3 images, meta-batch 4, 5 inner steps,
inner lr 0.01, Adam 1e-3, second and first order. Both sides start from the same weights and see
the same (random) episodes, in one process; timed iterations alternate between the two, so a
change in machine load hits both alike. Seconds per iteration is the median over the timed
iterations after warm-up; an iteration is zero_grad + meta-loss + backward + optimiser step.

Peak memory: on CUDA, torch.cuda.max_memory_allocated() above the memory allocated before the
run (counters reset per run). On the CPU, the peak resident set size (VmHWM of /proc/self/status)
above the RSS at the start of the run; the peak is reset before each run by writing "5" to
/proc/self/clear_refs (Linux >= 4.0), after returning freed heap pages to the system with glibc's
malloc_trim, so each run is measured on its own. Where that is unavailable it reports null.

    python benchmarks/speed.py --device cpu --iters 10
Writes speed_<device>.json (atomically) into runs/benchmarks/, or benchmarks/results/ with
--update-results, or --out DIR, and prints a table and the path.
    python benchmarks/speed.py --suite [speed_suite options]
runs the wider side-by-side suite instead (benchmarks/speed_suite.py: more configs, task-batched
metakd, parallel-metalearn, evaluation timing).
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from metakd.atomic import atomic_write  # noqa: E402
from results_io import add_update_results_flag, output_dir  # noqa: E402  (benchmarks/ is sys.path[0])
from metakd.data.episode import EpisodeBatch  # noqa: E402
from metakd.data.learn2learn_tasks import import_learn2learn  # noqa: E402
from metakd.learners import build_learner  # noqa: E402
from metakd.models import build_backbone  # noqa: E402

WAYS, SHOTS, QUERIES, SIZE, TASKS, STEPS, INNER_LR, META_LR = 5, 1, 15, 84, 4, 5, 0.01, 1e-3


def load_learn2learn():
    """The learn2learn module, or None when it is not installed."""
    try:
        return import_learn2learn()  # without gym's notice on stderr
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None


def make_batches(count: int, device: torch.device, seed: int, tasks: int = TASKS, shots: int = SHOTS,
                 size: int = SIZE) -> List[EpisodeBatch]:
    """``count`` seeded random meta-batches of ``tasks`` 5-way ``shots``-shot tasks at ``size`` px."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        sx = torch.rand(tasks, WAYS * shots, 3, size, size, generator=g)
        qx = torch.rand(tasks, WAYS * QUERIES, 3, size, size, generator=g)
        sy = torch.arange(WAYS).repeat_interleave(shots).repeat(tasks, 1)
        qy = torch.arange(WAYS).repeat_interleave(QUERIES).repeat(tasks, 1)
        batches.append(EpisodeBatch(sx, sy, qx, qy, WAYS, shots, QUERIES).to(device))
    return batches


def metakd_learner_step(model: torch.nn.Module, first_order: bool, **options):
    """(learner, step_fn) for metakd's MAML on a copy of ``model``; step_fn does one Adam meta-iteration
    and returns the loss. ``options`` are further learner options (task_batching, compile, ...)."""
    learner = build_learner("maml", copy.deepcopy(model), inner_lr=INNER_LR, train_steps=STEPS,
                            first_order=first_order, **options)
    opt = torch.optim.Adam(learner.parameters(), META_LR)

    def step(batch: EpisodeBatch) -> float:
        opt.zero_grad(set_to_none=True)
        loss, metrics = learner.meta_loss(batch)
        loss.backward()
        opt.step()
        return metrics["loss"]

    return learner, step


def metakd_step(model: torch.nn.Module, first_order: bool):
    """(loss_fn, step_fn) for metakd's MAML on a copy of ``model``."""
    learner, step = metakd_learner_step(model, first_order)
    return (lambda batch: learner.meta_loss(batch)[0].item()), step


def l2l_step(l2l, model: torch.nn.Module, first_order: bool):
    """(loss_fn, step_fn) for learn2learn's MAML (clone/adapt per task) on a copy of ``model``."""
    maml = l2l.algorithms.MAML(copy.deepcopy(model), lr=INNER_LR, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), META_LR)

    def meta_loss(batch: EpisodeBatch):
        losses, accs = [], []
        for t in range(batch.num_tasks):
            clone = maml.clone()
            for _ in range(STEPS):
                clone.adapt(F.cross_entropy(clone(batch.support_x[t]), batch.support_y[t]))
            logits = clone(batch.query_x[t])
            losses.append(F.cross_entropy(logits, batch.query_y[t]))
            accs.append((logits.detach().argmax(-1) == batch.query_y[t]).float().mean())
        loss = torch.stack(losses).mean()
        return loss, torch.stack([loss.detach(), torch.stack(accs).mean()]).tolist()  # same metrics as metakd

    def step(batch: EpisodeBatch) -> float:
        opt.zero_grad(set_to_none=True)
        loss, metrics = meta_loss(batch)
        loss.backward()
        opt.step()
        return metrics[0]

    return (lambda batch: meta_loss(batch)[0].item()), step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(step: Callable[[EpisodeBatch], float], batches: List[EpisodeBatch], device: torch.device,
                    runs: int = 2) -> Optional[float]:
    """Peak memory (MiB) of ``runs`` iterations above the level before them; see the module docstring."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for i in range(runs):
            step(batches[i % len(batches)])
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    for i in range(runs):
        step(batches[i % len(batches)])
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else (peak - base) / 1024


def time_alternating(steps: Dict[str, Callable], batches: List[EpisodeBatch], device: torch.device, warmup: int,
                     iters: int) -> Dict[str, List[float]]:
    """Seconds of each timed iteration per runner; runners take turns, their order flipped every iteration."""
    names = list(steps)
    for i in range(warmup):
        for name in names:
            steps[name](batches[i % len(batches)])
    times: Dict[str, List[float]] = {name: [] for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            _sync(device)
            start = time.perf_counter()
            steps[name](batches[i % len(batches)])
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs, {torch.get_num_threads()} threads)"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return "cpu"


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n", what="benchmark result")


def main(argv: Optional[List[str]] = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--suite" in argv:
        from speed_suite import main as suite_main  # benchmarks/ is on sys.path when run as a script
        return suite_main([a for a in argv if a != "--suite"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per runner and order")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per runner first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--orders", default="second,first", help="comma list of 'second', 'first'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder (default: runs/benchmarks/)")
    add_update_results_flag(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    l2l = load_learn2learn()
    if l2l is None:
        print("learn2learn is not installed: timing metakd alone")

    torch.manual_seed(args.seed)
    model = build_backbone("conv4", WAYS, in_channels=3, image_size=SIZE, hidden=32).to(device)
    batches = make_batches(4, device, args.seed)
    report = {
        "device": device_description(device), "torch": torch.__version__,
        "learn2learn": getattr(l2l, "__version__", None) if l2l else None,
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "work": {"backbone": "conv4", "hidden": 32, "n_way": WAYS, "k_shot": SHOTS, "q_query": QUERIES,
                 "image": [3, SIZE, SIZE], "meta_batch": TASKS, "inner_steps": STEPS, "inner_lr": INNER_LR,
                 "optimizer": f"Adam({META_LR})"},
        "iters": args.iters, "warmup": args.warmup, "results": {},
    }
    for order in [o.strip() for o in args.orders.split(",") if o.strip()]:
        if order not in ("second", "first"):
            parser.error(f"--orders: unknown order {order!r}; expected 'second' or 'first'")
        first_order = order == "first"
        runners = {"metakd": metakd_step(model, first_order)}
        if l2l is not None:
            runners["learn2learn"] = l2l_step(l2l, model, first_order)
        losses = {name: loss_fn(batches[0]) for name, (loss_fn, _) in runners.items()}
        steps = {name: step for name, (_, step) in runners.items()}
        memory = {name: peak_memory_mib(step, batches, device) for name, step in steps.items()}
        times = time_alternating(steps, batches, device, args.warmup, args.iters)
        entry = {name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "times_s": ts,
                        "peak_mib": memory[name], "initial_loss": losses[name]} for name, ts in times.items()}
        if "learn2learn" in entry:
            entry["ratio_metakd_over_l2l"] = entry["metakd"]["median_s"] / entry["learn2learn"]["median_s"]
            entry["initial_loss_abs_diff"] = abs(losses["metakd"] - losses["learn2learn"])
        report["results"][order] = entry
    report["load_average_end"] = list(os.getloadavg())

    print(f"device: {report['device']}   torch {report['torch']}   learn2learn {report['learn2learn'] or 'not installed'}")
    print(f"work: Conv4-32, {WAYS}-way {SHOTS}-shot, {QUERIES} queries, {SIZE}x{SIZE}x3, meta-batch {TASKS}, "
          f"{STEPS} inner steps; median of {args.iters} iterations after {args.warmup} warm-up")
    print(f"{'order':<8}{'metakd s/it':>13}{'l2l s/it':>11}{'ratio':>8}{'metakd MiB':>12}{'l2l MiB':>10}{'loss diff':>11}")
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for order, entry in report["results"].items():
        theirs = entry.get("learn2learn", {})
        print(f"{order:<8}{entry['metakd']['median_s']:>13.3f}{fmt(theirs.get('median_s'), '.3f'):>11}"
              f"{fmt(entry.get('ratio_metakd_over_l2l'), '.3f'):>8}{fmt(entry['metakd']['peak_mib'], '.0f'):>12}"
              f"{fmt(theirs.get('peak_mib'), '.0f'):>10}{fmt(entry.get('initial_loss_abs_diff'), '.1e'):>11}")
    out = (args.out or output_dir(args.update_results)) / f"speed_{device_slug(device)}.json"
    write_json(out, report)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
