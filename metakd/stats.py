"""Statistics that can separate two methods: Student-t intervals, paired differences, seed-level tests
and Holm's correction for a family of comparisons.

Every method in metakd is evaluated on the same fixed episodes, so two methods can be compared
episode by episode: the interval of the paired difference is usually several times tighter than
the overlap of the two methods' own intervals. But such a per-episode interval is WITHIN one seed:
it says how sure we are about these two trained models, not about the methods. Training runs
(seeds) vary far more than a seed's 600 episodes show, and the same episodes evaluated once per
seed are not new samples: pooling seeds x episodes as independent would understate the error by
orders of magnitude. A claim about the methods is tested at seed level (``seed_level_test``: a
paired t test over the per-seed mean differences, n_seeds - 1 degrees of freedom), and a table that
makes many comparisons corrects its p-values for the family (``holm_adjust``).
Over seeds (a handful of runs), intervals use the Student-t quantile, not 1.96, which is far too
narrow for n = 2 or 3.

Pure Python + NumPy (no SciPy needed at run time); the t distribution's CDF uses the regularised
incomplete beta function evaluated by its continued fraction.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence

import numpy as np

from .errors import MetakdError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), accurate to ~1e-14."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise MetakdError(f"t distribution needs df > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|), computed directly so tiny p-values do not underflow to 0."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on ``t_cdf``; |error| < 1e-10)."""
    if not 0.0 < p < 1.0:
        raise MetakdError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise MetakdError(f"{what}: expected a non-empty list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise MetakdError(f"{what}: values must be finite")
    return arr


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """Mean and Student-t half-width ``t_{n-1} · s / √n`` (s with ddof = 1) of ``values``.

    Returns {"mean", "ci", "std", "n"}; with one value the half-width is ``nan`` (no spread to
    estimate), never a misleading 0.
    """
    arr = _as_array(values, "t_interval")
    n = arr.size
    if n == 1:
        return {"mean": float(arr[0]), "ci": float("nan"), "std": float("nan"), "n": 1}
    std = float(arr.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": float(arr.mean()), "ci": half, "std": std, "n": n}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """``a - b`` paired element by element (the same episodes, or the same seeds): the mean difference,
    its Student-t interval, the paired t statistic and its two-sided p-value, and how often a > b / a < b.

    a, b: per-episode (or per-seed) values of two methods on identical tasks, in the same order.
    """
    x, y = _as_array(a, "paired_difference a"), _as_array(b, "paired_difference b")
    if x.shape != y.shape:
        raise MetakdError(f"paired_difference: the two methods have {x.size} and {y.size} values; "
                          "a paired comparison needs the same episodes in the same order")
    d = x - y
    out = t_interval(d, confidence)
    n = d.size
    if n > 1 and out["std"] > 0:
        t = out["mean"] / (out["std"] / math.sqrt(n))
        p = t_two_sided_p(t, n - 1)
    else:
        t = float("nan") if n == 1 else (0.0 if out["mean"] == 0 else math.copysign(math.inf, out["mean"]))
        p = float("nan") if n == 1 else (1.0 if out["mean"] == 0 else 0.0)
    out.update(t=float(t), p=float(p), a_better=int((d > 0).sum()), b_better=int((d < 0).sum()))
    return out


def seed_level_test(differences: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """The seed-level test of a method difference: given one mean paired difference per seed (method a −
    method b, each averaged over that seed's shared episodes), the mean over seeds, its Student-t
    interval and the one-sample t test of "mean = 0" with ``n_seeds - 1`` degrees of freedom (the
    paired t test over seeds). Returns {"mean", "ci", "std", "n", "df", "t", "p", "a_better",
    "b_better", "level": "seed"}; with one seed ``ci``, ``t`` and ``p`` are nan (nothing to test).
    """
    d = _as_array(differences, "seed_level_test")
    out = paired_difference(d, np.zeros_like(d), confidence)
    out.update(df=int(d.size - 1), level="seed")
    return out


def seed_level_paired(a_by_seed: Mapping, b_by_seed: Mapping, confidence: float = 0.95) -> Dict[str, object]:
    """Methods a and b evaluated on the same episodes in every seed: {seed: [per-episode values]}.

    Returns {"seeds", "within_seed": {seed: paired_difference over that seed's episodes, with
    "level": "within-seed"}, "seed_level": seed_level_test over the per-seed mean differences}. Only
    ``seed_level`` speaks about the methods; the within-seed intervals describe one trained pair of
    models each. Seeds missing from either side are left out; raises without a common seed.
    """
    seeds = [s for s in a_by_seed if s in b_by_seed]
    if not seeds:
        raise MetakdError("seed_level_paired: the two methods share no seed")
    within = {}
    for s in seeds:
        within[s] = {**paired_difference(a_by_seed[s], b_by_seed[s], confidence), "level": "within-seed"}
    return {"seeds": seeds, "within_seed": within,
            "seed_level": seed_level_test([within[s]["mean"] for s in seeds], confidence)}


def holm_adjust(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values for a family of m tests (same order as given).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m − j + 1) p_(j)).
    Rejecting where the adjusted p <= alpha controls the family-wise error rate at alpha under any
    dependence (Holm 1979). A nan p (a comparison that could not be tested, e.g. one seed) stays nan
    and does not count in m.
    """
    p = [float(v) for v in pvalues]
    for v in p:
        if not (math.isnan(v) or 0.0 <= v <= 1.0):
            raise MetakdError(f"holm_adjust: p-values must lie in [0, 1], got {v}")
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(tested)
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def holm_reject(pvalues: Sequence[float], alpha: float = 0.05) -> List[bool]:
    """Which tests of the family Holm's procedure rejects at family-wise level ``alpha``."""
    return [(not math.isnan(q)) and q <= alpha for q in holm_adjust(pvalues)]


def format_interval(mean: float, ci: float, scale: float = 100.0, digits: int = 2) -> str:
    """``0.487, 0.0184`` -> ``'48.70 ± 1.84'`` (percent by default); a missing interval prints as ``± n/a``."""
    if math.isnan(ci):
        return f"{scale * mean:.{digits}f} ± n/a"
    return f"{scale * mean:.{digits}f} ± {scale * ci:.{digits}f}"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Dict[str, float]:
    """Wilson score interval of a proportion (e.g. the error rate over the 400 items of the Omniglot runs):
    {"p", "low", "high", "n"}; unlike p ± z·√(p(1-p)/n) it stays inside [0, 1] and is sound near 0."""
    if n < 1 or not 0 <= successes <= n:
        raise MetakdError(f"wilson_interval: need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"p": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n}


def _normal_quantile(q: float) -> float:
    """The standard normal quantile, as the limit of Student-t (bisection on erf; no SciPy)."""
    lo, hi = -10.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
