"""The MSD study and the meta-learner distillation study run end to end at a smoke-test size, resume
from their finished pieces, and report paired differences on shared episodes."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def script(name, *args):
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], env=ENV, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def test_msd_study_then_meta_distillation(tmp_path):
    work, out = tmp_path / "msd", tmp_path / "msd.json"
    script("msd_study.py", "final", "--tiny", "--seeds", 0, 1, "--iterations", 2, "--val-every", 2, "--episodes", 4,
           "--scenario-episodes", 4, "--consistency-episodes", 4, "--select-iterations", 1,
           "--select-val-episodes", 4, "--work", work, "--out", out)
    report = json.loads(out.read_text())
    sel = report["selection"]
    assert len(sel["trials"]) == 6 and set(sel["chosen"]) == {"lam", "augment", "views"}
    n = sel["chosen"]["views"]
    rows = {(r["cell"], r["scenario"]): r for r in report["rows"]}
    assert {c for c, _ in rows} == {"maml", "msd", "maml_matched"}
    assert len(rows) == 3 * 7  # standard + weak/strong x support/query/both
    assert rows["maml_matched", "standard"]["meta_batch"] == 4 * n
    assert rows["msd", "standard"]["adapted_copies"] == 4 * n == rows["maml_matched", "standard"]["adapted_copies"]
    d = rows["msd", "strong / both"]["vs_maml"]
    assert d["seeds"] == [0, 1] and d["seed_level"]["df"] == 1 and len(d["within_seed"]) == 2
    assert "pooled" not in d and {w["level"] for w in d["within_seed"].values()} == {"within-seed"}
    assert d["seed_level"]["holm_m"] == report["holm"]["family"] > 0
    assert rows["maml", "standard"]["vs_maml"] is None
    # a rerun only reads the finished pieces
    before = sorted(p.name for p in (work / "pieces").iterdir())
    script("msd_study.py", "report", "--tiny", "--seeds", 0, 1, "--iterations", 2, "--episodes", 4,
           "--work", work, "--out", tmp_path / "again.json")
    assert sorted(p.name for p in (work / "pieces").iterdir()) == before
    again = json.loads((tmp_path / "again.json").read_text())
    assert [r["acc"] for r in again["rows"]] == [r["acc"] for r in report["rows"]]

    dout = tmp_path / "distill.json"
    script("distill_meta_glyphs.py", "--tiny", "--teacher", work / "maml_s0", "--seeds", 0, 1, "--methods", "alone",
           "kd", "--iterations", 2, "--episodes", 4, "--alone-pieces", work / "pieces", "--work", tmp_path / "dm",
           "--out", dout)
    dist = {r["method"]: r for r in json.loads(dout.read_text())["rows"]}
    maml_std = rows["maml", "standard"]["per_seed"]
    assert dist["alone"]["per_seed"] == maml_std  # reused, not retrained
    assert not (tmp_path / "dm" / "alone_s0").exists()
    assert dist["kd"]["vs_alone"]["seeds"] == [0, 1]


RESULTS = ROOT / "benchmarks" / "results"


def test_committed_study_tables_are_their_jsons_restated(tmp_path):
    """Every committed study table is what ``--restat`` writes from its JSON (seed-level tests, Holm, no pooled
    p over seeds x episodes), so a figure in the tables can be recomputed from the JSON next to it."""
    jobs = {"msd_study": ["restat", "--from"], "distill_meta_glyphs": ["--restat"], "pretrain_glyphs": ["--restat"],
            "distill_proxy": ["--restat"]}
    for name, how in jobs.items():
        src, out = RESULTS / f"{name}_cpu.json", tmp_path / f"{name}_cpu.json"
        script(f"{name}.py", *how, src, "--out", out)
        assert out.with_suffix(".md").read_text() == src.with_suffix(".md").read_text(), name
        text = out.read_text()
        assert '"pooled"' not in text, name
        assert '"seed_level"' in text or name == "distill_proxy", name  # the proxy's tests are over seeds already
    msd = json.loads((RESULTS / "msd_study_cpu.json").read_text())
    row = next(r for r in msd["rows"] if (r["cell"], r["scenario"]) == ("msd", "strong / both"))
    seed = row["vs_maml_matched"]["seed_level"]
    assert round(100 * seed["mean"], 2) == 7.70 and round(100 * seed["ci"], 2) == 1.34 and seed["holm_m"] == 35
    proxy = json.loads((RESULTS / "distill_proxy_cpu.json").read_text())
    assert all(proxy["summary"][m]["paired_vs_kd"]["holm_m"] == 4 for m in ("ce", "kd_rank", "mkd", "mkd_rank"))
    assert "mkd.heldout=train" in (RESULTS / "distill_proxy_cpu.md").read_text()
    assert "rank_k_scale: std" in (RESULTS / "distill_meta_glyphs_cpu.md").read_text()
