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
import os
import statistics
import sys
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchlib.maml_work import (SHOTS, QUERIES, SIZE, STEPS, TASKS, WAYS, INNER_LR, META_LR,  # noqa: E402
                                l2l_step, load_learn2learn, make_batches, metakd_step, write_json)
from benchlib.timing import device_description, device_slug, peak_memory_mib, time_alternating  # noqa: E402
from benchlib.results import add_update_results_flag, output_dir  # noqa: E402  (benchmarks/ is sys.path[0])
from metakd.models import build_backbone  # noqa: E402

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
