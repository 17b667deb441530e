"""``metakd pretrain``: a backbone pre-trained by ordinary classification over all classes of the
meta-training split (64-way miniImageNet, 351-way tieredImageNet, the glyphs' train classes), the
starting point of the baselines (linear probe, Baseline++, fine-tuning) and of ``model.init``.

Recipe from the config (``metakd.engine.training.job_config.PRETRAIN_SCHEMA``): SGD (or Adam) with momentum and
weight decay, a step or cosine schedule over epochs, batch size, label smoothing; augmentation on the
device with kornia (random crop of the zero-padded image, horizontal flip unless ``data.augment: crop``,
optional colour jitter), drawn from a seed that is a function of (seed, step), so a resumed run replays
the same crops. Every ``train.val_every`` epochs: nearest-centroid (ProtoNet on the backbone's
features, no training) on fixed episodes of the val split; the best one is best.pt.

Run folder (as ``metakd train``): config.yaml, metrics.jsonl, last.pt, best.pt, summary.json,
curves.png. The checkpoints are ``kind: metakd-pretrain`` with the backbone's state under ``model``;
``model.init: <run folder>`` loads it into any learner, ``metakd eval <run> --learner protonet``
evaluates a learner on it without meta-training. Runs on the shared supervised trainer
(``supervised.SupervisedTrainer``): signals stop at a step boundary with last.pt saved, exact resume.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ...atomic import write_json
from ...config import dump_config
from ...errors import ConfigError, MetakdError
from ...learners import build_learner
from ...models import build_backbone
from ..assembly import (describe_device, make_optimizer, make_sampler, make_scheduler, normalization, resolve_device,
                     split_for)
from ..evaluation.episodes import evaluate_episodes
from ..runs.checkpoint import PRETRAIN_KIND
from ..runs.folder import (RESUME_FREE_BASE, StopGuard, check_output_dir, default_output_dir, fault_point,
                           data_differences, discard_new_run, prepare_run_folder, run_files, run_lock)
from ..runs.metrics import format_acc, plot_curves
from .supervised import SupervisedTrainer

# Config keys a resume may change (they change no trained weight); any other difference is refused.
RESUME_FREE = RESUME_FREE_BASE + ("data.root", "data.storage", "train.log_every", "train.checkpoint_every", "eval.")


class Pretrainer(SupervisedTrainer):
    """Classification over the train split's classes with few-shot validation; see the module docstring."""

    command = "pretrain"

    def __init__(self, cfg: Dict[str, Any], output_dir: Optional[Path] = None, progress: bool = True):
        self.out = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
        device = resolve_device(cfg["device"])
        check_output_dir(self.out)
        if cfg["threads"]:
            torch.set_num_threads(cfg["threads"])
        torch.manual_seed(cfg["seed"])
        self.train_split = split_for(cfg, "train")
        val_split = split_for(cfg, "val")
        self.normalize = normalization(cfg, self.train_split)
        h, w, c = self.train_split.image_shape
        self.labels = torch.from_numpy(np.asarray(self.train_split.labels).astype(np.int64))
        num_classes = self.train_split.num_classes
        if num_classes < 2:
            raise ConfigError(f"data.train_split: {num_classes} class; pre-training needs at least 2")
        model = build_backbone(cfg["model"]["backbone"], num_classes, in_channels=c, image_size=h,
                               **cfg["model"]["options"]).to(device)
        optimizer = make_optimizer(cfg, model.parameters())
        self.val_sampler = make_sampler(cfg, val_split, q_query=cfg["episodes"]["test_q_query"], device=device,
                                        normalize=self.normalize)
        self.val_episodes = self.val_sampler.fixed_episodes(cfg["train"]["val_episodes"], cfg["eval"]["seed"])
        self.data_info = {"in_channels": c, "image_size": h, "classes": num_classes,
                          "train": self.train_split.summary(), "val": val_split.summary(),
                          "fingerprints": {"train": self.train_split.content_fingerprint(), "val": val_split.content_fingerprint()}}
        self.best: Dict[str, Any] = {"epoch": 0, "step": 0, "acc": -math.inf, "ci95": 0.0}
        mean, std = self.normalize if self.normalize is not None else ((0.0,) * c, (1.0,) * c)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._augment = self._make_augment(cfg, c, h, w)
        super().__init__(cfg, kind=PRETRAIN_KIND, role="pretrain", model=model, optimizer=optimizer,
                         scheduler=make_scheduler(cfg, optimizer, cfg["train"]["epochs"]), train_idx=torch.arange(len(self.labels)),
                         epochs=cfg["train"]["epochs"], seed=cfg["seed"], device=device, out=self.out,
                         resume_free=RESUME_FREE, progress=progress,
                         label=f"pretrain {cfg['model']['backbone']} {num_classes}-way")

    @staticmethod
    def _make_augment(cfg: Dict[str, Any], c: int, h: int, w: int) -> Any:
        d = cfg["data"]
        if d["augment"] == "none" and not d["color_jitter"]:
            return None
        import kornia.augmentation as K

        steps = []
        if d["augment"] in ("crop", "crop_flip"):
            steps.append(K.RandomCrop((h, w), padding=d["crop_padding"]) if d["crop_padding"] else None)
        if d["augment"] == "crop_flip":
            steps.append(K.RandomHorizontalFlip())
        if d["color_jitter"] and c == 3:
            j = float(d["color_jitter"])
            steps.append(K.ColorJitter(j, j, j, 0.0, p=1.0))
        steps = [s for s in steps if s is not None]
        return torch.nn.Sequential(*steps) if steps else None

    # -- hooks of the supervised trainer
    def batch(self, idx: Tensor) -> Tuple[Tensor, Tensor]:
        images = np.asarray(self.train_split.images[idx.numpy()])
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if self._augment is not None:
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # the crops are a function of (seed, step)
                torch.manual_seed(self.seed * 1_000_003 + self.step + 1)
                x = self._augment(x)
        return (x - self._mean) / self._std, self.labels[idx].to(self.device)

    def end_of_epoch(self, guard: StopGuard) -> Dict[str, Any]:
        with guard.abandonable():
            fault_point("val", self.epoch)
            res = self.validate()
        rec = {"val_acc": res["acc"], "val_ci95": res["ci95"]}
        self.log({"kind": "val", "epoch": self.epoch, "step": self.step, "acc": res["acc"], "ci95": res["ci95"],
                  "episodes": res["episodes"]})
        self.last_eval = rec
        if res["acc"] > self.best["acc"]:
            self.best = {"epoch": self.epoch, "step": self.step, "acc": res["acc"], "ci95": res["ci95"]}
            self.save("best.pt")
        return rec

    def validate(self) -> Dict[str, Any]:
        """Nearest-centroid accuracy of the current features on the fixed val episodes (no RNG consumed)."""
        learner = build_learner("protonet", self.model)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return evaluate_episodes(learner, self.val_sampler, self.val_episodes,
                                     batch_size=self.cfg["eval"]["batch_size"], progress=self.progress,
                                     desc="validation", cache=self.cfg["eval"]["cache_features"])

    def epoch_note(self, rec: Dict[str, Any]) -> str:
        return f", validation {format_acc(rec['val_acc'], rec['val_ci95'])}" if "val_acc" in rec else ""

    def extra_state(self) -> Dict[str, Any]:
        return {"best": dict(self.best), "data": self.data_info,
                "normalize": None if self.normalize is None else tuple(tuple(float(v) for v in p) for p in self.normalize)}

    def load_extra(self, ckpt: Dict[str, Any]) -> None:
        changed = data_differences(ckpt.get("data"), self.data_info, self.cfg["data"]["root"])
        if changed:
            raise MetakdError(f"cannot resume {self.out / 'last.pt'}: {'; '.join(changed)}; resume with the data the "
                              "run was trained on")
        self.best = dict(ckpt["best"])

    # -- the run
    def run(self, resume: bool = False, max_steps: Optional[int] = None) -> Dict[str, Any]:
        """Pre-train (or continue with ``resume``) to ``train.epochs`` or for ``max_steps`` more steps;
        returns the summary written to summary.json (``finished`` false when stopped by ``max_steps``)."""
        with run_lock(self.out):
            self._prepared = False
            try:
                return self._run(resume, max_steps)
            except BaseException:
                if self._prepared and self.step == 0 and not resume:  # a new run that failed before its first step
                    discard_new_run(self.out)
                raise

    def _run(self, resume: bool, max_steps: Optional[int]) -> Dict[str, Any]:
        with StopGuard() as guard:
            if resume:
                self.resume()
            prepare_run_folder(self.out, dump_config(self.cfg), bool(resume), names=run_files(self.cfg["tensorboard"]),
                               job="pretrain", overwrite_flag=None)
            self._prepared = True
            done, _ = self.fit(max_steps, guard)
            if done:
                self.guard = guard
                try:
                    self.save("last.pt")
                    if not (self.out / "best.pt").exists():
                        self.save("best.pt")
                finally:
                    self.guard = None
        summary = {"name": self.cfg["name"], "kind": PRETRAIN_KIND, "finished": done, "epoch": self.epoch,
                   "epochs": self.epochs, "step": self.step, "classes": self.data_info["classes"],
                   "best_val": self.best, "last_val": self.last_eval, "device": describe_device(self.device),
                   "output_dir": str(self.out)}
        write_json(self.out / "summary.json", summary, what="run summary")
        records = [r for r in self.logger.read() if r.get("kind") in ("train", "val")]
        if records:
            plot_curves(records, self.out / "curves.png", title=self.cfg["name"])
        self.logger.close()
        return summary


def run_pretrain(cfg: Dict[str, Any], output_dir: Optional[Path] = None, resume: bool = False,
                 progress: bool = True, max_steps: Optional[int] = None) -> Dict[str, Any]:
    """``metakd pretrain``: build the trainer and run it (see ``Pretrainer.run``)."""
    return Pretrainer(cfg, output_dir, progress=progress).run(resume=resume, max_steps=max_steps)
