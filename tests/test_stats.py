"""Student-t intervals and paired differences, against SciPy (a dev dependency) and hand cases."""
import math

import numpy as np
import pytest

from metakd.errors import MetakdError
from metakd.stats import format_interval, paired_difference, t_cdf, t_interval, t_quantile

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
