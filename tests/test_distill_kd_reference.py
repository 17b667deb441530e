"""``kd_loss`` against numbers computed by hand (30-digit mpmath, written here), its gradient against the
closed form ``T_t·(p_s − p_t)/B``, and the loss weights the classic-distillation benchmark rows really use."""
import math

import pytest
import torch

from metakd.distill import kd_loss

# Two rows of 3 classes. Row 1 has student == teacher logits, so its KL is 0 only when T_s == T_t.
S = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
T = [[3.0, 1.0, 0.0], [0.5, -1.0, 2.0]]

# KL(softmax(t/T_t) || softmax(s/T_s)) per row, unscaled (mpmath, 30 digits).
KL_ROWS = {
    (1.0, 1.0): (1.685124016063981, 0.0),
    (4.0, 4.0): (0.13465882854241495, 0.0),
    (2.0, 5.0): (0.21560129497217442, 0.060909771981961953),  # (T_s, T_t)
}
# softmax(s_0 / 2) and softmax(t_0 / 5) of row 0 (mpmath).
PS0_T2 = (0.18632372322584758, 0.3071958857184984, 0.50648039105565403)
PT0_T5 = (0.45062670595568973, 0.30206411428110643, 0.24730917976320384)


def _explicit_kl(s_row, t_row, ts, tt):
    """The same KL from the definition, by explicit exp/log in float64 (no torch)."""
    zs = sum(math.exp(v / ts) for v in s_row)
    zt = sum(math.exp(v / tt) for v in t_row)
    return sum((math.exp(b / tt) / zt) * (math.log(math.exp(b / tt) / zt) - math.log(math.exp(a / ts) / zs))
               for a, b in zip(s_row, t_row))


def _tensors():
    return torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64)


def test_written_numbers_agree_with_the_explicit_formula():
    for (ts, tt), rows in KL_ROWS.items():
        for s_row, t_row, want in zip(S, T, rows):
            assert _explicit_kl(s_row, t_row, ts, tt) == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("ts,tt", sorted(KL_ROWS))
def test_kd_loss_is_t_squared_times_batchmean_kl(ts, tt):
    s, t = _tensors()
    rows = KL_ROWS[(ts, tt)]
    raw = sum(rows) / len(rows)  # "batchmean": sum over classes, mean over the 2 rows
    assert kd_loss(s, t, ts, tt, scale="none").item() == pytest.approx(raw, rel=1e-12, abs=1e-15)
    assert kd_loss(s, t, ts, tt).item() == pytest.approx(ts * tt * raw, rel=1e-12, abs=1e-15)  # default "product"
    assert kd_loss(s, t, ts, tt, scale="student").item() == pytest.approx(ts * ts * raw, rel=1e-12, abs=1e-15)
    assert kd_loss(s, t, ts, tt, scale="teacher").item() == pytest.approx(tt * tt * raw, rel=1e-12, abs=1e-15)
    per = kd_loss(s, t, ts, tt, reduction="none")
    assert per.tolist() == pytest.approx([ts * tt * r for r in rows], rel=1e-12, abs=1e-15)


def test_literal_values_at_the_benchmark_temperature():
    s, t = _tensors()
    # T = 4 (the distill configs' value): 16 · (0.134658... + 0) / 2
    assert kd_loss(s, t, 4.0).item() == pytest.approx(1.0772706283393196, rel=1e-12)
    # T_s = 2, T_t = 5: 10 · (0.215601... + 0.060909...) / 2
    assert kd_loss(s, t, 2.0, 5.0).item() == pytest.approx(1.3825553347706819, rel=1e-12)
    assert kd_loss(s, t, 2.0).item() == kd_loss(s, t, 2.0, 2.0).item()  # t_teacher=None means T_t = T_s


def test_gradient_is_teacher_temperature_times_probability_gap():
    s, t = _tensors()
    s.requires_grad_(True)
    (grad,) = torch.autograd.grad(kd_loss(s, t, 2.0, 5.0), s)
    # d/ds [T_s·T_t·KL] = T_s·T_t·(p_s − p_t)/T_s = T_t·(p_s − p_t), over B = 2 rows
    want0 = [5.0 * (a - b) / 2 for a, b in zip(PS0_T2, PT0_T5)]
    assert grad[0].tolist() == pytest.approx(want0, rel=1e-12)
    assert grad.sum(dim=1).abs().max().item() < 1e-15  # softmax gradients sum to zero per row


def test_benchmark_rows_set_the_weights_they_claim():
    import importlib.util
    from pathlib import Path

    from metakd.engine.training.job_config import load_distill_config

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_glyphs.py"
    spec = importlib.util.spec_from_file_location("distill_glyphs_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ce = load_distill_config("distill_glyphs_kd", bench.METHODS["ce"])["distill"]
    kd = load_distill_config("distill_glyphs_kd", bench.METHODS["kd"])["distill"]
    assert (ce["method"], ce["ce_weight"], ce["kd_weight"]) == ("kd", 1.0, 0.0)  # the student alone: pure CE
    assert (kd["ce_weight"], kd["kd_weight"], kd["temperature"], kd["kd_scale"]) == (0.1, 0.9, 4.0, "product")
