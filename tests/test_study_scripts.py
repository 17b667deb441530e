"""The MSD study and the meta-learner distillation study run end to end at a smoke-test size, resume
from their finished pieces, and report paired differences on shared episodes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def test_paired_over_seeds_restat_and_holm_family():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import benchlib.results as results_io
    from metakd.stats import holm_adjust, seed_level_test

    a = {0: [0.9, 0.8, 0.7, 0.9], 1: [0.6, 0.7, 0.8, 0.7], 2: [0.8, 0.8, 0.9, 0.7]}
    b = {0: [0.8, 0.8, 0.6, 0.8], 1: [0.6, 0.6, 0.8, 0.7], 3: [0.1, 0.1, 0.1, 0.1]}
    d = results_io.paired_over_seeds(a, b)
    assert d["seeds"] == [0, 1] and "pooled" not in d  # seed 2 and 3 unpaired: left out
    assert d["within_seed"][0]["level"] == "within-seed" and d["within_seed"][0]["n"] == 4
    means = [sum(x - y for x, y in zip(a[s], b[s])) / 4 for s in (0, 1)]
    assert d["seed_level"]["mean"] == pytest.approx(sum(means) / 2)
    assert d["seed_level"]["p"] == pytest.approx(seed_level_test(means)["p"]) and d["seed_level"]["df"] == 1
    # an older result (per_seed + pooled) restated: seed level from the stored per-seed means, pooled dropped
    old = {"seeds": [0, 1], "per_seed": {"0": {"mean": means[0], "ci": 0.1, "p": 0.01}, "1": {"mean": means[1], "ci": 0.1,
                                                                                            "p": 0.2}},
           "over_seeds": {}, "pooled": {"p": 1e-30}}
    new = results_io.restat_paired(old)
    assert "pooled" not in new and new["seeds"] == [0, 1] and new["seed_level"]["p"] == pytest.approx(d["seed_level"]["p"])
    # Holm: a comparison shown twice (a − b and b − a) counts once in the family
    e1, e2, e3 = (results_io.restat_paired({"within_seed": {0: {"mean": m0}, 1: {"mean": m1}, 2: {"mean": m2}}})
                  for m0, m1, m2 in ((0.02, 0.021, 0.019), (-0.02, -0.021, -0.019), (0.01, -0.03, 0.02)))
    m = results_io.add_holm([(("x", "y"), e1), (("x", "y"), e2), (("x", "z"), e3), (("x", "w"), None)])
    assert m == 2 and e1["seed_level"]["holm_m"] == 2
    q = holm_adjust([e1["seed_level"]["p"], e3["seed_level"]["p"]])
    assert e1["seed_level"]["p_holm"] == pytest.approx(q[0]) and e3["seed_level"]["p_holm"] == pytest.approx(q[1])
    cell = results_io.format_paired(e1)
    assert cell.startswith("+2.00 ± ") and "Holm" in cell and results_io.format_paired(None) == "–"


def test_omniglot_study_on_small_official_zips(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _omniglot_fixtures as ofx

    data = tmp_path / "omniglot"
    ofx.write_sets(data, ["images_background_small1", "images_background_small2", "images_evaluation"])
    ofx.write_zip(data / "all_runs.zip", ofx.runs_members(runs=2, way=3))
    work, out = tmp_path / "work", tmp_path / "omni.json"
    args = ["--root", data, "--work", work, "--seeds", 0, 1, "--way", 3, "--protonet-iterations", 3,
            "--maml-iterations", 3, "--maml-meta-batch", 2, "--pretrain-epochs", 1, "--val-episodes", 3,
            "--maml20-iterations", 2, "--maml20-meta-batch", 2,
            "--override", "model.options.hidden=4", "episodes.q_query=2", "episodes.test_q_query=2", "--out", out]
    text = script("omniglot_study.py", *args)
    report = json.loads(out.read_text())
    rows = {r["cell"]: r for r in report["rows"]}
    assert set(rows) == {"protonet20", "maml5", "pretrain_nc", "pretrain_lp"} and rows["maml5"]["seeds"] == [0, 1]
    assert {v["head_rule"] for v in rows["maml5"]["per_seed"].values()} <= {"prototype", "zero"}
    assert {c["cell"] for c in report["comparisons"]} == {"maml5", "pretrain_nc", "pretrain_lp"}
    assert all(c["seed_level"]["df"] == 1 and "holm_p" in c for c in report["comparisons"])
    assert "simple ConvNet 13.5%" in text
    again = script("omniglot_study.py", *args)  # every piece is finished: nothing trains again
    assert "[running]" not in again
    more = script("omniglot_study.py", *args, "--cells", "unicorn5", "protomaml5", "maml20", "--seeds", 0, "--scenarios",
                  "--scenario-episodes", 2)
    rows = {r["cell"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"unicorn5", "protomaml5", "maml20"} <= set(rows) and "strong/both" in rows["protomaml5"]["scenarios"]
    maml20 = json.loads((work / "pieces" / "maml20_s0.json").read_text())
    assert maml20["runs"]["learner_options"]["train_steps"] == 5 and "head_rule" not in maml20
    assert "consistency" in more
    # the test-time inner loop chosen on validation, for the trained unicorn5 model: no training
    script("omniglot_study.py", *args, "--cells", "unicorn5_tuned", "--seeds", 0, "--tuned-lrs", 0.4, 0.8,
           "--tuned-steps", 1, 2)
    piece = json.loads((work / "pieces" / "unicorn5_tuned_s0.json").read_text())
    assert set(piece["val_acc_by_setting"]) == {"lr0.4_steps1", "lr0.4_steps2", "lr0.8_steps1", "lr0.8_steps2"}
    assert piece["val_acc"] == max(piece["val_acc_by_setting"].values()) and piece["train_seconds"] == 0.0
    chosen = piece["chosen"]
    assert piece["runs"]["learner_options"]["test_steps"] == chosen["test_steps"]
    assert piece["runs"]["learner_options"]["inner_lr"] == chosen["inner_lr"]
    # MSD on the ProtoMAML host with its controls, compared as their own Holm family
    script("omniglot_study.py", *args, "--cells", "protomaml5", "msd5_l0", "msd5_l0.3", "msd5_plain",
           "--grad-ratio-every", 1, "--scenarios", "--scenario-episodes", 2)
    rep = json.loads(out.read_text())
    fam = [c for c in rep["comparisons"] if c["family"] == "msd"]
    assert {(c["cell"], c["vs"]) for c in fam} == {("msd5_l0.3", "protomaml5"), ("msd5_l0.3", "msd5_l0"),
                                                   ("msd5_l0.3", "msd5_plain"), ("msd5_l0", "protomaml5"),
                                                   ("msd5_plain", "protomaml5")}
    assert all(c["seed_level"]["df"] == 1 and c["holm_p"] >= c["seed_level"]["p"] for c in fam)
    scen = [c for c in rep["comparisons"] if c["family"] == "msd_scenarios"]
    assert {c["scenario"] for c in scen} == {"standard", "strong/both"} and len(scen) == 2 * len(fam)
    rows = {r["cell"]: r for r in rep["rows"]}
    assert rows["msd5_l0.3"]["grad_ratio"]["early"]["mean"] > 0 and "grad_ratio" not in rows["msd5_plain"]
    for cell, views, lam in (("msd5_l0.3", 2, 0.3), ("msd5_plain", 1, 0.0)):
        opts = json.loads((work / "pieces" / f"{cell}_s1.json").read_text())["runs"]["learner_options"]
        assert (opts["host"], opts["views"], opts["lam"], opts["budget"]) == ("protomaml", views, lam, "in_place_of_tasks")
    # the test-time inner loop, chosen on within-alphabet validation episodes (nothing trains)
    il = tmp_path / "il.json"
    script("omniglot_inner_loop.py", "--root", data, "--study-work", work, "--work", tmp_path / "il", "--cells",
           "protomaml5", "msd5_l0.3", "--seeds", 0, 1, "--way", 2, "--val-episodes", 2, "--across-episodes", 1,
           "--grid", "0.1:1", "0.4:0", "--out", il)
    rep = json.loads(il.read_text())
    rows = {r["cell"]: r for r in rep["rows"]}
    piece = json.loads((tmp_path / "il" / "pieces" / "msd5_l0.3_s1.json").read_text())
    trained = f"{piece['trained'][0]}:{piece['trained'][1]}"
    assert set(rows) == {"protomaml5", "msd5_l0.3"} and set(piece["settings"]) == {trained, "0.1:1", "0.4:0"}
    assert piece["chosen"] in piece["settings"] and len(piece["settings"]["0.4:0"]["per_item_correct"]) == 6
    assert [(c["cell"], c["vs"]) for c in rep["comparisons"]] == [("msd5_l0.3", "protomaml5")]
    assert (rep["val_episodes"], rep["grid"], rep["way"]) == (2, ["0.1:1", "0.4:0"], 2)
    # a setting added to --grid later (here the trained loop under test_stop min) is scored into the pieces
    script("omniglot_inner_loop.py", "--root", data, "--study-work", work, "--work", tmp_path / "il", "--cells",
           "protomaml5", "msd5_l0.3", "--seeds", 0, 1, "--way", 2, "--val-episodes", 2, "--across-episodes", 1,
           "--grid", "0.1:1", "0.4:0", f"{trained}:min", "--out", il)
    again = json.loads((tmp_path / "il" / "pieces" / "msd5_l0.3_s1.json").read_text())
    assert set(again["settings"]) == {trained, "0.1:1", "0.4:0", f"{trained}:min"}
    assert all(again["settings"][k] == piece["settings"][k] for k in piece["settings"])  # the old ones kept
    assert again["protocol"]["grid"] == ["0.1:1", "0.4:0", f"{trained}:min"]
    rep = json.loads(il.read_text())  # the guarded trained loop: its own columns and comparison family
    guarded = {r["cell"]: r for r in rep["rows"]}["msd5_l0.3"]
    errs = [json.loads((tmp_path / "il" / "pieces" / f"msd5_l0.3_s{s}.json").read_text())["settings"][f"{trained}:min"]
            ["runs_error"] for s in (0, 1)]
    assert guarded["guarded_error"]["mean"] == pytest.approx(sum(errs) / 2)
    assert [(c["cell"], c["vs"], c["family"]) for c in rep["comparisons"]] == [
        ("msd5_l0.3", "protomaml5", "msd"), ("msd5_l0.3", "protomaml5", "msd_guarded")]
    other = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot_inner_loop.py"), "--root", str(data),
                            "--study-work", str(work), "--work", str(tmp_path / "il"), "--cells", "msd5_l0.3", "--seeds",
                            "1", "--way", "2", "--val-episodes", "3", "--across-episodes", "1", "--grid", "0.1:2"],
                           capture_output=True, text=True)
    assert other.returncode != 0 and "msd5_l0.3_s1.json: scored with --val-episodes 2; rerun with the same" in other.stderr
    for item, why in (("0.1", "expected inner lr:test steps"), ("0.1:3:max", "expected inner lr:test steps")):
        bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot_inner_loop.py"), "--grid", item],
                             capture_output=True, text=True, cwd=tmp_path)
        assert bad.returncode != 0 and f"--grid {item!r}: {why}" in bad.stderr
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import omniglot_inner_loop as inner_loop
    import omniglot_study

    model, ckpt = omniglot_study._load(work / "runs" / "msd5_l0.3_s1", inner=(0.1, 1, "min_support_loss"))
    assert (model.host.lr, model.host.test_steps, model.host.test_stop) == (0.1, 1, "min_support_loss")
    sampler = omniglot_study._val_sampler(ckpt, 2)
    names = sampler.split.class_names
    for ep in inner_loop.within_alphabet_episodes(sampler, 4, 2):
        assert len({names[c].split("/")[0] for c in ep.classes}) == 1 and ep.support.shape == ep.query.shape == (2, 1)
        assert not set(ep.support.ravel()) & set(ep.query.ravel())
    # teacher -> student meta-learning: maml5's student with KD / KD + rank from the seed-0 protonet20 model
    script("omniglot_study.py", *args, "--cells", "kd5", "kd_rank5", "mkd5")
    rep = json.loads(out.read_text())
    fam = {(c["cell"], c["vs"]) for c in rep["comparisons"] if c["family"] == "distill"}
    assert fam == {("kd5", "maml5"), ("kd_rank5", "maml5"), ("kd_rank5", "kd5"), ("mkd5", "maml5"),
                   ("mkd5", "kd5")} and rep["budget"]["teacher"]
    piece = json.loads((work / "pieces" / "kd_rank5_s1.json").read_text())
    assert piece["runs"]["learner_options"]["rank_weight"] == 1.0 and piece["head_rule"] in ("prototype", "zero")
    mkd = json.loads((work / "pieces" / "mkd5_s1.json").read_text())
    opts = mkd["runs"]["learner_options"]
    assert (opts["kd_on"], opts["learn_temperature"], opts["shared_temperature"]) == ("both", True, True)
    assert mkd["temperatures"]["teacher"] == mkd["temperatures"]["student"] > 1.0  # shared, within its bounds
    assert f"(T {mkd['temperatures']['student']:.2f})" in out.with_suffix(".md").read_text()
    # pre-training with rotated characters as new classes: its own backbone, chosen on the unrotated validation
    script("omniglot_study.py", *args, "--cells", "pretrain_rot_nc", "--seeds", 0, "--pretrain-rot-epochs", 1)
    rot = json.loads((work / "runs" / "pretrain_rot_s0" / "summary.json").read_text())
    assert rot["finished"] and (work / "runs" / "pretrain_s0").is_dir()
    assert "pretrain_rot_nc" in {r["cell"] for r in json.loads(out.read_text())["rows"]}
    # scenarios asked of a study begun without them: added to the finished piece, nothing retrained
    before = json.loads((work / "pieces" / "pretrain_nc_s0.json").read_text())
    added = script("omniglot_study.py", *args, "--cells", "pretrain_nc", "--seeds", 0, "--scenarios",
                   "--scenario-episodes", 2)
    after = json.loads((work / "pieces" / "pretrain_nc_s0.json").read_text())
    assert "[scenarios] pretrain_nc_s0" in added and "[running]" not in added
    assert "weak/query" in after["scenarios"] and after["runs"] == before["runs"]



def test_omniglot_study_probes_of_the_minimal_track(tmp_path):
    """Longer, wider, and meta-training after the rotated pre-training: their own Holm family against
    pretrain_rot_nc, the recipe chosen on validation."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _omniglot_fixtures as ofx

    data = tmp_path / "omniglot"
    ofx.write_sets(data, ["images_background_small1", "images_background_small2", "images_evaluation"])
    ofx.write_zip(data / "all_runs.zip", ofx.runs_members(runs=2, way=3))
    work, out = tmp_path / "work", tmp_path / "omni.json"
    probes = ("pretrain_rot_long_nc", "pretrain_rot_wide_nc", "pretrain_rot_protonet20")
    args = ["--root", data, "--work", work, "--seeds", 0, 1, "--way", 3, "--protonet-iterations", 3,
            "--pretrain-rot-epochs", 1, "--wide-hidden", 6, "--val-episodes", 3, "--override", "model.options.hidden=4",
            "episodes.q_query=2", "episodes.test_q_query=2", "--out", out]
    early = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omniglot_study.py"), *map(str, args),
                            "--cells", "pretrain_rot_protonet20"], capture_output=True, text=True, env=ENV)
    assert early.returncode != 0 and "run the pretrain_rot_nc cell of seed 0 first" in early.stderr
    script("omniglot_study.py", *args, "--cells", "pretrain_rot_nc", *probes)
    rep = json.loads(out.read_text())
    assert {(c["cell"], c["vs"]) for c in rep["comparisons"] if c["family"] == "probe"} == {
        (c, "pretrain_rot_nc") for c in probes}
    assert not {c["cell"] for c in rep["comparisons"] if c["family"] == "baseline"} & set(probes)
    rows = {r["cell"]: r for r in rep["rows"]}
    mean_val = {c: sum(v["val_acc"] for v in rows[c]["per_seed"].values()) / 2 for c in ("pretrain_rot_nc", *probes)}
    assert mean_val[rep["probe_chosen_on_validation"]] == max(mean_val.values())
    runs = work / "runs"
    assert json.loads((runs / "pretrain_rot_long_s1" / "summary.json").read_text())["epochs"] == 2
    wide = yaml.safe_load((runs / "pretrain_rot_wide_s1" / "config.yaml").read_text())
    assert wide["model"]["options"]["hidden"] == 6 and wide["data"]["options"]["rotations"]
    init = json.loads((runs / "pretrain_rot_protonet20_s1" / "init.json").read_text())
    assert Path(init["source"]).resolve().parent == (runs / "pretrain_rot_s1").resolve() and init["loaded"]


def test_msd_sweep_logs_the_gradient_ratio_and_compares_at_seed_level(tmp_path):
    out = tmp_path / "sweep.json"
    script("msd_study.py", "sweep", "--tiny", "--seeds", 0, 1, "--select-iterations", 4, "--select-val-episodes", 4,
           "--grad-ratio-every", 2, "--sweep-lams", 0, 3, "--sweep-forms", "cos_prob", "kl", "--work",
           tmp_path / "w", "--out", out, "--sweep-scenario-episodes", 3)
    rep = json.loads(out.read_text())
    rows = {r["setting"]: r for r in rep["rows"]}
    scen = {(r["setting"], r["scenario"]): r for r in rep["scenario_rows"]}
    assert {k[1] for k in scen} == {"standard", "strong / both", "ood / both"} and len(scen) == 15
    assert scen[("lam3_kl", "ood / both")]["vs_plain"]["seed_level"]["df"] == 1 and rep["scenario_holm_family"] == 21  # 7 distinct pairs x 3 scenarios
    piece = json.loads((tmp_path / "w" / "pieces" / "sweepscen_plain_s0.json").read_text())
    assert [r["episodes"] for r in piece["rows"]] == [3, 3, 3]
    assert set(rows) == {"maml", "plain", "lam0", "lam3_cos_prob", "lam3_kl"}
    assert rows["lam3_kl"]["grad_ratio"]["early"] > 0 and rows["lam0"]["grad_ratio"]["early"] == 0
    assert rows["maml"]["grad_ratio"]["early"] is None  # no consistency term to measure
    d = rows["lam3_kl"]["vs_lam0"]["seed_level"]
    assert d["n"] == 2 and d["df"] == 1 and "p_holm" in d
    assert rows["lam0"]["vs_lam0"] is None


def test_distill_omniglot_on_small_official_zips(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _omniglot_fixtures as ofx

    data = tmp_path / "omniglot"
    mp = pytest.MonkeyPatch()
    mp.setattr(ofx, "DRAWERS", 13)  # 10 test / val drawers of the real split + 3 training drawers
    ofx.write_sets(data, ["images_background_small1", "images_background_small2"])
    mp.undo()
    out = tmp_path / "d.json"
    text = script("distill_omniglot.py", "--root", data, "--work", tmp_path / "w", "--seeds", 0, 1, "--methods", "ce",
                  "kd", "kd_rank", "--override", "data.image_size=16", "train.epochs=1", "teacher.epochs=1",
                  "train.lr_milestones=[]", "teacher.lr_milestones=[]", "student.options.hidden=4",
                  "data.train_per_class=3", "--sizes", "full", "--out", out)
    rep = json.loads(out.read_text())
    assert set(rep["selection"]["val_acc"]) == {"abs100", "std1", "std3", "std10"}
    rows = {r["method"]: r for r in rep["rows"]}
    assert set(rows) == {"ce", "kd", "kd_rank"} and rows["kd"]["vs_ce"]["seed_level"]["df"] == 1
    assert not (tmp_path / "w" / "runs" / "kd_rank_full_s0").exists()  # the selection's chosen run is reused
    assert (tmp_path / "w" / "pieces" / "kd_rank_full_s1.json").is_file() and "kd_rank" in text


def test_omniglot_vinyals_on_small_official_zips(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _omniglot_fixtures as ofx

    data = tmp_path / "omniglot"
    mp = pytest.MonkeyPatch()  # four evaluation alphabets: 3 Vinyals test alphabets x 2 characters x 4 rotations
    mp.setitem(ofx.SETS, "images_evaluation", ("Angelic", "Kannada", "Keble", "Malayalam"))
    ofx.write_sets(data, ["images_background", "images_evaluation"])
    mp.undo()
    work, out = tmp_path / "w", tmp_path / "v.json"
    args = ["--root", data, "--work", work, "--seeds", 0, 1, "--protonet-iterations", 2, "--maml-iterations", 2,
            "--maml-meta-batch", 2, "--episodes", 3, "--val-episodes", 2, "--curve-points", 2, "--override",
            "model.options.hidden=4", "episodes.train_n_way=5", "episodes.q_query=2", "episodes.test_q_query=2",
            "--out", out]
    text = script("omniglot_vinyals.py", *args)
    rep = json.loads(out.read_text())
    rows = {(r["cell"], r["way"]): r for r in rep["rows"]}
    assert set(rows) == {("protonet", 5), ("protonet", 20), ("maml5", 5)}
    assert rows[("protonet", 20)]["published"] == 96.0 and rows[("maml5", 5)]["paper_iterations"] == 60000
    assert rows[("maml5", 5)]["meta_batch"] == [2] and rows[("protonet", 5)]["meta_batch"] == [1]
    assert [st for st, _ in rows[("maml5", 5)]["per_seed"]["0"]["curve"]] == [1, 2]  # the validation curve
    (cmp,) = rep["comparisons"]
    assert cmp["seed_level"]["df"] == 1 and len(cmp["within_seed"]) == 2
    # the same fixed test episodes for every cell and seed
    pieces = [json.loads(p.read_text()) for p in sorted((work / "pieces").glob("*.json"))]
    assert len({p["test"]["5"]["fingerprint"] for p in pieces}) == 1 and "1,028" in text
    assert "[running]" not in script("omniglot_vinyals.py", *args)  # finished pieces are not trained again
