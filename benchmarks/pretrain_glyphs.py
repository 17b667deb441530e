"""Does a pre-trained backbone help on the glyphs? Pre-training -> linear probe, ProtoNet, MAML and
Unicorn-MAML started from it (``model.init``), against the same learners from scratch.

Per seed (>= 3 seeds for the published table):
  pretrain        ``metakd pretrain pretrain_conv4_glyphs`` (Conv4 of --hidden width, running BatchNorm) for --pretrain-epochs
  linear_probe    logistic regression on frozen features: of the pre-trained backbone / of a random one
  protonet_nc     ProtoNet (nearest centroid) on the pre-trained features without meta-training
  protonet, maml, unicorn_maml
                  meta-trained for --iterations from the pre-trained backbone / from scratch (each learner's
                  shipped glyph config, with Conv4-<--hidden> so the pre-trained weights fit, --q-query training
                  queries; BatchNorm as in that config; ProtoNet trained --protonet-way)
Every model is evaluated on the same --episodes fixed 5-way test episodes (600 for the table).
Reported: mean over seeds ± Student-t 95% CI (``metakd.stats.t_interval``) of the per-seed accuracies,
and the difference pre-trained − scratch at seed level (paired t test over the per-seed mean
differences, n_seeds − 1 dof, Holm's adjusted p over the table's comparisons), with each seed's
per-episode paired interval (within that seed; ``metakd.stats.seed_level_paired``).

Resumable in pieces: each piece (a pre-training, or one learner × start × seed trained and evaluated)
writes its result JSON atomically into --work/pieces/ when it finishes; a rerun skips finished pieces,
and an unfinished training run continues from its last.pt. ``unicorn_maml`` is skipped with a message
when no learner of that name is registered.

    .venv/bin/python benchmarks/pretrain_glyphs.py                       # the study (35 CPU-minutes)
    .venv/bin/python benchmarks/pretrain_glyphs.py --tiny --work /tmp/pg --out /tmp/pg/result.json   # smoke test
    .venv/bin/python benchmarks/pretrain_glyphs.py --report-only          # the tables from the finished pieces
    .venv/bin/python benchmarks/pretrain_glyphs.py --restat benchmarks/results/pretrain_glyphs_cpu.json --update-results

Writes pretrain_glyphs_cpu.{json,md} into runs/benchmarks/ (benchmarks/results/ with --update-results, or --out FILE).

CPU time of the defaults (one thread, the 2-core development machine at load ~2, another study on the
other core): 35 CPU-minutes for 3 seeds (pre-training ~2.7 min per seed; each meta-training 0.3-2 min;
each 600-episode evaluation under a minute). Two processes with disjoint --seeds on the same --work
halve the wall time (then --report-only).

Rows ``maml-tunedlr`` / ``unicorn_maml-tunedlr``: the same learners from the pre-trained weights with the
inner lr chosen from --pre-inner-lrs on 100 fixed validation episodes before meta-training (the config's
0.4 suits random initialisation; from pre-trained weights MAML's new random head turns it into a
destructive first step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.config import load_config  # noqa: E402
from metakd.engine.assembly import describe_device  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import evaluate_checkpoint  # noqa: E402
from metakd.engine.training.job_config import load_pretrain_config  # noqa: E402
from metakd.engine.training.pretrain import run_pretrain  # noqa: E402
from metakd.engine.training.meta import Trainer  # noqa: E402
from metakd.registry import LEARNERS  # noqa: E402
from metakd.stats import format_interval, t_interval  # noqa: E402
from benchlib.results import (add_holm, add_update_results_flag, format_paired, output_path, paired_over_seeds,  # noqa: E402
                        restat_paired, run_piece, write_json_and_markdown)

META = {"protonet": "protonet_glyphs_5w1s", "maml": "maml_glyphs_5w1s", "unicorn_maml": "unicorn_maml_glyphs_5w1s"}
TINY_DATA = ["data.options.num_classes=70", "model.options.hidden=8"]


def piece_path(work: Path, name: str) -> Path:
    return work / "pieces" / f"{name}.json"


def evaluate(run: Path, episodes: int, learner: str | None = None, overrides: List[str] = ()) -> Dict[str, Any]:
    res = evaluate_checkpoint(run, episodes=episodes, learner=learner, overrides=list(overrides), progress=False,
                              device="cpu", out=run / f"eval_{learner or 'run'}_{episodes}.json")
    return {"acc": res["accuracy"], "ci95": res["ci95"], "per_episode": res["per_episode"],
            "fingerprint": res["episodes_fingerprint"], "eval_seconds": res["seconds"]}


def pretrain_piece(args, work: Path, seed: int) -> Dict[str, Any]:
    run = work / f"pretrain_s{seed}"
    over = [f"seed={seed}", "device=cpu", "threads=1", f"train.epochs={args.pretrain_epochs}", "tensorboard=false",
            f"model.options.hidden={args.hidden}"]
    if args.tiny:
        over += [*TINY_DATA, "train.batch_size=80", "train.val_episodes=10"]
    cfg = load_pretrain_config("pretrain_conv4_glyphs", over)
    summary = run_pretrain(cfg, run, resume=(run / "last.pt").exists(), progress=False)
    return {"run": str(run), "best_val": summary["best_val"], "epochs": summary["epoch"]}


def inner_lr_piece(args, work: Path, learner: str, seed: int, init: str) -> Dict[str, Any]:
    """The inner lr for ``learner`` started from ``init``: the best of --pre-inner-lrs by the accuracy of
    the pre-trained backbone, not yet meta-trained, on 100 fixed *validation* episodes."""
    scores = {}
    for lr in args.pre_inner_lrs:
        res = evaluate_checkpoint(init, episodes=20 if args.tiny else 100, split="val", learner=learner, progress=False,
                                  device="cpu", out=work / "inner_lr" / f"{learner}_s{seed}_lr{lr}.json",
                                  overrides=[f"learner.options.inner_lr={lr}", "learner.options.test_steps=3",
                                             "model.options.bn=transductive"])
        scores[lr] = res["accuracy"]
        print(f"{learner} from pre-trained, seed {seed}, inner lr {lr}: val {100 * res['accuracy']:.2f}", flush=True)
    return {"scores": scores, "chosen": max(args.pre_inner_lrs, key=lambda lr: scores[lr])}


def meta_piece(args, work: Path, learner: str, seed: int, init: str | None,
               inner_lr: float | None = None) -> Dict[str, Any]:
    tag = "pre" if init else "scratch"
    run = work / (f"{learner}_{tag}_s{seed}" if inner_lr is None else f"{learner}_{tag}_lr{inner_lr}_s{seed}")
    over = [f"seed={seed}", "device=cpu", "threads=1", f"train.iterations={args.iterations}",
            f"train.val_every={args.iterations}", "train.val_episodes=50", f"train.checkpoint_every={max(1, args.iterations // 4)}",
            "train.log_every=50", f"model.options.hidden={args.hidden}", f"episodes.q_query={args.q_query}",
            f"output_dir={run}"]
    if learner == "protonet":
        over.append(f"episodes.train_n_way={args.protonet_way}")
    if args.tiny:
        over += [*TINY_DATA, "train.val_episodes=4", "train.meta_batch=2", "episodes.train_n_way=5"]
    if init:
        over.append(f"model.init={init}")
    if inner_lr is not None:
        over.append(f"learner.options.inner_lr={inner_lr}")
    cfg = load_config(META[learner], over)
    tic = time.perf_counter()
    summary = Trainer(cfg, progress=False).fit(resume=(run / "last.pt").exists())
    out = evaluate(run, args.episodes)
    out.update(train_seconds=time.perf_counter() - tic - out["eval_seconds"], step=summary["step"], run=str(run),
               inner_lr=cfg["learner"]["options"].get("inner_lr"))
    return out


def probe_piece(args, work: Path, seed: int, init: str | None, learner: str = "linear_probe",
                label: str = "linear_probe") -> Dict[str, Any]:
    """A learner without meta-training on a pre-trained (``init``) or a random backbone (``iterations=0``)."""
    tag = "pre" if init else "scratch"
    run = work / f"{label}_{tag}_s{seed}"
    over = [f"seed={seed}", "device=cpu", "threads=1", "train.iterations=0", "train.val_episodes=20",
            f"model.options.hidden={args.hidden}", "model.options.bn=running", f"learner.name={learner}", f"output_dir={run}"]
    if args.tiny:
        over += [*TINY_DATA, "train.val_episodes=4"]
    if init:
        over.append(f"model.init={init}")
    cfg = load_config(META["protonet"], over)
    cfg["learner"]["options"] = {}
    if not (run / "summary.json").exists():
        Trainer(cfg, progress=False).fit(resume=(run / "last.pt").exists())
    out = evaluate(run, args.episodes)
    out.update(run=str(run), train_seconds=0.0)
    return out


def summarise(results: Dict[str, Dict[int, Dict[str, Any]]], seeds: List[int]) -> Dict[str, Any]:
    rows = {}
    for name, per_seed in results.items():
        accs = [per_seed[s]["acc"] for s in seeds if s in per_seed]
        if not accs:
            continue
        rows[name] = {"seeds": [s for s in seeds if s in per_seed], "per_seed": accs, **t_interval(accs),
                      "train_seconds": [per_seed[s].get("train_seconds", per_seed[s].get("seconds")) for s in seeds
                                        if s in per_seed]}
    pairs = {}
    for name in sorted({n.rsplit("_", 1)[0] for n in results if n.endswith("_pre")}):
        a, b = results.get(f"{name}_pre", {}), results.get(f"{name.split('-')[0]}_scratch", {})
        common = [s for s in seeds if s in a and s in b]
        if not common:
            continue
        pairs[name] = paired_over_seeds({s: a[s]["per_episode"] for s in common},
                                        {s: b[s]["per_episode"] for s in common})
    add_holm([((name,), d) for name, d in pairs.items()])
    return {"rows": rows, "paired_pre_minus_scratch": pairs}


def markdown(summary: Dict[str, Any], meta: Dict[str, Any]) -> str:
    lines = [f"Glyphs 5-way 1-shot, {meta['episodes']} fixed test episodes, seeds {meta['seeds']}, pre-training "
             f"{meta['pretrain_epochs']} epochs, meta-training {meta['iterations']} iterations (Conv4-{meta.get('hidden', 64)}, "
             f"{meta.get('q_query', 15)} training queries per class, ProtoNet trained {meta.get('protonet_way', 30)}-way); "
             f"{meta['device']}.", "",
             "| method | start | mean over seeds ± t 95% CI (%) | per seed (%) | train s (mean) |", "|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        method, _, start = name.rpartition("_")
        per = ", ".join(f"{100 * v:.2f}" for v in r["per_seed"])
        secs = [s for s in r["train_seconds"] if s is not None]
        lines.append(f"| {method} | {start} | {format_interval(r['mean'], r['ci'])} | {per} | "
                     f"{sum(secs) / len(secs) if secs else 0:.0f} |")
    chosen = meta.get("inner_lr_chosen") or {}
    if chosen:
        lines += ["", "`maml` / `unicorn_maml` from pre-trained weights use their config's inner lr (0.4); the "
                  "`-tunedlr` rows use the inner lr chosen on 100 validation episodes by the pre-trained backbone "
                  "before meta-training: " + "; ".join(
                      f"{k} {v['chosen']} (" + ", ".join(f"{lr}: {100 * a:.1f}" for lr, a in v["scores"].items()) + ")"
                      for k, v in chosen.items()) + ". Their paired row is against the scratch run (config lr)."]
    lines += ["", "Difference pre-trained − scratch (points) at seed level: mean of the per-seed mean paired "
              "differences ± Student-t 95% CI, p of the paired t test over seeds (n_seeds − 1 dof), Holm's adjusted p "
              f"over the {len(summary['paired_pre_minus_scratch'])} comparisons (bold: <= 0.05); and, within each seed, "
              "the per-episode paired interval (one trained pair of models; episodes better / worse). Seeds x episodes "
              "are not pooled: the same episodes evaluated once per seed are not independent samples.", "",
              "| method | seed level | within seed (per-episode paired, per seed) | episodes better / worse (per seed) |",
              "|---|---|---|---|"]
    for name, d in summary["paired_pre_minus_scratch"].items():
        w = d["within_seed"]
        within = "; ".join(f"s{s}: {format_interval(e['mean'], e['ci'])}" for s, e in w.items())
        wl = "; ".join(f"{e['a_better']} / {e['b_better']}" if "a_better" in e else "n/a" for e in w.values())
        lines.append(f"| {name} | {format_paired(d)} | {within} | {wl} |")
    if meta.get("statistics"):
        lines += ["", f"Statistics {meta['statistics']}."]
    return "\n".join(lines) + "\n"


def restat(source: Path, out: Path) -> None:
    """The statistics of a written result recomputed from its stored per-seed, per-episode paired differences
    (``per_seed_episode`` of older results, ``within_seed`` of this version's); the pooled entry is dropped."""
    report = json.loads(Path(source).read_text())
    pairs = {}
    for name, d in report["paired_pre_minus_scratch"].items():
        within = d.get("within_seed") or d["per_seed_episode"]
        pairs[name] = restat_paired({"within_seed": within})
    add_holm([((name,), d) for name, d in pairs.items()])
    report["paired_pre_minus_scratch"] = pairs
    report["statistics"] = ("recomputed by `benchmarks/pretrain_glyphs.py --restat` from the stored per-seed paired "
                            "differences (seed-level paired t test, Holm over the table)")
    summary = {k: report[k] for k in ("rows", "paired_pre_minus_scratch")}
    write_json_and_markdown(out, report, markdown(summary, report))
    print(markdown(summary, report))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--iterations", type=int, default=400, help="meta-training iterations of each meta-learner")
    p.add_argument("--hidden", type=int, default=32, help="Conv4 width of every model (pre-trained and scratch)")
    p.add_argument("--q-query", type=int, default=5, help="training queries per class of the meta-learners")
    p.add_argument("--protonet-way", type=int, default=5, help="ProtoNet's training way (its config: 30)")
    p.add_argument("--pre-inner-lrs", type=float, nargs="*", default=[0.4, 0.1, 0.05, 0.02],
                   help="MAML / Unicorn-MAML from the pre-trained backbone also run with the inner lr chosen from "
                        "these on validation episodes (rows <learner>-tunedlr; none: skip)")
    p.add_argument("--learners", nargs="+", default=["linear_probe", "protonet_nc", "protonet", "maml", "unicorn_maml"])
    p.add_argument("--work", default="runs/pretrain_glyphs", help="run folders and finished pieces")
    p.add_argument("--out", help="result JSON (default: runs/benchmarks/pretrain_glyphs_cpu.json)")
    add_update_results_flag(p)
    p.add_argument("--tiny", action="store_true", help="a smoke-test size: 70 classes, Conv4-8")
    p.add_argument("--report-only", action="store_true", help="only tabulate the pieces finished so far")
    p.add_argument("--restat", metavar="RESULT_JSON",
                   help="only recompute the statistics of a written result (seed level, Holm) and write it again")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.restat:
        return restat(Path(args.restat), output_path(args.out, "pretrain_glyphs_cpu.json", args.update_results))
    work = Path(args.work)
    learners = list(args.learners)
    if "unicorn_maml" in learners and "unicorn_maml" not in LEARNERS:
        print("skipping unicorn_maml: no learner of that name is registered (metakd list learners)")
        learners.remove("unicorn_maml")
    results: Dict[str, Dict[int, Dict[str, Any]]] = {}
    pre_info: Dict[int, Any] = {}
    tic = time.perf_counter()
    for seed in args.seeds:
        def have(name: str) -> bool:
            return piece_path(work, name).is_file()

        if args.report_only and not have(f"pretrain_s{seed}"):
            continue
        pre_info[seed] = run_piece(work, f"pretrain_s{seed}", lambda: pretrain_piece(args, work, seed))
        init = pre_info[seed]["run"]
        for learner in learners:
            for start in ("pre", "scratch"):
                if learner == "protonet_nc" and start == "scratch":
                    continue  # nearest centroid on random features is the linear probe's scratch row's cousin
                name = f"{learner}_{start}"
                piece = f"{name}_s{seed}"
                if args.report_only and not have(piece):
                    continue
                source = init if start == "pre" else None
                if learner in ("maml", "unicorn_maml") and start == "pre" and args.pre_inner_lrs:
                    tuned = f"{learner}-tunedlr_pre_s{seed}"
                    if not args.report_only or have(tuned):
                        sel = run_piece(work, f"inner_lr_{learner}_s{seed}",
                                        lambda: inner_lr_piece(args, work, learner, seed, init))
                        results.setdefault(f"{learner}-tunedlr_pre", {})[seed] = run_piece(
                            work, tuned, lambda: meta_piece(args, work, learner, seed, init, inner_lr=sel["chosen"]))
                if learner == "linear_probe":
                    fn = lambda: probe_piece(args, work, seed, source)  # noqa: E731
                elif learner == "protonet_nc":
                    fn = lambda: probe_piece(args, work, seed, source, learner="protonet", label="protonet_nc")  # noqa: E731
                else:
                    fn = lambda: meta_piece(args, work, learner, seed, source)  # noqa: E731
                results.setdefault(name, {})[seed] = run_piece(work, piece, fn)
    summary = summarise(results, args.seeds)
    meta = {"episodes": args.episodes, "seeds": args.seeds, "pretrain_epochs": args.pretrain_epochs,
            "iterations": args.iterations, "hidden": args.hidden, "q_query": args.q_query,
            "protonet_way": args.protonet_way, "device": describe_device(torch.device("cpu")), "tiny": args.tiny,
            "command": " ".join(sys.argv), "load_average": os.getloadavg(),
            "seconds_this_call": time.perf_counter() - tic,
            "pretrain": {str(s): v for s, v in pre_info.items()},
            "inner_lr_chosen": {f.stem[len("inner_lr_"):]: json.loads(f.read_text())
                                for f in sorted((work / "pieces").glob("inner_lr_*.json"))},
            "piece_seconds": {f"{n}_s{s}": r.get("seconds") for n, per in results.items() for s, r in per.items()}}
    report = {"benchmark": "pretrain_glyphs", **meta, **summary}
    out = output_path(args.out, "pretrain_glyphs_cpu.json", args.update_results)
    write_json_and_markdown(out, report, markdown(summary, meta))
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()
