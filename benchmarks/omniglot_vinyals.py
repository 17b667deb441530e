"""MAML's and ProtoNet's published Omniglot split (Vinyals et al. 2016) at the budget a CPU allows: the first
check of the whole training pipeline against a published table.

Data (``data.options.protocol: vinyals``, see metakd/data/omniglot.py): both official sets, split as
ProtoNet's released lists: 1,028 training, 172 validation (5 alphabets) and 423 test characters, each
rotated by 90/180/270 degrees as three new classes, 28x28, random episodes across alphabets. The papers'
MAML trains on train + validation (1,200 characters); here both learners train on the 1,028 and keep the
validation alphabets for the curve and the checkpoint choice (best.pt), stated in the report.

Cells (the shipped configs, at --*-iterations):
  protonet   protonet_omniglot_5w1s: Conv4-64, 60-way 1-shot training episodes, 5 queries, Adam 1e-3
             halved every 2,000 episodes; one model scored 5-way and 20-way 1-shot (as the paper does)
  maml5      maml_omniglot_5w1s: second-order MAML, inner lr 0.4, 1 step (3 at test), meta-batch
             --maml-meta-batch (published 32), scored 5-way 1-shot
  maml20     maml_omniglot_20w1s: inner lr 0.1, 5 steps, meta-batch 16, scored 20-way 1-shot (the most
             expensive cell; not in the default list)

Every model is scored once on the same --episodes fixed test episodes per way (15 queries per class),
never used for a choice. Reported per cell and way: accuracy mean ± Student-t 95% over seeds, each seed's
per-episode 95% interval, the validation curve, training seconds and the fraction of the papers'
iterations run; and protonet − maml5 on the shared 5-way episodes at seed level (paired over episodes
within each seed, t over the per-seed means), next to the published numbers (MAML 98.7 ± 0.4 / 95.8 ± 0.3,
ProtoNet 98.8 / 96.0, 5- / 20-way 1-shot).

Resumable pieces: each (cell, seed) writes its JSON into --work/pieces/ when done; training resumes from
its last.pt. Disjoint --seeds in two processes share a --work.

    .venv/bin/python benchmarks/omniglot_vinyals.py --root data/omniglot --work runs/omniglot_vinyals --seeds 0 1 2
    .venv/bin/python benchmarks/omniglot_vinyals.py --work runs/omniglot_vinyals --report-only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.config import load_config  # noqa: E402
from metakd.engine.assembly import describe_device, make_sampler, resolve_device, split_for  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import load_for_evaluation  # noqa: E402
from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402
from metakd.stats import seed_level_paired, t_interval  # noqa: E402
from benchlib.results import add_study_flags, load_pieces, run_study  # noqa: E402
from benchlib.short_runs import train_resumable  # noqa: E402

CPU = torch.device("cpu")
# cell -> (config, ways scored, the published accuracy % per way, the paper's meta-iterations)
CELLS = {"protonet": ("protonet_omniglot_5w1s", (5, 20), {5: 98.8, 20: 96.0}, None),
         "maml5": ("maml_omniglot_5w1s", (5,), {5: 98.7}, 60000),
         "maml20": ("maml_omniglot_20w1s", (20,), {20: 95.8}, 60000)}
DEFAULT_CELLS = ("protonet", "maml5")


def test_accuracy(run: Path, way: int, episodes: int) -> Dict[str, Any]:
    """best.pt of ``run`` on the first ``episodes`` fixed ``way``-way 1-shot test episodes (list seed 0, the
    same for every cell and seed), 15 queries per class."""
    _, model, ckpt = load_for_evaluation(run, CPU)
    cfg = json.loads(json.dumps(ckpt["config"]))
    cfg["episodes"]["n_way"] = way
    sampler = make_sampler(cfg, split_for(cfg, "test"), q_query=cfg["episodes"]["test_q_query"], device=CPU,
                           normalize=ckpt.get("normalize"))
    res = evaluate_episodes(model, sampler, sampler.fixed_episodes(episodes, 0), progress=False)
    return {"acc": res["acc"], "ci95": res["ci95"], "per_episode": res["per_episode"],
            "fingerprint": res.get("fingerprint")}


def piece(cell: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    config, ways, _, _ = CELLS[cell]
    iterations = args.protonet_iterations if cell == "protonet" else args.maml_iterations
    over = [f"data.root={args.root}", "device=cpu", "threads=1", f"seed={seed}", "tensorboard=false",
            f"train.iterations={iterations}", f"train.val_every={max(1, iterations // args.curve_points)}",
            f"train.checkpoint_every={max(1, iterations // args.curve_points)}",
            f"train.val_episodes={args.val_episodes}", *args.override]
    if cell == "maml5":
        over.append(f"train.meta_batch={args.maml_meta_batch}")
    run = Path(args.work) / "runs" / f"{cell}_s{seed}"
    out = {"cell": cell, "seed": seed, "config": config, "overrides": over, "iterations": iterations,
           "meta_batch": load_config(config, over)["train"]["meta_batch"], **train_resumable(config, run, over)}
    out["test"] = {str(way): test_accuracy(run, way, args.episodes) for way in ways}
    return out


def report(work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    pieces: Dict[str, Dict[int, Dict[str, Any]]] = load_pieces(work)
    rows = []
    for cell, (config, ways, published, paper_iterations) in CELLS.items():
        got = pieces.get(cell, {})
        for way in ways if got else ():
            accs = [got[s]["test"][str(way)]["acc"] for s in sorted(got)]
            iters = sorted({got[s]["iterations"] for s in got})
            batches = sorted({got[s]["meta_batch"] for s in got})
            rows.append({"cell": cell, "way": way, "config": config, "seeds": sorted(got), "acc": t_interval(accs),
                         "published": published[way], "iterations": iters, "meta_batch": batches,
                         "paper_iterations": paper_iterations,
                         "per_seed": {s: {"acc": got[s]["test"][str(way)]["acc"], "ci95": got[s]["test"][str(way)]["ci95"],
                                          "train_seconds": got[s]["train_seconds"], "curve": got[s]["curve"],
                                          "best_val": max(a for _, a in got[s]["curve"]) if got[s]["curve"] else None}
                                      for s in sorted(got)}})
    comparisons = []
    if "protonet" in pieces and "maml5" in pieces:
        a = {s: p["test"]["5"]["per_episode"] for s, p in pieces["protonet"].items()}
        b = {s: p["test"]["5"]["per_episode"] for s, p in pieces["maml5"].items()}
        if set(a) & set(b):
            comparisons.append({"a": "protonet", "b": "maml5", "way": 5, **seed_level_paired(a, b)})
    return {"benchmark": "omniglot_vinyals", "command": " ".join(["benchmarks/omniglot_vinyals.py", *sys.argv[1:]]),
            "device": describe_device(resolve_device("cpu")), "episodes": args.episodes, "rows": rows,
            "comparisons": comparisons,
            "deviations": "both learners train on ProtoNet's 1,028 training characters (x4 rotations) and keep the "
                          "172 validation characters for the curve and best.pt; MAML's paper trains on all 1,200. "
                          "CPU budgets far below the papers' (see iterations)."}


def markdown(rep: Dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = [f"`{rep['command']}`", "", f"Omniglot, Vinyals split (MAML / ProtoNet), 1-shot test accuracy on "
             f"{rep['episodes']} fixed episodes per way (15 queries per class); {rep['device']}. {rep['deviations']}",
             "", "| cell | way | seeds | test acc % (mean ± t95 over seeds) | per seed [episode 95%] | published | "
             "iterations (paper) | meta-batch | best val % per seed | train s per seed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        ci = "n/a" if r["acc"]["ci"] != r["acc"]["ci"] else pct(r["acc"]["ci"])
        per = "; ".join(f"{pct(v['acc'])} ± {pct(v['ci95'])}" for v in r["per_seed"].values())
        vals = ", ".join(pct(v["best_val"]) for v in r["per_seed"].values() if v["best_val"] is not None)
        secs = ", ".join(f"{v['train_seconds']:.0f}" for v in r["per_seed"].values())
        paper = f" ({r['paper_iterations']:,})" if r["paper_iterations"] else " (early stopping)"
        lines.append(f"| {r['cell']} | {r['way']} | {len(r['seeds'])} | {pct(r['acc']['mean'])} ± {ci} | {per} | "
                     f"{r['published']} | {', '.join(map(str, r['iterations']))}{paper} | {', '.join(map(str, r['meta_batch']))} | "
                     f"{vals} | {secs} |")
    for c in rep["comparisons"]:
        s = c["seed_level"]
        ci = "n/a" if s["ci"] != s["ci"] else pct(s["ci"])
        lines += ["", f"{c['a']} − {c['b']}, {c['way']}-way, paired over the shared episodes: {pct(s['mean'])} ± {ci} "
                  f"points (seed level, p {s['p']:.3g}); within each seed: "
                  + "; ".join(f"seed {k}: {pct(v['mean'])} ± {pct(v['ci'])}" for k, v in c["within_seed"].items())]
    lines += ["", "Validation curves (step: val acc % at the cell's training way (maml20: 20-way, the others 5-way), "
              "validation alphabets):", ""]
    for r in rep["rows"]:
        if r["way"] != min(CELLS[r["cell"]][1]):
            continue
        for s, v in r["per_seed"].items():
            lines.append(f"- {r['cell']} seed {s}: " + ", ".join(f"{st}: {pct(a)}" for st, a in v["curve"]))
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/omniglot", help="folder with images_background and images_evaluation")
    ap.add_argument("--work", default="runs/omniglot_vinyals", help="run folders and finished pieces (resumable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), choices=list(CELLS))
    ap.add_argument("--protonet-iterations", type=int, default=2000)
    ap.add_argument("--maml-iterations", type=int, default=600)
    ap.add_argument("--maml-meta-batch", type=int, default=32, help="maml5 (published 32)")
    ap.add_argument("--episodes", type=int, default=600, help="fixed test episodes per way")
    ap.add_argument("--val-episodes", type=int, default=200, help="validation episodes per point of the curve")
    ap.add_argument("--curve-points", type=int, default=5, help="validations (and checkpoints) per training")
    ap.add_argument("--override", nargs="*", default=[], help="key=value overrides for every cell's config")
    add_study_flags(ap, "omniglot_vinyals_cpu.json")
    args = ap.parse_args(argv)
    return run_study(args, piece, report, markdown, "omniglot_vinyals_cpu.json")


if __name__ == "__main__":
    main()
