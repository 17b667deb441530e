#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv inside this checkout and installs metakd into it.
#
#   scripts/setup.sh            torch 2.14.1 + torchvision 0.29.1 (pinned), metakd and its test tools
#   scripts/setup.sh --l2l      the same, plus learn2learn 0.2.0 (scripts/install_learn2learn.sh)
#
# A second run is a no-op unless setup.cfg or this script changed.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
want_l2l=0
for arg in "$@"; do
  case "$arg" in
    --l2l) want_l2l=1 ;;
    *) echo "scripts/setup.sh: unknown option $arg (expected --l2l)" >&2; exit 2 ;;
  esac
done

py=""
for cand in python3.11 python3.12 python3.10 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    py="$cand"; break
  fi
done
[ -n "$py" ] || { echo "scripts/setup.sh: Python >= 3.10 is required" >&2; exit 1; }

say() { echo "[setup] $*"; }  # what is happening during the quiet minutes (pip runs with -q)

if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=.venv/.metakd-setup
digest="$(cat setup.cfg scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  say "upgrading pip in .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # Pinned: on x86_64 with Python 3.11 these come from local files; a looser pin may download GBs.
  say "installing torch 2.14.1 and torchvision 0.29.1 (the longest step: up to a minute from local wheel files, longer when pip downloads them)"
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  say "installing metakd (editable) with kornia, matplotlib and the test tools (pytest, hypothesis, scipy, tensorboard)"
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$digest" > "$stamp"
else
  say ".venv is up to date (setup.cfg and scripts/setup.sh unchanged since the last run)"
fi
if [ "$want_l2l" = 1 ]; then
  bash scripts/install_learn2learn.sh .venv/bin/python
fi
say "ready: .venv/bin/metakd (try .venv/bin/metakd demo) and .venv/bin/python -m pytest -q tests"
