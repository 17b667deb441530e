"""GradientLearner: the MAML family's shared machinery, over the one inner-loop engine (``inner_loop.py``).

A learner fills in the description of its inner loop through hooks; every executor runs it:

    adapted_names()                       which parameters the inner loop moves
    inner_lr(name)                        a float, a tensor broadcastable to the parameter (may be
                                          meta-learned), or PerStep(values (S, ...)): one rate per step
    step_state(index, training)           per-step (parameter, buffer) overrides, e.g. per-step BatchNorm
    support_loss(logits, labels)          the inner-loop loss
    init_fast(params, buffers, sx, sy, training)  fast-weight entries to replace before step 0
    query_steps(steps, training)          after which update counts the query logits are needed
    outer_losses(logits, query_y, run)    per-task outer loss from those logits (default: last-step CE)
    first_order_now()                     whether this call is first order (MAML++ switches it)
    meta_step_done()                      once per training meta-iteration (MAML++'s schedules)

    fast = adapt(support_x, support_y, training=False, loss=None)  # dict name -> tensor
    logits = predict(fast, query_x)                                # task_logits

``training`` is the one train/eval switch of the inner-loop code: True in ``meta_loss`` (train_steps,
differentiable; second order takes the inner gradients with a graph), False in ``evaluate``
(test_steps; the inner loop's result is detached).

Another way at evaluation (``head_rule``, one hook for the whole family: ``check_way`` + ``way_head``):
a model meta-trained N-way (its head has N rows) evaluated on an M-way episode gets, before step 0, an
M-row head made by the rule, then the usual inner loop adapts it. ``prototype`` (the default for now,
until the Omniglot validation study picks one): ProtoMAML's rows W_k = 2 c_k, b_k = -||c_k||^2 from the
support prototypes c_k of ``features``; ``copy_row``: the mean of the N trained rows (and biases) copied
into all M rows (Unicorn-MAML's shared row); ``zero``: an all-zero M-row head (needs an adapted head);
``error``: refuse. A per-entry inner rate of the head (Meta-SGD) uses the mean over its N rows.
ProtoMAML and Unicorn-MAML build their head per episode already (any way, no option). Training on an
episode whose way differs from the head is always a ConfigError, raised before the inner loop.

One method, :meth:`GradientLearner.executor`, chooses the executor of every call (sequential,
vectorised (vmap) or no-grad first order, compiled or eager), from what the build decided (``_plan``:
the options and the model) and the facts only the call knows: the device type (``task_batching:
auto``), train/eval mode (running-statistics BatchNorm cannot be vmapped in train mode), whether the
call is first order and whether it brings its own support loss.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.episode import EpisodeBatch
from ..errors import ConfigError
from ..validate import Opt
from .base import MetaLearner, check_batch, check_query_logits, overridden
from .batched import auto_chunk, vmap_blocker
from .compiled import COMPILE_MODES, CompiledInner
from .inner_loop import InnerLoop, PerStep, Rate, State, run_first_order, run_sequential, run_vectorised
from .functional import LossFn, Params, forward, select_names, submodule_forward
from .heads import class_means

TASK_BATCHING = ("off", "vmap", "auto")
HEAD_RULES = ("prototype", "copy_row", "zero", "error")
TEST_STOPS = ("none", "min_support_loss")
SEQUENTIAL, VECTORISED, FIRST_ORDER = "sequential", "vectorised", "first_order"  # the executors
AMP = ("off", "bf16")


def _adapt_spec(value: Any) -> Optional[str]:
    if value in ("all", "head", "body") or (isinstance(value, (list, tuple)) and value
                                            and all(isinstance(p, str) for p in value)):
        return None
    return "must be 'all', 'head', 'body' or a list of parameter-name prefixes"


@dataclass
class TaskRun:
    """What an executor returns for T tasks: query ``logits`` (T, U, Q, N), U = len(query_after), in
    float32 under amp; the adapted entries of the ``fast`` weights ((T, ...) each) when asked for."""

    logits: Tensor
    query_after: Tuple[int, ...]
    fast: Optional[Params] = None


@dataclass(frozen=True)
class Executor:
    """The executor of one call (``GradientLearner.executor``): ``kind`` SEQUENTIAL (``run_sequential``),
    VECTORISED (``run_vectorised``) or FIRST_ORDER (``run_first_order`` through ``inner``, a compiled or
    eager ``CompiledInner``); ``batched``: all tasks of a batch as one vmapped computation."""

    kind: str
    batched: bool = False
    inner: Optional[CompiledInner] = None


class GradientLearner(MetaLearner):
    """A learner whose task adaptation is a few SGD steps on the support loss.

    Options: inner_lr (0.01), train_steps (5, inner steps in meta_loss), test_steps (10, in
    evaluate), first_order (False), adapt ("all" | "head" | "body" | list of parameter-name
    prefixes), head_name ("head", the prefix of the classifier's parameters).

    Performance options (results equal within float rounding):
    task_batching ("auto"): "off" loops over tasks; "vmap" runs the inner loops of all tasks as one
        vectorised computation; "auto" is "vmap" on CUDA and "off" on the CPU (where vmap measured
        slower, see benchmarks/speed_suite.py). A model with running-statistics BatchNorm in train()
        mode, or a subclass overriding adapt/predict/task_logits, falls back to the loop (with a
        warning when "vmap" was asked for).
    head_rule ("prototype"): the head of an episode whose way differs from the model's head, at
        evaluation: "prototype", "copy_row", "zero" or "error" (see the module docstring).
    test_stop ("none"): at evaluation, "min_support_loss" keeps, per task, the fast weights after the
        number of updates (0..test_steps) with the lowest support loss instead of the last: a guard, using
        nothing but the support set, against a test-time inner loop that diverges (models meta-trained on
        augmented supports did on some Omniglot runs; docs/benchmarks-and-studies.md). Costs a second
        inner loop per task.
    task_chunk (None): tasks vectorised at once; None: all on the CPU, on CUDA what fits in free memory.
    amp ("off"): "bf16" runs forward computations under torch.autocast(bfloat16) (CUDA; CPU for tests).
    checkpoint_inner (False): recompute the activations of each inner step's forward in the backward
        passes instead of keeping them (sequential executor; works with second order).
    compile (False): torch.compile the inner steps and query forward of evaluation and first-order
        training (``compiled.py``); second-order training stays eager, since torch.compile
        (aot_autograd, torch 2.14) has no double backward. Each new input shape compiles once (tens of
        seconds); off by default because that cost only pays back over long runs.
    compile_mode ("default"): the torch.compile mode, e.g. "reduce-overhead" (CUDA graphs) on a GPU.
    """

    OPTIONS: ClassVar[Dict[str, Any]] = {
        "inner_lr": Opt(0.01, "positive"),
        "train_steps": Opt(5, "int>=0"),
        "test_steps": Opt(10, "int>=0"),
        "first_order": Opt(False, "bool"),
        "adapt": Opt("all", check=_adapt_spec),
        "head_name": Opt("head", "str", hint="a parameter-name prefix"),
        "task_batching": Opt("auto", choices=TASK_BATCHING),
        "task_chunk": Opt(None, "int>=1", nullable=True, hint="null (automatic) or an integer >= 1"),
        "amp": Opt("off", choices=AMP),
        "checkpoint_inner": Opt(False, "bool"),
        "compile": Opt(False, "bool"),
        "compile_mode": Opt("default", choices=COMPILE_MODES),
        "head_rule": Opt("prototype", choices=HEAD_RULES),
        "test_stop": Opt("none", choices=TEST_STOPS),
    }
    ADAPT: ClassVar[Any] = "all"  # used when "adapt" is not among a subclass's OPTIONS
    FIRST_ORDER: ClassVar[bool] = False  # used when "first_order" is not among a subclass's OPTIONS
    NEEDS_FAST: ClassVar[bool] = False  # outer_losses reads run.fast (Reptile)
    BUILDS_HEAD: ClassVar[bool] = False  # init_fast builds the whole head per episode (ProtoMAML, Unicorn-MAML)

    def __init__(self, model: nn.Module, **options: Any):
        super().__init__(model, **options)
        o = self.options
        self.lr = float(o["inner_lr"])
        self.train_steps: int = o["train_steps"]
        self.test_steps: int = o["test_steps"]
        self.first_order: bool = o.get("first_order", self.FIRST_ORDER)
        self.head_name: str = o["head_name"]
        named = [n for n, p in model.named_parameters() if p.requires_grad]
        self._adapted = select_names(named, o.get("adapt", self.ADAPT), self.head_name)
        self.task_batching: str = o["task_batching"]
        self.task_chunk: Optional[int] = o["task_chunk"]
        self.amp: str = o["amp"]
        self.checkpoint_inner: bool = o["checkpoint_inner"]
        self.compile: bool = o["compile"]
        self.compile_mode: str = o["compile_mode"]
        self.test_stop: str = o.get("test_stop", "none")
        if self.checkpoint_inner and self.task_batching == "vmap":
            raise ConfigError(f"learner {self.NAME!r}: checkpoint_inner=true works on the sequential path only; "
                              "set task_batching to 'off' or 'auto'")
        self._compiled: Optional[CompiledInner] = None
        self._eager: Optional[CompiledInner] = None
        self._chunk_cache: Dict[Any, int] = {}
        self._warned: set = set()
        self._plan = self._make_plan()
        if self.task_batching == "vmap" and self._plan["no_vmap"] is not None:
            self.uses_task_batching(torch.device("cuda"))  # warns once, now

    # Hooks -----------------------------------------------------------------------------------
    def adapted_names(self) -> List[str]:
        """Names (as in model.named_parameters()) of the parameters the inner loop adapts."""
        return self._adapted

    def inner_lr(self, name: str) -> Rate:
        """The inner rate of parameter ``name``: a float, a tensor broadcastable to it, or a PerStep."""
        return self.lr

    def support_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The inner-loop loss on the support set (cross-entropy)."""
        return F.cross_entropy(logits, labels)

    def head_rows(self) -> Optional[int]:
        """Rows (classes) of the model's Linear head ``<head_name>.weight``; None if it has none."""
        w = dict(self.model.named_parameters()).get(f"{self.head_name}.weight")
        return int(w.shape[0]) if w is not None and w.dim() == 2 else None

    def check_way(self, n_way: int, training: bool) -> bool:
        """True when an ``n_way`` episode needs a per-episode head (evaluation at another way, ``head_rule``);
        ConfigError, before any inner step, when it cannot be served: training at another way, or
        head_rule "error"."""
        rows = self.head_rows()
        if rows is None or rows == n_way:
            return False
        if self.BUILDS_HEAD and not training:
            return True
        rule = self.options.get("head_rule", "error")
        if training or rule == "error":
            why = ("meta-training needs the head's way" if training else
                   "head_rule is 'error'; set learner option head_rule to prototype, copy_row or zero to evaluate "
                   "at another way")
            raise ConfigError(f"learner {self.NAME!r}: the episode is {n_way}-way but the model's head "
                              f"{self.head_name!r} has {rows} rows (built {rows}-way); {why}, or build the "
                              f"backbone with n_way={n_way}")
        if rule == "prototype":
            features = self.options.get("features_name", "features")
            if not isinstance(getattr(self.model, features, None), nn.Module):
                raise ConfigError(f"learner {self.NAME!r}: head_rule 'prototype' needs the model's embedding as "
                                  f"submodule {features!r}; use head_rule copy_row or zero")
        return True

    def way_head(self, params: Params, buffers: Params, support_x: Tensor, support_y: Tensor, n_way: int,
                 training: bool) -> Params:
        """The head entries (weight (n_way, D), bias (n_way,)) of an episode whose way differs from the
        model's head, by ``head_rule`` (module docstring). Runs before step 0, like ``init_fast``."""
        w_name, b_name = f"{self.head_name}.weight", f"{self.head_name}.bias"
        w, b = params[w_name], params.get(b_name)
        rule = "zero" if self.BUILDS_HEAD else self.options["head_rule"]  # BUILDS_HEAD: init_fast replaces it
        if rule == "prototype":
            z = submodule_forward(self.model, self.options.get("features_name", "features"), params, buffers,
                                  support_x).flatten(1)
            c = class_means(z, support_y, n_way).to(w.dtype)
            weight, bias = 2 * c, -(c * c).sum(1)
        elif rule == "copy_row":
            weight = w.mean(0, keepdim=True).expand(n_way, -1)
            bias = None if b is None else b.mean().expand(n_way)
        else:
            weight, bias = w.new_zeros(n_way, w.shape[1]), None if b is None else b.new_zeros(n_way)
        return {w_name: weight} if b is None else {w_name: weight, b_name: bias.to(b.dtype)}

    def step_state(self, index: int, training: bool) -> State:
        """Per-step (parameter overrides, buffer overrides) of forward ``index`` (see inner_loop.py);
        training=False: detached. Only called when a subclass overrides it."""
        return {}, {}

    def init_fast(self, params: Params, buffers: Params, support_x: Tensor, support_y: Tensor,
                  training: bool) -> Params:
        """Entries of the fast weights to replace before step 0 (adapted names only; must run under vmap).
        Only called when a subclass overrides it."""
        return {}

    def query_steps(self, steps: int, training: bool) -> Tuple[int, ...]:
        """Update counts after which the query logits are needed (ascending); the last is used for accuracy."""
        return (steps,)

    def outer_losses(self, run: TaskRun, query_y: Tensor) -> Tensor:
        """Per-task outer loss (T,) of a training run; query_y (T, Q). Default: query CE after the last step."""
        return _ce(run.logits[:, -1], query_y)

    def first_order_now(self) -> bool:
        """Whether the inner gradients of this training call are constants (first order)."""
        return self.first_order

    def meta_step_done(self) -> None:
        """Called once per training meta-iteration by whoever computed its loss (``meta_loss``, MSD, the
        distilled learner); MAML++ counts its schedules here."""

    # The description --------------------------------------------------------------------------
    def parameters_dict(self) -> Params:
        """The model's parameters as a name -> tensor dict (the starting point θ of every task)."""
        return dict(self.model.named_parameters())

    def _inner_start(self, training: bool) -> Tuple[Params, Dict[str, Rate]]:
        """Starting parameters and inner rates; detached when not ``training`` (evaluation)."""
        params = self.parameters_dict()
        rates = {n: self.inner_lr(n) for n in self.adapted_names()}
        if not training:
            params = {n: p.detach() for n, p in params.items()}
            rates = {n: r.detach() if isinstance(r, (Tensor, PerStep)) else r for n, r in rates.items()}
        return params, rates

    def inner_loop(self, steps: int, training: bool, first_order: bool, loss: Optional[LossFn] = None,
                   query_after: Tuple[int, ...] = (), n_way: Optional[int] = None) -> Tuple[InnerLoop, Params]:
        """(the description of this call's inner loop, θ): training=False detaches θ and the rates.
        ``n_way``: the episode's way (None: the head's); another way gets ``way_head`` before step 0."""
        params, rates = self._inner_start(training)
        init = None
        if self._has_init:
            init = lambda p, b, x, y: self.init_fast(p, b, x, y, training)  # noqa: E731
        if n_way is not None and self.check_way(n_way, training=training):
            init = self._way_init(n_way, training)
            rows = self.head_rows()
            rates = {n: _rate_for_rows(r, rows) if n.startswith(self.head_name + ".") else r for n, r in rates.items()}
        state = (lambda i: self.step_state(i, training)) if self._has_state else None
        loop = InnerLoop(self.model, self.adapted_names(), rates, steps, loss or self.support_loss, first_order,
                         query_after=query_after, state=state, init=init, checkpoint=self.checkpoint_inner)
        return loop, params

    def _way_init(self, n_way: int, training: bool):
        """The init of an n_way episode at another way: ``way_head``, then the learner's own ``init_fast``."""
        def init(p: Params, b: Params, x: Tensor, y: Tensor) -> Params:
            head = self.way_head(p, b, x, y, n_way, training)
            if self._has_init:
                head = {**head, **self.init_fast({**p, **head}, b, x, y, training)}
            return head

        return init

    # Executors ------------------------------------------------------------------------------------
    def _make_plan(self) -> Dict[str, Any]:
        """What the build decides: which executors this learner may use (see the module docstring)."""
        cls = type(self)
        custom = overridden(self, GradientLearner, ("adapt", "predict", "task_logits"))
        self._has_init = cls.init_fast is not GradientLearner.init_fast
        self._has_state = cls.step_state is not GradientLearner.step_state
        running = next((n for n, m in self.model.named_modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats), None)
        no_vmap = None
        if custom:
            no_vmap = f"{cls.__name__} overrides {', '.join(custom)}, which the vectorised path would bypass"
        elif self.checkpoint_inner:
            no_vmap = "checkpoint_inner runs on the sequential path"
        return {"no_vmap": no_vmap, "running_bn": running, "custom": bool(custom)}

    def uses_task_batching(self, device: torch.device) -> bool:
        """Whether meta_loss/evaluate on ``device`` take the vectorised executor in the current mode."""
        mode = self.task_batching
        if mode == "off" or (mode == "auto" and device.type != "cuda"):
            return False
        reason = self._plan["no_vmap"]
        blocker = vmap_blocker(self.model) if reason is None and self._plan["running_bn"] is not None else None
        if blocker is not None:
            reason = (f"module {blocker!r} is a BatchNorm that updates running statistics in place "
                      "(bn: running in train mode), which vmap cannot batch; use bn: transductive to batch tasks")
        if reason is None:
            return True
        if mode == "vmap" and reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"learner {self.NAME!r}: task_batching='vmap' falls back to the sequential loop: {reason}",
                          RuntimeWarning, stacklevel=3)
        return False

    def executor(self, first_order: bool, device: Optional[torch.device] = None, own_loss: bool = False) -> Executor:
        """The one place that chooses the executor of a call. ``first_order``: the inner gradients of this call
        are constants (first-order training, or evaluation); ``device``: the device of a batch of tasks
        (None: one task, as in ``adapt``/``predict``); ``own_loss``: the call replaces ``support_loss``
        (the compiled functions are specialised to it, so it runs eagerly).

        A batch may be vectorised (``uses_task_batching``): first order then runs the no-grad steps vmapped,
        compiled with ``compile`` and eager without it (not under amp: eager bf16 keeps the vectorised
        executor), second order runs ``run_vectorised``. One task, or a batch that is not vectorised, runs
        first order compiled with ``compile`` and otherwise sequentially (second-order training never
        compiles: torch.compile has no double backward)."""
        compiled = self.compile and first_order and not own_loss
        if device is not None and self.uses_task_batching(device):
            if compiled:
                return Executor(FIRST_ORDER, batched=True, inner=self.compiled_inner())
            if first_order and self.amp == "off":
                return Executor(FIRST_ORDER, batched=True, inner=self._eager_inner())
            return Executor(VECTORISED, batched=True)
        if compiled:
            return Executor(FIRST_ORDER, inner=self.compiled_inner())
        return Executor(SEQUENTIAL)

    def compiled_inner(self) -> CompiledInner:
        """The learner's compiled inner step and forward (built on first use)."""
        if self._compiled is None:
            self._compiled = CompiledInner(self.model, self.support_loss, self.compile_mode)
        return self._compiled

    def _eager_inner(self) -> CompiledInner:
        """The same functions as ``compiled_inner``, not compiled (first-order vectorised executor)."""
        if self._eager is None:
            self._eager = CompiledInner(self.model, self.support_loss, compile=False)
        return self._eager

    def autocast(self, device: torch.device) -> ContextManager:
        """torch.autocast(bfloat16) on ``device`` when amp="bf16", else a no-op."""
        if self.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_tasks(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, training: bool,
                  steps: Optional[int] = None, need_fast: bool = False, n_way: Optional[int] = None,
                  query_after: Optional[Tuple[int, ...]] = None) -> TaskRun:
        """Run the inner loops of T tasks on the chosen executor. support_x (T, S, C, H, W), support_y (T, S),
        query_x (T, Q, C, H, W). training=True: meta-training (train_steps; differentiable, first or second
        order); training=False: evaluation (test_steps; detached; call under no_grad). n_way: the episodes' way
        (None: the head's); an episode at another way runs task by task (``head_rule``). query_after: the update
        counts whose logits are returned (None: ``query_steps``)."""
        if steps is None:
            steps = self.train_steps if training else self.test_steps
        need_fast = need_fast or self.NEEDS_FAST
        first_order = self.first_order_now() or not training
        loop, params = self.inner_loop(steps, training, first_order,
                                       query_after=query_after or self.query_steps(steps, training), n_way=n_way)
        other_way = n_way is not None and n_way != self.head_rows() and self.head_rows() is not None
        buffers = dict(self.model.named_buffers())
        device = support_x.device
        ex = self.executor(first_order, None if other_way else device)  # another way: task by task
        if ex.batched:
            def run(sx: Tensor, sy: Tensor, qx: Tensor, chunk: Optional[int]) -> Tuple[Tensor, Optional[Params]]:
                with self.autocast(sx.device):
                    if ex.kind == FIRST_ORDER:
                        outs, chunks = [], []
                        step = sx.shape[0] if chunk is None else chunk
                        for a in range(0, sx.shape[0], step):
                            fast, logits = run_first_order(loop, ex.inner, params, buffers, sx[a:a + step],
                                                           sy[a:a + step], qx[a:a + step], training, batched=True)
                            outs.append(torch.stack(logits, 1))
                            chunks.append(fast)
                        fast = None
                        if need_fast:
                            fast = {n: torch.cat([c[n] for c in chunks]) for n in loop.names}
                        return torch.cat(outs) if len(outs) > 1 else outs[0], fast
                    return run_vectorised(loop, params, buffers, sx, sy, qx, chunk=chunk, need_fast=need_fast)

            tasks = support_x.shape[0]
            chunk = self.task_chunk
            if chunk is None:
                key = (tuple(support_x.shape[1:]), tuple(query_x.shape[1:]), support_x.dtype, training, steps)
                chunk = auto_chunk(lambda: run(support_x[:1], support_y[:1], query_x[:1], 1)[0], tasks, device,
                                   self._chunk_cache, key)
            logits, fast = run(support_x, support_y, query_x, chunk)
        else:
            per_task, fasts = [], []
            with self.autocast(device):
                for t in range(support_x.shape[0]):
                    if ex.kind == FIRST_ORDER:
                        fast, out = run_first_order(loop, ex.inner, params, buffers, support_x[t],
                                                    support_y[t], query_x[t], training)
                    else:
                        fast, out = run_sequential(loop, params, buffers, support_x[t], support_y[t], query_x[t],
                                                   training=training)
                    per_task.append(torch.stack(out))
                    if need_fast:
                        fasts.append(fast)
            logits = torch.stack(per_task)
            fast = {n: torch.stack([f[n] for f in fasts]) for n in loop.names} if need_fast else None
        if self.amp != "off":
            logits = logits.float()
        return TaskRun(logits, loop.query_after, fast)

    # Public API ------------------------------------------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, steps: Optional[int] = None,
              training: bool = False, loss: Optional[LossFn] = None, n_way: Optional[int] = None) -> Params:
        """Fast parameters after ``steps`` inner steps (default train_steps if training else test_steps).

        support_x (S, C, H, W), support_y (S,). With training=True the result stays differentiable
        w.r.t. the learner's parameters (second order unless first order); with training=False it is
        detached. ``loss`` (logits, labels) -> scalar replaces ``support_loss`` for this call (e.g. a
        distillation term); the compiled path then runs eagerly (it is specialised to support_loss).
        The result includes the last step's per-step state, so ``predict`` uses it. n_way: the episode's
        way (None: the head's, or 1 + the largest support label when that is more); at another way than
        the head's, see ``head_rule``.
        """
        if steps is None:
            steps = self.train_steps if training else self.test_steps
        rows = self.head_rows()
        if n_way is None and rows is not None and support_y.numel():  # labels beyond the head: another way
            top = int(support_y.max()) + 1
            n_way = top if top > rows else None
        if not training and loss is None and self.test_stop != "none" and steps > 0:
            with torch.no_grad():
                steps = int(self.best_updates(support_x[None], support_y[None], steps, n_way)[0])
        first_order = self.first_order_now() or not training
        loop, params = self.inner_loop(steps, training, first_order, loss, n_way=n_way)
        buffers = dict(self.model.named_buffers())
        ex = self.executor(first_order, own_loss=loss is not None)
        with self.autocast(support_x.device):
            if ex.kind == FIRST_ORDER:
                fast, _ = run_first_order(loop, ex.inner, params, buffers, support_x, support_y, None, training)
            else:
                fast, _ = run_sequential(loop, params, buffers, support_x, support_y, training=training)
        if self._has_state:
            p, b = self.step_state(max(steps - 1, 0), training)
            fast = {**fast, **p, **b}
        return fast

    def predict(self, params: Params, x: Tensor) -> Tensor:
        """Logits (B, n_way) of x (B, C, H, W) under the parameters ``params`` (float32 under amp).
        Entries of ``params`` that name buffers (per-step statistics from ``adapt``) replace those buffers."""
        buffers = dict(self.model.named_buffers())
        if self._has_state:
            params = dict(params)
            for name in [n for n in params if n in buffers]:
                buffers[name] = params.pop(name)
        with self.autocast(x.device):
            ex = self.executor(self.first_order_now() or not torch.is_grad_enabled())
            if ex.kind == FIRST_ORDER:
                logits = ex.inner.forward(batched=False)(params, {}, buffers, x)
            else:
                logits = forward(self.model, params, buffers, x)
        return logits.float() if self.amp != "off" else logits

    def best_updates(self, support_x: Tensor, support_y: Tensor, steps: int, n_way: Optional[int] = None) -> Tensor:
        """``test_stop: min_support_loss``: per task (T,), the number of updates in 0..steps whose fast weights
        give the lowest support loss (a NaN loss counts as the highest; ties: the fewest updates). support_x
        (T, S, C, H, W), support_y (T, S); evaluation only (call under no_grad)."""
        every = tuple(range(steps + 1))
        logits = self.run_tasks(support_x, support_y, support_x, training=False, steps=steps, n_way=n_way,
                                query_after=every).logits  # (T, steps + 1, S, N)
        losses = torch.stack([torch.stack([self.support_loss(logits[t, u], support_y[t]) for u in every])
                              for t in range(logits.shape[0])])
        return losses.float().nan_to_num(nan=float("inf")).argmin(1)

    def batched_task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, training: bool) -> Tensor:
        """Query logits (T, Q, n_way) after the last step of every task (see ``run_tasks``)."""
        return self.run_tasks(support_x, support_y, query_x, training=training).logits[:, -1]

    def meta_loss(self, batch: EpisodeBatch) -> Tuple[Tensor, Dict[str, float]]:
        """Mean over tasks of ``outer_losses`` (query CE by default), differentiable w.r.t. ``parameters()``;
        metrics {"loss", "acc"} as python floats (acc: mean query accuracy after the last step)."""
        if self._plan["custom"]:  # a subclass's own adapt/predict/task_logits, task by task
            return super().meta_loss(batch)
        check_batch(batch, self.model)
        run = self.run_tasks(batch.support_x, batch.support_y, batch.query_x, training=True, n_way=batch.n_way)
        final = check_query_logits(self.NAME, run.logits[:, -1], batch, per_task=False)
        loss = self.outer_losses(run, batch.query_y).mean()
        acc = (final.detach().argmax(-1) == batch.query_y).float().mean(1).mean()
        if self.training and torch.is_grad_enabled():
            self.meta_step_done()
        return loss, self._metrics(loss, acc, run, batch)

    def _metrics(self, loss: Tensor, acc: Tensor, run: TaskRun, batch: EpisodeBatch) -> Dict[str, float]:
        loss_value, acc_value = torch.stack([loss.detach(), acc]).tolist()
        return {"loss": loss_value, "acc": acc_value}

    def evaluate(self, batch: EpisodeBatch) -> Tensor:
        """Query accuracy of each task (T,) after test_steps steps, in eval() mode (restored afterwards),
        keeping no outer graph (the inner loop still uses autograd: not under torch.inference_mode)."""
        if self._plan["custom"]:
            return super().evaluate(batch)
        check_batch(batch, self.model)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                steps = self.test_steps
                if self.test_stop != "none" and steps > 0:
                    best = self.best_updates(batch.support_x, batch.support_y, steps, batch.n_way)
                    run = self.run_tasks(batch.support_x, batch.support_y, batch.query_x, training=False,
                                         n_way=batch.n_way, query_after=tuple(range(steps + 1)))
                    final = run.logits[torch.arange(len(best), device=best.device), best]
                else:
                    final = self.run_tasks(batch.support_x, batch.support_y, batch.query_x, training=False,
                                           n_way=batch.n_way).logits[:, -1]
            logits = check_query_logits(self.NAME, final, batch, per_task=False)
            return (logits.argmax(-1) == batch.query_y).float().mean(1)
        finally:
            self.train(was_training)

    def task_logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int,
                    training: bool) -> Tensor:
        return self.predict(self.adapt(support_x, support_y, training=training, n_way=n_way), query_x)


def _rate_for_rows(rate: Rate, rows: Optional[int]) -> Rate:
    """A head parameter's inner rate at another way: a per-row rate (Meta-SGD's (N, ...) tensor, a PerStep
    of (S, N, ...)) becomes its mean over the N rows, broadcastable to any number of rows; others unchanged."""
    if isinstance(rate, PerStep):
        v = rate.values
        return PerStep(v.mean(1, keepdim=True)) if v.dim() >= 2 and v.shape[1] == rows else rate
    if isinstance(rate, Tensor) and rate.dim() >= 1 and rate.shape[0] == rows:
        return rate.mean(0, keepdim=True)
    return rate


def _ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean cross-entropy (T,) of logits (T, Q, N) and labels (T, Q)."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)
