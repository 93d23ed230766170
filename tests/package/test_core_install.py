"""The core installs alone: into a fresh venv with nothing but its own dependencies (numpy,
torch, scipy-openblas32) the package builds, the core tests pass against the installed copy,
and each layer that needs an extra says which one when imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_TESTS = ["kernels/test_cpu_kernel.py", "core/test_agreement.py", "core/test_bad_input.py",
              "core/test_streaming.py", "core/test_metrics.py", "kernels/test_self_check.py"]  # fmt: skip
EXTRAS = {  # layer -> the extra its ImportError names
    "rankme_fast.scaling": "fit",
    "rankme_fast.audio": "audio",
    "rankme_fast.study": "study",
    "rankme_fast.scoring": "io",
    "rankme_fast.integrations.metric": "train",
}

pytestmark = pytest.mark.slow


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=1200, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_core_alone_installs_imports_and_passes_its_tests(tmp_path):
    source = tmp_path / "source"
    files = _run(["git", "ls-files"], cwd=ROOT).stdout.split()
    if not files:
        pytest.skip("not a git checkout: cannot tell the package's files from build outputs")
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "core"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "torch==2.13.0"])
    env = {**os.environ, "RANKME_FAST_CUDA": "OFF", "RANKME_FAST_REQUIRE_EXTENSION": "1"}
    _run([python, "-m", "pip", "install", "-q", str(source)], env=env)
    installed = _run([python, "-m", "pip", "list", "--format=freeze"]).stdout.lower()
    for extra_only in ("scipy==", "matplotlib==", "tqdm==", "torchmetrics==", "pyarrow=="):
        assert extra_only not in installed, f"the core pulled {extra_only.rstrip('=')}"
    _run([python, "-m", "pip", "install", "-q", "pytest", "hypothesis", "ml_dtypes"])

    for layer, extra in EXTRAS.items():
        done = subprocess.run([python, "-c", f"import {layer}"], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode != 0 and f"pip install 'rankme_fast[{extra}]'" in done.stderr, (layer, done.stderr)

    shutil.copytree(ROOT / "tests", tmp_path / "tests")
    where = _run([python, "-c", "import rankme_fast; print(rankme_fast.__file__)"], cwd=tmp_path).stdout
    assert str(venv) in where  # the installed copy, not the checkout
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "pythonpath=tests",
                           *(f"tests/{t}" for t in CORE_TESTS)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
