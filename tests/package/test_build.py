"""The native module: built with its parts, clear on call when CUDA cannot be used, and a
clean fallback to the torch backend when it is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import rankme_fast as rf


def test_extension_built():
    assert rf._C is not None, "rankme_fast._C failed to build or import"
    assert rf._C.openmp, "built without OpenMP: the kernels would run on one core"
    assert rf.available_backends()["cpu"] is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_sources_compiled_when_nvcc_present():
    assert rf._C.cuda_compiled


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_call_without_gpu_says_why():
    with pytest.raises(RuntimeError, match=r"CUDA|without CUDA"):
        rf._C.cuda_device_count()


def test_fallback_to_torch_backend_with_one_line_warning():
    code = (
        "import sys, warnings\n"
        "sys.modules['rankme_fast._C'] = None\n"  # makes 'from rankme_fast import _C' fail
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import rankme_fast as rf\n"
        "messages = [str(w.message) for w in caught if 'rankme_fast._C' in str(w.message)]\n"
        "assert len(messages) == 1 and '\\n' not in messages[0], messages\n"
        "print(messages[0])\n"
        "assert rf.available_backends()['cpu'] is not None\n"
        "import numpy as np\n"
        "acc = rf.GramAccumulator().update(np.eye(4))\n"
        "assert acc.last_backend == 'torch' and 'cpu' in acc.not_chosen\n"
        "print(acc.rankme())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "using the torch reference backend" in result.stdout
    assert float(result.stdout.split()[-1]) == pytest.approx(4.0, rel=1e-5)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_offline_venv_sees_the_packages_of_a_venv_interpreter(tmp_path):
    """`make OFFLINE=1` on an image whose torch lives in a venv (a GPU image's python3 may be
    /opt/torch/.venv/bin/python3): the project's venv sees that venv's packages, not only the
    system's (which --system-site-packages alone would give)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(image)], check=True, timeout=120)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([str(image / "bin" / "python"), "-c", purelib], capture_output=True, text=True, check=True)
    (Path(site.stdout.strip()) / "package_of_the_image.py").write_text("")
    venv = tmp_path / "project"
    subprocess.run(["make", "-s", "-C", str(root), "OFFLINE=1", f"PYTHON={image}/bin/python", f"VENV={venv}",
                    f"{venv}/bin/python"], check=True, timeout=300)  # fmt: skip
    found = subprocess.run([str(venv / "bin" / "python"), "-c", "import package_of_the_image"], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert found.returncode == 0, found.stderr
