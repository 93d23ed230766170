"""`rankme-fast score --ci`: the interval of one file is rf.rankme(Z, ci=...)'s; blocks are a
pure function of the position (batch size, resume and torchrun change nothing); by file, each
file in one block; --growth gives RankMe against N; bad options are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from common import make_embeddings

import rankme_fast as rf
from rankme_fast.cli import main as cli
from rankme_fast.scoring import ScoreOptions, score_files

K = 10


def _scored(paths, **options):
    return score_files([str(p) for p in paths], ScoreOptions(progress=False, ci=0.95, **options))


@pytest.fixture
def parts(tmp_path) -> list[np.ndarray]:
    rng = np.random.default_rng(41)
    parts = [(make_embeddings("power_law", n, 24, seed=41 + n) + rng.standard_normal(24)).astype(np.float32)
             for n in (900, 37, 1300)]  # fmt: skip
    for index, part in enumerate(parts):
        np.save(tmp_path / f"p{index}.npy", part)
    return parts


def test_one_file_gives_the_interval_of_rf_rankme(tmp_path, parts):
    estimate = _scored([tmp_path / "p0.npy"], batch_rows=64).intervals["rankme"]
    expected = rf.rankme(parts[0], ci=0.95)
    assert estimate.blocks == K and estimate.count == 900
    assert estimate.value == pytest.approx(expected.value, rel=1e-12)
    assert estimate.standard_error == pytest.approx(expected.standard_error, rel=1e-9)
    assert estimate.interval == pytest.approx(expected.interval, rel=1e-12)


def test_blocks_depend_on_the_position_only(tmp_path, parts):
    """Each file in K runs of rows, file g's run k in block (g + k) mod K: the same rows in the
    same blocks whatever the batch size, so the same interval; centred metrics too."""
    options = {"centered": True, "metrics": ("rankme", "effective_rank")}
    small, large = _scored([tmp_path], batch_rows=7, **options), _scored([tmp_path], batch_rows=5000, **options)
    for name in options["metrics"]:
        assert small.intervals[name].left_out == pytest.approx(large.intervals[name].left_out, rel=1e-10)
    acc = rf.GramAccumulator(centered=True, blocks=K)
    for g, part in enumerate(parts):
        rows = len(part)
        for run in range(K):
            piece = part[run * rows // K : (run + 1) * rows // K]
            if len(piece):
                acc.update(piece, block=(g + run) % K)
    expected = acc.estimate("rankme")
    assert small.intervals["rankme"].left_out == pytest.approx(expected.left_out, rel=1e-10)
    assert small.metrics["rankme"] == pytest.approx(rf.rankme(np.concatenate(parts), centered=True), rel=1e-9)


def test_blocks_by_file_keep_each_file_in_one_block(tmp_path, parts):
    result = _scored([tmp_path], blocks_by="file", blocks=3)
    acc = rf.GramAccumulator(blocks=3)
    for g, part in enumerate(parts):
        acc.update(part, block=g)
    assert result.intervals["rankme"].left_out == pytest.approx(acc.estimate("rankme").left_out, rel=1e-10)


def test_fewer_than_two_blocks_holding_rows_say_so_and_give_no_interval(tmp_path, parts, capsys):
    result = _scored([tmp_path / "p0.npy"], blocks_by="file")
    assert result.intervals is None and result.metrics["rankme"] == pytest.approx(rf.rankme(parts[0]), rel=1e-9)
    assert "no interval: the rows went to 1 of 10 blocks" in capsys.readouterr().err


def test_the_command_prints_and_writes_the_interval_and_the_growth_curve(tmp_path, parts, capsys):
    out = tmp_path / "out.json"
    assert cli(["score", str(tmp_path), "--no-progress", "--ci", "0.9", "--growth", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    interval = result["intervals"]["rankme"]
    assert interval["level"] == 0.9 and interval["blocks"] == K
    assert interval["interval"][0] < result["metrics"]["rankme"] < interval["interval"][1]
    assert f"± {interval['standard_error']:.4g}" in printed and "90 % interval" in printed
    growth = result["growth"]
    assert growth["counts"][-1] == sum(len(p) for p in parts) and len(growth["values"]) == K
    assert growth["values"][-1] == pytest.approx(result["metrics"]["rankme"], rel=1e-12)
    assert "rankme at N = 2,237" in printed


def test_bad_interval_options_are_refused(tmp_path, parts):
    for options, message in [
        ({"ci": 1.5}, "confidence level"),
        ({"ci": 0.95, "blocks": 1}, "blocks >= 2"),
        ({"growth": True}, "growth needs ci"),
        ({"ci": 0.95, "blocks_by": "batch"}, "blocks_by must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            score_files([str(tmp_path)], ScoreOptions(progress=False, **options))


def test_torchrun_two_processes_give_the_interval_of_one(tmp_path, parts):
    out = tmp_path / "two.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "rankme_fast.cli", "score", str(tmp_path), "--ci", "--json", str(out),
               "--no-progress"]  # fmt: skip
    subprocess.run(command, check=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    two = json.loads(out.read_text())["intervals"]["rankme"]
    one = _scored([tmp_path]).intervals["rankme"]
    assert two["standard_error"] == pytest.approx(one.standard_error, rel=1e-6)
    assert two["interval"] == pytest.approx(list(one.interval), rel=1e-9)
