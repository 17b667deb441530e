"""metakd compare: paired per-episode differences between result files (written here by hand)."""
import json

import numpy as np
import pytest

from metakd.engine.evaluation.compare import compare_runs, load_results, run_compare
from metakd.errors import MetakdError


def _eval_json(folder, name, accs, fingerprint="abc123", train_seed=None):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "eval_test_600ep_seed0.json"
    data = {"name": name, "accuracy": float(np.mean(accs)), "ci95": 0.0,
            "episodes_fingerprint": fingerprint, "per_episode": list(map(float, accs))}
    if train_seed is not None:
        data["train_seed"] = train_seed
    path.write_text(json.dumps(data))
    return path


def _robust_json(folder, models):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "robustness.json"
    path.write_text(json.dumps({"models": [
        {"name": name, "checkpoint": str(ckpt), "episodes_fingerprint": "abc123",
         "rows": [{"level": lvl, "side": side, "per_episode": list(map(float, accs))} for lvl, side, accs in rows]}
        for name, ckpt, rows in models]}))
    return path


def test_two_seeds_of_one_config_are_told_apart_and_paired(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.9, 200)
    a = _eval_json(tmp_path / "maml_seed0", "maml_glyphs", base)
    b = _eval_json(tmp_path / "maml_seed1", "maml_glyphs", np.clip(base + 0.03, 0, 1))
    report = run_compare([a.parent, b.parent], out=tmp_path / "cmp")
    (row,) = report["rows"]
    assert row["method"] == "maml_seed1 [maml_glyphs]" and row["baseline"] == "maml_seed0 [maml_glyphs]"
    assert row["difference"]["mean"] == pytest.approx(np.mean(np.clip(base + 0.03, 0, 1) - base))
    assert row["difference"]["p"] < 1e-6
    assert "| maml_seed1 [maml_glyphs] | standard |" in report["table"]
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"compare.json", "compare.md", "compare.png"}
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"][0]["scenario"] == "standard"


def test_robustness_files_pair_every_shared_scenario(tmp_path):
    rng = np.random.default_rng(1)
    s, w = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)
    path = _robust_json(tmp_path / "robustness", [
        ("maml", tmp_path / "runs" / "maml" / "best.pt", [("standard", None, s), ("strong", "support", w)]),
        ("msd", tmp_path / "runs" / "msd" / "best.pt", [("standard", None, s), ("strong", "support", w + 0.01)])])
    report = compare_runs(load_results([path]))
    assert [(r["method"], r["scenario"]) for r in report["rows"]] == [("msd", "standard"), ("msd", "strong / support")]
    assert report["rows"][0]["difference"]["mean"] == 0
    assert report["rows"][1]["difference"]["mean"] == pytest.approx(0.01)


def test_refuses_what_cannot_be_paired(tmp_path):
    a = _eval_json(tmp_path / "a", "a", [0.5, 0.6])
    b = _eval_json(tmp_path / "b", "b", [0.5, 0.7], fingerprint="other")
    with pytest.raises(MetakdError, match="different episode lists"):
        run_compare([a, b])
    with pytest.raises(MetakdError, match="at least two"):
        run_compare([a])
    (tmp_path / "c").mkdir()
    with pytest.raises(MetakdError, match="holds no eval"):
        run_compare([a, tmp_path / "c"])
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"name": "x", "accuracy": 0.5}))
    with pytest.raises(MetakdError, match="no per-episode accuracies"):
        run_compare([a, old])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MetakdError, match="not a readable metakd result"):
        run_compare([a, bad])


def _seeded(tmp_path, method, per_seed):
    """One eval result per seed: runs <method>_s<seed>/ with the given per-episode accuracies."""
    return [_eval_json(tmp_path / f"{method}_s{s}", f"{method}_cfg", accs, train_seed=s).parent
            for s, accs in enumerate(per_seed)]


def _three_methods(tmp_path):
    rng = np.random.default_rng(7)
    base = [rng.uniform(0.3, 0.9, 300) for _ in range(3)]
    shifts = {"maml": (0, 0, 0), "msd": (0.04, -0.01, 0.02), "big": (0.10, 0.11, 0.09)}
    runs = {m: _seeded(tmp_path, m, [np.clip(b + d + rng.normal(0, 0.03, 300), 0, 1) for b, d in zip(base, sh)])
            for m, sh in shifts.items()}
    return runs


def test_several_seeds_give_a_seed_level_test_and_holm(tmp_path):
    scipy_stats = pytest.importorskip("scipy.stats")
    runs = _three_methods(tmp_path)
    specs = [f"{m}={','.join(map(str, paths))}" for m, paths in runs.items()]
    report = run_compare(specs, out=tmp_path / "cmp")
    assert [r["method"] for r in report["rows"]] == ["msd", "big"] and report["baseline"] == "maml"
    assert report["comparisons"] == 2 and report["holm"]
    accs = {m: [np.mean(json.loads(next(p.glob("eval_*.json")).read_text())["per_episode"]) for p in paths]
            for m, paths in runs.items()}
    for row in report["rows"]:
        m = row["method"]
        seed = row["seed_level"]
        ref = scipy_stats.ttest_rel(accs[m], accs["maml"])
        assert row["difference"] is seed and seed["level"] == "seed" and seed["df"] == 2
        assert seed["mean"] == pytest.approx(np.mean(np.subtract(accs[m], accs["maml"])))
        assert seed["p"] == pytest.approx(ref.pvalue, rel=1e-7)
        assert row["method_acc"]["over"] == "seeds" and row["method_acc"]["n"] == 3
        assert [w["level"] for w in row["within_seed"]] == ["within-seed"] * 3
        assert [w["seed"] for w in row["within_seed"]] == [0, 1, 2]
        for i, w in enumerate(row["within_seed"]):  # each seed's per-episode paired test, not pooled
            a = json.loads(next(runs[m][i].glob("eval_*.json")).read_text())["per_episode"]
            b = json.loads(next(runs["maml"][i].glob("eval_*.json")).read_text())["per_episode"]
            assert w["p"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-6, abs=1e-300)
    from metakd.stats import holm_adjust
    assert [r["p_holm"] for r in report["rows"]] == pytest.approx(holm_adjust([r["seed_level"]["p"] for r in report["rows"]]))
    # msd's shift varies by seed: every seed's per-episode test may look decisive, the seed-level one is not
    msd = report["rows"][0]
    assert msd["seed_level"]["p"] > 0.05 and min(w["p"] for w in msd["within_seed"]) < 1e-4
    table = report["table"]
    assert "Holm p" in table and "within seed" in table and "seed level" in table and "pooled over" not in table
    assert "| msd | standard | 3 |" in table
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["rows"][1]["seed_level"]["level"] == "seed" and saved["methods"][0]["label"] == "maml"


def test_one_seed_per_method_is_labelled_within_seed(tmp_path):
    rng = np.random.default_rng(2)
    s, w = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)
    path = _robust_json(tmp_path / "robustness", [
        ("maml", tmp_path / "runs" / "maml" / "best.pt", [("standard", None, s), ("strong", "support", w)]),
        ("msd", tmp_path / "runs" / "msd" / "best.pt", [("standard", None, s + 0.02), ("strong", "support", w + 0.01)])])
    report = run_compare([path])
    for row in report["rows"]:
        assert row["seed_level"] is None and row["difference"]["level"] == "within-seed"
        assert row["method_acc"]["over"] == "episodes (one seed)"
    assert report["holm"] and all(r["p_holm"] is not None for r in report["rows"])
    assert "the only test is within that seed" in report["table"] and "n/a (one seed)" in report["table"]
    single = run_compare([_eval_json(tmp_path / "a", "a", s), _eval_json(tmp_path / "b", "b", s + 0.01)])
    assert not single["holm"] and single["rows"][0]["p_holm"] is None and "Holm" not in single["table"]


def test_seed_groups_that_cannot_be_paired_are_refused(tmp_path):
    runs = _three_methods(tmp_path)
    maml, msd = (",".join(map(str, runs[m])) for m in ("maml", "msd"))
    with pytest.raises(MetakdError, match=r"maml has 3 seed\(s\) and one has 1: a seed-level comparison"):
        run_compare([f"one={runs['msd'][0]}", f"maml={maml}"])
    shuffled = ",".join(map(str, [runs["msd"][1], runs["msd"][0], runs["msd"][2]]))
    with pytest.raises(MetakdError, match="seed 1 of msd was trained with seed 1 and of maml with seed 0"):
        run_compare([f"maml={maml}", f"msd={shuffled}"])
    with pytest.raises(MetakdError, match="LABEL=RUN,RUN"):
        run_compare([f"={maml}", f"msd={msd}"])
    robust = _robust_json(tmp_path / "robustness", [("a", tmp_path / "a.pt", [("standard", None, [0.5])]),
                                                    ("b", tmp_path / "b.pt", [("standard", None, [0.5])])])
    with pytest.raises(MetakdError, match="holds 2 models"):
        run_compare([f"x={robust},{robust}", f"maml={maml}"])


def test_cli_compare_takes_seed_groups(tmp_path, capsys):
    from metakd.cli import main

    runs = _three_methods(tmp_path)
    code = main(["compare", *[f"{m}={','.join(map(str, runs[m]))}" for m in ("maml", "big")], "--out", str(tmp_path / "o")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "| big | standard | 3 |" in printed.out and "written:" in printed.out
