"""Does Meta Self-Distillation help? MAML vs MSD + MAML vs MAML at MSD's compute on the built-in glyphs.

Setup shared by every cell: 5-way 1-shot glyphs (28x28 gray), Conv4-32 with transductive BatchNorm,
MAML's Omniglot inner loop (lr 0.4, 1 step in training, 3 at test, second order), Adam 0.003, 5
training queries per class, the same --iterations, seeds and 600 fixed test episodes.

Phase 1, ``select`` (validation split only, one seed, --select-iterations each): a coordinate search
for MSD's open options, scored by the clean 5-way validation accuracy on --select-val-episodes fixed
val episodes (the trainer's validation): first lam in {0.3, 1, 3} (views 2, the preset's default
views), then the view strength in {weak, default, strong} of the glyph preset, then the number of
views in {2, 4}. Ties keep the earlier (cheaper) setting.

Phase 2, ``final`` (test split, once): for each seed,
  maml            meta-batch 4 tasks: 4 adapted copies per iteration;
  msd             MSD + MAML with the selected options, views per task: 4 x n adapted copies;
  maml_matched    MAML with meta-batch 4 x n tasks: the adapted copies (the compute) of msd;
and, after these (the part never cut), the --extra cells when asked: msd_nocons (the same views with
lam 0: augmented supports without the consistency term, to tell the two apart), msd_inplace (n views in
place of tasks: MAML's compute), unicorn, msd_unicorn, unicorn_matched. Each model is trained for --iterations
and its last.pt evaluated on the same fixed test episodes: standard on --episodes (600), weak/strong x
support/query/both of the glyph preset on the first --scenario-episodes (300) of the fixed list, and the
consistency metric (2 augmented support copies) on --consistency-episodes (200), standard and strong/both.
(On this CPU 600 episodes x 7 scenarios x 3 adaptations for the consistency were ~25 min per model,
more than its training; those cuts bring evaluation to ~6 min.)

Reported: per cell and scenario the mean over seeds ± Student-t 95% CI; the difference to maml and to
maml_matched at seed level (the paired t test over the per-seed mean differences on the shared
episodes, n_seeds − 1 dof) with Holm's adjusted p over the table's distinct comparisons, and each
seed's per-episode paired interval (within that seed) in the JSON; with ``metakd.stats``.

Phase ``sweep`` (validation split only; --select-iterations, --select-val-episodes, each of --seeds): is
there any λ or form of the consistency term that separates from the same views without it? λ in
--sweep-lams (default 0, 0.3, 3, 10, 30) x form (cosine on probabilities, cosine on logits, KL to the mean
view), views 2 of the default strength; the controls: λ 0 (the same two views, no consistency term),
``plain`` (MSD with one view and λ 0: MAML on augmented supports, MAML's compute) and ``maml``. Every run
logs the consistency term's meta-gradient norm relative to the query CE's (``grad_ratio_every``:
msd_grad_ratio / msd_grad_cos) over training; the report gives them early / middle / late beside the
validation accuracy (mean ± t95 over seeds) and each setting − λ 0 and − plain at seed level. After all the
training, every model is also scored on --sweep-scenario-episodes fixed validation episodes clean, under
the glyph preset's strong level (the views' family) and under the "ood" level (pixel noise and occlusion,
outside it): does consistency training buy robustness beyond the perturbations it trained on?

Resumable in pieces: each selection run and each (cell, seed) writes its result JSON atomically into
--work/pieces/ when finished; a rerun skips finished pieces and an interrupted training resumes from
its last.pt (checkpoints every 100 iterations). Disjoint --seeds in two processes share a --work.

    .venv/bin/python benchmarks/msd_study.py select
    .venv/bin/python benchmarks/msd_study.py final --seeds 0 1 2
    .venv/bin/python benchmarks/msd_study.py sweep --seeds 0 1 2   # lam x form sweep on validation (below)
    .venv/bin/python benchmarks/msd_study.py report            # tables from the pieces finished so far
    .venv/bin/python benchmarks/msd_study.py restat --from benchmarks/results/msd_study_cpu.json --update-results
                                                  # the statistics of a written result recomputed (no pieces needed)

Writes msd_study_cpu.{json,md} into runs/benchmarks/ (benchmarks/results/ with --update-results, or --out FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.config import load_config  # noqa: E402
from metakd.data.augment import LEVELS, OOD, SIDES  # noqa: E402
from metakd.engine.assembly import describe_device  # noqa: E402
from metakd.engine.evaluation.robustness import evaluate_robustness, scenario_label  # noqa: E402
from metakd.stats import format_interval, seed_level_test, t_interval  # noqa: E402
from benchlib.short_runs import grad_phases, train_resumable  # noqa: E402
from benchlib.results import (SEED_LEVEL_NOTE, add_holm, add_update_results_flag, format_paired, output_path,  # noqa: E402
                        paired_over_seeds, restat_paired, run_piece, write_json_and_markdown)

COMMON = ["device=cpu", "threads=1", "model.options.hidden=32", "episodes.q_query=5", "train.lr=0.003",
          "train.log_every=100", "tensorboard=false"]
BASE_TASKS = 4
LAMS, STRENGTHS, VIEWS = (0.3, 1.0, 3.0), ("weak", "default", "strong"), (2, 4)
CORE = ("maml", "msd", "maml_matched")
EXTRA = ("msd_nocons", "msd_inplace", "unicorn", "msd_unicorn", "unicorn_matched")


def cell_config(cell: str, chosen: Dict[str, Any]) -> tuple:
    """(config name, overrides) of a final-table cell, given the selected MSD options."""
    n = chosen["views"]
    msd = [f"learner.options.views={n}", f"learner.options.lam={chosen['lam']}",
           f"learner.options.augment={chosen['augment']}"]
    return {
        "maml": ("maml_glyphs_5w1s", []),
        "maml_matched": ("maml_glyphs_5w1s", [f"train.meta_batch={BASE_TASKS * n}"]),
        "msd": ("msd_maml_glyphs_5w1s", [*msd, "learner.options.budget=per_task"]),
        "msd_nocons": ("msd_maml_glyphs_5w1s", [*msd[:1], "learner.options.lam=0.0", *msd[2:],
                                                 "learner.options.budget=per_task"]),
        "msd_inplace": ("msd_maml_glyphs_5w1s", [*msd, "learner.options.budget=in_place_of_tasks"]),
        "unicorn": ("unicorn_maml_glyphs_5w1s", ["train.lr=0.003"]),
        "unicorn_matched": ("unicorn_maml_glyphs_5w1s", [f"train.meta_batch={BASE_TASKS * n}"]),
        "msd_unicorn": ("msd_unicorn_maml_glyphs_5w1s", [*msd, "learner.options.budget=per_task"]),
    }[cell]


TINY = ["data.options.num_classes=70", "model.options.hidden=8"]  # --tiny: a smoke-test size (the tests run it)


def train(config: str, run: Path, seed: int, iterations: int, overrides: List[str], val_every: int,
          val_episodes: int, tiny: bool = False) -> Dict[str, Any]:
    """Train (or finish training) ``config`` in ``run``; returns the seconds and the validation curve."""
    over = [*COMMON, f"seed={seed}", f"train.iterations={iterations}", f"train.val_every={val_every}",
            f"train.val_episodes={val_episodes}", "train.checkpoint_every=100", *overrides, *(TINY if tiny else [])]
    return {**train_resumable(config, run, over), "config": config, "overrides": overrides,
            "meta_batch": load_config(config, over)["train"]["meta_batch"], "tiny": tiny}


def select(args, work: Path) -> Dict[str, Any]:
    """The coordinate search on the validation split; returns the chosen options and every trial."""
    trials: Dict[str, Dict[str, Any]] = {}

    def trial(lam: float, augment: str, views: int) -> float:
        name = f"select_lam{lam}_{augment}_v{views}"
        opts = [f"learner.options.views={views}", f"learner.options.lam={lam}", f"learner.options.augment={augment}"]

        def fn():
            return train("msd_maml_glyphs_5w1s", work / name, args.select_seed, args.select_iterations, opts,
                         args.select_iterations, args.select_val_episodes, args.tiny)
        res = run_piece(work, name, fn)
        acc = res["curve"][-1][1]
        if name not in trials:
            trials[name] = {"lam": lam, "augment": augment, "views": views, "val_acc": acc,
                            "train_seconds": res["train_seconds"]}
            print(f"select lam {lam} augment {augment} views {views}: val {100 * acc:.2f}", flush=True)
        return acc

    best = {"lam": LAMS[0], "augment": "default", "views": VIEWS[0]}
    for key, values in (("lam", LAMS), ("augment", STRENGTHS), ("views", VIEWS)):
        scores = {v: trial(**{**best, key: v}) for v in values}
        best[key] = max(values, key=lambda v: (scores[v], -values.index(v)))
    maml = run_piece(work, "select_maml", lambda: train("maml_glyphs_5w1s", work / "select_maml", args.select_seed,
                                                         args.select_iterations, [], args.select_iterations,
                                                         args.select_val_episodes, args.tiny))
    return {"chosen": best, "trials": list(trials.values()), "maml_val_acc": maml["curve"][-1][1],
            "iterations": args.select_iterations, "val_episodes": args.select_val_episodes, "seed": args.select_seed}


FORMS = {"cos_prob": ["learner.options.consistency=cosine", "learner.options.on=prob"],
         "cos_logit": ["learner.options.consistency=cosine", "learner.options.on=logit"],
         "kl": ["learner.options.consistency=kl"]}


def sweep_settings(args) -> Dict[str, tuple]:
    """name -> (config, overrides) of the sweep: λ 0 once, every other λ x form, and the two controls."""
    out = {"maml": ("maml_glyphs_5w1s", []),
           "plain": ("msd_maml_glyphs_5w1s", ["learner.options.views=1", "learner.options.lam=0.0"])}
    for lam in args.sweep_lams:
        for form in (args.sweep_forms if lam else ["cos_prob"]):
            out[f"lam{lam:g}" + (f"_{form}" if lam else "")] = (
                "msd_maml_glyphs_5w1s", ["learner.options.views=2", f"learner.options.lam={lam}", *FORMS[form]])
    return out


def sweep(args, work: Path) -> None:
    settings = sweep_settings(args)
    results: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for seed in args.seeds:  # seed-major: a cut sweep has whole seeds
        for name, (config, over) in settings.items():
            over = over + ([f"learner.options.grad_ratio_every={args.grad_ratio_every}"] if config.startswith("msd")
                           else [])
            piece = f"sweep_{name}_s{seed}"

            def fn(config=config, over=over, piece=piece, seed=seed):
                out = train(config, work / piece, seed, args.select_iterations, over, args.select_iterations,
                            args.select_val_episodes, args.tiny)
                return {**out, **grad_phases(work / piece, args.select_iterations)}
            res = run_piece(work, piece, fn)
            results.setdefault(name, {})[seed] = res
            print(f"sweep {name} seed {seed}: val {100 * res['curve'][-1][1]:.2f}", flush=True)
    scen = sweep_scenarios(args, work, settings) if args.sweep_scenario_episodes else {}
    rows = []
    for name, per in results.items():
        have = sorted(per)
        accs = [per[s]["curve"][-1][1] for s in have]
        row = {"setting": name, "seeds": have, "per_seed": accs,
               "acc": t_interval(accs) if len(accs) > 1 else {"mean": accs[0], "ci": float("nan")},
               "train_seconds": sum(per[s]["train_seconds"] for s in have) / len(have)}
        for part in ("grad_ratio", "grad_cos"):
            vals = [per[s].get(part) for s in have if per[s].get(part)]
            row[part] = {k: (sum(v[k] for v in vals if v[k] is not None) / max(1, sum(v[k] is not None for v in vals))
                             if any(v[k] is not None for v in vals) else None) for k in ("early", "middle", "late")}
        for base in ("lam0", "plain"):
            common = [s for s in have if s in results.get(base, {})]
            row[f"vs_{base}"] = None if name == base or not common else {
                "seeds": common, "seed_level": seed_level_test([per[s]["curve"][-1][1] - results[base][s]["curve"][-1][1]
                                                                for s in common])}
        rows.append(row)
    holm = add_holm([((frozenset((r["setting"], base)),), r[f"vs_{base}"]) for r in rows for base in ("lam0", "plain")])
    scen_rows = summarise_scenarios(scen)
    scen_holm = add_holm([((r["scenario"], frozenset((r["setting"], base))), r[f"vs_{base}"])
                          for r in scen_rows for base in ("lam0", "plain")]) if scen_rows else 0
    report = {"benchmark": "msd_sweep", "command": " ".join(["benchmarks/msd_study.py", *sys.argv[1:]]),
              "device": describe_device(torch.device("cpu")), "load_average": [round(v, 2) for v in os.getloadavg()],
              "iterations": args.select_iterations, "val_episodes": args.select_val_episodes, "seeds": args.seeds,
              "rows": rows, "holm_family": holm, "scenario_rows": scen_rows, "scenario_holm_family": scen_holm,
              "scenario_episodes": args.sweep_scenario_episodes,
              "cpu_seconds": sum(r["seconds"] for per in results.values() for r in per.values())}
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"`{report['command']}`", "", f"{report['device']}; load average at the end {report['load_average']}.", "",
             f"Validation split only: {args.select_val_episodes} fixed 5-way 1-shot validation episodes after "
             f"{args.select_iterations} meta-iterations, seeds {args.seeds}; accuracy mean ± t95 over seeds. Differences: "
             f"mean of the per-seed differences ± t95, paired t test over seeds, Holm over the {holm} comparisons. "
             "grad ratio = ‖∇(λ·consistency)‖ / ‖∇ query CE‖ w.r.t. the meta-parameters, cos = their cosine, averaged "
             "over the first / middle / last third of training.", "",
             "| setting | val acc (%) | per seed | − λ 0 | − plain | grad ratio early / mid / late | cos early / mid / late | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, c = r["grad_ratio"], r["grad_cos"]
        lines.append(f"| {r['setting']} | {format_interval(r['acc']['mean'], r['acc']['ci'])} | "
                     f"{', '.join(f'{100 * v:.2f}' for v in r['per_seed'])} | {format_paired(r['vs_lam0'])} | "
                     f"{format_paired(r['vs_plain'])} | {fmt(g['early'])} / {fmt(g['middle'])} / {fmt(g['late'])} | "
                     f"{fmt(c['early'])} / {fmt(c['middle'])} / {fmt(c['late'])} | {r['train_seconds']:.0f} |")
    if scen_rows:
        lines += ["", f"The same models on {args.sweep_scenario_episodes} fixed 5-way 1-shot validation episodes: clean, "
                  "strong / both (the training views' family, the glyph preset's strong level) and ood / both (outside "
                  "it: gaussian pixel noise σ 0.15 on every image and an occluding black rectangle of 4–15% of the area on "
                  f"half of them). Differences at seed level (paired over the shared episodes within each seed, t over "
                  f"the per-seed means), Holm over this table's {scen_holm} comparisons.", "",
                  "| setting | scenario | acc (%) | − λ 0 | − plain |", "|---|---|---|---|---|"]
        for r in scen_rows:
            lines.append(f"| {r['setting']} | {r['scenario']} | {format_interval(r['acc']['mean'], r['acc']['ci'])} | "
                         f"{format_paired(r['vs_lam0'])} | {format_paired(r['vs_plain'])} |")
    md = "\n".join(lines) + f"\n\nCPU seconds of the sweep's pieces: {report['cpu_seconds']:.0f}.\n"
    write_json_and_markdown(output_path(args.out, "msd_sweep_cpu.json", args.update_results), report, md)
    print(md)


SWEEP_SCENARIOS = ("standard", "strong", OOD)


def sweep_scenarios(args, work: Path, settings: Dict[str, tuple]) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Every trained sweep model on --sweep-scenario-episodes fixed validation episodes: clean, strong / both (the
    views' family) and ood / both (outside it); one piece per (setting, seed), after all the training."""
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for seed in args.seeds:
        for name in settings:
            run = work / f"sweep_{name}_s{seed}"

            def fn(run=run):
                res = evaluate_robustness(run / "last.pt", episodes=args.sweep_scenario_episodes, seed=0,
                                          levels=SWEEP_SCENARIOS, sides=("both",), consistency_views=0, device="cpu",
                                          progress=False, split="val")
                return {"rows": res["rows"], "fingerprint": res["episodes_fingerprint"], "preset": res["augment_preset"]}
            out.setdefault(name, {})[seed] = run_piece(work, f"sweepscen_{name}_s{seed}", fn)
    return out


def summarise_scenarios(scen: Dict[str, Dict[int, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Per setting and scenario: accuracy over seeds and the seed-level differences to lam0 and to plain."""
    rows = []
    for name, per in scen.items():
        have = sorted(per)
        for i, row in enumerate(per[have[0]]["rows"]):
            accs = [per[s]["rows"][i]["accuracy"] for s in have]
            out = {"setting": name, "scenario": scenario_label(row), "seeds": have, "per_seed": accs,
                   "acc": t_interval(accs) if len(accs) > 1 else {"mean": accs[0], "ci": float("nan")}}
            for base in ("lam0", "plain"):
                common = [s for s in have if s in scen.get(base, {})]
                out[f"vs_{base}"] = None if name == base or not common else paired_over_seeds(
                    {s: per[s]["rows"][i]["per_episode"] for s in common},
                    {s: scen[base][s]["rows"][i]["per_episode"] for s in common})
            rows.append(out)
    return rows


def final_piece(args, work: Path, cell: str, seed: int, chosen: Dict[str, Any]) -> Dict[str, Any]:
    config, over = cell_config(cell, chosen)
    run = work / f"{cell}_s{seed}"
    out = train(config, run, seed, args.iterations, over, args.val_every, 4 if args.tiny else 100, args.tiny)
    tic = time.perf_counter()

    def robust(episodes, levels, sides=SIDES, views=0):
        return evaluate_robustness(run / "last.pt", episodes=episodes, seed=0, levels=levels, sides=sides,
                                   consistency_views=views, device="cpu", progress=False)
    std = robust(args.episodes, ("standard",))
    perturbed = robust(args.scenario_episodes, LEVELS)
    cons = robust(args.consistency_episodes, ("standard", "strong"), ("both",), 2)
    rows = [*std["rows"], *perturbed["rows"]]
    for c in cons["rows"]:
        row = next(r for r in rows if (r["level"], r["side"]) == (c["level"], c["side"]))
        row.update(consistency=c["consistency"], consistency_ci95=c["consistency_ci95"],
                   consistency_episodes=c["episodes"])
    out["adapted_copies"] = out["meta_batch"] * (chosen["views"] if cell in ("msd", "msd_nocons", "msd_unicorn") else 1)
    out.update(rows=rows, eval_seconds=time.perf_counter() - tic, fingerprint=std["episodes_fingerprint"],
               scenario_fingerprint=perturbed["episodes_fingerprint"], preset=std.get("augment_preset"))
    print(f"{cell} seed {seed}: " + "; ".join(f"{scenario_label(r)} {100 * r['accuracy']:.2f}" for r in rows),
          flush=True)
    return out


def paired(results, cell: str, base: str, seeds: List[int], row: int) -> Optional[Dict[str, Any]]:
    """cell − base on the shared episodes of scenario ``row`` (``benchlib.results.paired_over_seeds``)."""
    if cell == base:
        return None
    per_episode = {c: {s: results[c][s]["rows"][row]["per_episode"] for s in seeds if s in results.get(c, {})}
                   for c in (cell, base)}
    return paired_over_seeds(per_episode[cell], per_episode[base])


def summarise(results: Dict[str, Dict[int, Dict[str, Any]]], seeds: List[int]) -> List[Dict[str, Any]]:
    rows = []
    for cell, per_seed in results.items():
        have = [s for s in seeds if s in per_seed]
        for i, row in enumerate(per_seed[have[0]]["rows"]):
            accs = [per_seed[s]["rows"][i]["accuracy"] for s in have]
            cons = [per_seed[s]["rows"][i].get("consistency") for s in have]
            rows.append({"cell": cell, "scenario": scenario_label(row), "seeds": have, "per_seed": accs,
                         "acc": t_interval(accs) if len(accs) > 1 else {"mean": accs[0], "ci": float("nan")},
                         "consistency": t_interval(cons) if len(cons) > 1 and None not in cons else None,
                         "vs_maml": paired(results, cell, "maml", have, i),
                         "vs_maml_matched": paired(results, cell, "maml_matched", have, i),
                         "train_seconds": sum(per_seed[s]["train_seconds"] for s in have) / len(have),
                         "meta_batch": per_seed[have[0]]["meta_batch"],
                         "adapted_copies": per_seed[have[0]].get("adapted_copies")})
    return rows


MSD_CELLS = ("msd", "msd_nocons", "msd_inplace", "msd_unicorn")


def holm_table(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Holm over every distinct comparison the table prints (a − b and b − a count once), written into the rows;
    also, for the text, the survivors at 0.05, and those when the family is only the MSD cells' comparisons."""
    from metakd.stats import holm_adjust

    pairs = [(r, key, base) for r in rows for key, base in (("vs_maml", "maml"), ("vs_maml_matched", "maml_matched"))]
    m = add_holm([((frozenset((r["cell"], base)), r["scenario"]), r[key]) for r, key, base in pairs])
    seen, survivors = set(), []
    for r, key, base in pairs:
        d, k = r[key], (frozenset((r["cell"], base)), r["scenario"])
        if d and k not in seen and d["seed_level"]["p_holm"] <= 0.05:
            seen.add(k)
            survivors.append(f"{r['cell']} − {base} at {r['scenario']} (Holm p {d['seed_level']['p_holm']:.2g})")
    msd = [(r, base, r[key]) for r, key, base in pairs if r["cell"] in MSD_CELLS and r[key]]
    adj = holm_adjust([d["seed_level"]["p"] for _, _, d in msd])
    msd_survivors = [f"{r['cell']} − {base} at {r['scenario']} (Holm p {q:.2g})"
                     for (r, base, _), q in zip(msd, adj) if q <= 0.05]
    return {"family": m, "survivors": survivors, "msd_family": len(msd), "msd_survivors": msd_survivors}


def markdown(report: Dict[str, Any]) -> str:
    sel = report.get("selection")
    lines = [f"`{report['command']}`", "", f"{report['device']}; load average at the end {report['load_average']}.", ""]
    if sel:
        c = sel["chosen"]
        lines += [f"Selection (validation split, seed {sel['seed']}, {sel['iterations']} iterations, "
                  f"{sel['val_episodes']} val episodes; MAML at that budget: {100 * sel['maml_val_acc']:.2f}%): "
                  f"chose lam {c['lam']}, views {c['views']}, augment {c['augment']}.", "",
                  "| lam | augment | views | val acc (%) | train s |", "|---|---|---|---|---|"]
        lines += [f"| {t['lam']} | {t['augment']} | {t['views']} | {100 * t['val_acc']:.2f} | {t['train_seconds']:.0f} |"
                  for t in sel["trials"]]
        lines.append("")
    holm = report.get("holm") or {"family": 0, "survivors": [], "msd_family": 0, "msd_survivors": []}
    lines += [f"Test: {report['episodes']} fixed 5-way 1-shot test episodes, {report['iterations']} meta-iterations, "
              f"seeds {report['seeds']}. Accuracy: mean over seeds ± Student-t 95% CI. "
              + SEED_LEVEL_NOTE.format(m=holm["family"]), "",
              f"Surviving Holm over the whole table ({holm['family']} comparisons) at 0.05: "
              f"{'; '.join(holm['survivors']) or 'none'}. With the family restricted to the {holm['msd_family']} "
              f"comparisons of the MSD cells: {'; '.join(holm['msd_survivors']) or 'none'}.", "",
              "| cell | tasks / adapted copies per it | scenario | accuracy (%) | per seed | consistency | − maml | − maml_matched |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        cons = f"{r['consistency']['mean']:.4f}" if r["consistency"] else "–"
        per = ", ".join(f"{100 * v:.2f}" for v in r["per_seed"])
        lines.append(f"| {r['cell']} | {r['meta_batch']} / {r['adapted_copies']} | {r['scenario']} | "
                     f"{format_interval(r['acc']['mean'], r['acc']['ci'])} | {per} | {cons} | "
                     f"{format_paired(r['vs_maml'])} | {format_paired(r['vs_maml_matched'])} |")
    secs = {r["cell"]: r["train_seconds"] for r in report["rows"]}
    lines += ["", "Mean training seconds per run (one thread): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
              + f"; CPU seconds of all finished pieces: {report['total_seconds']:.0f}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["select", "final", "sweep", "report", "restat"])
    p.add_argument("--sweep-lams", type=float, nargs="+", default=[0.0, 0.3, 3.0, 10.0, 30.0])
    p.add_argument("--sweep-forms", nargs="+", default=list(FORMS), choices=list(FORMS))
    p.add_argument("--grad-ratio-every", type=int, default=25, help="sweep: gradient-ratio measurement interval")
    p.add_argument("--sweep-scenario-episodes", type=int, default=150,
                   help="sweep: validation episodes of the clean / strong / ood scenarios of every model (0: none)")
    p.add_argument("--from", dest="source", help="restat: the written result JSON whose statistics to recompute")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--val-every", type=int, default=200, help="validation (100 val episodes) for the curves")
    p.add_argument("--episodes", type=int, default=600, help="fixed test episodes of the standard scenario")
    p.add_argument("--scenario-episodes", type=int, default=300, help="of each perturbed scenario (CPU budget)")
    p.add_argument("--consistency-episodes", type=int, default=200,
                   help="episodes of the consistency metric (2 augmented support copies), standard and strong / both")
    p.add_argument("--extra", nargs="*", default=[], choices=list(EXTRA), help="cells beyond the core, in this order")
    p.add_argument("--select-iterations", type=int, default=300)
    p.add_argument("--select-val-episodes", type=int, default=200)
    p.add_argument("--select-seed", type=int, default=100)
    p.add_argument("--tiny", action="store_true", help="a smoke-test size: 70 classes, Conv4-8")
    p.add_argument("--work", default="runs/msd_study")
    p.add_argument("--out", help="result JSON (default: runs/benchmarks/msd_study_cpu.json)")
    add_update_results_flag(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.phase == "restat":
        return restat(args)
    if args.phase == "sweep":
        return sweep(args, Path(args.work))
    work = Path(args.work)
    pieces = work / "pieces"
    if args.phase in ("select", "final"):
        selection = select(args, work)
    elif (pieces / "select_maml.json").is_file():
        selection = select(args, work)  # every trial finished: only reads pieces
    else:
        selection = None
    results: Dict[str, Dict[int, Dict[str, Any]]] = {}
    cells = [*CORE, *[c for c in EXTRA if c in args.extra]] if args.phase == "final" else [*CORE, *EXTRA]
    for cell in cells:
        for seed in args.seeds:
            name = f"{cell}_s{seed}"
            if args.phase == "final":
                results.setdefault(cell, {})[seed] = run_piece(
                    work, name, lambda: final_piece(args, work, cell, seed, selection["chosen"]))
            elif (pieces / f"{name}.json").is_file():
                results.setdefault(cell, {})[seed] = json.loads((pieces / f"{name}.json").read_text())
    total = sum(json.loads(f.read_text()).get("seconds", 0) for f in pieces.glob("*.json")) if pieces.is_dir() else 0
    report = {"benchmark": "msd_study", "command": " ".join(["benchmarks/msd_study.py", *sys.argv[1:]]),
              "device": describe_device(torch.device("cpu")), "load_average": [round(v, 2) for v in os.getloadavg()],
              "iterations": args.iterations, "episodes": args.episodes, "seeds": args.seeds, "selection": selection,
              "rows": summarise(results, args.seeds) if results else [], "total_seconds": total,
              "curves": {f"{c}_s{s}": r["curve"] for c, per in results.items() for s, r in per.items()}}
    report["holm"] = holm_table(report["rows"])
    if args.phase != "select":
        write_json_and_markdown(output_path(args.out, "msd_study_cpu.json", args.update_results), report, markdown(report))
    print(markdown(report))


def restat(args) -> None:
    """The statistics of a written result recomputed from its stored per-seed differences (``restat_paired``):
    seed-level tests and Holm, no pooled p; accuracies and everything else are kept."""
    if not args.source:
        raise SystemExit("restat needs --from FILE (a msd_study result JSON)")
    report = json.loads(Path(args.source).read_text())
    for r in report["rows"]:
        r["vs_maml"], r["vs_maml_matched"] = restat_paired(r["vs_maml"]), restat_paired(r["vs_maml_matched"])
    report["holm"] = holm_table(report["rows"])
    report["statistics"] = ("recomputed by `benchmarks/msd_study.py restat` from the stored per-seed mean differences "
                            "(seed-level paired t test, Holm over the table)")
    write_json_and_markdown(output_path(args.out, "msd_study_cpu.json", args.update_results), report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
