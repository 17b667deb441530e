"""metakd compare: paired per-episode differences between result files (written here by hand)."""
import json

import numpy as np
import pytest

from metakd.engine.evaluation.compare import compare_runs, load_results, run_compare
from metakd.errors import MetakdError


def _eval_json(folder, name, accs, fingerprint="abc123"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "eval_test_600ep_seed0.json"
    path.write_text(json.dumps({"name": name, "accuracy": float(np.mean(accs)), "ci95": 0.0,
                                "episodes_fingerprint": fingerprint, "per_episode": list(map(float, accs))}))
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
