"""The ``metakd`` command: thin — parses arguments, loads the config, calls the engine."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import MetakdError
from .validate import consistency_views_arg, positive_int_arg, threads_arg


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .engine.runs.distributed import is_main_process
    from .engine.runs.folder import check_run_folder, clear_run, default_output_dir, run_lock
    from .engine.training.meta import Trainer

    if args.overwrite and args.resume:
        raise MetakdError("--overwrite and --resume together: --resume continues the run in the folder, --overwrite "
                          "deletes it first; give one of them")
    cfg = load_config(args.config, args.overrides)
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    overwrite = args.overwrite and is_main_process()
    with run_lock(default_output_dir(cfg), is_main_process()):  # one writer, from before --overwrite deletes anything
        if overwrite:  # refuse a folder that is not a metakd run before loading any data
            check_run_folder(default_output_dir(cfg))
        trainer = Trainer(cfg, progress=not args.no_progress)
        if overwrite:
            kept = clear_run(trainer.out)
            if kept:
                print(f"metakd train: --overwrite kept {len(kept)} entries metakd did not write in {trainer.out}: "
                      f"{', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}", file=sys.stderr)
        summary = trainer.fit(resume=args.resume if args.resume else False)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    best = summary["best_val"]
    print(f"done: {summary['step']} iterations; best validation {100 * best['acc']:.2f} ± {100 * best['ci95']:.2f} "
          f"at step {best['step']}; run in {summary['output_dir']}")
    print(f"evaluate with: metakd eval {summary['output_dir']}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from .engine.evaluation.checkpoint_eval import evaluate_checkpoint
    from .engine.runs.distributed import is_main_process
    from .engine.runs.metrics import format_acc

    failed = []
    overrides = list(args.overrides) + [c for c in args.checkpoints if "=" in c and not Path(c).exists()]
    args.checkpoints = [c for c in args.checkpoints if c not in overrides]
    if not args.checkpoints:
        raise MetakdError("metakd eval needs a run folder or checkpoint")
    args.overrides = overrides
    if isinstance(args.episodes, str):
        return _eval_fixed(args)
    for path in args.checkpoints:
        res = evaluate_checkpoint(Path(path), episodes=args.episodes, seed=args.seed, split=args.split,
                                  device=args.device, batch_size=args.batch_size, root=args.root,
                                  out=Path(args.out) if args.out and len(args.checkpoints) == 1 else None,
                                  progress=not args.no_progress, cache=False if args.no_feature_cache else None,
                                  learner=args.learner, overrides=args.overrides)
        if not is_main_process():  # under torchrun rank 0 reports
            continue
        print(f"{res['run']} ({res['learner']}, {res['backbone']}, {res['n_way']}-way {res['k_shot']}-shot, "
              f"{res['split']}): {format_acc(res['accuracy'], res['ci95'])} % over {res['episodes']} episodes "
              f"(seed {res['episode_seed']}) on {res['device']} -> {res['output']}")
        if args.learner:  # a learner built here, not the trained one: say what it was built with
            opts = res["config"]["learner"].get("options", {})
            print("  learner options: " + (", ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "(defaults)"))
        if res.get("output_error"):
            failed.append(f"{res['output_error']}; the result was written to {res['output']} instead")
    if failed:
        raise MetakdError(" | ".join(failed))


def _episodes_arg(text: str):
    """``--episodes`` of metakd eval: a positive count, or the name of external fixed episodes."""
    return text if not text.strip().lstrip("-").isdigit() else positive_int_arg(text)


def _eval_fixed(args: argparse.Namespace) -> None:
    """``metakd eval RUN --episodes omniglot-runs | LIST.csv``: error rate over items, per episode, learner options."""
    from .engine.evaluation.fixed import evaluate_fixed_checkpoint

    for path in args.checkpoints:
        res = evaluate_fixed_checkpoint(Path(path), args.episodes, device=args.device, root=args.root,
                                        out=Path(args.out) if args.out and len(args.checkpoints) == 1 else None,
                                        learner=args.learner, overrides=args.overrides)
        lo, hi = res["error_wilson95"]
        over = res["error_over_episodes"]
        print(f"{res['run']} ({res['learner']}, {res['backbone']}, trained {res['trained_n_way']}-way) on {res['split']}: "
              f"error {100 * res['error_rate']:.2f}% ({res['errors']}/{res['items']} items, Wilson 95% "
              f"{100 * lo:.1f}–{100 * hi:.1f}; over {res['episodes']} episodes {100 * over['mean']:.2f} ± "
              f"{100 * over['ci95']:.2f}) -> {res['output']}")
        print("  per episode: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in res["per_episode_error"].items()))
        print("  learner options: " + (", ".join(f"{k}={v}" for k, v in sorted(res["learner_options"].items()))
                                       or "(defaults)"))
        if res.get("output_error"):
            raise MetakdError(f"{res['output_error']}; the result was written to {res['output']} instead")


def _cmd_list(args: argparse.Namespace) -> None:
    from . import data  # noqa: F401
    from . import distill, learners, models  # noqa: F401  (register built-ins)
    from .config import available_configs
    from .engine.training.job_config import available_distill_configs, available_pretrain_configs
    from .registry import BACKBONES, DATASETS, LEARNERS, LOSSES

    groups = {"learners": LEARNERS.names(), "backbones": BACKBONES.names(), "datasets": DATASETS.names(),
              "losses": LOSSES.names(), "configs": available_configs(),
              "distill-configs": available_distill_configs(), "pretrain-configs": available_pretrain_configs()}
    for name, items in groups.items():
        if args.what in (None, name):
            print(f"{name}: {', '.join(items) if items else '(none)'}")


def data_options(config: Optional[str], items: List[str], dataset: Optional[str]) -> Dict[str, Any]:
    """inspect_root's keywords for ``metakd data``: a config's data section (with ``items`` as its overrides),
    else ``items`` as loader options; ``--dataset`` wins over the config's."""
    from .config import load_config, parse_overrides

    if config:
        data = load_config(config, items)["data"]
        return {"dataset": dataset or data["dataset"], "image_size": data["image_size"], **data["options"]}
    return {"dataset": dataset, **parse_overrides(items)}


def _cmd_data(args: argparse.Namespace) -> None:
    from . import data  # noqa: F401
    from .data.inspect import check_report, format_report, inspect_root

    info = inspect_root(args.root, **data_options(args.config, args.overrides, args.dataset))
    print(json.dumps(info, indent=2, default=str) if args.json else format_report(info), flush=True)
    check_report(info)  # a split that cannot be read fails the command (exit 2), after the report


def _cmd_config(args: argparse.Namespace) -> None:
    from .config import dump_config
    from .engine.training.job_config import load_job_config

    print(dump_config(load_job_config(args.config, args.overrides, job=args.job)), end="")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .engine.demo import run_demo

    run_demo(output_dir=Path(args.output_dir), iterations=args.iterations, episodes=args.episodes,
             device=args.device, progress=not args.no_progress, threads=args.threads)


def _cmd_robustness(args: argparse.Namespace) -> None:
    from .engine.evaluation.robustness import run_robustness

    report = run_robustness([Path(c) for c in args.checkpoints], out=Path(args.out) if args.out else None,
                            episodes=args.episodes, seed=args.seed, levels=args.levels, sides=args.sides,
                            consistency_views=args.consistency_views, scenario_seed=args.scenario_seed,
                            preset=args.preset,
                            device=args.device, batch_size=args.batch_size, root=args.root,
                            progress=not args.no_progress)
    print(report["table"])
    print(f"written: {report['output_dir']}/robustness.{{md,json,png}}")
    if report.get("output_error"):
        raise MetakdError(f"{report['output_error']}; the report was written to {report['output_dir']} instead")


def _cmd_compare(args: argparse.Namespace) -> None:
    from .engine.evaluation.compare import run_compare

    report = run_compare(list(args.results), out=Path(args.out) if args.out else None)  # paths or LABEL=RUN,RUN
    print(report["table"])
    if args.out:
        print(f"written: {report['output_dir']}/compare.{{md,json,png}}")


def _cmd_distill(args: argparse.Namespace) -> None:
    from .engine.training.distill import run_distill
    from .engine.training.job_config import load_distill_config

    cfg = load_distill_config(args.config, args.overrides)
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    res = run_distill(cfg, resume=args.resume, progress=not args.no_progress)
    s, t = res["student"], res["teacher"]
    temps = f"; temperatures T_t {s['t_teacher']:.2f}, T_s {s['t_student']:.2f}" if "t_teacher" in s else ""
    print(f"done: {res['method']} {t['arch']} ({100 * t['test_acc']:.2f}%) -> {s['arch']}: test top-1 "
          f"{100 * s['test_acc']:.2f}% after {s['epochs']} epochs{temps}; {res['output_dir']}/result.json")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from .engine.runs.metrics import format_acc
    from .engine.training.job_config import load_pretrain_config
    from .engine.training.pretrain import run_pretrain

    cfg = load_pretrain_config(args.config, args.overrides)
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    res = run_pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    best = res["best_val"]
    print(f"done: {res['epoch']} epochs ({res['step']} steps) of {res['classes']}-way classification; best "
          f"validation (nearest centroid) {format_acc(best['acc'], best['ci95'])} at epoch {best['epoch']}; run in "
          f"{res['output_dir']}")
    print(f"start a learner from it: model.init={res['output_dir']}; or evaluate one without meta-training: "
          f"metakd eval {res['output_dir']} --learner protonet")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metakd", description="Few-shot meta-learning with knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train the learner a config describes")
    t.add_argument("config", help="config name (see `metakd list configs`) or path to a YAML file")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.iterations=1000 learner.options.inner_lr=0.05")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from output_dir/last.pt (or the given checkpoint)")
    t.add_argument("--output-dir", help="run folder (default: runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="delete metakd's own files in an existing run folder first (a folder that is "
                   "not a metakd run is refused, and other files are kept)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate checkpoints on the fixed test episodes (mean ± 95%% CI)")
    e.add_argument("checkpoints", nargs="+", help="run folders (their best.pt) or checkpoint files")
    e.add_argument("--episodes", type=_episodes_arg, help="number of fixed test episodes (default: the config's "
                   "eval.episodes, 600); or external fixed episodes: 'omniglot-runs' (the 20 official Omniglot one-shot "
                   "runs under --root or the run's data.root) or an episode-list .csv (columns episode,role,path,label)")
    e.add_argument("--seed", type=int, help="seed of the fixed episode list (default: the config's eval.seed)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--batch-size", type=positive_int_arg, help="tasks per evaluation batch")
    e.add_argument("--device", default="auto")
    e.add_argument("--root", help="dataset root, when it moved since training")
    e.add_argument("--out", help="JSON result path (default: next to the checkpoint)")
    e.add_argument("--learner", help="evaluate this learner started from the checkpoint's backbone, without "
                   "meta-training (e.g. protonet, anil, linear_probe, cosine_classifier, finetune); needed for a "
                   "`metakd pretrain` run. key=value arguments (learner.options.steps=50, episodes.k_shot=5) "
                   "then adjust the few-shot config it builds")
    e.add_argument("--no-feature-cache", action="store_true", help="embed the images of every episode anew even when "
                   "the learner allows evaluating on cached features (same accuracies, slower)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_eval, overrides=[])

    ls = sub.add_parser("list", help="registered learners, backbones, datasets, losses and shipped configs")
    ls.add_argument("what", nargs="?", choices=("learners", "backbones", "datasets", "losses", "configs",
                                                "distill-configs", "pretrain-configs"))
    ls.set_defaults(func=_cmd_list)

    d = sub.add_parser("data", help="inspect a dataset root: format detected, classes and images per split")
    d.add_argument("root")
    d.add_argument("--dataset", help="dataset name, when detection is ambiguous")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="loader options key=value (e.g. background=small1 image_size=28 "
                   "'val_alphabets=[Sanskrit]'); with --config, config overrides (data.options.background=small1)")
    d.add_argument("--config", help="report what this config's run will read: its data.dataset, data.image_size "
                   "and data.options (ROOT replaces data.root)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(func=_cmd_data)

    c = sub.add_parser("config", help="print a config after inheritance and overrides, validated by its job's schema")
    c.add_argument("config", help="config name (see `metakd list configs`, `pretrain-configs`, `distill-configs`) or "
                   "path to a YAML file")
    c.add_argument("overrides", nargs="*", help="key=value overrides")
    c.add_argument("--job", choices=["train", "pretrain", "distill"], help="the job whose schema validates it (default: "
                   "pretrain / distill for the shipped configs of those jobs and files in a pretrain/ or distill/ "
                   "folder, else train)")
    c.set_defaults(func=_cmd_config)

    m = sub.add_parser("demo", help="MAML vs MAML+MSD vs ProtoNet on the built-in glyph dataset (standard and augmented), a few minutes on a CPU")
    m.add_argument("--output-dir", default="runs/demo", help="folder for the three runs, results.{md,json} and "
                   "accuracy.png (default: runs/demo)")
    m.add_argument("--iterations", type=positive_int_arg, help="meta-iterations per learner (default: the demo configs')")
    m.add_argument("--threads", type=threads_arg, help="torch CPU threads (default: 1 on a CPU, which is fastest for these tiny models)")
    m.add_argument("--episodes", type=positive_int_arg, default=600, help="fixed test episodes")
    m.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    m.add_argument("--no-progress", action="store_true", help="no progress bars")
    m.set_defaults(func=_cmd_demo)

    r = sub.add_parser("robustness", help="checkpoints under the augmented test scenario (weak/strong × support/query/both)")
    r.add_argument("checkpoints", nargs="+", help="run folders (their best.pt) or checkpoint files")
    r.add_argument("--episodes", type=positive_int_arg, help="fixed test episodes (default: the config's eval.episodes)")
    r.add_argument("--seed", type=int, help="seed of the fixed episode list (default: the config's eval.seed)")
    r.add_argument("--levels", nargs="+", default=["standard", "weak", "strong"],
                   choices=("standard", "weak", "strong", "ood"), help="scenario levels; ood: pixel noise and occlusion, outside every preset's training views")
    r.add_argument("--sides", nargs="+", default=["support", "query", "both"], choices=("support", "query", "both"))
    r.add_argument("--consistency-views", type=consistency_views_arg, default=4, help="augmented support copies for the consistency "
                   "metric (0: skip it)")
    r.add_argument("--scenario-seed", type=int, default=0, help="seed of the per-episode perturbations")
    r.add_argument("--preset", choices=("natural", "glyph"), help="augmentation preset of the scenarios and "
                   "consistency copies (default: the data's: glyph for the glyphs and Omniglot, natural for photos)")
    r.add_argument("--batch-size", type=positive_int_arg, help="tasks per evaluation batch")
    r.add_argument("--device", default="auto")
    r.add_argument("--root", help="dataset root, when it moved since training")
    r.add_argument("--out", help="output folder (default: <run>/robustness, or ./robustness for several)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_robustness)
    cmp = sub.add_parser("compare", help="methods compared on their shared fixed test episodes: seed-level paired "
                         "t test over seeds, within-seed per-episode intervals, Holm over several comparisons")
    cmp.add_argument("results", nargs="+", help="eval_*.json or robustness.json files, or run folders holding one, "
                     "or LABEL=RUN,RUN,... for a method with one run per seed; the first is the baseline")
    cmp.add_argument("--out", help="folder for compare.{md,json,png} (default: print only)")
    cmp.set_defaults(func=_cmd_compare)
    k = sub.add_parser("distill", help="teacher -> student knowledge distillation for classification (KD, KD + rank, MKD)")
    k.add_argument("config", help="config name (e.g. distill_glyphs_kd) or path to a YAML file")
    k.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/cifar teacher.checkpoint=t.pt")
    k.add_argument("--resume", action="store_true", help="continue the run in output_dir (teacher or student phase)")
    k.add_argument("--output-dir", help="run folder (default: runs/<config name>)")
    k.add_argument("--no-progress", action="store_true", help="no progress bars")
    k.set_defaults(func=_cmd_distill)
    pt = sub.add_parser("pretrain", help="pre-train a backbone by classification over all meta-training classes "
                        "(validated on few-shot val episodes)")
    pt.add_argument("config", help="config name (e.g. pretrain_conv4_glyphs, see `metakd list pretrain-configs`) or "
                    "path to a YAML file")
    pt.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/mini-imagenet train.epochs=10")
    pt.add_argument("--resume", action="store_true", help="continue the run in output_dir (its last.pt)")
    pt.add_argument("--output-dir", help="run folder (default: runs/<config name>)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bars")
    pt.set_defaults(func=_cmd_pretrain)
    for name, command in sub.choices.items():
        if not any("--threads" in a.option_strings for a in command._actions):
            command.add_argument("--threads", type=threads_arg, help=THREADS_HELP)
        if name in ("train", "distill", "pretrain"):
            command.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to "
                                 "<output dir>/tensorboard/ (the config key tensorboard: true; needs the tensorboard package)")
    return p


THREADS_HELP = ("torch CPU threads (default: the config's `threads`, else 1 on a machine without CUDA: these "
                "models are tiny, and on a shared CPU one thread measured up to 46x faster than two); at most 4 x "
                "the machine's CPUs")


def _parse(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse, accepting ``key=value`` overrides anywhere after the command (before or after the flags)."""
    args, extra = parser.parse_known_args(argv)
    resume = getattr(args, "resume", None)
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():  # `--resume key=value`
        args.resume, extra = True, [resume, *extra]
    if extra:
        overrides = [a for a in extra if "=" in a and not a.startswith("-")]
        rest = [a for a in extra if a not in overrides]
        if rest or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(rest or extra)}")
        args.overrides = list(args.overrides) + overrides
    return args


def _set_threads(args: argparse.Namespace) -> None:
    """--threads wins over a config's ``threads`` (passed on as the override threads=N); without either,
    1 thread on a machine without CUDA."""
    import torch

    if getattr(args, "tensorboard", False):
        args.overrides = list(args.overrides) + ["tensorboard=true"]
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
        if hasattr(args, "overrides"):
            args.overrides = list(args.overrides) + [f"threads={args.threads}"]
    elif not torch.cuda.is_available():
        torch.set_num_threads(1)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns the exit status: 0, 2 for an error (one line on stderr, no traceback:
    a MetakdError, or an OSError the command did not turn into one), 130 for Ctrl-C; a bad flag is
    reported by argparse (usage, then one error line naming the flag) and returns its status, 2."""
    try:
        args = _parse(build_parser(), argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command != "demo":  # the demo has its own --threads default
            _set_threads(args)
        args.func(args)
    except MetakdError as exc:
        print(f"metakd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metakd {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # last resort: a file operation no command wrapped
        from .atomic import describe_os_error

        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"metakd {args.command}: error: {where}{describe_os_error(exc)}", file=sys.stderr)
        return 2
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
