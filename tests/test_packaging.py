"""The built package: a wheel and an sdist built from a copy of the checkout hold the shipped configs, and
the wheel installed into an empty folder runs ``metakd list`` from outside the checkout and finds them.

Built with setuptools' own PEP 517 backend (what ``python -m build`` calls) and installed with
``pip install --no-deps --target``: no network, no new virtual environment, about half a minute."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "metakd" / "configs"


def _run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the test puts on the path
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _copy_checkout(dst: Path) -> Path:
    """The files a build reads, copied, so the build leaves nothing (build/, *.egg-info) in the checkout."""
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(ROOT / "metakd", dst / "metakd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".metakd_cache"))
    return dst


def test_wheel_and_sdist_ship_the_configs_and_an_installed_metakd_lists_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _copy_checkout(src)
    dist = tmp_path / "dist"
    dist.mkdir()
    # the backend rewrites sys.argv while it builds: read the folder first
    backend = "import sys; d = sys.argv[1]; from setuptools import build_meta as b; b.build_wheel(d); b.build_sdist(d)"
    _run([sys.executable, "-c", backend, str(dist)], cwd=src)
    wheel = next(dist.glob("metakd-*.whl"))
    sdist = next(dist.glob("metakd-*.tar.gz"))

    shipped = sorted(str(p.relative_to(ROOT)) for p in CONFIGS.rglob("*.yaml"))
    assert len(shipped) > 100 and any("/distill/" in s for s in shipped) and any("/pretrain/" in s for s in shipped)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert [s for s in shipped if s not in in_wheel] == []
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert [s for s in shipped if s not in in_sdist] == []
    assert "LICENSE" in in_sdist

    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--no-index",
          "--target", str(target), str(wheel)], cwd=elsewhere)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import metakd; from metakd.cli import main; "
             "print('FILE', metakd.__file__); rc = main(['list', 'configs']); "
             "rc = rc or main(['list', 'pretrain-configs']); rc = rc or main(['config', 'maml_glyphs_5w1s']); sys.exit(rc)")
    out = _run([sys.executable, "-c", probe, str(target)], cwd=elsewhere)
    assert f"FILE {target}" in out  # the installed copy ran, not the checkout
    for name in ("maml_glyphs_5w1s", "demo_msd", "pretrain_conv4_glyphs", "inner_lr: 0.4"):
        assert name in out


def test_license_and_citation_file():
    """LICENSE is the MIT text setup.cfg names; CITATION.cff has the keys CFF 1.2.0 requires, of the right
    types, and the package's version."""
    import yaml

    import metakd

    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the metakd authors" in text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and isinstance(cff["title"], str) and cff["message"] and cff["title"]
    assert isinstance(cff["authors"], list) and all(("name" in a) or ("family-names" in a) for a in cff["authors"])
    assert str(cff["version"]) == metakd.__version__ and cff["license"] == "MIT" and cff["type"] == "software"
    allowed = {"abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi", "identifiers",
               "keywords", "license", "license-url", "message", "preferred-citation", "references", "repository",
               "repository-artifact", "repository-code", "title", "type", "url", "version"}
    assert set(cff) <= allowed, set(cff) - allowed
