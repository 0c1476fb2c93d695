#!/usr/bin/env bash
# The prepared GPU check (at most 8 minutes): one table of figures, see benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh --prepare   copy the real sweep from ../shared into .gpu_data/
#                                            (git-ignored; carry it to a machine that gets only the repo)
#   bash benchmarks/gpu_check.sh [--quick]   run; prints "no CUDA" and exits 0 without a CUDA device
#
# Needs Python with PyTorch (PYTHON, else the project's .venv, else python3) and the repository
# on PYTHONPATH (set here): no venv, no ROS and no package index are needed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SWEEP="$ROOT/../shared/data/mmdet3d/demo/data/nuscenes"
LIMIT_S=480

if [ "${1:-}" = "--prepare" ]; then
  [ -d "$SWEEP" ] || { echo "gpu_check: $SWEEP not found" >&2; exit 2; }
  mkdir -p "$ROOT/.gpu_data/nuscenes"
  cp "$SWEEP"/*.pkl "$SWEEP"/*LIDAR_TOP*.pcd.bin "$ROOT/.gpu_data/nuscenes/"
  echo "gpu_check: real sweep copied to .gpu_data/nuscenes ($(du -sh "$ROOT/.gpu_data" | cut -f1))"
  exit 0
fi

PY="${PYTHON:-}"
[ -n "$PY" ] || { [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"; } || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA (torch.cuda.is_available() is False)"
  exit 0
fi
exec timeout --signal=INT --kill-after=20 "$LIMIT_S" "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
