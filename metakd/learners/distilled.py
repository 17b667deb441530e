"""DistilledLearner: a student meta-learner trained with a frozen teacher meta-learner's predictions.

For each task (S, Q) the teacher adapts on S its own way (its ``task_logits`` with training=False:
e.g. MAML's test_steps inner steps, ProtoNet's prototypes) and its logits are the targets. The
student's outer (query) loss becomes

    L = ce_weight·CE(s_Q, y_Q) + kd_weight·KD(s_Q, t_Q; T_t, T_s) + rank_weight·(1 − τ̃(s_Q, t_Q))

with s_Q the student's query logits after its own inner loop (``kd_on`` "query" or "both").

Where temperatures get their gradient. A temperature that only appears in the outer KD term would
be trained to minimise that term itself, which says nothing about the student's accuracy (the KL
can be shrunk by flattening both distributions). So learned temperatures (``learn_temperature``)
act where they change what the student *learns*: with ``kd_on`` "support" or "both", the student's
inner loop on the support set minimises ``CE(s_S, y_S) + support_kd_weight·KD(s_S, t_S; T_t, T_s)``
(t_S: the adapted teacher's logits on the support images), and the query CE after that inner loop
is differentiated through the fast weights into (T_t, T_s): the meta-learning analogue of MKD's
look-ahead (inner steps = look-ahead, query set = held-out batch). In the outer KD term the
temperatures are used detached, so their only gradient is that of the outer query loss through the
fast weights: with kd_on="support" exactly MKD's meta-objective (held-out CE, weighted by
ce_weight); with kd_on="both" the query KD/rank terms, which also depend on the fast weights, add
to it. This needs a gradient-based student (MAML family) and second order (first_order=False);
otherwise a ConfigError says why.

Controls for MKD's harm in meta-learning (learned T_t falls, T_s rises, the student loses points;
the hypothesis: the inner-loop KD term, scaled by T_t·T_s, enlarges the inner gradient at a fixed
inner lr). Each is an option, so a study can switch one thing at a time:
    teacher_temperature / student_temperature   fixed (or initial) T_t and T_s apart (null: temperature),
                                                e.g. fixed at the values MKD learned;
    support_kd_scale                            the inner-loop KD term's factor alone ("none": no
                                                T_t·T_s; null: as kd_scale, which keeps the outer term's);
    kd_on: query                                KD on the query side only (no inner-loop KD; fixed T);
    t_min / t_max                               the bounds of the learned temperatures;
    support_kd_weight                           the inner-loop KD weight.
``support_gradient_split`` measures the first inner step's gradients of the support CE and of the
weighted support KD term (norms, ratio, cosine), the quantity the hypothesis is about.

The teacher is not a submodule: it is not in ``parameters()`` (no gradient, not optimised), not in
``state_dict()`` (checkpoints hold the student and temperatures only; the engine rebuilds the
teacher from its checkpoint), always in eval mode, and moved with ``.to()``.
At evaluation (training=False) the student answers alone.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.episode import EpisodeBatch
from ..distill.kd import KD_SCALES, kd_loss
from ..distill.rank import rank_loss
from ..distill.temperature import MetaTemperatures
from ..errors import ConfigError
from ..registry import LEARNERS
from ..validate import Opt
from .base import MetaLearner, check_batch
from .gradient import GradientLearner

KD_ON = ("query", "support", "both")


@LEARNERS.register("distilled")
class DistilledLearner(MetaLearner):
    """student: the MetaLearner being trained (``self.model``); teacher: a trained MetaLearner (frozen).

    Options: ce_weight (1.0), kd_weight (1.0), rank_weight (0.0; > 0 adds RKKD's Kendall term on the
    query logits), temperature (4.0, initial T_t = T_s), t_min / t_max (1, 21: the learned range),
    shared_temperature (False), learn_temperature (False), kd_on ("query" | "support" | "both"),
    support_kd_weight (1.0, inner-loop KD weight), kd_scale ("product"), support_kd_scale (None: kd_scale;
    the inner-loop KD term's own factor, "none" drops T_t·T_s there), teacher_temperature /
    student_temperature (None: temperature; T_t and T_s apart), rank_form ("tanh"),
    rank_k (100.0), rank_beta (1.0), rank_subset ("all" | "top" | "bottom", of the teacher's channels),
    rank_fraction (0.1), rank_k_scale ("absolute", or "std": k divided by each row's logit spread, so
    the tanh form keeps a gradient at 5 channels; see benchmarks/distill_rank_sharpness.py), teacher_steps (None = the teacher's own test_steps; gradient
    teachers only).
    """

    NAME = "distilled"
    OPTIONS: ClassVar[Dict[str, Any]] = {
        "ce_weight": Opt(1.0, "number>=0"), "kd_weight": Opt(1.0, "number>=0"), "rank_weight": Opt(0.0, "number>=0"),
        "temperature": Opt(4.0, "number"), "t_min": Opt(1.0, "number"), "t_max": Opt(21.0, "number"),
        "shared_temperature": Opt(False, "bool"), "learn_temperature": Opt(False, "bool"),
        "kd_on": Opt("query", choices=KD_ON), "support_kd_weight": Opt(1.0, "number>=0"),
        "kd_scale": Opt("product", choices=KD_SCALES), "support_kd_scale": Opt(None, choices=KD_SCALES, nullable=True),
        "teacher_temperature": Opt(None, "positive", nullable=True),
        "student_temperature": Opt(None, "positive", nullable=True), "rank_form": "tanh", "rank_k": 100.0, "rank_beta": 1.0,
        "rank_subset": Opt("all", choices=("all", "top", "bottom")), "rank_fraction": Opt(0.1, "number"),
        "rank_k_scale": Opt("absolute", choices=("absolute", "std")),
        "teacher_steps": Opt(None, "int>=0", nullable=True),
    }

    def __init__(self, student: MetaLearner, teacher: MetaLearner, **options: Any):
        if not isinstance(student, MetaLearner) or not isinstance(teacher, MetaLearner):
            raise ConfigError("learner 'distilled' wraps a student MetaLearner and a teacher MetaLearner, got "
                              f"{type(student).__name__} and {type(teacher).__name__}")
        super().__init__(student, **options)
        o = self.options
        for key in ("ce_weight", "kd_weight", "rank_weight", "support_kd_weight"):
            o[key] = float(o[key])
        inner_kd = o["kd_on"] in ("support", "both")
        if inner_kd and not isinstance(student, GradientLearner):
            raise ConfigError(f"kd_on={o['kd_on']!r} puts KD in the student's inner loop, which needs a gradient-based "
                              f"student (maml, fomaml, anil, boil, metasgd), not {student.NAME!r}; use kd_on=query")
        if o["learn_temperature"]:
            if not inner_kd:
                raise ConfigError("learn_temperature=true needs kd_on=support or both: a temperature used only in the "
                                  "outer KD term would just minimise that term (see metakd/learners/distilled.py)")
            if student.first_order:
                raise ConfigError("learn_temperature=true needs a second-order student (first_order=false): the "
                                  "temperatures' gradient flows through the inner-loop gradient")
        if o["teacher_steps"] is not None and not isinstance(teacher, GradientLearner):
            raise ConfigError(f"teacher_steps applies to gradient-based teachers, not {teacher.NAME!r}")
        t_teacher, t_student = (o["temperature"] if o[k] is None else o[k]
                                for k in ("teacher_temperature", "student_temperature"))
        if o["shared_temperature"] and t_teacher != t_student:
            raise ConfigError(f"shared_temperature=true uses one temperature, but teacher_temperature={t_teacher} and "
                              f"student_temperature={t_student} differ; give one of them, or shared_temperature=false")
        if o["support_kd_scale"] is not None and not inner_kd:
            raise ConfigError(f"support_kd_scale={o['support_kd_scale']!r} scales the inner-loop KD term, which "
                              f"kd_on={o['kd_on']!r} does not have; use kd_on=support or both, or drop the option")
        self.temperatures = MetaTemperatures(t_teacher, t_student, o["t_min"], o["t_max"],  # checks the bounds
                                             shared=o["shared_temperature"], learn_teacher=o["learn_temperature"],
                                             learn_student=o["learn_temperature"])
        teacher.requires_grad_(False)
        teacher.eval()
        object.__setattr__(self, "_teacher", teacher)  # not a submodule: see the module docstring

    @property
    def student(self) -> MetaLearner:
        return self.model

    @property
    def teacher(self) -> MetaLearner:
        return self._teacher

    def _apply(self, fn, recurse: bool = True):  # .to(), .cuda(), .double() move the teacher too
        super()._apply(fn, recurse)
        self._teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> "DistilledLearner":
        super().train(mode)
        self._teacher.eval()
        return self

    # -- teacher -------------------------------------------------------------------------------
    def teacher_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                       need_support: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """The adapted teacher's (query logits (NQ, n_way), support logits (NK, n_way) or None), detached."""
        t = self._teacher
        if isinstance(t, GradientLearner):
            fast = t.adapt(support_x, support_y, steps=self.options["teacher_steps"], training=False)
            with torch.no_grad():
                q = t.predict(fast, query_x)
                s = t.predict(fast, support_x) if need_support else None
        else:
            both = torch.cat([query_x, support_x]) if need_support else query_x
            with torch.no_grad():
                out = t.task_logits(support_x, support_y, both, n_way, training=False)
            q, s = (out[: len(query_x)], out[len(query_x):]) if need_support else (out, None)
        if q.shape != (query_x.shape[0], n_way):
            raise ConfigError(f"the teacher produced logits of shape {tuple(q.shape)} for a {n_way}-way episode with "
                              f"{query_x.shape[0]} queries: teacher and student must use the same n_way")
        return q.detach(), None if s is None else s.detach()

    # -- student -------------------------------------------------------------------------------
    def _student_query_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                              t_support: Optional[Tensor], temps: Tuple[Tensor, Tensor]) -> Tensor:
        st = self.student
        if t_support is None:
            return st.task_logits(support_x, support_y, query_x, n_way, training=True)
        tt, ts = temps
        w, scale = self.options["support_kd_weight"], self.support_kd_scale

        def support_loss(logits: Tensor, labels: Tensor) -> Tensor:
            return st.support_loss(logits, labels) + w * kd_loss(logits, t_support, ts, tt, scale=scale)

        return st.predict(st.adapt(support_x, support_y, training=True, loss=support_loss), query_x)

    @property
    def support_kd_scale(self) -> str:
        """The inner-loop KD term's factor: ``support_kd_scale``, else ``kd_scale``."""
        o = self.options
        return o["kd_scale"] if o["support_kd_scale"] is None else o["support_kd_scale"]

    def support_gradient_split(self, batch: EpisodeBatch) -> Dict[str, float]:
        """The first inner step's gradients at θ, mean over the batch's tasks: of the support CE (g_ce) and of the
        weighted support KD term (g_kd = support_kd_weight·scale·KL, current temperatures), w.r.t. the adapted
        parameters. Returns kd_inner_grad_norm_ce, kd_inner_grad_norm_kd, kd_inner_grad_ratio (‖g_kd‖/‖g_ce‖),
        kd_inner_grad_cos, kd_inner_step_norm (inner lr · ‖g_ce + g_kd‖, the first step's length when the inner
        lr is one number). Needs KD in the inner loop (kd_on support or both)."""
        st, o = self.student, self.options
        if o["kd_on"] == "query":
            raise ConfigError("support_gradient_split needs KD in the inner loop (kd_on=support or both)")
        check_batch(batch, self.model)
        params = dict(st.model.named_parameters())
        names = st.adapted_names()
        tt, ts = (t.detach() for t in self.temperatures())
        rows = []
        for t in range(batch.num_tasks):
            sx, sy = batch.support_x[t], batch.support_y[t]
            _, t_support = self.teacher_logits(sx, sy, batch.query_x[t], batch.n_way, need_support=True)
            with torch.enable_grad():
                logits = st.predict(params, sx)
                ce = st.support_loss(logits, sy)
                kd = o["support_kd_weight"] * kd_loss(logits, t_support, ts, tt, scale=self.support_kd_scale)
                g_ce, g_kd = (torch.cat([g.reshape(-1) for g in torch.autograd.grad(x, [params[n] for n in names],
                                                                                   retain_graph=True)])
                              for x in (ce, kd))
            n_ce, n_kd = float(g_ce.norm()), float(g_kd.norm())
            rows.append((n_ce, n_kd, n_kd / n_ce if n_ce > 0 else float("nan"),
                         float(g_ce @ g_kd) / (n_ce * n_kd) if n_ce > 0 and n_kd > 0 else 0.0,
                         float(st.lr) * float((g_ce + g_kd).norm())))
        keys = ("kd_inner_grad_norm_ce", "kd_inner_grad_norm_kd", "kd_inner_grad_ratio", "kd_inner_grad_cos",
                "kd_inner_step_norm")
        return {k: sum(r[i] for r in rows) / len(rows) for i, k in enumerate(keys)}

    def task_losses(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                    n_way: int) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """(total outer loss, student query logits, parts {"ce", "kd", "rank"}) of one task."""
        o = self.options
        inner = o["kd_on"] in ("support", "both")
        t_query, t_support = self.teacher_logits(support_x, support_y, query_x, n_way, need_support=inner)
        tt, ts = self.temperatures()
        logits = self._student_query_logits(support_x, support_y, query_x, n_way, t_support, (tt, ts))
        parts = {"ce": F.cross_entropy(logits, query_y)}
        total = o["ce_weight"] * parts["ce"]
        if o["kd_on"] in ("query", "both") and o["kd_weight"]:
            if o["learn_temperature"]:
                tt, ts = tt.detach(), ts.detach()
            parts["kd"] = kd_loss(logits, t_query, ts, tt, scale=o["kd_scale"])
            total = total + o["kd_weight"] * parts["kd"]
        if o["rank_weight"]:
            parts["rank"] = rank_loss(logits, t_query, form=o["rank_form"], k=o["rank_k"], beta=o["rank_beta"],
                                      subset=o["rank_subset"], fraction=o["rank_fraction"], k_scale=o["rank_k_scale"])
            total = total + o["rank_weight"] * parts["rank"]
        return total, logits, parts

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """Mean over tasks of the distillation outer loss; metrics loss, acc, ce, [kd], [rank], t_teacher, t_student."""
        check_batch(batch, self.model)
        totals, accs, sums = [], [], {}
        for t in range(batch.num_tasks):
            total, logits, parts = self.task_losses(batch.support_x[t], batch.support_y[t], batch.query_x[t],
                                                    batch.query_y[t], batch.n_way)
            totals.append(total)
            accs.append((logits.detach().argmax(-1) == batch.query_y[t]).float().mean())
            for k, v in parts.items():
                sums.setdefault(k, []).append(v.detach())
        loss = torch.stack(totals).mean()
        if isinstance(self.student, GradientLearner) and self.training and torch.is_grad_enabled():
            self.student.meta_step_done()
        metrics = {"loss": float(loss.detach()), "acc": float(torch.stack(accs).mean())}
        metrics.update({k: float(torch.stack(v).mean()) for k, v in sums.items()})
        tt, ts = self.temperatures()
        metrics.update({"t_teacher": float(tt.detach()), "t_student": float(ts.detach())})
        return loss, metrics

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        """The student's query logits (its own adaptation; the teacher is not consulted)."""
        return self.student.task_logits(support_x, support_y, query_x, n_way, training)

    def adapt(self, support_x: Tensor, support_y: Tensor, **kwargs: Any) -> Any:
        """The student's fast state (the teacher is not consulted)."""
        return self.student.adapt(support_x, support_y, **kwargs)

    def predict(self, fast: Any, query_x: Tensor) -> Tensor:
        return self.student.predict(fast, query_x)
