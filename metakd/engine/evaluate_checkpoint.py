"""``metakd eval``: a trained checkpoint on the fixed test episodes, printed and written as JSON."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import MetakdError
from .build import make_learner, make_sampler, resolve_device, split_for
from .checkpoint import load_checkpoint
from .distributed import evaluate_sharded, init_distributed
from .train import describe_device


def find_checkpoint(path: Path, which: str = "best") -> Path:
    """A checkpoint file, or ``<run dir>/<which>.pt`` for a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            raise MetakdError(f"run directory {path} has no {which}.pt (found: {', '.join(sorted(p.name for p in path.glob('*.pt'))) or 'no checkpoints'})")
        return candidate
    return path


def load_learner(path: Path, device: str = "auto") -> Tuple[Any, Dict[str, Any]]:
    """Rebuild the learner a checkpoint holds (in eval mode) and return it with the checkpoint dict."""
    ckpt = load_checkpoint(path, map_location="cpu")
    info = ckpt.get("data", {})
    learner = make_learner(ckpt["config"], info.get("in_channels", 3), info.get("image_size", 84))
    learner.load_state_dict(ckpt["learner"])
    learner.to(resolve_device(device)).eval()
    return learner, ckpt


def prepare_evaluation(path: Path, device, *, split: str = "test", episodes: Optional[int] = None,
                       seed: Optional[int] = None, root: Optional[str] = None):
    """Everything an evaluation of a checkpoint needs: (checkpoint path, learner in eval mode, checkpoint
    dict, sampler over ``split`` with the training normalisation, the fixed episode list, its size, its
    seed). Episode count and seed default to the config's ``eval`` section; ``root`` overrides the
    data folder when it moved since training."""
    if split not in ("train", "val", "test"):
        raise MetakdError(f"split must be train, val or test, got {split!r}")
    ckpt_path = find_checkpoint(Path(path))
    learner, ckpt = load_learner(ckpt_path, device=str(device))
    cfg = ckpt["config"]
    if root is not None:
        cfg["data"]["root"] = root
    episodes = episodes or cfg["eval"]["episodes"]
    seed = cfg["eval"]["seed"] if seed is None else seed
    sampler = make_sampler(cfg, split_for(cfg, split), q_query=cfg["episodes"]["test_q_query"], device=device,
                           normalize=ckpt.get("normalize"))
    return ckpt_path, learner, ckpt, sampler, sampler.fixed_episodes(episodes, seed), episodes, seed


def evaluate_checkpoint(path: Path, *, episodes: Optional[int] = None, seed: Optional[int] = None,
                        split: str = "test", device: str = "auto", batch_size: Optional[int] = None,
                        root: Optional[str] = None, out: Optional[Path] = None, progress: bool = True,
                        consistency_views: int = 0) -> Dict[str, Any]:
    """Evaluate ``path`` (checkpoint or run directory) on ``episodes`` fixed episodes of ``split``.

    consistency_views k >= 2 adds MSD's consistency metric (see ``evaluate_episodes``) to the result
    as ``consistency`` / ``consistency_ci95``; 0 (default) skips it (it costs k adaptations per episode).

    Episode count, seed and batch size default to the config's ``eval`` section; ``root`` points at
    the data when it moved since training. Writes ``eval_<split>_<episodes>ep_seed<seed>.json`` next
    to the checkpoint (or to ``out``) and returns the same dict.
    """
    ctx = init_distributed(resolve_device(device))  # under torchrun: episodes sharded over the ranks
    dev = ctx.device_for(resolve_device(device))
    ckpt_path, learner, ckpt, sampler, fixed, episodes, seed = prepare_evaluation(
        path, dev, split=split, episodes=episodes, seed=seed, root=root)
    cfg = ckpt["config"]
    start = time.perf_counter()
    res = evaluate_sharded(ctx, learner, sampler, fixed, batch_size=batch_size or cfg["eval"]["batch_size"],
                           progress=progress, desc=f"eval {cfg['name']}", consistency_views=consistency_views)
    ep = cfg["episodes"]
    result = {
        "name": cfg["name"], "checkpoint": str(ckpt_path), "step": ckpt["step"], "split": split,
        "dataset": cfg["data"]["dataset"], "learner": cfg["learner"]["name"], "backbone": cfg["model"]["backbone"],
        "n_way": ep["n_way"], "k_shot": ep["k_shot"], "q_query": ep["test_q_query"],
        "episodes": res["episodes"], "episode_seed": seed, "train_seed": cfg["seed"],
        "episodes_fingerprint": res["fingerprint"], "accuracy": res["acc"], "ci95": res["ci95"],
        "seconds": time.perf_counter() - start, "device": describe_device(dev), "config": cfg,
    }
    if consistency_views:
        result.update(consistency=res["consistency"], consistency_ci95=res["consistency_ci95"],
                      consistency_views=consistency_views)
    target = Path(out) if out is not None else ckpt_path.parent / f"eval_{split}_{episodes}ep_seed{seed}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, target)
    result["output"] = str(target)
    return result
