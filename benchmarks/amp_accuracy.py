"""The accuracy effect of bf16 autocast (learner option ``amp: bf16``) on MAML, with confidence intervals.

For each seed, one model is meta-trained in float32 and one under bf16 autocast (same config, seed,
episodes and iterations); each is then evaluated on the same fixed test episodes twice, once with
float32 and once with bf16 inner loops, so the table separates the effect on training from the
effect on evaluation. Reported per cell: mean accuracy over seeds ± a Student-t 95% interval of the seed
means, and each seed's accuracy ± its 95% CI over episodes.

    .venv/bin/python benchmarks/amp_accuracy.py --device cpu --iterations 300 --seeds 0 1 2
    python benchmarks/amp_accuracy.py --device cuda --config maml_mini_5w1s ...   # on a GPU
Writes amp_accuracy_<device>.json and .md into runs/benchmarks/ (benchmarks/results/ with --update-results, or --out FILE).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import prepare_evaluation  # noqa: E402
from metakd.engine.runs.metrics import format_acc  # noqa: E402
from metakd.stats import t_interval  # noqa: E402
from metakd.engine.assembly import describe_device  # noqa: E402
from benchlib.results import add_update_results_flag, output_path, write_json_and_markdown  # noqa: E402
from benchlib.short_runs import train_fresh  # noqa: E402
from benchlib.timing import device_slug  # noqa: E402

AMP = ("off", "bf16")


def run_seed(seed: int, args) -> list:
    rows = []
    for train_amp in AMP:
        run = Path(args.work) / f"{args.config}_amp-{train_amp}_seed{seed}"
        train_s = train_fresh(args.config, run, seed, args.iterations,
                              [f"device={args.device}", f"learner.options.amp={train_amp}", *args.override])
        _, learner, _, sampler, fixed, episodes, ep_seed = prepare_evaluation(
            run / "last.pt", torch.device(args.device), episodes=args.episodes, seed=0)
        for eval_amp in AMP:
            learner.amp = eval_amp
            tic = time.perf_counter()
            res = evaluate_episodes(learner, sampler, fixed, batch_size=args.batch_size, progress=False)
            rows.append({"seed": seed, "train_amp": train_amp, "eval_amp": eval_amp, "accuracy": res["acc"],
                         "ci95": res["ci95"], "episodes": episodes, "episode_seed": ep_seed,
                         "fingerprint": res["fingerprint"], "train_seconds": train_s,
                         "eval_seconds": time.perf_counter() - tic})
            print(f"seed {seed} train {train_amp} eval {eval_amp}: {format_acc(res['acc'], res['ci95'])} "
                  f"(train {train_s:.0f} s)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="maml_glyphs_5w1s")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", nargs="*", default=[], help="extra config overrides key=value")
    p.add_argument("--work", default="runs/bench_amp")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default: runs/benchmarks/amp_accuracy_<device>.json)")
    add_update_results_flag(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [row for seed in args.seeds for row in run_seed(seed, args)]
    summary = []
    for train_amp in AMP:
        for eval_amp in AMP:
            cell = [r for r in rows if r["train_amp"] == train_amp and r["eval_amp"] == eval_amp]
            over = t_interval([r["accuracy"] for r in cell])
            m, ci = over["mean"], over["ci"]
            summary.append({"train_amp": train_amp, "eval_amp": eval_amp, "acc_mean_over_seeds": m,
                            "acc_ci95_over_seeds": ci, "per_seed": [(r["seed"], r["accuracy"], r["ci95"]) for r in cell],
                            "train_seconds_mean": sum(r["train_seconds"] for r in cell) / len(cell)})
    label = {"off": "float32", "bf16": "bf16"}
    lines = ["| trained in | evaluated in | mean over seeds ± CI | per seed (± CI over episodes) | train s (mean) |",
             "|---|---|---|---|---|"]
    for s in summary:
        per = "; ".join(format_acc(a, c) for _, a, c in s["per_seed"])
        lines.append(f"| {label[s['train_amp']]} | {label[s['eval_amp']]} | "
                     f"{format_acc(s['acc_mean_over_seeds'], s['acc_ci95_over_seeds'])} | {per} | "
                     f"{s['train_seconds_mean']:.0f} |")
    table = "\n".join(lines)
    report = {"command": "python benchmarks/amp_accuracy.py " + " ".join(sys.argv[1:]), "config": args.config,
              "iterations": args.iterations, "seeds": args.seeds, "episodes": args.episodes,
              "device": describe_device(device), "threads": torch.get_num_threads(),
              "load_average_end": list(os.getloadavg()), "summary": summary, "runs": rows, "table": table}
    out = output_path(args.out, f"amp_accuracy_{device_slug(device)}.json", args.update_results)
    header = (f"`{report['command']}`\n\n{args.config}, {args.iterations} meta-iterations, seeds {args.seeds}, "
              f"{args.episodes} fixed test episodes, device {report['device']}.\n\n")
    print(table)
    write_json_and_markdown(out, report, header + table + "\n")


if __name__ == "__main__":
    main()
