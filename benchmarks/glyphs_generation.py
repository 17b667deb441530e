"""Time to build the ``glyphs`` dataset from nothing: the class catalog, then every split, then a cached reload.

    python benchmarks/glyphs_generation.py                 # sizes 28 and 84, default classes and seed
    python benchmarks/glyphs_generation.py --sizes 28 --repeats 3

Every stage runs in a fresh child process on an empty cache folder (the catalog stage) or on a
folder holding only the catalog (the generation stages), so import costs and the in-process
catalog memo do not leak between stages. Reported per stage: wall seconds, CPU seconds of the
child (user + system), the 1-minute load average before it started and the CPU count, because
wall time on a shared machine mostly measures the neighbours. Results go to
runs/benchmarks/glyphs_generation_cpu.json (benchmarks/results/ with --update-results, or --out FILE;
written atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from metakd.atomic import write_json  # noqa: E402
from benchlib.results import add_update_results_flag, output_path  # noqa: E402

CHILD = r"""
import json, sys, time, resource
folder, stage, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
from metakd.data import glyphs
out = {}
if stage == "catalog":
    cat = glyphs.glyph_catalog(folder)
    out["classes"] = {s: len(cat.split(s)) for s in ("train", "val", "test")}
    out["fonts_used"] = len(cat.fonts)
else:
    out["splits"] = {}
    for split in ("train", "val", "test"):
        t = time.perf_counter()
        data = glyphs.load_glyphs(folder, split, image_size=size)
        out["splits"][split] = {"seconds": round(time.perf_counter() - t, 3), "images": len(data), "classes": data.num_classes}
ru = resource.getrusage(resource.RUSAGE_SELF)
out["wall_s"] = round(time.perf_counter() - t0, 3)
out["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
print(json.dumps(out))
"""


def run_child(folder: Path, stage: str, size: int) -> dict:
    load = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), stage, str(size)], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1min_before"] = round(load, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 84])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", help="result JSON (default: runs/benchmarks/glyphs_generation_cpu.json)")
    add_update_results_flag(parser)
    args = parser.parse_args()

    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="glyphs-bench-") as tmp:
            base = Path(tmp) / "catalog"
            run = {"catalog": run_child(base, "catalog", 28)}
            print("catalog", json.dumps(run["catalog"]), flush=True)
            for size in args.sizes:
                folder = Path(tmp) / f"size{size}"
                folder.mkdir()
                for f in base.glob("catalog-*"):
                    shutil.copy(f, folder / f.name)
                run[f"generate_{size}"] = run_child(folder, "generate", size)
                run[f"reload_{size}"] = run_child(folder, "generate", size)
                print(f"generate {size}", json.dumps(run[f"generate_{size}"]), flush=True)
                print(f"reload {size}", json.dumps(run[f"reload_{size}"]), flush=True)
            runs.append(run)

    import matplotlib
    import numpy

    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"numpy": numpy.__version__, "matplotlib": matplotlib.__version__},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "runs": runs,
    }
    out = output_path(args.out, "glyphs_generation_cpu.json", args.update_results)
    write_json(out, report, what="benchmark result", indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
