"""Side-by-side meta-training speed of metakd (sequential and task-batched), learn2learn and parallel-metalearn.

Every system does identical work in one process: MAML (inner lr 0.01, 5 inner steps, Adam 1e-3), the
same starting weights (one backbone, deep-copied per system), the same random episodes; timed
iterations alternate between the systems (order flipped every iteration) so machine load hits all
alike. An iteration is zero_grad + meta-loss + backward + optimiser step. Reported per config and
system: median seconds per meta-iteration, tasks/s, peak memory (see speed.py for how it is measured),
the loss of the first iteration (equal across systems: same work) and its seconds (which include
torch.compile's one-off compilation for the compile systems), and ratios to learn2learn.

Systems: "metakd-seq" (task_batching=off), "metakd-vmap" (task_batching=vmap), "metakd-compile" and
"metakd-vmap-compile" (the same with compile=True; first order only, since second-order training does
not compile), "metakd-seq-ckpt"
(sequential with checkpoint_inner, ResNet-12 second order only: the memory saver), "learn2learn"
(MAML clone/adapt per task) and "parallel-metalearn" (its vmap MAML, fixed inner lr, chunk = meta-batch).
A system that is not installed or fails is recorded with the reason instead of numbers.

Evaluation: ``--eval-episodes`` test episodes (Conv4-32 5-way 1-shot, 10 inner steps, first order),
in chunks of 50 tasks, timed with metakd's vectorised evaluate (and both with compile=True) against its
sequential loop; one untimed warm-up chunk per mode first (its seconds are reported: compilation).

    python benchmarks/speed_suite.py --quick                      # the CPU subset (about 15 min on 2 cores)
    python benchmarks/speed_suite.py --configs 'conv4-32_*' --iters 10
    python benchmarks/speed.py --suite --quick                    # the same, through speed.py
    python benchmarks/speed_suite.py --configs 'resnet12_*' --merge   # add to (or redo in) an existing file
    python benchmarks/speed_suite.py --table benchmarks/results/speed_suite_cpu.json   # markdown table
Writes speed_suite_<device>[_quick].json (atomically) into runs/benchmarks/, or benchmarks/results/ with
--update-results, or --out DIR, and prints a table and the path.
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.data.episode import EpisodeBatch  # noqa: E402
from metakd.learners import build_learner  # noqa: E402
from metakd.models import build_backbone  # noqa: E402
from benchlib.maml_work import load_learn2learn, make_batches, metakd_learner_step, write_json  # noqa: E402
from benchlib.timing import device_description, device_slug, peak_memory_mib, sync, time_alternating  # noqa: E402
from benchlib.results import add_update_results_flag, output_dir  # noqa: E402

WAYS, QUERIES, STEPS, INNER_LR, META_LR, EVAL_STEPS, EVAL_CHUNK = 5, 15, 5, 0.01, 1e-3, 10, 50
Step = Callable[[EpisodeBatch], float]


def all_configs(resnet_size: int, resnet_batch: int) -> List[dict]:
    """The full grid: Conv4-32/64 x 1/5-shot x meta-batch 4/16/32 x order, and ResNet-12 5-shot x order."""
    out = []
    for hidden in (32, 64):
        for shots in (1, 5):
            for tasks in (4, 16, 32):
                for order in ("first", "second"):
                    out.append({"name": f"conv4-{hidden}_{shots}shot_mb{tasks}_{order}", "backbone": "conv4",
                                "hidden": hidden, "shots": shots, "meta_batch": tasks, "order": order, "size": 84})
    for order in ("first", "second"):
        out.append({"name": f"resnet12_5shot_mb{resnet_batch}_{order}_{resnet_size}px", "backbone": "resnet12",
                    "shots": 5, "meta_batch": resnet_batch, "order": order, "size": resnet_size})
    return out


QUICK = ["conv4-32_1shot_mb4_*", "conv4-32_1shot_mb16_*", "resnet12_*"]


def metakd_system(model: nn.Module, first_order: bool, **options) -> Step:
    return metakd_learner_step(model, first_order, **options)[1]


def l2l_system(l2l, model: nn.Module, first_order: bool) -> Step:
    maml = l2l.algorithms.MAML(copy.deepcopy(model), lr=INNER_LR, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), META_LR)

    def step(batch: EpisodeBatch) -> float:
        opt.zero_grad(set_to_none=True)
        losses = []
        for t in range(batch.num_tasks):
            clone = maml.clone()
            for _ in range(STEPS):
                clone.adapt(F.cross_entropy(clone(batch.support_x[t]), batch.support_y[t]))
            losses.append(F.cross_entropy(clone(batch.query_x[t]), batch.query_y[t]))
        loss = torch.stack(losses).mean()
        loss.backward()
        opt.step()
        return loss.item()

    return step


class _IgnoreKwargs(nn.Module):
    """parallel-metalearn calls its backbone and head with keyword flags; ours take x only."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        return self.module(x)


def parallel_metalearn_system(model: nn.Module, first_order: bool, tasks: int, device: torch.device) -> Step:
    """parallel-metalearn's vmapped MAML around the same backbone (fixed inner lr, one chunk per meta-batch)."""
    from metalearn.algorithms.MAML import MAML
    from metalearn.inner_optimizers.optimizers import InnerSGD
    from metalearn.loss.CEloss import CrossEntropy
    from metalearn.loss.categorical_accuracy import CategoricalAccuracy
    from metalearn.model_wrappers.MAMLWrapper import MAML_Model

    copied = copy.deepcopy(model)
    wrapped = MAML_Model(_IgnoreKwargs(copied.features), _IgnoreKwargs(copied.head))
    inner = InnerSGD(wrapped.get_fast_weights(), first_order=first_order, inner_lr=INNER_LR, max_inner_steps=STEPS,
                     learn_lr=False)
    opt = torch.optim.Adam(wrapped.parameters(), META_LR)
    maml = MAML(model=wrapped, optimizer=opt, inner_optimizer=inner, support_loss_fn=CrossEntropy(CategoricalAccuracy()),
                inner_steps=STEPS, chunk_size=tasks, device=device, backend="vmap")

    def step(batch: EpisodeBatch) -> float:
        episode = (batch.support_x, {"labels": batch.support_y}, batch.query_x, {"labels": batch.query_y})
        loss, _ = maml.step(iter([episode]), training=True)
        return float(loss)

    return step


def build_systems(cfg: dict, model: nn.Module, device: torch.device, l2l, wanted: List[str]
                  ) -> Tuple[Dict[str, Step], Dict[str, str]]:
    first_order = cfg["order"] == "first"
    makers: Dict[str, Callable[[], Step]] = {
        "metakd-seq": lambda: metakd_system(model, first_order, task_batching="off"),
        "metakd-vmap": lambda: metakd_system(model, first_order, task_batching="vmap"),
    }
    if first_order:
        makers["metakd-compile"] = lambda: metakd_system(model, first_order, task_batching="off", compile=True)
        makers["metakd-vmap-compile"] = lambda: metakd_system(model, first_order, task_batching="vmap", compile=True)
    if cfg["backbone"] == "resnet12" and not first_order:
        makers["metakd-seq-ckpt"] = lambda: metakd_system(model, first_order, task_batching="off",
                                                          checkpoint_inner=True)
    makers["learn2learn"] = lambda: l2l_system(l2l, model, first_order)
    makers["parallel-metalearn"] = lambda: parallel_metalearn_system(model, first_order, cfg["meta_batch"], device)
    systems, unavailable = {}, {}
    for name, make in makers.items():
        if not any(fnmatch.fnmatch(name, w) for w in wanted):
            continue
        if name == "learn2learn" and l2l is None:
            unavailable[name] = "learn2learn is not installed"
            continue
        try:
            systems[name] = make()
        except Exception as exc:  # noqa: BLE001 - a foreign system that cannot run is recorded, not fatal
            unavailable[name] = f"{type(exc).__name__}: {exc}"
    return systems, unavailable


def run_config(cfg: dict, device: torch.device, l2l, wanted: List[str], iters: int, warmup: int, seed: int) -> dict:
    torch.manual_seed(seed)
    options = {"hidden": cfg["hidden"]} if cfg["backbone"] == "conv4" else {}
    model = build_backbone(cfg["backbone"], WAYS, in_channels=3, image_size=cfg["size"], **options).to(device)
    batches = make_batches(2, device, seed, cfg["meta_batch"], cfg["shots"], cfg["size"])
    systems, unavailable = build_systems(cfg, model, device, l2l, wanted)
    first_losses, first_seconds, failed = {}, {}, {}
    for name, step in list(systems.items()):  # first iteration: the same loss everywhere (identical work)
        try:
            sync(device)
            start = time.perf_counter()
            first_losses[name] = step(batches[0])
            sync(device)
            first_seconds[name] = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001
            failed[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            traceback.print_exc()
            del systems[name]
    unavailable.update(failed)
    memory = {name: peak_memory_mib(step, batches, device, runs=1) for name, step in systems.items()}
    times = time_alternating(systems, batches, device, max(0, warmup - 1), iters)
    result = {"config": cfg, "systems": {}, "unavailable": unavailable}
    for name, ts in times.items():
        med = statistics.median(ts)
        result["systems"][name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "times_s": ts,
                                   "tasks_per_s": cfg["meta_batch"] / med, "peak_mib": memory[name],
                                   "first_loss": first_losses[name], "first_iter_s": first_seconds[name]}
    ref = result["systems"].get("learn2learn")
    if ref:
        for name, entry in result["systems"].items():
            entry["time_ratio_vs_l2l"] = entry["median_s"] / ref["median_s"]
            entry["first_loss_abs_diff_vs_l2l"] = abs(entry["first_loss"] - ref["first_loss"])
            if entry["peak_mib"] is not None and ref["peak_mib"]:
                entry["memory_ratio_vs_l2l"] = entry["peak_mib"] / ref["peak_mib"]
    return result


EVAL_MODES = ("sequential", "batched", "compiled", "batched_compiled")


def run_eval(episodes: int, device: torch.device, seed: int, wanted: Sequence[str] = EVAL_MODES) -> dict:
    """Seconds to evaluate ``episodes`` episodes (Conv4-32 1-shot, 10 steps) in each wanted mode
    (sequential always): vectorised and/or compiled vs the sequential loop."""
    wanted = {"sequential", *wanted}
    torch.manual_seed(seed)
    model = build_backbone("conv4", WAYS, in_channels=3, image_size=84, hidden=32).to(device)
    modes = {"sequential": ("off", False), "batched": ("vmap", False), "compiled": ("off", True),
             "batched_compiled": ("vmap", True)}
    modes = {k: v for k, v in modes.items() if k in wanted}
    learners = {mode: build_learner("maml", copy.deepcopy(model), inner_lr=INNER_LR, test_steps=EVAL_STEPS,
                                    first_order=True, task_batching=tb, compile=comp)
                for mode, (tb, comp) in modes.items()}
    warm = make_batches(1, device, seed, min(EVAL_CHUNK, episodes), 1, 84)[0]
    warmup_s = {}
    for mode, learner in learners.items():  # compiles the compiled modes; not counted below
        sync(device)
        start = time.perf_counter()
        learner.evaluate(warm)
        sync(device)
        warmup_s[mode] = time.perf_counter() - start
    seconds = {mode: 0.0 for mode in learners}
    accs: Dict[str, List[torch.Tensor]] = {mode: [] for mode in learners}
    done, i = 0, 0
    while done < episodes:
        n = min(EVAL_CHUNK, episodes - done)
        batch = make_batches(1, device, seed + 1 + i, n, 1, 84)[0]
        for mode in (list(learners) if i % 2 == 0 else list(learners)[::-1]):
            sync(device)
            start = time.perf_counter()
            accs[mode].append(learners[mode].evaluate(batch))
            sync(device)
            seconds[mode] += time.perf_counter() - start
        done, i = done + n, i + 1
    ref = torch.cat(accs["sequential"])
    out = {"episodes": episodes, "inner_steps": EVAL_STEPS, "chunk": EVAL_CHUNK, "work": "conv4-32 5-way 1-shot 15q 84px",
           "seconds": seconds, "warmup_chunk_s": warmup_s,
           "speedup_vs_sequential": {m: seconds["sequential"] / s for m, s in seconds.items()},
           "mean_acc": {m: torch.cat(a).mean().item() for m, a in accs.items()},
           "accuracies_equal_to_sequential": {m: bool(torch.equal(torch.cat(a), ref)) for m, a in accs.items()},
           "max_acc_diff_to_sequential": {m: float((torch.cat(a) - ref).abs().max()) for m, a in accs.items()}}
    return out


def print_table(report: dict) -> None:
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    print(f"{'config':<36}{'system':<20}{'s/it':>9}{'tasks/s':>9}{'MiB':>8}{'x l2l':>7}{'loss diff':>11}")
    for res in report["results"]:
        for name, e in res["systems"].items():
            print(f"{res['config']['name']:<36}{name:<20}{e['median_s']:>9.3f}{e['tasks_per_s']:>9.2f}"
                  f"{fmt(e['peak_mib'], '.0f'):>8}{fmt(e.get('time_ratio_vs_l2l'), '.2f'):>7}"
                  f"{fmt(e.get('first_loss_abs_diff_vs_l2l'), '.1e'):>11}")
        for name, why in res["unavailable"].items():
            print(f"{res['config']['name']:<36}{name:<20}  not run: {why[:90]}")
    ev = report.get("eval")
    if ev:
        print(f"eval {ev['episodes']} episodes ({ev['work']}, {ev['inner_steps']} steps):")
        for mode, sec in ev["seconds"].items():
            print(f"  {mode:<18}{sec:>9.1f} s  x{ev['speedup_vs_sequential'][mode]:.2f}  warm-up chunk "
                  f"{ev['warmup_chunk_s'][mode]:.1f} s  mean acc {ev['mean_acc'][mode]:.4f}  equal to sequential: "
                  f"{ev['accuracies_equal_to_sequential'][mode]}")


SYSTEMS = ("metakd-seq", "metakd-vmap", "metakd-compile", "metakd-vmap-compile", "metakd-seq-ckpt", "learn2learn",
           "parallel-metalearn")


def markdown_table(report: dict) -> str:
    """The report as a markdown table: seconds per meta-iteration (x learn2learn's time) [peak MiB] per
    system, then the evaluation row(s)."""
    shown = [s for s in SYSTEMS if any(s in r["systems"] for r in report["results"])]
    lines = ["| config | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    def order(res: dict) -> tuple:
        c = res["config"]
        return (c["backbone"], c.get("hidden", 0), c["shots"], c["meta_batch"], c["order"] != "first")

    for res in sorted(report["results"], key=order):
        cells = []
        for name in shown:
            e = res["systems"].get(name)
            if e is None:
                cells.append("n/a" if name in res.get("unavailable", {}) else "")
                continue
            ratio = e.get("time_ratio_vs_l2l")
            mem = e.get("peak_mib")
            cells.append(f"{e['median_s']:.2f}" + (f" (×{ratio:.2f})" if ratio is not None else "")
                         + (f" [{mem:,.0f}]" if mem is not None else ""))
        lines.append(f"| {res['config']['name']} | " + " | ".join(cells) + " |")
    ev = report.get("eval")
    if ev:
        lines.append("")
        lines.append(f"Evaluation of {ev['episodes']} episodes ({ev['work']}, {ev['inner_steps']} inner steps, "
                     f"chunks of {ev['chunk']}): " + "; ".join(
                         f"{mode} {sec:.1f} s (×{ev['speedup_vs_sequential'][mode]:.2f} vs sequential, accuracies "
                         f"{'identical' if ev['accuracies_equal_to_sequential'][mode] else 'max diff %.3f' % ev['max_acc_diff_to_sequential'][mode]})"
                         for mode, sec in ev["seconds"].items()) + ".")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help=f"the CPU subset {', '.join(QUICK)} (ResNet-12 at 32 px, meta-batch 2), 3 timed "
                             "iterations, 200 eval episodes")
    parser.add_argument("--configs", default=None, help="comma list of config-name globs (see --list); 'none': the evaluation only")
    parser.add_argument("--systems", default="*", help="comma list of system-name globs")
    parser.add_argument("--list", action="store_true", help="print the config names and exit")
    parser.add_argument("--table", type=Path, default=None, help="print a result file as a markdown table and exit")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 10; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations, the first one included")
    parser.add_argument("--eval-episodes", type=int, default=None, help="0 skips (default 600; 200 with --quick)")
    parser.add_argument("--eval-modes", default=",".join(EVAL_MODES), help="comma list of " + ", ".join(EVAL_MODES))
    parser.add_argument("--resnet-size", type=int, default=None, help="ResNet-12 image size (84; 32 with --quick)")
    parser.add_argument("--resnet-batch", type=int, default=None, help="ResNet-12 meta-batch (4; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output folder (default: runs/benchmarks/)")
    add_update_results_flag(parser)
    parser.add_argument("--merge", action="store_true",
                        help="keep the configs (and eval) of an existing result file that this run does not "
                             "measure, so a long grid can run in pieces (e.g. under a per-command time limit)")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    iters = args.iters or (3 if q else 10)
    episodes = args.eval_episodes if args.eval_episodes is not None else (200 if q else 600)
    configs = all_configs(args.resnet_size or (32 if q else 84), args.resnet_batch or (2 if q else 4))
    patterns = args.configs.split(",") if args.configs else (QUICK if q else ["*"])
    chosen = [c for c in configs if any(fnmatch.fnmatch(c["name"], p.strip()) for p in patterns)]
    if args.list:
        print("\n".join(c["name"] for c in chosen))
        return {}
    if not chosen and args.configs != "none":
        parser.error(f"--configs {args.configs!r} matches no config; see --list")
    device = torch.device(args.device)
    l2l = load_learn2learn()
    try:
        import metalearn  # noqa: F401
        pml = getattr(metalearn, "__version__", None) or _dist_version("parallel-metalearn")
    except Exception as exc:  # noqa: BLE001
        pml = f"not available: {type(exc).__name__}: {exc}"
    report = {"device": device_description(device), "torch": torch.__version__,
              "learn2learn": getattr(l2l, "__version__", None) if l2l else None, "parallel_metalearn": pml,
              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
              "load_average_start": list(os.getloadavg()),
              "command": "python benchmarks/speed_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "work": {"n_way": WAYS, "q_query": QUERIES, "inner_steps": STEPS, "inner_lr": INNER_LR,
                       "optimizer": f"Adam({META_LR})", "conv4_image": 84},
              "iters": iters, "warmup": args.warmup, "results": []}
    wanted = [s.strip() for s in args.systems.split(",")]
    out = (args.out or output_dir(args.update_results)) / f"speed_suite_{device_slug(device)}{'_quick' if q else ''}.json"
    kept = previous_results(out, {c["name"] for c in chosen}, report) if args.merge else {}
    report["results"] = kept.get("results", [])
    for cfg in chosen:
        print(f"running {cfg['name']} ...", flush=True)
        result = run_config(cfg, device, l2l, wanted, iters, args.warmup, args.seed)
        result["command"], result["load_average_end"] = report["command"], list(os.getloadavg())
        report["results"].append(result)
        write_json(out, {**report, "partial": True})  # a long run keeps what it has measured so far
    if episodes > 0:
        print(f"evaluating {episodes} episodes ...", flush=True)
        report["eval"] = run_eval(episodes, device, args.seed, [m.strip() for m in args.eval_modes.split(",")])
        report["eval"]["command"] = report["command"]
    elif "eval" in kept:
        report["eval"] = kept["eval"]
    report["load_average_end"] = list(os.getloadavg())
    print(f"device: {report['device']}   torch {report['torch']}   learn2learn {report['learn2learn']}   "
          f"parallel-metalearn {report['parallel_metalearn']}")
    print_table(report)
    write_json(out, report)
    print(f"wrote {out}")
    return report


def previous_results(path: Path, rerun: set, report: dict) -> dict:
    """The results and eval of an earlier run in ``path`` that this run does not redo (``--merge``).

    Refuses to mix runs made under another torch, learn2learn or device (the numbers would not compare).
    """
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--merge: cannot read {path}: {exc}")
    for key in ("device", "torch", "learn2learn", "parallel_metalearn"):
        if old.get(key) != report[key]:
            raise SystemExit(f"--merge: {path} was measured with {key}={old.get(key)!r}, this run has "
                             f"{report[key]!r}; write elsewhere with --out or drop --merge")
    return {"results": [r for r in old.get("results", []) if r["config"]["name"] not in rerun],
            **({"eval": old["eval"]} if "eval" in old else {})}


def _dist_version(name: str) -> Optional[str]:
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
