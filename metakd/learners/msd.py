"""Meta Self-Distillation (MSD, "Learn to learn more precisely", 2024) as a plug-in around any learner.

Per task (S, Q): n augmented views Aug_j(S) of the support set, each adapting its own fast weights
θ'_j from the same θ (a gradient host runs all views of all tasks through its own executor,
``host.run_tasks``, so its amp, compile, batching and checkpoint settings apply; another learner gets
``host.predict(host.adapt(view))`` per view);
the same, un-augmented query set through every θ'_j gives v_j (n_views, Q, N). The meta-loss is

    mean_j CE(v_j, y_Q) + λ · consistency(v_1..v_n),

with CE(v_j, y_Q) the host's own outer loss of view j for a gradient host (``outer_losses``: the query
CE for MAML, the multi-step loss for MAML++, the step towards the adapted weights for Reptile),
averaged over the tasks. MSD changes training only: ``evaluate`` is the host's own evaluation on
un-augmented support sets.

Options (defaults from the method notes; the paper does not publish them):
    host ("maml")            any registered learner name, including a user's (not "msd").
    host_options ({})        options of the host; every option MSD does not know is forwarded to the
                             host too (so ``msd`` configs can inherit a host config's options). A key
                             given both ways is an error.
    views (4)                n, augmented views per task.
    lam (1.0)                λ, weight of the consistency term.
    consistency ("cosine")   "cosine" (each view against the mean view, 1 − cos), "kl"
                             (KL(p̄ ‖ p_j) on softmax(v/T)) or "rank" (Kendall-τ rank loss on logits/T).
    on ("prob")              cosine only: compare softmax probabilities ("prob") or raw logits ("logit").
    temperature (1.0)        T of the consistency term (fixed).
    learn_temperature (False) refused (ConfigError) when true: T appears only in the consistency term,
                             so the outer loss would train it to switch that term off (T rose 1 -> 6.4
                             in 3,000 glyph steps), not to help the query loss; choose T instead.
    grad_ratio_every (0)     a diagnostic, off by default: every K-th training meta_loss call (the first
                             included) also measures the meta-gradients of the two parts of the loss
                             w.r.t. the meta-parameters, g_ce (mean CE) and g_cons (λ·consistency), and
                             returns msd_grad_ratio = ‖g_cons‖/‖g_ce‖, msd_grad_cos = cos(g_cons, g_ce),
                             msd_grad_norm_ce, msd_grad_norm_cons (two extra backward passes on those
                             calls; the trainer logs them as "diagnostic" records). ``measure_gradients``
                             does the same on demand.
    budget ("per_task")      "per_task": all T tasks of the meta-batch, n views each (n·T adapted copies,
                             about n× the host's cost). "in_place_of_tasks": the views replace tasks: only
                             the first max(1, T // n) tasks of the batch are used, n views each, so
                             n·max(1, T // n) adapted copies — exactly T, the host's count, when n divides T.
    augment (None)           the views' augmentations, relative to the data's preset (the batch's
                             ``augment_preset``: "glyph" for glyphs/Omniglot, "natural" for photos; see
                             ``metakd.data.augment.PRESETS``): None or "default" (the preset's views),
                             "natural" / "glyph" (that preset's views whatever the data), "identity",
                             "weak" / "strong" (the preset's scenario level), or a mapping of
                             AugmentStrengths fields changing the preset's views (``preset: natural|glyph``
                             in the mapping picks the base).
    normalize (None)         [mean, std] per channel of normalised episodes. Not needed with the
                             sampler's episodes: their normalisation travels on the batch (``batch.mean``
                             / ``batch.std``) and views are de-normalised, augmented, normalised again with
                             it. When given and the batch carries another normalisation, meta_loss raises
                             a ConfigError; a batch without one (built by hand, learn2learn tasks) uses it.

Randomness: each meta_loss draws one seed from the global torch RNG (seeded and checkpointed by the
trainer), and all views of all tasks are augmented in one kornia call under that seed.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.augment import PRESETS, AugmentStrengths, augment_views, get_preset
from ..data.episode import EpisodeBatch
from ..distill.consistency import cosine_consistency, kl_consistency, prediction_consistency, rank_consistency
from ..errors import ConfigError
from ..registry import LEARNERS
from ..validate import Opt
from .base import MetaLearner, check_batch
from .gradient import GradientLearner

BUDGETS = ("per_task", "in_place_of_tasks")
CONSISTENCIES = ("cosine", "kl", "rank")


def _host_problem(host: Any) -> Optional[str]:
    others = ", ".join(n for n in LEARNERS.names() if n != MSD.NAME)
    if not isinstance(host, str) or host == MSD.NAME:
        return f"must name another registered learner ({others})"
    return None if host in LEARNERS else f"is not a registered learner; registered: {others}"


def _mapping_problem(value: Any) -> Optional[str]:
    return None if value is None or isinstance(value, dict) else "must be a mapping"


def _normalize_problem(value: Any) -> Optional[str]:
    ok = value is None or (isinstance(value, (list, tuple)) and len(value) == 2)
    return None if ok else "must be null or [mean, std]"


@LEARNERS.register("msd")
class MSD(MetaLearner):
    """Meta Self-Distillation around ``host`` (see the module docstring for the options)."""

    NAME = "msd"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        "host": Opt("maml", check=_host_problem), "host_options": Opt({}, check=_mapping_problem),
        "views": Opt(4, "int>=1"), "lam": Opt(1.0, "number>=0"), "consistency": Opt("cosine", choices=CONSISTENCIES),
        "on": Opt("prob", choices=("prob", "logit")), "temperature": Opt(1.0, "positive"),
        "learn_temperature": Opt(False, "bool"), "budget": Opt("per_task", choices=BUDGETS), "augment": Opt(None),
        "normalize": Opt(None, check=_normalize_problem), "grad_ratio_every": Opt(0, "int>=0"),
    }

    def __init__(self, model: nn.Module, **options: Any):
        own = {k: v for k, v in options.items() if k in self.OPTIONS}
        forwarded = {k: v for k, v in options.items() if k not in self.OPTIONS}
        super().__init__(model, **own)
        del self._modules["model"]  # the host owns the model; ``self.model`` reads it from there
        o = self.options
        host = o["host"]
        host_options = o["host_options"] or {}
        both = sorted(set(host_options) & set(forwarded))
        if both:
            raise ConfigError(f"learner 'msd': host option(s) {', '.join(map(repr, both))} given both in host_options "
                              "and as forwarded options; give each once")
        try:
            self.host: MetaLearner = LEARNERS.build(host, model, **{**forwarded, **host_options})
        except ConfigError as exc:
            raise ConfigError(f"learner 'msd' (host {host!r}): {exc}") from None
        self.views, self.lam = o["views"], o["lam"]
        if o["learn_temperature"]:
            raise ConfigError("learner 'msd': learn_temperature=true is refused: the consistency temperature appears "
                              "only in the consistency term, so the outer loss would raise it to switch that term off "
                              "instead of helping the query loss; set a fixed temperature (see metakd/learners/msd.py)")
        self._meta_calls = 0  # training meta_loss calls of this process (for grad_ratio_every)
        self._measure_next = False
        self._strengths: Dict[str, AugmentStrengths] = {}
        for preset in PRESETS:  # validate the option now, whatever data it meets later
            self.strengths_for(preset)
        norm = o["normalize"]
        self.mean, self.std = (None, None) if norm is None else (list(norm[0]), list(norm[1]))

    def strengths_for(self, preset: Optional[str] = None) -> AugmentStrengths:
        """The views' AugmentStrengths on data of ``preset`` (None: "natural"), from the ``augment`` option."""
        name = get_preset(preset).name
        if name not in self._strengths:
            self._strengths[name] = AugmentStrengths.from_options(self.options["augment"],
                                                                  "learner 'msd' option augment", name)
        return self._strengths[name]

    @property
    def strengths(self) -> AugmentStrengths:
        """The views' strengths on natural images (``strengths_for(batch.augment_preset)`` is what training uses)."""
        return self.strengths_for(None)

    def normalization(self, batch: EpisodeBatch) -> Tuple[Optional[List[float]], Optional[List[float]]]:
        """(mean, std) of the batch's pixels: the batch's own, or the ``normalize`` option (checked to agree)."""
        if batch.mean is None or batch.std is None:
            return self.mean, self.std
        if self.mean is not None:
            mine = torch.tensor([self.mean, self.std], dtype=torch.float64)
            theirs = torch.tensor([list(batch.mean), list(batch.std)], dtype=torch.float64)
            if mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6):
                raise ConfigError(f"learner 'msd' option normalize={[self.mean, self.std]} disagrees with the data's "
                                  f"normalisation (mean {list(batch.mean)}, std {list(batch.std)}, from "
                                  "data.normalize); remove the option: the episodes carry their normalisation")
        return list(batch.mean), list(batch.std)

    @property
    def model(self) -> nn.Module:  # type: ignore[override]
        return self.host.model

    def temperature(self) -> float:
        """The consistency temperature (fixed: see ``learn_temperature`` in the module docstring)."""
        return float(self.options["temperature"])

    def _measuring(self) -> bool:
        """Whether this training meta_loss call measures the gradient split (``grad_ratio_every``)."""
        if self._measure_next:
            return True
        every = self.options["grad_ratio_every"]
        if not (every and self.training and torch.is_grad_enabled()):
            return False
        self._meta_calls += 1
        return (self._meta_calls - 1) % every == 0

    def gradient_split(self, ce: Tensor, cons: Optional[Tensor]) -> Dict[str, float]:
        """Norms and cosine of the meta-gradients of ``ce`` (the mean query CE) and ``cons`` (λ·consistency,
        or None) w.r.t. the meta-parameters (every trainable parameter, flattened into one vector); the
        graph is kept for the caller's backward."""
        params = [p for p in self.parameters() if p.requires_grad]

        def flat(x: Optional[Tensor]) -> Tensor:
            if x is None or not x.requires_grad:
                return torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=params[0].device)
            grads = torch.autograd.grad(x, params, retain_graph=True, allow_unused=True)
            return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).double()
                              for p, g in zip(params, grads)])
        g_ce, g_cons = flat(ce), flat(cons)
        n_ce, n_cons = float(g_ce.norm()), float(g_cons.norm())
        cos = float(g_ce @ g_cons) / (n_ce * n_cons) if n_ce > 0 and n_cons > 0 else 0.0
        return {"msd_grad_ratio": n_cons / n_ce if n_ce > 0 else float("nan"), "msd_grad_cos": cos,
                "msd_grad_norm_ce": n_ce, "msd_grad_norm_cons": n_cons}

    def measure_gradients(self, batch: EpisodeBatch) -> Dict[str, float]:
        """``gradient_split`` of one meta-batch now, whatever ``grad_ratio_every`` says (e.g. on a checkpoint at
        chosen iterations of a study); the learner is left as it was and nothing is optimised."""
        self._measure_next = True
        try:
            with torch.enable_grad():
                _, metrics = self.meta_loss(batch)
        finally:
            self._measure_next = False
        return {k: v for k, v in metrics.items() if k.startswith("msd_grad_")}

    def consistency_loss(self, v: Tensor) -> Tensor:
        """The configured consistency of view logits v (n_views, Q, N) -> scalar (0 when views agree)."""
        t = self.temperature()
        kind = self.options["consistency"]
        if kind == "cosine":
            return cosine_consistency(v, on=self.options["on"], temperature=t)
        if kind == "kl":
            return kl_consistency(v, temperature=t)
        return rank_consistency(v, temperature=t)

    def tasks_used(self, num_tasks: int) -> int:
        """How many of a meta-batch's tasks the budget trains on (each with ``views`` adapted copies)."""
        return num_tasks if self.options["budget"] == "per_task" else max(1, num_tasks // self.views)

    def view_logits(self, views: Tensor, support_y: Tensor, query_x: Tensor, n_way: int, training: bool) -> Tensor:
        """Query logits (n_views, Q, N) of the models adapted on each support view (n_views, S, C, H, W)."""
        host = self.host
        return torch.stack([host.predict(host.adapt(view, support_y, training=training, n_way=n_way), query_x)
                            for view in views])

    def host_view_losses(self, views: Tensor, support_y: Tensor, query_x: Tensor,
                         query_y: Tensor, n_way: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """A gradient host's outer losses (n_views, T) and final query logits (n_views, T, Q, N) of all views of
        all tasks, in one call of the host's own executor (its amp, compile, batching and checkpoint settings,
        and its outer loss: e.g. MAML++'s multi-step loss, Reptile's step).

        views (n_views, T, S, C, H, W), support_y (T, S), query_x (T, Q, C, H, W), query_y (T, Q).
        """
        host = self.host
        n, t = views.shape[:2]
        run = host.run_tasks(views.flatten(0, 1), support_y.repeat(n, 1),
                             query_x.repeat(n, *([1] * (query_x.dim() - 1))), training=True, n_way=n_way)
        losses = host.outer_losses(run, query_y.repeat(n, 1))
        return losses.unflatten(0, (n, t)), run.logits[:, -1].unflatten(0, (n, t))

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """mean over used tasks of [mean_j CE(v_j, y_Q) + λ·consistency(v)]; metrics loss, acc, ce,
        consistency_loss, consistency (prediction agreement, n ≥ 2), adapted_copies, and msd_grad_* on the
        calls that measure the gradient split (``grad_ratio_every``, ``measure_gradients``)."""
        check_batch(batch, self.model)
        used = self.tasks_used(batch.num_tasks)
        sx = batch.support_x[:used]
        mean, std = self.normalization(batch)
        views = augment_views(sx, self.views, self.strengths_for(batch.augment_preset), mean=mean,
                              std=std)  # (n, T, S, C, H, W)
        measure = self._measuring()
        losses, ces, cons, accs, agree, ce_parts, cons_parts = [], [], [], [], [], [], []
        gradient = isinstance(self.host, GradientLearner)
        if gradient:
            host_losses, logits = self.host_view_losses(views, batch.support_y[:used], batch.query_x[:used],
                                                        batch.query_y[:used], n_way=batch.n_way)
        for t in range(used):
            y = batch.query_y[t]
            if gradient:
                v, ce = logits[:, t], host_losses[:, t].mean()
            else:
                v = self.view_logits(views[:, t], batch.support_y[t], batch.query_x[t], batch.n_way, training=True)
                ce = torch.stack([F.cross_entropy(v_j, y) for v_j in v]).mean()
            loss = ce
            ce_parts.append(ce)
            if self.lam > 0 and self.views > 1:
                c = self.consistency_loss(v)
                loss = ce + self.lam * c
                cons.append(c.detach())
                cons_parts.append(self.lam * c)
            losses.append(loss)
            ces.append(ce.detach())
            accs.append((v.detach().argmax(-1) == y).float().mean())
            if self.views > 1:
                agree.append(prediction_consistency(v.detach()))
        loss = torch.stack(losses).mean()
        split = self.gradient_split(torch.stack(ce_parts).mean(), torch.stack(cons_parts).mean() if cons_parts else None) \
            if measure else {}
        if gradient and self.training and torch.is_grad_enabled():
            self.host.meta_step_done()
        metrics = {"loss": float(loss.detach()), "acc": float(torch.stack(accs).mean()),
                   "ce": float(torch.stack(ces).mean()), "adapted_copies": float(used * self.views)}
        if cons:
            metrics["consistency_loss"] = float(torch.stack(cons).mean())
        if agree:
            metrics["consistency"] = float(torch.stack(agree).mean())
        metrics.update(split)
        return loss, metrics

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.host.task_logits(support_x, support_y, query_x, n_way, training)

    def adapt(self, support_x: Tensor, support_y: Tensor, **kwargs: Any) -> Any:
        """The host's fast state (MSD changes meta-training only)."""
        return self.host.adapt(support_x, support_y, **kwargs)

    def predict(self, fast: Any, query_x: Tensor) -> Tensor:
        return self.host.predict(fast, query_x)

    def evaluate(self, batch: EpisodeBatch) -> Tensor:
        """The host's evaluation (un-augmented support): MSD changes meta-training only."""
        return self.host.evaluate(batch)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k not in ("host_options",))
