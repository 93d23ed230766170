"""Streaming keeps O(D²) memory: peak RSS does not grow with the number of rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "stream_memory.py"


def _run(rows: int, dim: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", str(rows), "--dim", str(dim), "--batch", "4096"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_independent_of_rows():
    small, large = _run(50_000, 256), _run(400_000, 256)
    assert large["rows"] == 400_000
    # 400k x 256 float32 would be 390 MiB if kept. What does grow is fixed: two 4 MiB batches
    # alive at once while the next is generated, and OpenBLAS's per-thread buffers.
    assert large["growth_mib"] < 48, large
    assert large["growth_mib"] - small["growth_mib"] < 8, (small, large)
