"""``metakd eval``: a trained checkpoint on the fixed test episodes, printed and written as JSON."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ...atomic import check_writable, write_json, write_with_fallback
from ...errors import MetakdError
from ...limits import check_bytes, episode_list_bytes
from ...validate import consistency_views as check_views
from ...validate import integer, positive_int
from ..assembly import describe_device, make_sampler, resolve_device, split_for
from ..assembly.learner import learner_from_backbone, learner_from_checkpoint
from ..runs.checkpoint import PRETRAIN_KIND, check_learner_checkpoint, find_checkpoint, safe_load
from ..runs.distributed import init_distributed, is_main_process
from ..runs.folder import writing_into_run
from .sharded import evaluate_sharded


def run_label(checkpoint: Path, name: str) -> str:
    """How results name a run: its folder (two runs of one config, two seeds say, differ there), with
    the config name in brackets when the folder is named otherwise."""
    folder = Path(checkpoint).resolve().parent.name
    return folder if folder == name or not folder else f"{folder} [{name}]"


def load_for_evaluation(path: Path, device, *, root: Optional[str] = None, learner: Optional[str] = None,
                        overrides: Sequence[str] = ()) -> Tuple[Path, Any, Dict[str, Any]]:
    """(checkpoint file, learner in eval mode, checkpoint dict) of ``path`` (a file or run folder), read once.
    ``learner``: that learner started from the checkpoint's backbone without meta-training, with ``overrides``
    (``learner_from_backbone``); ``root``: the data folder when it moved since training."""
    ckpt_path = find_checkpoint(path, "best")
    if learner is None and [o for o in overrides if not o.startswith("threads=")]:
        raise MetakdError(f"key=value arguments ({', '.join(overrides)}) only apply with --learner")
    raw = safe_load(ckpt_path)  # read once: the learner is built from this dict
    if learner is not None:
        model, ckpt = learner_from_backbone(raw, ckpt_path, learner, overrides, device=str(device))
    else:
        _refuse_backbone_only(raw, ckpt_path)
        model, ckpt = learner_from_checkpoint(check_learner_checkpoint(raw, ckpt_path), ckpt_path, device=str(device))
    if root is not None:
        ckpt["config"]["data"]["root"] = root
    return ckpt_path, model, ckpt


def prepare_evaluation(path: Path, device, *, split: str = "test", episodes: Optional[int] = None,
                       seed: Optional[int] = None, root: Optional[str] = None, learner: Optional[str] = None,
                       overrides: Sequence[str] = ()):
    """Everything an evaluation of a checkpoint needs: (checkpoint path, learner in eval mode, checkpoint
    dict, sampler over ``split`` with the training normalisation, the fixed episode list, its size, its
    seed). Episode count and seed default to the config's ``eval`` section; ``root`` overrides the
    data folder when it moved since training. ``learner``: evaluate that learner started from the
    checkpoint's backbone without meta-training (``learner_from_backbone``)."""
    if split not in ("train", "val", "test"):
        raise MetakdError(f"split must be train, val or test, got {split!r}")
    ckpt_path, model, ckpt = load_for_evaluation(path, device, root=root, learner=learner, overrides=overrides)
    cfg = ckpt["config"]
    key = "eval.episodes" if episodes is None else "--episodes"
    episodes = positive_int(cfg["eval"]["episodes"] if episodes is None else episodes, key)
    ep = cfg["episodes"]
    check_bytes(key, episode_list_bytes(episodes, ep["n_way"], ep["k_shot"], ep["test_q_query"]), f"{episodes} fixed episodes")
    seed = integer(cfg["eval"]["seed"] if seed is None else seed, "seed")
    sampler = make_sampler(cfg, split_for(cfg, split), q_query=cfg["episodes"]["test_q_query"], device=device,
                           normalize=ckpt.get("normalize"))
    return ckpt_path, model, ckpt, sampler, sampler.fixed_episodes(episodes, seed), episodes, seed


def _refuse_backbone_only(ckpt: Any, path: Path) -> None:
    """A pre-training checkpoint holds a backbone, not a learner: say how to evaluate one."""
    if isinstance(ckpt, dict) and ckpt.get("kind") == PRETRAIN_KIND:
        raise MetakdError(f"{path} is a `metakd pretrain` checkpoint (a backbone, no few-shot learner): evaluate a "
                          "learner started from it with --learner protonet | anil | linear_probe | cosine_classifier "
                          "| finetune, or meta-train one with model.init=" + str(path.parent))


def holding_run(path: Path, out: Optional[Path], evaluate: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``evaluate()`` holding the run folder's one-writer lock when its result goes next to the checkpoint
    (``metakd.engine.runs.folder.writing_into_run``), recording the file it wrote in the run's manifest."""
    if out is not None or not is_main_process():
        return evaluate()
    folder = find_checkpoint(path, "best").parent
    with writing_into_run(folder, []) as record:
        result = evaluate()
        record([Path(result["output"]).name] if Path(result["output"]).parent == folder else [])
        return result


def evaluate_checkpoint(path: Path, **kwargs: Any) -> Dict[str, Any]:
    """``_evaluate_checkpoint`` under the run folder's lock (``holding_run``)."""
    return holding_run(path, kwargs.get("out"), lambda: _evaluate_checkpoint(path, **kwargs))


def _evaluate_checkpoint(path: Path, *, episodes: Optional[int] = None, seed: Optional[int] = None,
                        split: str = "test", device: str = "auto", batch_size: Optional[int] = None,
                        root: Optional[str] = None, out: Optional[Path] = None, progress: bool = True,
                        consistency_views: int = 0, cache: Optional[bool] = None,
                        learner: Optional[str] = None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Evaluate ``path`` (checkpoint or run directory) on ``episodes`` fixed episodes of ``split``.

    learner: evaluate that learner started from the checkpoint's backbone without meta-training (a
    `metakd pretrain` run needs one), with ``overrides`` applied to the few-shot config it builds;
    the JSON is then ``eval_<learner>_<split>_...json``. cache: evaluate on cached features where the
    learner allows it (default: the config's ``eval.cache_features``).

    consistency_views k >= 2 adds MSD's consistency metric (see ``evaluate_episodes``) to the result
    as ``consistency`` / ``consistency_ci95``; 0 (default) skips it (it costs k adaptations per episode).

    Episode count, seed and batch size default to the config's ``eval`` section; ``root`` points at
    the data when it moved since training. Writes ``eval_<split>_<episodes>ep_seed<seed>.json`` next
    to the checkpoint (or to ``out``; checked writable before evaluating) and returns the same dict
    with ``output``, the path written; if that write fails after all, the JSON goes to a new temporary
    folder instead and ``output_error`` says why.
    """
    for value, name in ((episodes, "episodes"), (batch_size, "batch_size")):
        if value is not None:
            positive_int(value, name)
    check_views(consistency_views)
    ctx = init_distributed(resolve_device(device))  # under torchrun: episodes sharded over the ranks
    dev = ctx.device_for(resolve_device(device))
    if out is not None and ctx.is_main:
        find_checkpoint(path, "best")
        check_writable(out, "evaluation result")
    ckpt_path, model, ckpt, sampler, fixed, episodes, seed = prepare_evaluation(
        path, dev, split=split, episodes=episodes, seed=seed, root=root, learner=learner, overrides=overrides)
    cfg = ckpt["config"]
    prefix = f"eval_{learner}_" if learner is not None else "eval_"
    target = Path(out) if out is not None else ckpt_path.parent / f"{prefix}{split}_{episodes}ep_seed{seed}.json"
    if out is None and ctx.is_main:
        check_writable(target, "evaluation result")
    start = time.perf_counter()
    batch_size = positive_int(cfg["eval"]["batch_size"] if batch_size is None else batch_size, "batch_size")
    res = evaluate_sharded(ctx, model, sampler, fixed, batch_size=batch_size,
                           progress=progress, desc=f"eval {cfg['name']}", consistency_views=consistency_views,
                           cache=cfg["eval"].get("cache_features", True) if cache is None else cache)
    ep = cfg["episodes"]
    result = {
        "name": cfg["name"], "run": run_label(ckpt_path, cfg["name"]), "checkpoint": str(ckpt_path),
        "step": ckpt["step"], "split": split,
        "dataset": cfg["data"]["dataset"], "learner": cfg["learner"]["name"], "backbone": cfg["model"]["backbone"],
        "n_way": ep["n_way"], "k_shot": ep["k_shot"], "q_query": ep["test_q_query"],
        "episodes": res["episodes"], "episode_seed": seed, "train_seed": cfg["seed"],
        "episodes_fingerprint": res["fingerprint"], "accuracy": res["acc"], "ci95": res["ci95"],
        "seconds": time.perf_counter() - start, "device": describe_device(dev), "config": cfg,
        "per_episode": res["per_episode"],  # for paired comparisons (metakd compare)
    }
    if "cached_images" in res:
        result["cached_images"] = res["cached_images"]
    if learner is not None:
        result["init"] = ckpt.get("init")
    if consistency_views:
        result.update(consistency=res["consistency"], consistency_ci95=res["consistency_ci95"],
                      consistency_views=consistency_views)
    if ctx.is_main:
        return write_result(target, result)
    result["output"] = str(target)
    return result


def write_result(target: Path, result: Dict[str, Any]) -> Dict[str, Any]:
    """``result`` as JSON at ``target``, and ``result`` with ``output`` (the path written). The result must
    survive a write that fails after all (disk full, folder gone): it then goes to a new temporary folder
    and ``output_error`` says why."""
    target, error = write_with_fallback(target, lambda p: write_json(p, result, what="evaluation result"),
                                        "metakd-eval-")
    if error:
        result["output_error"] = error
    result["output"] = str(target)
    return result
