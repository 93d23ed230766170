#!/usr/bin/env bash
# The one script for a GPU lent for minutes: build, the GPU tests, the quick benchmark. Every
# part writes into OUT_DIR as it goes (a run cut off still leaves what it reached) and each has
# its own time limit, so one that hangs cannot eat the others' time:
#
#   build.log      make OFFLINE=1 (the image's torch, Triton and nvcc; nothing downloaded),
#                  CUDA code for this GPU's arch only                       (limit 4 min)
#   tests.xml      junit XML of the GPU test files (bench/bench_gpu.py's GPU_TESTS, not the slow
#   tests.log      ones), stopped at the first 5 failures                   (limit 4 min)
#   gpu.json       bench/bench_gpu.py --quick: each section merged in as it ends, with the
#   gpu-training.json  test summary; the training section's own file beside it
#   bench.log                                                               (limit 5 min)
#   summary.txt    what each part returned
#
#   scripts/gpu_run.sh OUT_DIR          (PYTHON=python3 by default: the interpreter with torch)
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: scripts/gpu_run.sh OUT_DIR}")
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

note "start $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null)"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . || true)
if [ -z "${RANKME_FAST_CUDA_ARCHITECTURES:-}" ] && [ -n "$arch" ]; then
  export RANKME_FAST_CUDA_ARCHITECTURES="${arch}-real"
fi
started=$SECONDS
timeout 240 make OFFLINE=1 PYTHON="$python" .venv/.installed >"$out/build.log" 2>&1
note "build: exit $? after $((SECONDS - started)) s (CUDA arch ${RANKME_FAST_CUDA_ARCHITECTURES:-CMakeLists default})"

started=$SECONDS
tests=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import bench_gpu; print(*bench_gpu.GPU_TESTS)")
# shellcheck disable=SC2086  # the test files are words
timeout 240 .venv/bin/python -m pytest -q -m "not slow" --maxfail 5 --junitxml "$out/tests.xml" $tests \
  >"$out/tests.log" 2>&1
status=$?
note "tests: exit $status after $((SECONDS - started)) s: $(tail -n 1 "$out/tests.log")"
.venv/bin/python -c 'import json, sys; print(json.dumps({"command": "pytest -q -m \"not slow\" " + sys.argv[1],
  "returncode": int(sys.argv[2]), "summary": sys.argv[3]}))' "$tests" "$status" "$(tail -n 1 "$out/tests.log")" \
  >.venv/gpu-tests.json

started=$SECONDS
timeout 300 .venv/bin/python bench/bench_gpu.py --no-build --quick --tests .venv/gpu-tests.json --out "$out/gpu.json" \
  >"$out/bench.log" 2>&1
note "bench --quick: exit $? after $((SECONDS - started)) s"
note "end $(date -u +%FT%TZ)"
