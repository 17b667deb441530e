#!/usr/bin/env bash
# The GPU half of the performance benchmarks, for a session that is lent a GPU machine.
#
# The lent machine has PyTorch (python3) but no network and none of kornia, learn2learn or
# parallel-metalearn, so their files travel with the working tree:
#
#   bash benchmarks/gpu_half.sh prepare          # here, with package-registry access: files into .cache/gpu_wheels
#   # on the device (carry .cache/gpu_wheels), each command well inside the 10-minute limit:
#   bash benchmarks/gpu_half.sh install && bash benchmarks/gpu_half.sh run check conv4-32
#   bash benchmarks/gpu_half.sh install && bash benchmarks/gpu_half.sh run conv4-64
#   bash benchmarks/gpu_half.sh install && bash benchmarks/gpu_half.sh run resnet12 eval sampler amp
#
# `run` parts: check (gpu_check.py), conv4-32 / conv4-64 / resnet12 (speed_suite.py pieces merged into
# one speed_suite_cuda-<gpu>.json), eval (600 test episodes), sampler (sampler_speed.py), amp
# (amp_accuracy.py). These runs are the measurements to keep: each script gets --update-results, so results
# land in benchmarks/results/ (not the scratch runs/benchmarks/), and are copied to $OUT when it is set.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
files="${GPU_WHEELS:-$here/.cache/gpu_wheels}"
site=/tmp/metakd_site
py="${PYTHON:-python3}"
case "$py" in
  */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;;  # absolute: the build below changes folder
esac
cd "$here"

case "${1:-}" in
  prepare)
    mkdir -p "$files"
    pyv="${2:-3.12}"
    for spec in kornia==0.9.0 kornia_rs==0.2.0 parallel-metalearn==0.5.6 gym_notices==0.1.0; do
      "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyv" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$files" "$spec"
    done
    "$py" -m pip download -q --no-deps --no-binary=:all: -d "$files" gym==0.26.2 learn2learn==0.2.0
    ls -la "$files"
    ;;
  install)
    [ -d "$files" ] || { echo "gpu_half.sh install: $files is missing (run 'prepare' here and carry it)" >&2; exit 1; }
    mkdir -p "$site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$files"/*.whl
    work="$(mktemp -d)"
    for name in gym-0.26.2 learn2learn-0.2.0; do
      tar xzf "$files/$name.tar.gz" -C "$work"
    done
    # learn2learn's shipped C files do not build on Python >= 3.11: regenerate them (see scripts/install_learn2learn.sh).
    (cd "$work/learn2learn-0.2.0" && "$py" -m cython -3 --directive embedsignature=True learn2learn/data/*.pyx)
    for name in gym-0.26.2 learn2learn-0.2.0; do
      "$py" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" "$work/$name"
    done
    PYTHONPATH="$site:$here" "$py" -c "import kornia, learn2learn, metalearn, metakd, torch; print('ready: torch', torch.__version__, 'learn2learn', learn2learn.__version__, 'kornia', kornia.__version__)"
    ;;
  run)
    shift
    export PYTHONPATH="$site:$here" PYTHONUNBUFFERED=1
    for part in "$@"; do
      case "$part" in
        check) "$py" benchmarks/gpu_check.py --update-results || true ;;
        conv4-32|conv4-64) "$py" benchmarks/speed_suite.py --device cuda --configs "$part"'_*' --eval-episodes 0 --merge --update-results ;;
        resnet12) "$py" benchmarks/speed_suite.py --device cuda --configs 'resnet12_*' --eval-episodes 0 --merge --update-results ;;
        eval) "$py" benchmarks/speed_suite.py --device cuda --configs none --eval-episodes 600 --merge --update-results ;;
        sampler) "$py" benchmarks/sampler_speed.py --devices cuda --update-results ;;
        amp) "$py" benchmarks/amp_accuracy.py --device cuda --iterations 2000 --seeds 0 1 2 --update-results ;;
        *) echo "gpu_half.sh run: unknown part $part (check conv4-32 conv4-64 resnet12 eval sampler amp)" >&2; exit 2 ;;
      esac
    done
    if [ -n "${OUT:-}" ]; then
      cp benchmarks/results/*cuda* "$OUT"/ 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: benchmarks/gpu_half.sh prepare | install | run PART..." >&2
    exit 2
    ;;
esac
