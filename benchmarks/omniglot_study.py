"""The Omniglot challenge on real handwriting: learners trained on a minimal background set, scored once on the
20 official one-shot runs (20-way 1-shot within one evaluation alphabet each, 400 query items).

Track: ``--background small1`` (5 alphabets; validation = the small2 alphabets not in small1) or small2 (its
own held-out alphabets: Balinese, Early_Aramaic, Korean), or ``full`` (the full track: 30 alphabets, 25 for
training and the five Vinyals validation alphabets held out), 28x28, white strokes on black. Cells:

  protonet20   ProtoNet, Conv4-64, 20-way 1-shot training episodes, Adam 1e-3 (protonet_omniglot_small1_20w1s)
  maml5        second-order MAML trained 5-way 1-shot (inner lr 0.4, 1 step, 3 at test), meta-batch
               --maml-meta-batch; at 20-way its head comes from ``head_rule``, chosen per seed on 20-way
               validation episodes among prototype / zero (copy_row equals zero: see learners/gradient.py)
  pretrain_nc  pre-training by classification over the background characters (pretrain_conv4_omniglot_small1),
               then nearest centroid on its features (ProtoNet without meta-training)
  pretrain_lp  the same backbone, linear probe fitted on each run's support set
  pretrain_rot_nc
               pretrain_nc with every background character also rotated by 90, 180 and 270 degrees as three new
               classes (data.options.rotations, as in the Vinyals protocol: 4x the classes), --pretrain-rot-epochs
               epochs; validation and scenarios on the unrotated validation alphabets, as every other cell
  pretrain_rot_long_nc, pretrain_rot_wide_nc, pretrain_rot_protonet20
               how close the minimal track gets, chosen on validation (their own Holm family against
               pretrain_rot_nc): pretrain_rot_nc trained twice as long (2 x --pretrain-rot-epochs), or wider
               (Conv4 with --wide-hidden channels), or meta-trained after it (ProtoNet as protonet20, its backbone
               started from the pretrain_rot_nc model of the same seed by model.init: pre-training then
               meta-training); nearest centroid on the features for the first two
  unicorn5     Unicorn-MAML trained as maml5 (one learned head row copied into every row: any way as it is)
  protomaml5   ProtoMAML trained as maml5 (head rows from the support prototypes: any way as it is)
  maml20       second-order MAML trained --way-way (20) 1-shot with the MAML repository's 20-way settings (inner lr 0.1,
               5 steps; maml_omniglot_small1_20w1s), meta-batch --maml20-meta-batch, --maml20-iterations: the
               runs' way, so no head rule
  msd5_l0, msd5_l0.3, msd5_l3
               Meta Self-Distillation on the best MAML-family host of this track (ProtoMAML, trained as protomaml5)
               with consistency weight lam 0 / 0.3 / 3: 2 augmented views of each support set (the glyph preset's
               default views) adapt their own fast weights; budget in_place_of_tasks, so meta-batch 8 trains 4
               tasks x 2 views = 8 adapted copies, protomaml5's compute. The consistency term's meta-gradient
               norm relative to the query CE's is logged every 50 iterations (learner.options.grad_ratio_every)
  msd5_plain   the control without consistency or extra views: ProtoMAML on one augmented view of each support
               set (MSD with views 1, lam 0), 8 tasks: protomaml5's compute
  kd5, kd_rank5, mkd5
               teacher -> student meta-learning: maml5's student (same config, seed, initialisation and task order)
               whose outer (query) loss adds KD (T 4, CE 1 + KD 1) or KD + the Kendall rank loss (tanh, k 3 per row
               std, weight 1) against a frozen teacher adapted on the same support set: --teacher, by default
               the protonet20 model of seed 0 (trained once, shared by every seed). mkd5: MKD as shipped
               (distill_meta_glyphs_mkd): KD also in the inner loop on the support set, one temperature for
               teacher and student learned through the query loss (start 4; the learned value is reported).
               Compared with maml5 (the student alone) and kd5; the 20-way head by the head rule as for maml5
  unicorn5_tuned, maml5_tuned
               no training: the unicorn5 / maml5 model of the same seed with its test-time inner loop (inner lr x
               test steps over --tuned-lrs x --tuned-steps) chosen on 20-way validation episodes. At 20-way the
               mean support loss gives each head row about a quarter of its 5-way gradient, so the trained
               3 steps at lr 0.4 may stop short (the head rule of maml5 stays the one its piece chose)

With --scenarios, every model is also evaluated on --scenario-episodes fixed 5-way 1-shot episodes of the
validation alphabets, standard and under the glyph preset's weak / strong perturbations of the support,
the query or both, with the consistency metric (4 augmented support copies) on the standard episodes.

Every cell trains one model per seed (--seeds), chooses nothing on the runs, and scores the runs once. The
budgets (--protonet-iterations, --maml-iterations, --pretrain-epochs) are CPU-sized and far below the papers';
the report states them with the training seconds.

Reported: per cell the error rate on the runs, mean over seeds ± Student-t 95%, each seed's error with its
Wilson 95% interval over the 400 items, and the validation accuracy; the paired per-item difference of each
cell to protonet20 at seed level (t test over the per-seed mean differences, n_seeds - 1 dof) with Holm's
correction over the comparisons; the MSD cells' contrasts (each to protomaml5, the host at equal compute, to
msd5_l0, the same views without the consistency term, and to msd5_plain) as a second family with its own Holm
correction, and the distilled students' (kd5, kd_rank5, mkd5 to maml5; kd_rank5, mkd5 to kd5) as a third; the MSD cells'
gradient ratio early / middle / late; and the published anchors of the full (30-alphabet) track.

A finished piece without scenarios gets them added (the piece rewritten) when --scenarios asks for them.

Resumable pieces: each (cell, seed) writes its JSON into --work/pieces/ when done (training resumes from its
last.pt); a rerun skips finished pieces. Disjoint --seeds in two processes share a --work.

    .venv/bin/python benchmarks/omniglot_study.py --root data/omniglot --work runs/omniglot_study --seeds 0 1 2
    .venv/bin/python benchmarks/omniglot_study.py --work runs/omniglot_study --report-only
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metakd.engine.assembly import describe_device, resolve_device  # noqa: E402
from metakd.engine.assembly import make_sampler, split_for  # noqa: E402
from metakd.engine.evaluation.checkpoint_eval import load_for_evaluation  # noqa: E402
from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402
from metakd.engine.evaluation.fixed import fixed_episodes_for, items_fingerprint, predict_fixed, summarise_items  # noqa: E402
from metakd.engine.training.job_config import load_pretrain_config  # noqa: E402
from metakd.engine.training.pretrain import run_pretrain  # noqa: E402
from metakd.stats import holm_adjust, seed_level_paired, seed_level_test, t_interval  # noqa: E402
from benchlib.results import add_study_flags, load_pieces, run_study, write_atomic  # noqa: E402
from benchlib.short_runs import grad_phases, train_resumable  # noqa: E402

CPU = torch.device("cpu")
MSD_LAMS = {"msd5_l0": 0.0, "msd5_l0.3": 0.3, "msd5_l3": 3.0, "msd5_plain": 0.0}
DISTILL = {"kd5": ["meta_teacher.options.ce_weight=1.0", "meta_teacher.options.kd_weight=1.0",
                   "meta_teacher.options.temperature=4.0", "meta_teacher.options.kd_on=query"]}
DISTILL["kd_rank5"] = DISTILL["kd5"] + ["meta_teacher.options.rank_weight=1.0", "meta_teacher.options.rank_form=tanh",
                                        "meta_teacher.options.rank_k=3.0", "meta_teacher.options.rank_k_scale=std"]
# MKD as shipped (distill_meta_glyphs_mkd): KD also in the inner loop, one learned temperature for both sides
DISTILL["mkd5"] = DISTILL["kd5"] + ["meta_teacher.options.kd_on=both", "meta_teacher.options.support_kd_weight=1.0",
                                    "meta_teacher.options.learn_temperature=true",
                                    "meta_teacher.options.shared_temperature=true"]
DISTILL_CONTRASTS = [("kd5", "maml5"), ("kd_rank5", "maml5"), ("kd_rank5", "kd5"), ("mkd5", "maml5"), ("mkd5", "kd5")]
# how close the minimal track gets: variants of the best recipe (pretrain_rot_nc), chosen on validation
PROBES = ("pretrain_rot_long_nc", "pretrain_rot_wide_nc", "pretrain_rot_protonet20")
PROBE_REFERENCE = "pretrain_rot_nc"
CELLS = ("protonet20", "maml5", "pretrain_nc", "pretrain_lp", "pretrain_rot_nc", "unicorn5", "protomaml5", "unicorn5_tuned", "maml5_tuned",
         "maml20", *MSD_LAMS, *DISTILL, *PROBES)
MSD_HOST = "protomaml5"
PRETRAIN_LEARNERS = {"pretrain_nc": "protonet", "pretrain_lp": "linear_probe", "pretrain_rot_nc": "protonet",
                     "pretrain_rot_long_nc": "protonet", "pretrain_rot_wide_nc": "protonet"}
# the run folder of each pre-training cell (pretrain_nc and pretrain_lp share one backbone)
PRETRAIN_RUNS = {"pretrain_nc": "pretrain", "pretrain_lp": "pretrain", "pretrain_rot_nc": "pretrain_rot",
                 "pretrain_rot_long_nc": "pretrain_rot_long", "pretrain_rot_wide_nc": "pretrain_rot_wide"}
# the MSD family: each MSD cell against the host at equal compute, the same views without consistency, plain views
MSD_CONTRASTS = [(c, ref) for c in ("msd5_l0.3", "msd5_l3") for ref in (MSD_HOST, "msd5_l0", "msd5_plain")] + \
    [("msd5_l0", MSD_HOST), ("msd5_plain", MSD_HOST)]
DEFAULT_CELLS = CELLS[:4]
SCENARIOS = [(level, side) for level in ("weak", "strong") for side in ("support", "query", "both")]
BASELINE = "protonet20"
HEAD_RULES = ("prototype", "zero")
# Lake et al. 2015, full background set (30 alphabets), error on the 20 runs
PUBLISHED = [("people", 4.5), ("Bayesian Program Learning", 3.3), ("deep Siamese ConvNet", 8.0),
             ("simple ConvNet", 13.5), ("Modified Hausdorff distance (no learning)", 38.8)]


def _common(args: argparse.Namespace, seed: int) -> List[str]:
    """Overrides every cell's config gets (the pre-training config takes the same keys)."""
    return [f"data.root={args.root}", f"data.options.background={args.background}", "device=cpu", "threads=1",
            f"seed={seed}", f"train.val_episodes={args.val_episodes}", *args.override]


def _train(config: str, run: Path, overrides: List[str]) -> float:
    """Train ``config`` into ``run`` (resuming its last.pt when an earlier call was cut); training seconds."""
    return train_resumable(config, run, overrides)["train_seconds"]


def _load(run: Path, learner: Any = None, overrides: List[str] = (), head_rule: Any = None, inner: Any = None):
    """(learner in eval mode, checkpoint dict) of a run; ``head_rule``: the rule a MAML-family head uses at
    another way, ``inner``: (inner lr, test steps) (the trained learner's options, changed for this evaluation
    only), or (inner lr, test steps, test_stop)."""
    _, model, ckpt = load_for_evaluation(run, CPU, learner=learner, overrides=list(overrides))
    if head_rule is not None:  # a distilled learner's head is its student's
        getattr(model, "student", model).options["head_rule"] = head_rule
    if inner is not None:  # an MSD / distilled learner evaluates through its host's / student's inner loop
        loop = getattr(model, "host", getattr(model, "student", model))
        loop.lr, loop.test_steps = float(inner[0]), int(inner[1])
        loop.test_stop = inner[2] if len(inner) > 2 else loop.test_stop
        loop.options.update(inner_lr=loop.lr, test_steps=loop.test_steps, test_stop=loop.test_stop)
    return model, ckpt


def _runs(run: Path, args: argparse.Namespace, **kwargs: Any) -> Dict[str, Any]:
    """The model scored once on the 20 official runs: error over items and per run, each item's outcome."""
    model, ckpt = _load(run, **kwargs)
    episodes = fixed_episodes_for("omniglot-runs", ckpt, args.root)
    rows = predict_fixed(model, episodes, CPU)
    res = summarise_items(rows)
    res.update(items_fingerprint=items_fingerprint(episodes), per_item_correct=[r["correct"] for r in rows],
               learner_options=dict(getattr(model, "options", {}) or {}))
    return res


def _val_sampler(ckpt: Dict[str, Any], way: int):
    """Episodes of the run's validation alphabets at ``way``, with the run's normalisation; unrotated whatever
    the run trained on, so every cell is chosen on the same episodes."""
    cfg = copy.deepcopy(ckpt["config"])
    cfg["episodes"]["n_way"] = way
    cfg["data"]["options"]["rotations"] = False
    return make_sampler(cfg, split_for(cfg, "val"), q_query=cfg["episodes"]["test_q_query"], device=CPU,
                        normalize=ckpt.get("normalize"))


def _val(run: Path, args: argparse.Namespace, **kwargs: Any) -> float:
    """Accuracy on --val-episodes fixed --way-way 1-shot episodes of the validation alphabets (model selection)."""
    model, ckpt = _load(run, **kwargs)
    sampler = _val_sampler(ckpt, args.way)
    return evaluate_episodes(model, sampler, sampler.fixed_episodes(args.val_episodes, 1), progress=False)["acc"]


def _scenarios(run: Path, args: argparse.Namespace, **kwargs: Any) -> Dict[str, Any]:
    """Accuracy on --scenario-episodes fixed 5-way 1-shot validation episodes: standard (with the consistency
    metric) and each weak / strong perturbation of support, query or both (the glyph preset)."""
    model, ckpt = _load(run, **kwargs)
    sampler = _val_sampler(ckpt, 5)
    fixed = sampler.fixed_episodes(args.scenario_episodes, 2)
    std = evaluate_episodes(model, sampler, fixed, progress=False, consistency_views=4, preset="glyph")
    out = {"standard": {"acc": std["acc"], "ci95": std["ci95"], "consistency": std.get("consistency")}}
    for level, side in SCENARIOS:
        res = evaluate_episodes(model, sampler, fixed, progress=False, scenario=(level, side), preset="glyph")
        out[f"{level}/{side}"] = {"acc": res["acc"], "ci95": res["ci95"]}
    return out


def _required(cell: str, base: str, seed: int, path: Path) -> Path:
    """``path``, the output of ``base``'s seed ``seed`` that ``cell`` builds on; a one-line error when missing."""
    if not path.is_file():
        raise SystemExit(f"{cell}: run the {base} cell of seed {seed} first ({path} is missing)")
    return path


def _tuned(cell: str, seed: int, work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """The trained model of ``cell`` without its "_tuned" with inner lr x test steps chosen on validation."""
    base = cell[:-len("_tuned")]
    done = _required(cell, base, seed, Path(args.work) / "pieces" / f"{base}_s{seed}.json")
    rule = json.loads(done.read_text()).get("head_rule")
    grid = [(lr, steps) for lr in args.tuned_lrs for steps in args.tuned_steps]
    vals = {f"lr{lr}_steps{steps}": _val(work, args, inner=(lr, steps), head_rule=rule) for lr, steps in grid}
    lr, steps = max(grid, key=lambda g: vals[f"lr{g[0]}_steps{g[1]}"])  # ties keep the earlier (cheaper) setting
    return {"train_seconds": 0.0, "val_acc_by_setting": vals, "chosen": {"inner_lr": lr, "test_steps": steps},
            "head_rule": rule, "val_acc": vals[f"lr{lr}_steps{steps}"],
            "runs": _runs(work, args, inner=(lr, steps), head_rule=rule)}


def _pretrain_overrides(cell: str, args: argparse.Namespace) -> List[str]:
    """The pre-training config overrides of a pre-training cell (its recipe beyond the shared ones)."""
    if "rot" not in cell:
        return [f"train.epochs={args.pretrain_epochs}"]
    epochs = 2 * args.pretrain_rot_epochs if cell == "pretrain_rot_long_nc" else args.pretrain_rot_epochs
    wide = [f"model.options.hidden={args.wide_hidden}"] if cell == "pretrain_rot_wide_nc" else []
    return ["data.options.rotations=true", f"train.epochs={epochs}", *wide]


def _run_dir(cell: str, seed: int, args: argparse.Namespace) -> Path:
    """The run folder of a cell's model: pretrain_nc / pretrain_lp share one, a _tuned cell uses its base's."""
    folder = PRETRAIN_RUNS.get(cell, cell.removesuffix("_tuned"))
    return Path(args.work) / "runs" / f"{folder}_s{seed}"


def piece(cell: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    work = _run_dir(cell, seed, args)
    common = _common(args, seed)
    out: Dict[str, Any] = {"cell": cell, "seed": seed}
    if cell.endswith("_tuned"):
        out.update(_tuned(cell, seed, work, args))
    elif cell in ("protonet20", "pretrain_rot_protonet20"):
        init = []
        if cell == "pretrain_rot_protonet20":  # meta-training from the rotated pre-training of the same seed
            start = _required(cell, "pretrain_rot_nc", seed, _run_dir("pretrain_rot_nc", seed, args) / "best.pt")
            init = [f"model.init={start.parent}"]
        out["train_seconds"] = _train("protonet_omniglot_small1_20w1s", work, common + init + [
            f"episodes.n_way={args.way}", "tensorboard=false",
            f"train.iterations={args.protonet_iterations}", f"train.val_every={args.protonet_iterations // 3}",
            f"train.checkpoint_every={args.protonet_iterations // 3}"])
        out["val_acc"] = _val(work, args)
        out["runs"] = _runs(work, args)
    elif cell in MSD_LAMS:  # MSD around ProtoMAML (or its one-view control) at protomaml5's compute
        views = 1 if cell == "msd5_plain" else 2
        grad = [] if views == 1 else [f"learner.options.grad_ratio_every={args.grad_ratio_every}"]
        iters = args.maml_iterations
        out["train_seconds"] = _train("maml_omniglot_small1_5w1s", work, common + [
            "learner.name=msd", "learner.options.host=protomaml", f"learner.options.views={views}",
            f"learner.options.lam={MSD_LAMS[cell]}", "learner.options.budget=in_place_of_tasks", *grad,
            "tensorboard=false", f"train.iterations={iters}", f"train.meta_batch={args.maml_meta_batch}",
            f"train.val_every={max(1, iters // 3)}", f"train.checkpoint_every={max(1, iters // 3)}"])
        if grad:
            out.update(grad_phases(work, iters))
        out["val_acc"] = _val(work, args)
        out["runs"] = _runs(work, args)
    elif cell in ("unicorn5", "protomaml5", "maml20"):
        if cell == "maml20":  # trained at the runs' way: no head rule
            config, extra, iters, batch = ("maml_omniglot_small1_20w1s", [f"episodes.n_way={args.way}"],
                                           args.maml20_iterations, args.maml20_meta_batch)
        else:
            learner = {"unicorn5": "unicorn_maml", "protomaml5": "protomaml"}[cell]
            config, extra, iters, batch = ("maml_omniglot_small1_5w1s", [f"learner.name={learner}"],
                                           args.maml_iterations, args.maml_meta_batch)
        out["train_seconds"] = _train(config, work, common + extra + [
            "tensorboard=false", f"train.iterations={iters}", f"train.meta_batch={batch}",
            f"train.val_every={max(1, iters // 3)}", f"train.checkpoint_every={max(1, iters // 3)}"])
        out["val_acc"] = _val(work, args)
        out["runs"] = _runs(work, args)
    elif cell in ("maml5", *DISTILL):
        teacher = args.teacher or str(Path(args.work).resolve() / "runs" / "protonet20_s0")
        distill = [f"meta_teacher.checkpoint={teacher}", *DISTILL[cell]] if cell in DISTILL else []
        out["train_seconds"] = _train("maml_omniglot_small1_5w1s", work, common + distill + ["tensorboard=false",
            f"train.iterations={args.maml_iterations}", f"train.meta_batch={args.maml_meta_batch}",
            f"train.val_every={args.maml_iterations // 3}", f"train.checkpoint_every={args.maml_iterations // 3}"])
        # the 20-way head: chosen on 20-way validation episodes (the trained model sees them through --learner)
        vals = {rule: _val(work, args, head_rule=rule) for rule in HEAD_RULES}
        rule = max(HEAD_RULES, key=lambda r: vals[r])
        out.update(val_acc_by_head_rule=vals, head_rule=rule, val_acc=vals[rule])
        out["runs"] = _runs(work, args, head_rule=rule)
        if cell == "mkd5":  # the learned temperatures of the model scored
            t_teacher, t_student = _load(work)[0].temperatures()
            out["temperatures"] = {"teacher": float(t_teacher), "student": float(t_student)}
    else:  # pretrain_nc / pretrain_lp share one pre-trained backbone per seed; each rotated cell has its own
        if not (work / "best.pt").is_file() or not (work / "summary.json").is_file() or \
                not json.loads((work / "summary.json").read_text()).get("finished"):
            cfg = load_pretrain_config("pretrain_conv4_omniglot_small1", common + [f"episodes.n_way={args.way}",
                                                                                   *_pretrain_overrides(cell, args)])
            tic = time.perf_counter()
            run_pretrain(cfg, work, resume=(work / "last.pt").is_file(), progress=False)
            write_atomic(work / "train_seconds.txt", f"{time.perf_counter() - tic:.1f}\n")
        out["train_seconds"] = float((work / "train_seconds.txt").read_text()) if (work / "train_seconds.txt").is_file() else None
        learner = PRETRAIN_LEARNERS[cell]
        out["val_acc"] = _val(work, args, learner=learner, overrides=[f"episodes.n_way={args.way}"])
        out["runs"] = _runs(work, args, learner=learner, overrides=[f"episodes.n_way={args.way}"])
    if args.scenarios and not cell.endswith("_tuned"):
        out["scenarios"] = _cell_scenarios(cell, seed, args)
    return out


def _cell_scenarios(cell: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    """The 5-way validation scenarios of a trained cell's model (``_tuned`` cells have none: their models are
    their base cell's, tuned at 20-way)."""
    work = _run_dir(cell, seed, args)
    learner = PRETRAIN_LEARNERS.get(cell)
    extra = {"learner": learner, "overrides": ["episodes.n_way=5"]} if learner else {}
    return _scenarios(work, args, **extra)


def add_missing_scenarios(args: argparse.Namespace) -> None:
    """--scenarios on a study begun without them: every finished piece of --cells x --seeds that lacks them
    gets them, the piece rewritten atomically (the runs' results are left as they are)."""
    for seed in args.seeds:
        for cell in args.cells:
            path = Path(args.work) / "pieces" / f"{cell}_s{seed}.json"
            if cell.endswith("_tuned") or not path.is_file():
                continue
            got = json.loads(path.read_text())
            if not got.get("scenarios"):
                print(f"[scenarios] {cell}_s{seed}", flush=True)
                got["scenarios"] = _cell_scenarios(cell, seed, args)
                write_atomic(path, json.dumps(got))


def paired_items(errors: Dict[str, Dict[int, List[float]]], pairs: List[tuple]) -> List[Dict[str, Any]]:
    """Seed-level paired comparisons of per-item errors ({cell: {seed: [0/1 per item]}}) for each (cell, ref,
    family) of ``pairs``; seeds missing from either side are left out, pairs with no shared seed skipped."""
    out = []
    for cell, ref, family in pairs:
        if set(errors.get(cell, {})) & set(errors.get(ref, {})):
            d = seed_level_paired(errors[cell], errors[ref])
            out.append({"cell": cell, "vs": ref, "family": family, "seed_level": d["seed_level"]})
    return out


def holm_within_families(comparisons: List[Dict[str, Any]]) -> None:
    """Holm's correction within each ``family`` of ``comparisons``, written as ``holm_p``."""
    for family in dict.fromkeys(c["family"] for c in comparisons):
        fam = [c for c in comparisons if c["family"] == family]
        for c, p in zip(fam, holm_adjust([c["seed_level"]["p"] for c in fam])):
            c["holm_p"] = p


def report(work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    pieces: Dict[str, Dict[int, Dict[str, Any]]] = load_pieces(work)
    rows = []
    for cell in CELLS:
        got = pieces.get(cell, {})
        if not got:
            continue
        errs = [got[s]["runs"]["error_rate"] for s in sorted(got)]
        over = t_interval(errs)
        rows.append({"cell": cell, "seeds": sorted(got), "error_mean": over["mean"], "error_ci95": over["ci"],
                     "per_seed": {s: {"error": got[s]["runs"]["error_rate"], "wilson95": got[s]["runs"]["error_wilson95"],
                                      "val_acc": got[s].get("val_acc"), "train_seconds": got[s].get("train_seconds"),
                                      "seconds": got[s].get("seconds"), "head_rule": got[s].get("head_rule"),
                                      "chosen": got[s].get("chosen"), "temperatures": got[s].get("temperatures")}
                                  for s in sorted(got)}})
        scen = [got[s]["scenarios"] for s in sorted(got) if got[s].get("scenarios")]
        if scen:
            rows[-1]["scenarios"] = {k: t_interval([x[k]["acc"] for x in scen]) for k in scen[0]}
            cons = [x["standard"]["consistency"] for x in scen if x["standard"].get("consistency") is not None]
            rows[-1]["consistency"] = t_interval(cons) if cons else None
        for part in ("grad_ratio", "grad_cos"):
            grads = [got[s][part] for s in sorted(got) if got[s].get(part)]
            if grads:
                rows[-1][part] = {ph: t_interval([g[ph] for g in grads if g[ph] is not None]) for ph in grads[0]}
    # each cell against protonet20, except the MSD and distilled cells: they answer their own questions
    pairs = [(c, BASELINE, "baseline") for c in CELLS if c != BASELINE and c not in (*MSD_LAMS, *DISTILL, *PROBES)]
    pairs += [(c, r, "msd") for c, r in MSD_CONTRASTS] + [(c, r, "distill") for c, r in DISTILL_CONTRASTS]
    pairs += [(c, PROBE_REFERENCE, "probe") for c in PROBES]
    errors = {cell: {s: [1.0 - c for c in p["runs"]["per_item_correct"]] for s, p in got.items()}
              for cell, got in pieces.items()}
    comparisons = paired_items(errors, pairs)
    # the MSD family under perturbation: seed-level differences of the scenario accuracies (same episodes)
    for cell, ref in MSD_CONTRASTS:
        a, b = pieces.get(cell, {}), pieces.get(ref, {})
        common = [s for s in a if s in b and a[s].get("scenarios") and b[s].get("scenarios")]
        if not common:
            continue
        for key in ("standard", "strong/both"):
            d = seed_level_test([a[s]["scenarios"][key]["acc"] - b[s]["scenarios"][key]["acc"] for s in common])
            comparisons.append({"cell": cell, "vs": ref, "family": "msd_scenarios", "scenario": key, "seed_level": d})
    holm_within_families(comparisons)
    # the recipe a user would take from the probes: the highest mean validation accuracy (the runs unread)
    probed = [r for r in rows if r["cell"] in (PROBE_REFERENCE, *PROBES)]
    val = lambda r: sum(v["val_acc"] for v in r["per_seed"].values()) / len(r["per_seed"])  # noqa: E731
    chosen = max(probed, key=val)["cell"] if len(probed) > 1 else None
    return {"background": args.background, "device": describe_device(resolve_device("cpu")), "rows": rows,
            "probe_chosen_on_validation": chosen, "comparisons": comparisons, "published_full_track": PUBLISHED, "budget": {
                "protonet_iterations": args.protonet_iterations, "maml_iterations": args.maml_iterations,
                "maml_meta_batch": args.maml_meta_batch, "pretrain_epochs": args.pretrain_epochs,
                "pretrain_rot_epochs": args.pretrain_rot_epochs, "wide_hidden": args.wide_hidden,
                "maml20_iterations": args.maml20_iterations, "maml20_meta_batch": args.maml20_meta_batch,
                "grad_ratio_every": args.grad_ratio_every,
                "teacher": (args.teacher or "protonet20_s0") if any(c in pieces for c in DISTILL) else None,
                "val_episodes": args.val_episodes, "way": args.way, "overrides": args.override}}


def markdown(rep: Dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    track = "full track" if rep["background"] == "full" else "minimal track"
    lines = [f"Omniglot challenge, {track} (background {rep['background']}), error on the 20 official runs "
             f"(400 items); {rep['device']}; budget {rep['budget']}", "",
             "| cell | seeds | error % (mean ± t95 over seeds) | per seed: error % [Wilson 95%] | val acc % | train s |",
             "|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        ci = "n/a" if r["error_ci95"] != r["error_ci95"] else pct(r["error_ci95"])
        per = "; ".join(f"{pct(v['error'])} [{pct(v['wilson95'][0])}–{pct(v['wilson95'][1])}]"
                        + (f" ({v['head_rule']})" if v.get("head_rule") else "")
                        + (f" (lr {v['chosen']['inner_lr']}, {v['chosen']['test_steps']} steps)" if v.get("chosen") else "")
                        + (f" (T {v['temperatures']['student']:.2f})" if v.get("temperatures") else "")
                        for v in r["per_seed"].values())
        val = ", ".join(pct(v["val_acc"]) for v in r["per_seed"].values() if v["val_acc"] is not None)
        secs = ", ".join(f"{v['train_seconds']:.0f}" for v in r["per_seed"].values() if v.get("train_seconds"))
        lines.append(f"| {r['cell']} | {len(r['seeds'])} | {pct(r['error_mean'])} ± {ci} | {per} | {val} | {secs} |")
    for family, title in (("baseline", "Paired per-item difference in error to protonet20 (points; seed level: t over the "
                                        "per-seed mean differences; Holm over the comparisons):"),
                          ("msd", "MSD on ProtoMAML, every cell at protomaml5's compute: paired per-item difference in "
                                  "error (points; seed level; Holm over these comparisons):"),
                          ("distill", "Teacher -> student meta-learning (the student is maml5): paired per-item difference "
                                      "in error (points; seed level; Holm over these comparisons):"),
                          ("probe", f"Variants of {PROBE_REFERENCE} (how close the minimal track gets): paired per-item "
                                    f"difference in error (points; seed level; Holm over these comparisons); chosen on "
                                    f"validation: {rep.get('probe_chosen_on_validation')}:")):
        fam = [c for c in rep["comparisons"] if c.get("family", "baseline") == family]
        if not fam:
            continue
        lines += ["", title, "", "| cell − reference | difference ± t95 | p (seed level) | Holm p |", "|---|---|---|---|"]
        for c in fam:
            s = c["seed_level"]
            ci = "n/a" if s["ci"] != s["ci"] else pct(s["ci"])
            lines.append(f"| {c['cell']} − {c['vs']} | {pct(s['mean'])} ± {ci} | {s['p']:.3g} | {c['holm_p']:.3g} |")
    fam = [c for c in rep["comparisons"] if c.get("family") == "msd_scenarios"]
    if fam:
        lines += ["", "The MSD family on the 5-way validation episodes, standard and strong/both: difference in accuracy "
                  "(points; seed level; Holm over these comparisons):", "",
                  "| cell − reference | scenario | difference ± t95 | p (seed level) | Holm p |", "|---|---|---|---|---|"]
        for c in fam:
            s = c["seed_level"]
            ci = "n/a" if s["ci"] != s["ci"] else pct(s["ci"])
            lines.append(f"| {c['cell']} − {c['vs']} | {c['scenario']} | {pct(s['mean'])} ± {ci} | {s['p']:.3g} | "
                         f"{c['holm_p']:.3g} |")
    grads = [r for r in rep["rows"] if r.get("grad_ratio")]
    if grads:
        lines += ["", "The consistency term's meta-gradient against the query CE's: norm ratio (λ-scaled) and cosine, "
                  "early / middle / late thirds of training (mean ± t95 over seeds):", "",
                  "| cell | ratio early | middle | late | cosine early | middle | late |", "|---|---|---|---|---|---|---|"]
        for r in grads:
            g, c = r["grad_ratio"], r.get("grad_cos") or {}
            lines.append(f"| {r['cell']} | " + " | ".join(f"{d[ph]['mean']:.3f} ± {d[ph]['ci']:.3f}" if ph in d else "–"
                                                          for d in (g, c) for ph in ("early", "middle", "late")) + " |")
    scen_rows = [r for r in rep["rows"] if r.get("scenarios")]
    if scen_rows:
        names = list(scen_rows[0]["scenarios"])
        lines += ["", "5-way 1-shot validation episodes, accuracy % (mean ± t95 over seeds), standard and perturbed "
                  "(glyph preset); consistency on the standard episodes:", "",
                  "| cell | " + " | ".join(names) + " | consistency |", "|---|" + "---|" * (len(names) + 1)]
        for r in scen_rows:
            cells = [f"{pct(r['scenarios'][k]['mean'])} ± {'n/a' if r['scenarios'][k]['ci'] != r['scenarios'][k]['ci'] else pct(r['scenarios'][k]['ci'])}"
                     for k in names]
            c = r.get("consistency")
            lines.append(f"| {r['cell']} | " + " | ".join(cells) + (f" | {c['mean']:.3f} |" if c else " | – |"))
    lines += ["", "Published, FULL background set (30 alphabets; Lake et al. 2015): "
              + "; ".join(f"{name} {err}%" for name, err in rep["published_full_track"])]
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/omniglot", help="folder with the official Omniglot zips and all_runs.zip")
    ap.add_argument("--work", default="runs/omniglot_study", help="run folders and finished pieces (resumable)")
    ap.add_argument("--background", default="small1", choices=("small1", "small2", "full"),
                    help="full: the challenge's full track (30 alphabets; validation: the five Vinyals validation "
                         "alphabets held out of them)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cells", nargs="+", default=list(DEFAULT_CELLS), choices=CELLS)
    ap.add_argument("--scenarios", action="store_true", help="also the perturbed 5-way validation scenarios")
    ap.add_argument("--scenario-episodes", type=int, default=100)
    ap.add_argument("--protonet-iterations", type=int, default=1500)
    ap.add_argument("--maml-iterations", type=int, default=600)
    ap.add_argument("--maml-meta-batch", type=int, default=8)
    ap.add_argument("--maml20-iterations", type=int, default=300)
    ap.add_argument("--maml20-meta-batch", type=int, default=4, help="maml20 (the MAML repository's 20-way: 16)")
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--pretrain-rot-epochs", type=int, default=15, help="pretrain_rot_nc (4x the images per epoch: "
                    "15 epochs are 2x pretrain_nc's steps)")
    ap.add_argument("--wide-hidden", type=int, default=128, help="pretrain_rot_wide_nc: Conv4 channels (others: 64)")
    ap.add_argument("--teacher", help="kd5 / kd_rank5: the frozen teacher's run folder or checkpoint (default: "
                    "the protonet20 run of seed 0 in --work)")
    ap.add_argument("--grad-ratio-every", type=int, default=50, help="MSD cells: log the consistency term's "
                    "gradient ratio every K iterations")
    ap.add_argument("--tuned-lrs", type=float, nargs="+", default=[0.4, 0.8, 1.6], help="*_tuned cells: inner lrs")
    ap.add_argument("--tuned-steps", type=int, nargs="+", default=[3, 10, 25], help="*_tuned cells: test steps")
    ap.add_argument("--val-episodes", type=int, default=100, help="validation episodes (model selection)")
    ap.add_argument("--way", type=int, default=20, help="way of the validation episodes and of ProtoNet's training "
                    "episodes (the runs are 20-way)")
    ap.add_argument("--override", nargs="*", default=[], help="key=value overrides for every cell's config "
                    "(e.g. model.options.hidden=32)")
    add_study_flags(ap, "omniglot_study_<background>_cpu.json")
    args = ap.parse_args(argv)
    if args.scenarios and not args.report_only:
        add_missing_scenarios(args)
    return run_study(args, piece, report, markdown, f"omniglot_study_{args.background}_cpu.json")


if __name__ == "__main__":
    main()
