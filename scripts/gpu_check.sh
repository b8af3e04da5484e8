#!/usr/bin/env bash
# The GPU check: backend parity and ml/llm throughput with every backend available here, one table.
#
#   scripts/gpu_check.sh [--quick] [--repo MODEL_PATH] [--values N] [--json FILE]
#
# On a CUDA machine: PyTorch fp32 (reference), PyTorch fp16, ONNX Runtime CUDA and TensorRT (plans built first
# when tensorrt is installed) for both networks, each checked against the reference within the documented
# tolerance and timed through the serving path (fast tokenizer, dynamic batcher, length bucketing). Without a GPU it
# says so and runs the CPU backends. Needs the dev install (`make install`). Exit status: 0 all within tolerance,
# 1 a backend out of tolerance, 124 over the time limit (GPU_CHECK_TIMEOUT seconds, default 470: under 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found; run 'make install' first (or set PYTHON)" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout --kill-after=15 "${GPU_CHECK_TIMEOUT:-470}" "$PY" scripts/gpu_check.py "$@"
