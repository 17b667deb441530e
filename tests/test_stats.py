"""Student-t intervals and paired differences, against SciPy (a dev dependency) and hand cases."""
import math

import numpy as np
import pytest

from metakd.errors import MetakdError
from metakd.stats import (format_interval, holm_adjust, holm_reject, paired_difference, seed_level_paired, seed_level_test,
                          t_cdf, t_interval, t_quantile)

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 5, 29, 599])
def test_t_distribution_matches_scipy(df):
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
    for t in (-4.0, -0.3, 0.0, 1.1, 2.5, 12.0):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-13)


def test_t_interval_three_seeds():
    vals = [0.50, 0.56, 0.53]
    got = t_interval(vals)
    s = np.std(vals, ddof=1)
    assert got["mean"] == pytest.approx(0.53)
    assert got["ci"] == pytest.approx(4.302652729911275 * s / math.sqrt(3), rel=1e-9)  # t_{0.975, 2}
    assert got["ci"] > 1.96 * np.std(vals) / math.sqrt(3) * 2.5  # the normal formula is far too narrow at n = 3
    one = t_interval([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["ci"])
    assert format_interval(one["mean"], one["ci"]) == "70.00 ± n/a"


def test_paired_difference_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.9, 600)
    a = np.clip(base + rng.normal(0.02, 0.05, 600), 0, 1)
    b = base
    got = paired_difference(a, b)
    ref = scipy_stats.ttest_rel(a, b)
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert got["mean"] == pytest.approx(float(np.mean(a - b)))
    assert got["a_better"] + got["b_better"] <= 600
    # pairing removes the shared per-episode difficulty: the paired interval is much tighter
    assert got["ci"] < 0.3 * (t_interval(a)["ci"] + t_interval(b)["ci"])


def test_paired_difference_edge_cases():
    same = paired_difference([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    assert same["mean"] == 0 and same["p"] == 1.0 and same["ci"] == 0
    shifted = paired_difference([0.3, 0.5, 0.7], [0.2, 0.4, 0.6])
    assert shifted["mean"] == pytest.approx(0.1) and shifted["p"] == 0.0 and shifted["a_better"] == 3
    with pytest.raises(MetakdError, match="same episodes"):
        paired_difference([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(MetakdError, match="non-empty"):
        t_interval([])
    with pytest.raises(MetakdError, match="finite"):
        t_interval([0.1, float("nan")])


def test_seed_level_test_is_scipys_paired_t_over_seeds():
    # three seeds: per-seed mean accuracies of two methods on the same episodes
    a, b = np.array([0.7528, 0.7507, 0.7685]), np.array([0.6819, 0.6718, 0.6873])
    got = seed_level_test(a - b)
    ref = scipy_stats.ttest_rel(a, b)
    assert got["level"] == "seed" and got["n"] == 3 and got["df"] == 2
    assert got["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert got["p"] == pytest.approx(ref.pvalue, rel=1e-7)
    lo, hi = ref.confidence_interval(0.95)
    assert got["mean"] == pytest.approx((lo + hi) / 2) and got["ci"] == pytest.approx((hi - lo) / 2, rel=1e-9)
    assert got["a_better"] == 3 and got["b_better"] == 0
    assert math.isnan(seed_level_test([0.01])["p"])  # one seed: nothing to test


def test_seed_level_paired_keeps_within_seed_intervals_apart_from_the_seed_test():
    rng = np.random.default_rng(3)
    base = {s: rng.uniform(0.3, 0.9, 600) for s in range(3)}
    shift = {0: 0.05, 1: -0.01, 2: 0.03}  # seed-to-seed variation of the method difference
    a = {s: np.clip(base[s] + shift[s] + rng.normal(0, 0.05, 600), 0, 1) for s in base}
    res = seed_level_paired(a, base)
    assert res["seeds"] == [0, 1, 2]
    for s in base:
        w = res["within_seed"][s]
        assert w["level"] == "within-seed" and w["n"] == 600
        assert w["p"] == pytest.approx(scipy_stats.ttest_rel(a[s], base[s]).pvalue, rel=1e-6, abs=1e-300)
    means = [float(np.mean(a[s] - base[s])) for s in base]
    seed = res["seed_level"]
    assert seed["p"] == pytest.approx(scipy_stats.ttest_1samp(means, 0.0).pvalue, rel=1e-7)
    # the pooled test (1,800 "independent" episodes) the old tables printed would claim far more
    pooled = paired_difference(np.concatenate(list(a.values())), np.concatenate(list(base.values())))
    assert pooled["p"] < 1e-20 < 0.05 < seed["p"]
    with pytest.raises(MetakdError, match="share no seed"):
        seed_level_paired({0: [0.1]}, {1: [0.1]})


def test_holm_textbook_example():
    # Holm (1979)-style example, m = 4, alpha 0.05: sorted 0.005, 0.01, 0.03, 0.04 are compared with
    # 0.05/4, 0.05/3, 0.05/2, 0.05/1: the first two are rejected, the procedure stops at 0.03 > 0.025.
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_reject(p) == [True, False, False, True]
    assert holm_reject(p, alpha=0.1) == [True, True, True, True]
    # capped at 1, monotone in the sorted order, nan untested and not counted in m
    assert holm_adjust([0.5, 0.6, float("nan")]) == pytest.approx([1.0, 1.0, float("nan")], nan_ok=True)
    assert holm_adjust([0.02, float("nan"), 0.01]) == pytest.approx([0.02, float("nan"), 0.02], nan_ok=True)
    with pytest.raises(MetakdError, match=r"\[0, 1\]"):
        holm_adjust([1.5])


def test_holm_agrees_with_the_step_down_procedure():
    """adjusted p <= alpha exactly where Holm's sequential procedure (written out here) rejects, at any alpha."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        p = list(rng.uniform(0, 0.2, rng.integers(1, 15)))
        for alpha in (0.01, 0.05, 0.1):
            order = sorted(range(len(p)), key=lambda i: p[i])
            rejected = set()
            for rank, i in enumerate(order):
                if p[i] > alpha / (len(p) - rank):
                    break
                rejected.add(i)
            assert holm_reject(p, alpha) == [i in rejected for i in range(len(p))]
