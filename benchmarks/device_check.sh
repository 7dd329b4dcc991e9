#!/usr/bin/env bash
# One prepared accelerator check (well inside 8 minutes on one H100): the seven models at native
# input size with random weights; per model feature-extraction images/s in float32 and mixed
# precision, and the cached-versus-ordinary training ratio. Installs nothing.
#   bash benchmarks/device_check.sh            # full setting
#   bash benchmarks/device_check.sh --tiny     # a CPU smoke run in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: $PYTHON when set (the tests pass their own), else ./.venv's, else python3.
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no NVIDIA GPU visible"
export PYTHONUNBUFFERED=1
exec timeout 450 "$PY" benchmarks/device_check.py "$@"
