"""Benchmark scripts never overwrite the committed results by default: without ``--out`` they write into the
scratch folder runs/benchmarks/ of the working folder and say so; ``--update-results`` writes into
benchmarks/results/ (the measured files the docs quote)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import benchlib.results as results_io  # noqa: E402


def _code_without_docstrings(path: Path) -> str:
    """The script's source with its docstrings blanked (they may name benchmarks/results/ in prose)."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            for i in range(body[0].lineno - 1, body[0].end_lineno):
                lines[i] = ""
    return "\n".join(lines)


def test_no_script_defaults_to_the_committed_results_folder():
    writers = []
    for path in sorted(BENCH.glob("*.py")):
        code = _code_without_docstrings(path)
        if '"--out"' not in code:
            continue
        writers.append(path.name)
        for pattern in ('/ "results"', '"benchmarks/results', '"benchmarks" / "results"'):
            assert pattern not in code, f"{path.name} still builds a path into benchmarks/results/ ({pattern})"
        assert "add_update_results_flag(" in code, f"{path.name} has --out but no --update-results"
    assert len(writers) >= 15, writers


def test_output_path_scratch_by_default_results_when_asked():
    assert results_io.output_path(None, "x.json", False) == Path("runs") / "benchmarks" / "x.json"
    assert results_io.output_path(None, "x.json", True) == BENCH / "results" / "x.json"
    assert results_io.output_path("elsewhere/y.json", "x.json", True) == Path("elsewhere/y.json")


def test_a_script_run_writes_to_scratch_and_says_where(tmp_path):
    committed = BENCH / "results" / "sampler_speed_cpu.json"
    before = committed.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(BENCH / "sampler_speed.py"), "--classes", "6", "--per-class", "20",
                          "--size", "8", "--seconds", "0.02", "--workers", "0", "--devices", "cpu"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "runs" / "benchmarks" / "sampler_speed_cpu.json").is_file()
    assert "wrote runs/benchmarks/sampler_speed_cpu.json" in res.stdout
    assert committed.read_bytes() == before
