"""Evaluation on cached features vs the ordinary per-episode evaluation, in one process.

For learners whose backbone does not change inside an episode (ProtoNet, ANIL, linear probe, cosine
classifier) ``evaluate_episodes(cache=True)`` embeds every image of the episode list once and runs all
episodes on the cached features (``metakd/engine/feature_cache.py``). This script times both paths
on the same fixed test episodes of the glyph dataset (Conv4 with running BatchNorm, the pre-training
setting; the weights need not be trained for a timing, but ``--init`` takes a pretrain run) and checks
that the per-episode accuracies are identical. The two paths alternate per learner; one warm-up
episode batch each first.

    .venv/bin/python benchmarks/feature_cache_speed.py --episodes 600 --learners protonet anil
    .venv/bin/python benchmarks/feature_cache_speed.py --image-size 84 --channels 3 --hidden 64 --episodes 600

Writes feature_cache_<device>.{json,md} into runs/benchmarks/ (benchmarks/results/ with --update-results;
``--out`` to choose).
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

from metakd.config import load_config  # noqa: E402
from metakd.engine.assembly import describe_device, make_learner, make_sampler, split_for  # noqa: E402
from metakd.engine.evaluation.episodes import evaluate_episodes  # noqa: E402
from benchlib.results import add_update_results_flag, output_path, write_json_and_markdown  # noqa: E402

OPTIONS = {"protonet": [], "anil": ["learner.options.inner_lr=0.5", "learner.options.test_steps=10"],
           "linear_probe": [], "cosine_classifier": []}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learners", nargs="+", default=["protonet", "anil"], choices=sorted(OPTIONS))
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="tasks per batch of the uncached evaluation")
    p.add_argument("--init", help="a `metakd pretrain` run to start the backbone from")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="result JSON (default: runs/benchmarks/feature_cache_<device>.json)")
    add_update_results_flag(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.learners:
        over = ["device=" + args.device, f"learner.name={name}", f"episodes.k_shot={args.shots}",
                f"data.image_size={args.image_size}", f"data.options.channels={args.channels}",
                f"model.options.hidden={args.hidden}", "model.options.bn=running", *OPTIONS[name]]
        if args.init:
            over.append(f"model.init={args.init}")
        cfg = load_config("protonet_glyphs_5w1s", over)
        split = split_for(cfg, "test")
        torch.manual_seed(0)
        learner = make_learner(cfg, args.channels, args.image_size).to(device)
        sampler = make_sampler(cfg, split, q_query=15, device=device, normalize=None)
        episodes = sampler.fixed_episodes(args.episodes, 0)
        for cache in (False, True):  # warm-up
            evaluate_episodes(learner, sampler, episodes[:args.batch_size], batch_size=args.batch_size,
                              progress=False, cache=cache)
        tic = time.perf_counter()
        plain = evaluate_episodes(learner, sampler, episodes, batch_size=args.batch_size, progress=False)
        t_plain = time.perf_counter() - tic
        tic = time.perf_counter()
        cached = evaluate_episodes(learner, sampler, episodes, batch_size=args.batch_size, progress=False, cache=True)
        t_cached = time.perf_counter() - tic
        same = plain["per_episode"] == cached["per_episode"]
        rows.append({"learner": name, "episodes": len(episodes), "uncached_s": t_plain, "cached_s": t_cached,
                     "speedup": t_plain / t_cached, "cached_images": cached.get("cached_images"),
                     "acc": cached["acc"], "identical_per_episode": same})
        print(f"{name}: uncached {t_plain:.2f} s, cached {t_cached:.2f} s ({t_plain / t_cached:.1f}x), "
              f"{cached.get('cached_images')} images embedded once; per-episode accuracies identical: {same}")
    report = {"benchmark": "feature_cache_speed", "device": describe_device(device), "threads": args.threads,
              "load_average": os.getloadavg(), "command": " ".join(sys.argv), "image_size": args.image_size,
              "channels": args.channels, "hidden": args.hidden, "shots": args.shots, "rows": rows}
    md = ["| learner | episodes | uncached (s) | cached (s) | speed-up | images embedded | identical |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['learner']} | {r['episodes']} | {r['uncached_s']:.2f} | {r['cached_s']:.2f} | {r['speedup']:.1f}x | "
           f"{r['cached_images']} | {r['identical_per_episode']} |" for r in rows]
    kind = "cpu" if device.type == "cpu" else "gpu"
    out = output_path(args.out, f"feature_cache_{kind}.json", args.update_results)
    write_json_and_markdown(out, report, "\n".join(md) + "\n")
    if not all(r["identical_per_episode"] for r in rows):
        sys.exit("cached and uncached accuracies differ")


if __name__ == "__main__":
    main()
