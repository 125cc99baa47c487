#!/usr/bin/env bash
# The prepared GPU check (docs/gpu_path.md): SmolLM2-135M in bf16 on one GPU, CDs split, <= 8 minutes.
#   bench/gpu_check.sh [--data CDS_SPLIT_DIR] [--gpu h100|h200|a100]     on a GPU machine
#   bench/gpu_check.sh --tiny                                            on a CPU (what the tests run)
# Writes results/gpu_check/gpu_check.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
PY_DIR="$(cd "$(dirname "$(command -v "$PY")")" && pwd)"  # absolute: the jobs run in other folders
export PATH="$PY_DIR:$PATH"
exec "$PY" bench/gpu_check.py "$@"
