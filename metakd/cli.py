"""The ``metakd`` command: thin — parses arguments, loads the config, calls the engine."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from .errors import MetakdError


def _cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .engine.distributed import is_main_process
    from .engine.train import Trainer

    cfg = load_config(args.config, args.overrides)
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    trainer = Trainer(cfg, progress=not args.no_progress)
    if args.overwrite and not args.resume and trainer.out.exists() and is_main_process():
        shutil.rmtree(trainer.out)
    summary = trainer.fit(resume=args.resume if args.resume else False)
    if not is_main_process():  # under torchrun rank 0 reports
        return
    best = summary["best_val"]
    print(f"done: {summary['step']} iterations; best validation {100 * best['acc']:.2f} ± {100 * best['ci95']:.2f} "
          f"at step {best['step']}; run in {summary['output_dir']}")
    print(f"evaluate with: metakd eval {summary['output_dir']}")


def _cmd_eval(args: argparse.Namespace) -> None:
    from .engine.distributed import is_main_process
    from .engine.evaluate_checkpoint import evaluate_checkpoint
    from .engine.metrics import format_acc

    for path in args.checkpoints:
        res = evaluate_checkpoint(Path(path), episodes=args.episodes, seed=args.seed, split=args.split,
                                  device=args.device, batch_size=args.batch_size, root=args.root,
                                  out=Path(args.out) if args.out and len(args.checkpoints) == 1 else None,
                                  progress=not args.no_progress)
        if not is_main_process():  # under torchrun rank 0 reports
            continue
        print(f"{res['name']} ({res['learner']}, {res['backbone']}, {res['n_way']}-way {res['k_shot']}-shot, "
              f"{res['split']}): {format_acc(res['accuracy'], res['ci95'])} % over {res['episodes']} episodes "
              f"(seed {res['episode_seed']}) on {res['device']} -> {res['output']}")


def _cmd_list(args: argparse.Namespace) -> None:
    from . import distill, learners, models  # noqa: F401  (register built-ins)
    from . import data  # noqa: F401
    from .config import available_configs
    from .registry import BACKBONES, DATASETS, LEARNERS, LOSSES

    from .distill.job_config import available_distill_configs

    groups = {"learners": LEARNERS.names(), "backbones": BACKBONES.names(), "datasets": DATASETS.names(),
              "losses": LOSSES.names(), "configs": available_configs(),
              "distill-configs": available_distill_configs()}
    for name, items in groups.items():
        if args.what in (None, name):
            print(f"{name}: {', '.join(items) if items else '(none)'}")


def _cmd_data(args: argparse.Namespace) -> None:
    from . import data  # noqa: F401
    from .data.inspect import format_report, inspect_root

    info = inspect_root(args.root, dataset=args.dataset)
    print(json.dumps(info, indent=2, default=str) if args.json else format_report(info))


def _cmd_config(args: argparse.Namespace) -> None:
    from .config import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .engine.demo import run_demo

    run_demo(output_dir=Path(args.output_dir), iterations=args.iterations, episodes=args.episodes,
             device=args.device, progress=not args.no_progress, threads=args.threads)


def _cmd_robustness(args: argparse.Namespace) -> None:
    from .engine.robustness import run_robustness

    report = run_robustness([Path(c) for c in args.checkpoints], out=Path(args.out) if args.out else None,
                            episodes=args.episodes, seed=args.seed, levels=args.levels, sides=args.sides,
                            consistency_views=args.consistency_views, scenario_seed=args.scenario_seed,
                            device=args.device, batch_size=args.batch_size, root=args.root,
                            progress=not args.no_progress)
    print(report["table"])
    print(f"written: {report['output_dir']}/robustness.{{md,json,png}}")


def _cmd_distill(args: argparse.Namespace) -> None:
    from .distill.job_config import load_distill_config
    from .engine.distill_job import run_distill

    cfg = load_distill_config(args.config, args.overrides)
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    res = run_distill(cfg, resume=args.resume, progress=not args.no_progress)
    s, t = res["student"], res["teacher"]
    temps = f"; temperatures T_t {s['t_teacher']:.2f}, T_s {s['t_student']:.2f}" if "t_teacher" in s else ""
    print(f"done: {res['method']} {t['arch']} ({100 * t['test_acc']:.2f}%) -> {s['arch']}: test top-1 "
          f"{100 * s['test_acc']:.2f}% after {s['epochs']} epochs{temps}; {res['output_dir']}/result.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metakd", description="Few-shot meta-learning with knowledge distillation.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train the learner a config describes")
    t.add_argument("config", help="config name (see `metakd list configs`) or path to a YAML file")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.iterations=1000 learner.options.inner_lr=0.05")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from output_dir/last.pt (or the given checkpoint)")
    t.add_argument("--output-dir", help="run folder (default: runs/<config name>)")
    t.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate checkpoints on the fixed test episodes (mean ± 95%% CI)")
    e.add_argument("checkpoints", nargs="+", help="run folders (their best.pt) or checkpoint files")
    e.add_argument("--episodes", type=int, help="number of fixed episodes (default: the config's eval.episodes, 600)")
    e.add_argument("--seed", type=int, help="seed of the fixed episode list (default: the config's eval.seed)")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--batch-size", type=int, help="tasks per evaluation batch")
    e.add_argument("--device", default="auto")
    e.add_argument("--root", help="dataset root, when it moved since training")
    e.add_argument("--out", help="JSON result path (default: next to the checkpoint)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_eval)

    ls = sub.add_parser("list", help="registered learners, backbones, datasets, losses and shipped configs")
    ls.add_argument("what", nargs="?", choices=("learners", "backbones", "datasets", "losses", "configs",
                                                "distill-configs"))
    ls.set_defaults(func=_cmd_list)

    d = sub.add_parser("data", help="inspect a dataset root: format detected, classes and images per split")
    d.add_argument("root")
    d.add_argument("--dataset", help="dataset name, when detection is ambiguous")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(func=_cmd_data)

    c = sub.add_parser("config", help="print a config after inheritance and overrides")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=_cmd_config)

    m = sub.add_parser("demo", help="MAML vs MAML+MSD vs ProtoNet on the built-in glyph dataset (standard and augmented), a few minutes on a CPU")
    m.add_argument("--output-dir", default="runs/demo")
    m.add_argument("--iterations", type=int, help="meta-iterations per learner (default: the demo configs')")
    m.add_argument("--threads", type=int, help="torch CPU threads (default: 1 on a CPU, which is fastest for these tiny models)")
    m.add_argument("--episodes", type=int, default=600, help="fixed test episodes")
    m.add_argument("--device", default="auto")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_cmd_demo)

    r = sub.add_parser("robustness", help="checkpoints under the augmented test scenario (weak/strong × support/query/both)")
    r.add_argument("checkpoints", nargs="+", help="run folders (their best.pt) or checkpoint files")
    r.add_argument("--episodes", type=int, help="fixed test episodes (default: the config's eval.episodes)")
    r.add_argument("--seed", type=int, help="seed of the fixed episode list (default: the config's eval.seed)")
    r.add_argument("--levels", nargs="+", default=["standard", "weak", "strong"], choices=("standard", "weak", "strong"))
    r.add_argument("--sides", nargs="+", default=["support", "query", "both"], choices=("support", "query", "both"))
    r.add_argument("--consistency-views", type=int, default=4, help="augmented support copies for the consistency "
                   "metric (0: skip it)")
    r.add_argument("--scenario-seed", type=int, default=0, help="seed of the per-episode perturbations")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--device", default="auto")
    r.add_argument("--root", help="dataset root, when it moved since training")
    r.add_argument("--out", help="output folder (default: <run>/robustness, or ./robustness for several)")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_robustness)
    k = sub.add_parser("distill", help="teacher -> student knowledge distillation for classification (KD, KD + rank, MKD)")
    k.add_argument("config", help="config name (e.g. distill_glyphs_kd) or path to a YAML file")
    k.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/cifar teacher.checkpoint=t.pt")
    k.add_argument("--resume", action="store_true", help="continue the run in output_dir (teacher or student phase)")
    k.add_argument("--output-dir", help="run folder (default: runs/<config name>)")
    k.add_argument("--no-progress", action="store_true", help="no progress bars")
    k.set_defaults(func=_cmd_distill)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MetakdError as exc:
        print(f"metakd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
