"""MAML vs MAML + Meta Self-Distillation on the built-in glyphs, under the augmented test scenario.

Identical budgets: the same meta-iterations, seeds, meta-batch (4 tasks), backbone (Conv4-32, 28×28
gray glyphs), inner settings (lr 0.4, 1 step in training, 3 at test) and fixed test episodes. Variants:

- maml:            4 tasks per meta-batch, 4 adapted copies per iteration.
- msd_per_task:    4 tasks × 4 views: 16 adapted copies per iteration (about 4× MAML's compute).
- msd_in_place:    views take the place of tasks: 2 tasks × 2 views, 4 adapted copies (MAML's compute).

Each trained model is evaluated on the same fixed test episodes, standard and under the weak/strong
perturbation of the support, query or both sets, with the consistency metric. Reported: accuracy ±
95% CI over episodes per seed, the mean over seeds ± a Student-t 95% interval of the seed means, and
the paired per-episode difference to MAML on the shared fixed episodes (per seed, then over seeds).

    .venv/bin/python benchmarks/msd_vs_maml.py --iterations 150 --seeds 0 1 --episodes 100 --jobs 2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.engine.metrics import format_acc  # noqa: E402
from metakd.stats import paired_difference, t_interval  # noqa: E402
from metakd.engine.robustness import evaluate_robustness, scenario_label  # noqa: E402
from metakd.engine.build import describe_device  # noqa: E402
from results_io import write_json_and_markdown  # noqa: E402
from short_runs import train_fresh  # noqa: E402

VARIANTS = {
    "maml": ("maml_glyphs_5w1s", []),
    "msd_per_task": ("msd_maml_glyphs_5w1s", ["learner.options.views=4", "learner.options.budget=per_task"]),
    "msd_in_place": ("msd_maml_glyphs_5w1s", ["learner.options.views=2", "learner.options.budget=in_place_of_tasks"]),
}


def run_one(job, args) -> dict:
    """Train one (seed, variant) and evaluate it under every scenario (one thread per process)."""
    torch.set_num_threads(1)
    seed, variant = job
    name, extra = VARIANTS[variant]
    run = Path(args.work) / f"{variant}_seed{seed}"
    train_s = train_fresh(name, run, seed, args.iterations,
                          ["device=cpu", "model.options.hidden=32", "episodes.q_query=5", "train.lr=0.003", *extra],
                          log_every=50)
    tic = time.perf_counter()
    res = evaluate_robustness(run / "last.pt", episodes=args.episodes, seed=0,
                              consistency_views=args.consistency_views, device="cpu", progress=False)
    res.update(variant=variant, seed=seed, train_seconds=train_s, eval_seconds=time.perf_counter() - tic)
    print(f"{variant} seed {seed}: train {train_s:.0f}s, eval {res['eval_seconds']:.0f}s; "
          + "; ".join(f"{scenario_label(r)} {format_acc(r['accuracy'], r['ci95'])}" for r in res["rows"]), flush=True)
    return res


def over_seeds(values):
    """Mean and Student-t 95% half-width over seeds (nan when a value is missing or there is one seed)."""
    if any(v != v for v in values):
        return float("nan"), float("nan")
    r = t_interval(values)
    return r["mean"], r["ci"]


def paired_vs_maml(results, variant, row, seeds):
    """Per seed, the paired per-episode difference variant − maml on the shared fixed episodes, and over
    seeds the Student-t interval of those per-seed mean differences (None for maml itself)."""
    if variant == "maml" or not any(r["variant"] == "maml" for r in results):
        return None
    per_seed = []
    for seed in seeds:
        a = next(r for r in results if r["variant"] == variant and r["seed"] == seed)["rows"][row]
        b = next(r for r in results if r["variant"] == "maml" and r["seed"] == seed)["rows"][row]
        if "per_episode" not in a or "per_episode" not in b:
            return None
        d = paired_difference(a["per_episode"], b["per_episode"])
        per_seed.append({"seed": seed, "mean": d["mean"], "ci95": d["ci"], "p": d["p"]})
    m, ci = over_seeds([d["mean"] for d in per_seed])
    return {"per_seed": per_seed, "mean_over_seeds": m, "ci95_over_seeds": ci}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--consistency-views", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--work", default="runs/bench_msd")
    p.add_argument("--out", default="benchmarks/results/msd_vs_maml_cpu.json")
    p.add_argument("--jobs", type=int, default=2, help="(seed, variant) runs in parallel, one thread each")
    args = p.parse_args()
    jobs = [(seed, variant) for seed in args.seeds for variant in args.variants]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_one, jobs, [args] * len(jobs)))
    else:
        results = [run_one(job, args) for job in jobs]
    summary = []
    for variant in args.variants:
        runs = [r for r in results if r["variant"] == variant]
        for i, row in enumerate(runs[0]["rows"]):
            accs = [r["rows"][i]["accuracy"] for r in runs]
            cons = [r["rows"][i].get("consistency", float("nan")) for r in runs]
            m, ci = over_seeds(accs)
            cm, cci = over_seeds(cons)
            summary.append({"variant": variant, "scenario": scenario_label(row), "acc_mean_over_seeds": m,
                            "acc_ci95_over_seeds": ci, "consistency_mean_over_seeds": cm,
                            "consistency_ci95_over_seeds": cci,
                            "paired_vs_maml": paired_vs_maml(results, variant, i, args.seeds),
                            "per_seed": [{"seed": r["seed"], "accuracy": r["rows"][i]["accuracy"],
                                          "ci95": r["rows"][i]["ci95"]} for r in runs],
                            "train_seconds_mean": sum(r["train_seconds"] for r in runs) / len(runs)})
    seeds_hdr = " | ".join(f"seed {s} (± CI over episodes)" for s in args.seeds)
    lines = [f"| variant | scenario | {seeds_hdr} | mean over seeds ± CI | consistency (mean over seeds) |",
             "|---|---|" + "---|" * len(args.seeds) + "---|---|"]
    for s in summary:
        per = " | ".join(format_acc(p["accuracy"], p["ci95"]) for p in s["per_seed"])
        lines.append(f"| {s['variant']} | {s['scenario']} | {per} | "
                     f"{format_acc(s['acc_mean_over_seeds'], s['acc_ci95_over_seeds'])} | "
                     f"{s['consistency_mean_over_seeds']:.4f} |")
    table = "\n".join(lines)
    cost = ("compute per meta-iteration: maml 4 adapted copies; msd_per_task 16 (4 tasks × 4 views, ~4×); "
            "msd_in_place 4 (2 tasks × 2 views)")
    report = {"command": " ".join(sys.argv), "iterations": args.iterations, "seeds": args.seeds,
              "episodes": args.episodes, "consistency_views": args.consistency_views, "compute": cost,
              "device": describe_device(torch.device("cpu")), "summary": summary, "runs": results, "table": table}
    print(table)
    write_json_and_markdown(Path(args.out), report,
                            f"`{report['command']}`\n\n{cost}; device {report['device']}; {args.episodes} fixed test "
                            f"episodes, {args.iterations} meta-iterations, seeds {args.seeds}.\n\n{table}\n")


if __name__ == "__main__":
    main()
