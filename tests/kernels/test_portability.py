"""One binary, every x86-64 CPU: the module built here runs on CPUs without AVX-512 and without
AVX2, picking the kernel variant each can run. The lesser CPUs are emulated by Debian's
qemu-user (`make test` installs it); without it these tests skip and say why."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import pytest

import rankme_fast as rf

QEMU = shutil.which("qemu-x86_64")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 CPU models only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not found (apt-get install qemu-user)"),
    pytest.mark.skipif(rf._C is None, reason="rankme_fast._C is not built"),
]

CHECK = """
import numpy as np, torch, rankme_fast as rf
print("isa", rf._C.cpu_isa(), "features", rf._C.cpu_features().replace(" ", ","),
      "tiles", rf._C.cpu_isa_variants().get("amx", False))
rng = np.random.default_rng(0)
z = rng.standard_normal((600, 70)) * np.arange(1, 71) ** -0.5
for dtype in (torch.float64, torch.float32, torch.bfloat16):
    x = torch.from_numpy(z).to(dtype)
    reference = rf.metrics.rankme(np.linalg.svd(x.double().numpy(), compute_uv=False))
    for backend in ("cpu-tiled", "cpu-blas"):
        for precision, tolerance in (("exact", 1e-9), ("fast", 1e-5)):
            value = rf.rankme(x, backend=backend, precision=precision)
            error = abs(value - reference) / reference
            assert error <= tolerance, (dtype, backend, precision, error)
print("ok")
"""


def _under(cpu: str, code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` on qemu's model of `cpu`. OpenBLAS (numpy's and scipy-openblas32) is told the
    core by name: numpy 2.4.6's copy picked its Haswell kernels under the emulated Nehalem
    (OPENBLAS_VERBOSE=2 printed "Core: Haswell") and died at import on the first AVX
    instruction, before any code of this package ran. This package's own dispatch reads cpuid."""
    return subprocess.run(
        [QEMU, "-cpu", cpu, sys.executable, "-c", code],
        env={**os.environ, "OPENBLAS_CORETYPE": cpu, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(("cpu", "expected"), [("Haswell", "avx2"), ("Nehalem", "baseline")])
def test_a_lesser_cpu_runs_the_variant_it_can_and_matches_float64(cpu, expected):
    done = _under(cpu, CHECK)
    assert done.returncode == 0, done.stderr[-2000:]
    words = done.stdout.split()
    assert words[words.index("isa") + 1] == expected, done.stdout
    assert "avx512f" not in words[words.index("features") + 1]
    assert words[words.index("tiles") + 1] == "False"  # the AMX-less models never pick the tile kernel
    assert words[-1] == "ok"


def test_forcing_a_variant_the_cpu_lacks_is_refused_at_import():
    done = _under("Haswell", "import rankme_fast", RANKME_FAST_CPU_ISA="avx512")
    assert done.returncode != 0
    assert "RANKME_FAST_CPU_ISA=avx512: this CPU (or its OS) cannot run the avx512 kernels" in done.stderr
