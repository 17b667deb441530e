"""The test-time inner loop of the Omniglot study's MAML-family models at 20-way, chosen on validation episodes
that look like the runs.

Why: the official runs are 20-way 1-shot *within one alphabet*, while the study's validation episodes
(``omniglot_study.py``) draw 20 characters across the validation alphabets. A model can pass the second and
fail the first: MSD-trained ProtoMAML models made 19-20 errors of 20 on some runs (one class predicted for
almost every query) with their trained inner loop (lr 0.4, 3 steps), none with a smaller step.

For each trained model of a study (``--study-work``: its ``runs/<cell>_s<seed>``, no training here), every
setting of ``--grid`` (inner lr : test steps; 0 steps = the learner's initial head, e.g. ProtoMAML's
prototype rows; a third field ``min``: the learner's ``test_stop: min_support_loss``, which keeps per episode
the fast weights of the update count with the lowest support loss) is scored on
  within   --val-episodes fixed 20-way 1-shot episodes, each inside one validation alphabet (the runs' protocol;
           1 query per class, alphabets in turn, the same episodes for every model),
  across   the first --across-episodes of the study's own validation episodes (20 characters drawn from all
           the validation alphabets, 15 queries each),
  runs     the 20 official runs (error, and runs "collapsed": one class predicted for half the queries or more).
The setting is chosen per model on ``within`` (ties keep the earlier setting of the grid, the trained one
first); the runs are scored at every setting but only read, never used to choose. Settings added to --grid
later are scored into the finished pieces (resumable) and the choice is redone over all of them.

Reported: per cell, the runs' error at the trained and at the chosen setting (mean ± Student-t 95% over seeds),
and at the trained loop with ``:min`` when scored (a fixed rule: nothing chosen), collapsed runs, the validation
accuracies per setting; the MSD family's paired per-item differences at the chosen settings and at the trained
loop with ``:min`` (seed level, Holm within each), as in ``omniglot_study.py``.

    python benchmarks/omniglot_inner_loop.py --root data/omniglot --study-work runs/omniglot_study \\
        --work runs/omniglot_inner_loop --cells protomaml5 msd5_l0 msd5_l0.3 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import omniglot_study as study  # noqa: E402
from metakd.data.sampler import Episode  # noqa: E402
from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402
from metakd.engine.evaluation.fixed import fixed_episodes_for, predict_fixed, summarise_items  # noqa: E402
from metakd.stats import t_interval  # noqa: E402
from benchlib.results import add_study_flags, load_pieces, run_study, write_atomic  # noqa: E402

STOPS = {"": "none", "min": "min_support_loss"}  # the third field of a --grid item: the learner's test_stop
MAML_FAMILY = ("maml5", "protomaml5", "unicorn5", "maml20", *study.MSD_LAMS, *study.DISTILL)


def within_alphabet_episodes(sampler: Any, num: int, way: int, seed: int = 0) -> List[Episode]:
    """``num`` fixed ``way``-way 1-shot episodes with one query per class, each inside one alphabet of the
    sampler's split (class names "alphabet/character"), alphabets with >= ``way`` characters taken in turn."""
    names, labels = sampler.split.class_names, np.asarray(sampler.split.labels)
    by_alphabet: Dict[str, List[int]] = collections.defaultdict(list)
    for c in sampler.classes:
        by_alphabet[names[c].split("/")[0]].append(int(c))
    alphabets = sorted(a for a, cs in by_alphabet.items() if len(cs) >= way)
    if not alphabets:
        raise SystemExit(f"no validation alphabet has {way} characters: lower --way")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num):
        classes = rng.choice(by_alphabet[alphabets[i % len(alphabets)]], way, replace=False)
        rows = np.stack([rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in classes])
        out.append(Episode(classes.astype(np.int64), rows[:, :1].copy(), rows[:, 1:].copy()))
    return out


def _collapsed(rows: List[Dict[str, Any]]) -> int:
    """Runs where one class takes half the predictions or more."""
    preds: Dict[str, List[str]] = collections.defaultdict(list)
    for r in rows:
        preds[r["episode"]].append(r["pred"])
    return sum(collections.Counter(p).most_common(1)[0][1] * 2 >= len(p) for p in preds.values())


def _settings(args: argparse.Namespace) -> List[tuple]:
    """--grid as [(inner lr, test steps, test_stop)]; a one-line error naming the bad item."""
    out = []
    for item in args.grid:
        lr, _, rest = item.partition(":")
        steps, _, stop = rest.partition(":")
        try:
            out.append((float(lr), int(steps), STOPS[stop]))
        except (ValueError, KeyError):
            raise SystemExit(f"--grid {item!r}: expected inner lr:test steps[:min], e.g. 0.1:3 or 0.4:3:min") from None
        if out[-1][0] <= 0 or out[-1][1] < 0:
            raise SystemExit(f"--grid {item!r}: the inner lr must be > 0 and the steps >= 0")
    return out


def _key(setting: tuple) -> str:
    """The name of a setting in pieces and tables: "lr:steps", with ":min" under test_stop min_support_loss."""
    lr, steps, stop = setting
    return f"{lr}:{steps}" + (":min" if stop != "none" else "")


class _Scorer:
    """One trained model of the study and the fixed episodes it is scored on (within, across, the runs)."""

    def __init__(self, cell: str, seed: int, args: argparse.Namespace):
        self.run = Path(args.study_work) / "runs" / f"{cell}_s{seed}"
        done = Path(args.study_work) / "pieces" / f"{cell}_s{seed}.json"
        if not done.is_file():
            raise SystemExit(f"{cell} seed {seed}: no finished study piece at {done}")
        self.rule = json.loads(done.read_text()).get("head_rule")
        model, ckpt = study._load(self.run, head_rule=self.rule)
        inner = getattr(model, "host", getattr(model, "student", model))
        self.trained = (float(inner.lr), int(inner.test_steps), inner.options.get("test_stop", "none"))
        self.sampler = study._val_sampler(ckpt, args.way)
        self.within = within_alphabet_episodes(self.sampler, args.val_episodes, args.way)
        self.across = self.sampler.fixed_episodes(args.across_episodes, 1) if args.across_episodes else []
        self.runs = fixed_episodes_for("omniglot-runs", ckpt, args.root)

    def score(self, setting: tuple) -> Dict[str, Any]:
        model, _ = study._load(self.run, head_rule=self.rule, inner=setting)
        rows = predict_fixed(model, self.runs, study.CPU)
        return {"within": evaluate_episodes(model, self.sampler, self.within, progress=False)["acc"],
                "across": evaluate_episodes(model, self.sampler, self.across, progress=False)["acc"]
                if self.across else None,
                "runs_error": summarise_items(rows)["error_rate"], "collapsed": _collapsed(rows),
                "per_item_correct": [r["correct"] for r in rows]}


def _choose(settings: Dict[str, Any]) -> str:
    """The setting with the best within-alphabet validation accuracy (first of ties: the trained one)."""
    return max(settings, key=lambda k: settings[k]["within"])


def piece(cell: str, seed: int, args: argparse.Namespace) -> Dict[str, Any]:
    scorer = _Scorer(cell, seed, args)
    grid = [scorer.trained] + [g for g in _settings(args) if g != scorer.trained]
    out: Dict[str, Any] = {"cell": cell, "seed": seed, "head_rule": scorer.rule, "trained": list(scorer.trained),
                           "settings": {_key(g): scorer.score(g) for g in grid},
                           "protocol": {"grid": args.grid, "val_episodes": args.val_episodes, "way": args.way,
                                        "across_episodes": args.across_episodes}}
    out["chosen"] = _choose(out["settings"])
    return out


def add_missing_settings(args: argparse.Namespace) -> None:
    """A finished piece of --cells x --seeds that lacks settings of --grid gets them scored (on the same
    episodes: --val-episodes, --way and --across-episodes must be the piece's), its choice redone over all its
    settings and the piece rewritten atomically (a piece from before the protocol was recorded: these flags)."""
    for seed in args.seeds:
        for cell in args.cells:
            path = Path(args.work) / "pieces" / f"{cell}_s{seed}.json"
            if not path.is_file():
                continue
            got = json.loads(path.read_text())
            missing = [g for g in _settings(args) if _key(g) not in got["settings"]]
            if not missing:
                continue
            episodes = {"val_episodes": args.val_episodes, "way": args.way, "across_episodes": args.across_episodes}
            proto = got.get("protocol") or {"grid": list(got["settings"]), **episodes}
            differ = [f"--{k.replace('_', '-')} {proto[k]}" for k in episodes if proto[k] != episodes[k]]
            if differ:
                raise SystemExit(f"{path}: scored with {', '.join(differ)}; rerun with the same to add settings")
            print(f"[settings] {cell}_s{seed}: {' '.join(map(_key, missing))}", flush=True)
            scorer = _Scorer(cell, seed, args)
            got["settings"].update({_key(g): scorer.score(g) for g in missing})
            got["chosen"] = _choose(got["settings"])
            got["protocol"] = {**proto, "grid": list(dict.fromkeys([*proto["grid"], *args.grid]))}
            write_atomic(path, json.dumps(got))


def _guarded(piece: Dict[str, Any]) -> Any:
    """The key of the piece's trained loop under test_stop min_support_loss (None if not scored): a fixed rule,
    nothing chosen."""
    key = _key((*piece["trained"][:2], "min_support_loss"))
    return key if key in piece["settings"] else None


def _guarded_columns(pieces: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The runs' error and collapsed runs at the trained loop under test_stop min, when every seed has it."""
    keys = [_guarded(p) for p in pieces]
    if not all(keys):
        return {}
    got = [p["settings"][k] for p, k in zip(pieces, keys)]
    return {"guarded_error": t_interval([g["runs_error"] for g in got]), "guarded_collapsed": [g["collapsed"] for g in got]}


def _over_seeds(values: List[Any]) -> Any:
    """t_interval of the values present (None when none is)."""
    got = [v for v in values if v is not None]
    return t_interval(got) if got else None


def report(work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    pieces = load_pieces(work)
    rows = []
    for cell in MAML_FAMILY:
        got = pieces.get(cell, {})
        if not got:
            continue
        seeds = sorted(got)
        trained = [got[s]["settings"][_key((*got[s]["trained"], "none")[:3])] for s in seeds]
        chosen = [got[s]["settings"][got[s]["chosen"]] for s in seeds]
        keys = list(got[seeds[0]]["settings"])
        rows.append({"cell": cell, "seeds": seeds, "chosen": [got[s]["chosen"] for s in seeds],
                     "trained_error": t_interval([t["runs_error"] for t in trained]),
                     "chosen_error": t_interval([c["runs_error"] for c in chosen]),
                     "trained_collapsed": [t["collapsed"] for t in trained],
                     "chosen_collapsed": [c["collapsed"] for c in chosen],
                     **_guarded_columns([got[s] for s in seeds]),
                     "by_setting": {k: {part: _over_seeds([got[s]["settings"].get(k, {}).get(part) for s in seeds])
                                        for part in ("within", "across", "runs_error")} for k in keys}})
    errors = {cell: {s: [1 - c for c in p["settings"][p["chosen"]]["per_item_correct"]] for s, p in got.items()}
              for cell, got in pieces.items()}
    guarded = {cell: {s: [1 - c for c in p["settings"][_guarded(p)]["per_item_correct"]] for s, p in got.items()
                      if _guarded(p)} for cell, got in pieces.items()}
    comparisons = study.paired_items(errors, [(c, r, "msd") for c, r in study.MSD_CONTRASTS])
    comparisons += study.paired_items(guarded, [(c, r, "msd_guarded") for c, r in study.MSD_CONTRASTS])
    study.holm_within_families(comparisons)
    # the protocol the pieces were scored with (pieces from before it was recorded: this invocation's flags)
    first = next((p for got in pieces.values() for p in got.values() if p.get("protocol")), None)
    proto = first["protocol"] if first else {"grid": args.grid, "val_episodes": args.val_episodes, "way": args.way,
                                             "across_episodes": args.across_episodes}
    return {"background": args.background, **proto,
            "device": study.describe_device(study.resolve_device("cpu")), "rows": rows, "comparisons": comparisons}


def _pct(d: Dict[str, float]) -> str:
    """mean ± t95 in percent ("–" for none)."""
    if d is None:
        return "–"
    return f"{100 * d['mean']:.2f} ± " + ("n/a" if d["ci"] != d["ci"] else f"{100 * d['ci']:.2f}")


def markdown(rep: Dict[str, Any]) -> str:
    lines = [f"Omniglot {rep['background']}: the MAML-family models' test-time inner loop at {rep['way']}-way, chosen "
             f"on {rep['val_episodes']} within-alphabet validation episodes (grid lr:steps {' '.join(rep['grid'])}); "
             f"{rep['device']}", "",
             "| cell | seeds | runs error %, trained loop | collapsed runs | chosen (per seed) | runs error %, chosen | "
             "collapsed runs | runs error %, trained loop + test_stop min | collapsed runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        lines.append(f"| {r['cell']} | {len(r['seeds'])} | {_pct(r['trained_error'])} | {r['trained_collapsed']} | "
                     f"{', '.join(r['chosen'])} | {_pct(r['chosen_error'])} | {r['chosen_collapsed']} | "
                     f"{_pct(r.get('guarded_error'))} | {r.get('guarded_collapsed', '–')} |")
    lines += ["", "Per setting (mean ± t95 over seeds): validation accuracy % within one alphabet / across alphabets, "
              "and the runs' error % (read, not chosen on):", "",
              "| cell | lr:steps | within-alphabet val | across-alphabet val | runs error |", "|---|---|---|---|---|"]
    for r in rep["rows"]:
        for k, d in r["by_setting"].items():
            lines.append(f"| {r['cell']} | {k} | {_pct(d['within'])} | {_pct(d['across'])} | {_pct(d['runs_error'])} |")
    for family, where in (("msd", "at the chosen settings"), ("msd_guarded", "at the trained loop with test_stop min")):
        got = [c for c in rep["comparisons"] if c["family"] == family]
        if not got:
            continue
        lines += ["", f"MSD family {where}: paired per-item difference in the runs' error (points; seed level; Holm "
                  "over these comparisons):", "", "| cell − reference | difference ± t95 | p (seed level) | Holm p |",
                  "|---|---|---|---|"]
        for c in got:
            s = c["seed_level"]
            lines.append(f"| {c['cell']} − {c['vs']} | {_pct(s)} | {s['p']:.3g} | {c['holm_p']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data/omniglot", help="folder with all_runs.zip (and the study's data)")
    ap.add_argument("--study-work", default="runs/omniglot_study", help="the omniglot_study --work holding the models")
    ap.add_argument("--work", default="runs/omniglot_inner_loop", help="this study's pieces (resumable)")
    ap.add_argument("--background", default="small1", choices=("small1", "small2", "full"), help="for the report")
    ap.add_argument("--cells", nargs="+", default=["protomaml5", "msd5_l0", "msd5_l0.3"], choices=MAML_FAMILY)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grid", nargs="+", default=["0.4:3", "0.4:1", "0.1:3", "0.4:0", "0.4:3:min"],
                    help="test-time inner loops lr:steps, or lr:steps:min with test_stop min_support_loss (the "
                    "trained one is always included; settings a finished piece lacks are added to it)")
    ap.add_argument("--val-episodes", type=int, default=100)
    ap.add_argument("--across-episodes", type=int, default=30, help="the study's across-alphabet validation episodes "
                    "(the first of its list; 0: not scored)")
    ap.add_argument("--way", type=int, default=20)
    add_study_flags(ap, "omniglot_inner_loop_<background>_cpu.json")
    args = ap.parse_args(argv)
    _settings(args)  # a bad --grid fails before any piece starts
    if not args.report_only:
        add_missing_settings(args)
    return run_study(args, piece, report, markdown, f"omniglot_inner_loop_{args.background}_cpu.json")


if __name__ == "__main__":
    main()
