"""``metakd eval``: a trained checkpoint on the fixed test episodes, printed and written as JSON."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..atomic import check_writable, write_json, write_with_fallback
from ..errors import ConfigError, MetakdError
from ..validate import consistency_views as check_views, integer, positive_int
from .build import describe_device, make_learner, make_sampler, resolve_device, split_for
from .checkpoint import load_checkpoint, safe_load
from .distributed import evaluate_sharded, init_distributed


def find_checkpoint(path: Path, which: str = "best") -> Path:
    """A checkpoint file, or ``<run dir>/<which>.pt`` for a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            raise MetakdError(f"run directory {path} has no {which}.pt (found: {', '.join(sorted(p.name for p in path.glob('*.pt'))) or 'no checkpoints'})")
        return candidate
    return path


def run_label(checkpoint: Path, name: str) -> str:
    """How results name a run: its folder (two runs of one config, two seeds say, differ there), with
    the config name in brackets when the folder is named otherwise."""
    folder = Path(checkpoint).resolve().parent.name
    return folder if folder == name or not folder else f"{folder} [{name}]"


def existing_checkpoint(path: Path, which: str = "best") -> Path:
    """``find_checkpoint``, and an error now if the file is not there."""
    found = find_checkpoint(path, which)
    if not found.is_file():
        raise MetakdError(f"checkpoint {found} does not exist")
    return found


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__


def state_dict_mismatch(model: Mapping[str, Any], saved: Mapping[str, Any], limit: int = 4) -> str:
    """What keeps ``saved`` from loading into ``model`` (shape differences, missing and extra keys), one
    line; empty when they fit."""
    shapes = [f"{k}: checkpoint {_shape(saved[k])} vs model {_shape(v)}" for k, v in model.items()
              if k in saved and _shape(saved[k]) != _shape(v)]
    missing = [k for k in model if k not in saved]
    extra = [k for k in saved if k not in model]
    parts = []
    for label, items in (("shape mismatch", shapes), ("missing in the checkpoint", missing), ("not in the model", extra)):
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label}: {'; '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_learner(path: Path, device: str = "auto") -> Tuple[Any, Dict[str, Any]]:
    """Rebuild the learner a checkpoint holds (in eval mode) and return it with the checkpoint dict."""
    ckpt = load_checkpoint(path, map_location="cpu")
    info = ckpt.get("data", {})
    cfg = ckpt["config"]
    try:
        learner = make_learner(cfg, info.get("in_channels", 3), info.get("image_size", 84), init=False)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {path}: its config no longer builds a learner: {exc}") from None
    state = ckpt["learner"]
    if not isinstance(state, Mapping):
        raise MetakdError(f"checkpoint {path}: 'learner' holds a {type(state).__name__}, not a state dict")
    what = (f"checkpoint {path} does not fit the learner its config builds ({cfg['learner']['name']}, "
            f"{cfg['model']['backbone']}, {cfg['episodes']['n_way']}-way)")
    mismatch = state_dict_mismatch(learner.state_dict(), state)
    if mismatch:
        raise MetakdError(f"{what}: {mismatch}")
    try:
        learner.load_state_dict(state)
    except RuntimeError as exc:
        raise MetakdError(f"{what}: {' '.join(str(exc).split())}") from None
    learner.to(resolve_device(device)).eval()
    return learner, ckpt


def fewshot_config_for(ckpt: Dict[str, Any], ckpt_path: Path, learner: str,
                       overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The few-shot config that evaluates ``learner`` started from the backbone in ``ckpt`` without
    meta-training: a `metakd pretrain` checkpoint's data, backbone, episodes and eval sections (or a
    `metakd train` checkpoint's config with another learner), ``model.init`` = the checkpoint,
    ``train.iterations`` 0, then ``overrides`` (e.g. learner.options.steps=50, episodes.k_shot=5)."""
    from ..config import SCHEMA, merge, parse_overrides, validate

    src = ckpt["config"]
    raw: Dict[str, Any] = {"name": f"{src.get('name', 'run')}+{learner}", "seed": src.get("seed", 0)}
    for section in ("data", "episodes", "eval"):
        raw[section] = {k: v for k, v in src.get(section, {}).items() if k in SCHEMA[section]}
    raw["model"] = {"backbone": src["model"]["backbone"], "options": dict(src["model"].get("options", {})),
                    "init": str(ckpt_path)}
    raw["learner"] = {"name": learner, "options": {}}
    raw["train"] = {"iterations": 0}
    overrides = list(overrides)
    merge(raw, parse_overrides(overrides))
    return validate(raw, f"{ckpt_path} with --learner {learner}", overrides=overrides)


def learner_from_backbone(path: Path, learner: str, overrides: Sequence[str] = (),
                          device: str = "auto") -> Tuple[Any, Dict[str, Any]]:
    """(learner in eval mode, a checkpoint-like dict whose config is ``fewshot_config_for``'s) for
    ``metakd eval --learner``."""
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or ("model" not in ckpt and "learner" not in ckpt):
        raise MetakdError(f"{path} is neither a `metakd pretrain` nor a `metakd train` checkpoint")
    cfg = fewshot_config_for(ckpt, path, learner, overrides)
    info = ckpt.get("data", {})
    report: Dict[str, Any] = {}
    model = make_learner(cfg, info.get("in_channels", 3), info.get("image_size", 84), report=report)
    model.to(resolve_device(device)).eval()
    return model, {"config": cfg, "step": 0, "normalize": ckpt.get("normalize"), "data": info, "init": report,
                   "source_step": ckpt.get("step")}


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
    ckpt_path = find_checkpoint(Path(path))
    if learner is not None:
        if not ckpt_path.is_file():
            raise MetakdError(f"checkpoint {ckpt_path} does not exist")
        model, ckpt = learner_from_backbone(ckpt_path, learner, overrides, device=str(device))
    else:
        if [o for o in overrides if not o.startswith("threads=")]:
            raise MetakdError(f"key=value arguments ({', '.join(overrides)}) only apply with --learner")
        _refuse_backbone_only(ckpt_path)
        model, ckpt = load_learner(ckpt_path, device=str(device))
    cfg = ckpt["config"]
    if root is not None:
        cfg["data"]["root"] = root
    episodes = positive_int(cfg["eval"]["episodes"] if episodes is None else episodes, "episodes")
    seed = integer(cfg["eval"]["seed"] if seed is None else seed, "seed")
    sampler = make_sampler(cfg, split_for(cfg, split), q_query=cfg["episodes"]["test_q_query"], device=device,
                           normalize=ckpt.get("normalize"))
    return ckpt_path, model, ckpt, sampler, sampler.fixed_episodes(episodes, seed), episodes, seed


def _refuse_backbone_only(path: Path) -> None:
    """A pre-training checkpoint holds a backbone, not a learner: say how to evaluate one."""
    if not path.is_file():
        return
    try:
        ckpt = safe_load(path)
    except MetakdError:
        return  # load_checkpoint reports it
    if isinstance(ckpt, dict) and ckpt.get("kind") == "metakd-pretrain":
        raise MetakdError(f"{path} is a `metakd pretrain` checkpoint (a backbone, no few-shot learner): evaluate a "
                          "learner started from it with --learner protonet | anil | linear_probe | cosine_classifier "
                          "| finetune, or meta-train one with model.init=" + str(path.parent))


def evaluate_checkpoint(path: Path, *, episodes: Optional[int] = None, seed: Optional[int] = None,
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
        existing_checkpoint(Path(path))
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
        # the result must survive a write that fails after all (disk full, folder gone): output_error says so
        target, error = write_with_fallback(target, lambda p: write_json(p, result, what="evaluation result"),
                                            "metakd-eval-")
        if error:
            result["output_error"] = error
    result["output"] = str(target)
    return result
