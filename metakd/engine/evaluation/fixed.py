"""``metakd eval RUN --episodes omniglot-runs | LIST.csv``: a trained model on externally fixed episodes.

The episodes come from outside metakd's sampler: the 20 official Omniglot one-shot runs (20-way 1-shot
within one evaluation alphabet each, 400 query items; ``data.fixed_episodes.omniglot_runs``) or a user's
episode-list CSV (``data.fixed_episodes.load_episode_list``). Their images go through the preprocessing the
run was trained with (``data.preprocess.preprocess_for``: the same decode, resize, stroke polarity and
normalisation). A model trained N-way meets M-way episodes through its learner's ``head_rule``.

Reported: the error rate over all items with its Wilson 95% interval, the per-episode error rates with
a Student-t 95% interval over episodes, and every item's prediction, so that ``metakd compare`` pairs two
models item by item (``per_item_correct``, in the order of ``items_fingerprint``).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from ...atomic import check_writable
from ...data.fixed_episodes import FixedEpisode, load_episode_list, omniglot_runs
from ...data.preprocess import preprocess_for
from ...errors import MetakdError
from ...stats import t_interval, wilson_interval
from ..assembly import describe_device, resolve_device
from .checkpoint_eval import holding_run, load_for_evaluation, run_label, write_result

OMNIGLOT_RUNS = "omniglot-runs"


def fixed_episodes_for(spec: str, ckpt: Dict[str, Any], root: Optional[str] = None) -> List[FixedEpisode]:
    """The episodes ``spec`` names (``omniglot-runs``: the official runs under ``root`` or the run's
    ``data.root``; else an episode-list CSV), preprocessed as the checkpoint's run was."""
    cfg, info = ckpt["config"], ckpt.get("data", {})
    pre = preprocess_for(cfg["data"]["dataset"], int(info.get("image_size", cfg["data"]["image_size"])),
                         int(info.get("in_channels", 3)), ckpt.get("normalize"))
    if spec == OMNIGLOT_RUNS:
        where = root or cfg["data"].get("root")
        if not where:
            raise MetakdError("--episodes omniglot-runs: the run has no data.root; give --root with the folder "
                              "holding all_runs.zip (or the unzipped runNN/ folders)")
        return omniglot_runs(where, pre)
    path = Path(spec)
    if path.suffix.lower() != ".csv":
        raise MetakdError(f"--episodes {spec!r}: expected a number of episodes, '{OMNIGLOT_RUNS}' or an episode-list "
                          ".csv file (columns episode,role,path,label)")
    return load_episode_list(path, pre)


def items_fingerprint(episodes: Sequence[FixedEpisode]) -> str:
    """A short hash of the episodes' query item ids in order: two results pair item by item when equal."""
    h = hashlib.sha256()
    for ep in episodes:
        h.update(ep.episode_id.encode())
        for item in ep.query_ids:
            h.update(b"\0" + str(item).encode())
    return h.hexdigest()[:16]


def predict_fixed(learner: Any, episodes: Sequence[FixedEpisode], device: torch.device) -> List[Dict[str, Any]]:
    """Every query item's prediction: [{episode, id, label, pred, correct}] in episode and item order."""
    learner.eval()
    rows: List[Dict[str, Any]] = []
    for ep in episodes:
        b = ep.batch.to(device)
        with torch.no_grad():
            logits = learner.task_logits(b.support_x[0], b.support_y[0], b.query_x[0], b.n_way, False)
        pred = logits.argmax(-1).cpu().tolist()
        for item, label, p in zip(ep.query_ids, b.query_y[0].cpu().tolist(), pred):
            rows.append({"episode": ep.episode_id, "id": str(item), "label": ep.class_names[label],
                         "pred": ep.class_names[p], "correct": int(p == label)})
    return rows


def summarise_items(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Error rate over items (Wilson 95%) and per episode (Student-t 95% over episodes)."""
    errors = sum(1 - r["correct"] for r in rows)
    wilson = wilson_interval(errors, len(rows))
    per_episode: Dict[str, List[int]] = {}
    for r in rows:
        per_episode.setdefault(r["episode"], []).append(1 - r["correct"])
    ep_err = {k: sum(v) / len(v) for k, v in per_episode.items()}
    over = t_interval(list(ep_err.values()))
    return {"items": len(rows), "errors": errors, "error_rate": wilson["p"], "accuracy": 1 - wilson["p"],
            "error_wilson95": [wilson["low"], wilson["high"]],
            "per_episode_error": ep_err, "error_over_episodes": {"mean": over["mean"], "ci95": over["ci"]}}


def evaluate_fixed_checkpoint(path: Path, episodes: str, **kwargs: Any) -> Dict[str, Any]:
    """Evaluate ``path`` (checkpoint or run folder) on the fixed episodes ``episodes`` names (module
    docstring); writes ``eval_<omniglot-runs|list name>.json`` (``eval_<learner>_...`` with ``learner``)
    next to the checkpoint (under the run's lock), or to ``out``, and returns the same dict with ``output``.
    kwargs: device, root, out, learner, overrides."""
    return holding_run(path, kwargs.get("out"), lambda: _evaluate_fixed(path, episodes, **kwargs))


def _evaluate_fixed(path: Path, episodes: str, *, device: str = "auto", root: Optional[str] = None,
                    out: Optional[Path] = None, learner: Optional[str] = None,
                    overrides: Sequence[str] = ()) -> Dict[str, Any]:
    dev = resolve_device(device)
    ckpt_path, model, ckpt = load_for_evaluation(path, dev, root=root, learner=learner, overrides=overrides)
    cfg = ckpt["config"]
    fixed = fixed_episodes_for(episodes, ckpt, root)
    stem = OMNIGLOT_RUNS if episodes == OMNIGLOT_RUNS else Path(episodes).stem
    prefix = f"eval_{learner}_" if learner is not None else "eval_"
    target = Path(out) if out is not None else ckpt_path.parent / f"{prefix}{stem}.json"
    check_writable(target, "evaluation result")
    start = time.perf_counter()
    rows = predict_fixed(model, fixed, dev)
    # the options the learner runs with, defaults included (e.g. head_rule), JSON-safe
    options = {k: v if isinstance(v, (bool, int, float, str, type(None), list, dict)) else str(v)
               for k, v in dict(getattr(model, "options", None) or cfg["learner"].get("options", {})).items()}
    result = {
        "name": cfg["name"], "run": run_label(ckpt_path, cfg["name"]), "checkpoint": str(ckpt_path),
        "step": ckpt["step"], "split": stem, "episode_source": fixed[0].source if fixed else None,
        "dataset": cfg["data"]["dataset"], "learner": cfg["learner"]["name"], "learner_options": options,
        "backbone": cfg["model"]["backbone"], "trained_n_way": cfg["episodes"]["n_way"],
        "n_way": sorted({ep.batch.n_way for ep in fixed}), "episodes": len(fixed), "train_seed": cfg["seed"],
        **summarise_items(rows),
        "items_fingerprint": items_fingerprint(fixed), "per_item_correct": [r["correct"] for r in rows],
        "per_item": rows, "seconds": time.perf_counter() - start, "device": describe_device(dev), "config": cfg,
    }
    if learner is not None:
        result["init"] = ckpt.get("init")
    return write_result(target, result)
