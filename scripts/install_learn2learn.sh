#!/usr/bin/env bash
# Installs learn2learn 0.2.0 (interop target and reference implementation, not a core dependency).
#
# Its PyPI release is source-only and its pre-generated Cython C files include `longintrepr.h`, which
# Python >= 3.11 no longer has. We download the sdist, regenerate the C sources of the three
# learn2learn/data/*.pyx files with a current Cython, build a wheel once (cached under
# .cache/wheels/), and install it without its heavy optional dependencies (gsutil, qpth): only what
# `import learn2learn` needs.
#
#   usage: scripts/install_learn2learn.sh [PYTHON]     (default: .venv/bin/python of this checkout)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-$here/.venv/bin/python}"
case "$py" in
  */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;;  # absolute: the build below changes folder
esac
version=0.2.0
wheels="$here/.cache/wheels"

say() { echo "[learn2learn] $*"; }  # what is happening during the quiet minutes (pip runs with -q)

if "$py" -c "import learn2learn, sys; sys.exit(learn2learn.__version__ != '$version')" 2>/dev/null; then
  say "learn2learn $version already installed"
  exit 0
fi
mkdir -p "$wheels"
wheel="$(ls "$wheels"/learn2learn-$version-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$wheel" ]; then
  say "building learn2learn $version from source once (about 2 minutes; the wheel is kept in .cache/wheels/ for later runs)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  say "installing the build tools (cython, setuptools, wheel, numpy)"
  "$py" -m pip install -q "cython>=3" setuptools wheel numpy
  say "downloading the learn2learn $version source release"
  "$py" -m pip download -q --no-deps --no-binary :all: "learn2learn==$version" -d "$work"
  tar xzf "$work/learn2learn-$version.tar.gz" -C "$work"
  src="$work/learn2learn-$version"
  # Regenerate the C sources with the installed Cython (the shipped ones target CPython <= 3.10).
  say "regenerating its Cython C sources for this Python (the shipped ones do not compile on Python >= 3.11)"
  (cd "$src" && "$py" -m cython -3 --directive embedsignature=True learn2learn/data/*.pyx)
  say "compiling the wheel (the longest step)"
  "$py" -m pip wheel -q --no-deps --no-build-isolation "$src" -w "$wheels"
  wheel="$(ls "$wheels"/learn2learn-$version-*.whl | head -n 1)"
fi
say "installing $(basename "$wheel")"
"$py" -m pip install -q --no-deps "$wheel"
# What `import learn2learn` imports (its gym, vision and data subpackages), without gsutil or qpth.
say "installing what 'import learn2learn' needs (numpy, scipy, requests, tqdm, gym 0.26)"
log="$(mktemp)"
if ! "$py" -m pip install -q numpy scipy requests tqdm "gym>=0.26,<0.27" 2>"$log"; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
# pip then reports, in red, that learn2learn's declared dependencies gsutil and qpth are missing. They are left
# out on purpose (cloud downloads and a QP layer that metakd never calls), so that expected note is dropped here
# and any other message is shown.
grep -v -e "^ERROR: pip's dependency resolver does not currently take into account" \
        -e "^learn2learn $version requires \(gsutil\|qpth\)" "$log" >&2 || true
rm -f "$log"
say "left out on purpose: learn2learn's optional dependencies gsutil and qpth (\`pip check\` will name them)"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$py" -c "from metakd.data.learn2learn_tasks import import_learn2learn; \
l2l = import_learn2learn(); print('[learn2learn]', 'learn2learn', l2l.__version__, 'installed from', '$wheel')"
