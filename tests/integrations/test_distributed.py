"""Two processes with the gloo backend (spawned, bounded time), each feeding a different
shard: the synced result equals the single-process one on all the data, including when a
rank feeds no rows, and ranks that disagree fail alike with the state kept."""

from __future__ import annotations

import datetime
import multiprocessing
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from common import make_embeddings, relative_error

import rankme_fast as rf

pytest.importorskip("torchmetrics")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

WORLD = 2
TIMEOUT_S = 180
N, D, SPLIT = 600, 48, 380  # rank 0 holds rows [0, SPLIT), rank 1 the rest
CAP = 301  # max_samples over both ranks: 151 from rank 0, 150 from rank 1
BLOCKS, BATCH = 4, 50  # block states for error bars, fed batches of BATCH rows in turn on each rank


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Power-law rows, and rows with |mean| ~ 1e4 x their spread (for the Chan merge)."""
    plain = torch.from_numpy(make_embeddings("power_law", N, D, seed=21))
    rng = np.random.default_rng(22)
    shifted = torch.from_numpy(1e4 * rng.standard_normal(D) + rng.standard_normal((N, D)) * np.linspace(1, 0.01, D))
    return plain, shifted


def _shard(z: torch.Tensor, rank: int) -> torch.Tensor:
    return z[:SPLIT] if rank == 0 else z[SPLIT:]


def _scenarios(rank: int) -> dict[str, object]:
    """Runs on every rank; returns what the parent checks."""
    from rankme_fast.integrations import RankMeMetric, RankMeRecorder

    plain, shifted = _data()
    out: dict[str, object] = {}
    for centered, z in ((False, plain), (True, shifted)):
        acc = rf.GramAccumulator(centered=centered).update(_shard(z, rank))
        out[f"accumulator_centered={centered}"] = acc.all_reduce().rankme()

        metric = RankMeMetric(centered=centered)
        for batch in _shard(z, rank).split(64):
            metric.update(batch.float())
        out[f"metric_centered={centered}"] = float(metric.compute())
        out[f"metric_local_count_after_sync_centered={centered}"] = int(metric.count)

    # rank 1 feeds no rows: first by never calling update, then with an empty batch
    idle = RankMeMetric()
    if rank == 0:
        idle.update(plain[:SPLIT])
    out["idle_rank_never_updates"] = float(idle.compute())
    idle_empty = RankMeMetric(centered=True)
    idle_empty.update(shifted[:SPLIT] if rank == 0 else shifted[:0])
    out["idle_rank_empty_batch"] = float(idle_empty.compute())

    capped = RankMeMetric(max_samples=CAP)
    for batch in _shard(plain, rank).split(50):
        capped.update(batch)
    out["capped_local_count"] = int(capped.count)
    out["capped"] = float(capped.compute())

    import warnings

    dirty = RankMeMetric(nonfinite="drop")  # rank 0 feeds 1 row with NaN, rank 1 feeds 2
    rows = _shard(plain, rank).clone()
    rows[[1, 5][: rank + 1], 0] = float("nan")
    for batch in rows.split(64):
        dirty.update(batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["dropped_value"] = float(dirty.compute())
    out["dropped_warnings"] = [str(w.message) for w in caught]
    out["dropped_local_count"] = int(dirty.nonfinite_rows)

    layer = torch.nn.Identity()
    with RankMeRecorder(layer) as recorder:
        for batch in _shard(plain, rank).split(100):
            layer(batch)
    out["recorder"] = recorder.rankme()
    out["recorder_local_count"] = recorder.count

    # block states for error bars: each rank's batches go to blocks 0, 1, ... in turn
    for centered, z in ((False, plain), (True, shifted)):
        blocked = rf.GramAccumulator(centered=centered, blocks=BLOCKS)
        for batch in _shard(z, rank).split(BATCH):
            blocked.update(batch)
        out[f"blocked_accumulator_centered={centered}"] = blocked.all_reduce().rankme(ci=0.95).left_out
        with_ci = RankMeMetric(centered=centered, ci=0.95, blocks=BLOCKS)
        for batch in _shard(z, rank).split(BATCH):
            with_ci.update(batch)
        out[f"blocked_metric_centered={centered}"] = {k: float(v) for k, v in with_ci.compute().items()}

    # ranks disagree on D: both raise, both keep their state
    mismatched = rf.GramAccumulator().update(torch.randn(10, 8 + rank, dtype=torch.float64))
    before = mismatched.gram().clone()
    try:
        mismatched.all_reduce()
        out["mismatch"] = "no error"
    except ValueError as error:
        out["mismatch"] = str(error)
    out["mismatch_state_kept"] = bool(torch.equal(mismatched.gram(), before)) and mismatched.count == 10
    return out


def _worker(rank: int, init_file: str, result_dir: str) -> None:
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{init_file}",
            rank=rank,
            world_size=WORLD,
            timeout=datetime.timedelta(seconds=TIMEOUT_S // 2),
        )
        torch.set_num_threads(1)
        result = _scenarios(rank)
        dist.destroy_process_group()
    except BaseException:
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(result_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, object]]:
    directory = tmp_path_factory.mktemp("gloo")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(rank, str(directory / "store"), str(directory))) for rank in range(WORLD)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    for process in processes:
        if process.is_alive():
            process.kill()
    assert all(p.exitcode == 0 for p in processes), f"exit codes {[p.exitcode for p in processes]}"
    results = [torch.load(directory / f"rank{rank}.pt") for rank in range(WORLD)]
    for rank, result in enumerate(results):
        assert "error" not in result, f"rank {rank} failed:\n{result['error']}"
    return results


def _close(value: object, expected: float, tol: float = 1e-9) -> bool:
    return abs(float(value) - expected) <= tol * abs(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("centered", [False, True])
def test_all_reduce_equals_one_process(ranks, centered):
    plain, shifted = _data()
    expected = rf.rankme(shifted if centered else plain, centered=centered)
    for result in ranks:
        assert _close(result[f"accumulator_centered={centered}"], expected)


@pytest.mark.parametrize("centered", [False, True])
def test_metric_sync_equals_one_process_and_keeps_the_local_state(ranks, centered):
    plain, shifted = _data()
    expected = rf.rankme((shifted if centered else plain).float(), centered=centered)
    for rank, result in enumerate(ranks):
        assert _close(result[f"metric_centered={centered}"], expected)
        assert result[f"metric_local_count_after_sync_centered={centered}"] == len(_shard(plain, rank))


def test_a_rank_with_no_rows(ranks):
    plain, shifted = _data()
    for result in ranks:
        assert _close(result["idle_rank_never_updates"], rf.rankme(plain[:SPLIT]))
        assert _close(result["idle_rank_empty_batch"], rf.rankme(shifted[:SPLIT], centered=True))


def test_max_samples_counts_over_all_ranks(ranks):
    plain, _ = _data()
    assert [result["capped_local_count"] for result in ranks] == [151, 150]
    expected = rf.rankme(torch.cat([plain[:151], plain[SPLIT : SPLIT + 150]]))
    assert all(_close(result["capped"], expected) for result in ranks)


def test_rows_left_out_for_nan_are_summed_over_ranks(ranks):
    plain, _ = _data()
    clean = torch.cat([plain[:1], plain[2:SPLIT], plain[SPLIT : SPLIT + 1], plain[SPLIT + 2 : SPLIT + 5],
                       plain[SPLIT + 6 :]])  # fmt: skip
    for rank, result in enumerate(ranks):
        assert any("3 rows holding NaN or Inf were left out" in m for m in result["dropped_warnings"])
        assert _close(result["dropped_value"], rf.rankme(clean))
        assert result["dropped_local_count"] == rank + 1  # the local state is restored after the sync


def test_recorder_syncs_without_changing_the_local_state(ranks):
    plain, _ = _data()
    for rank, result in enumerate(ranks):
        assert _close(result["recorder"], rf.rankme(plain))
        assert result["recorder_local_count"] == len(_shard(plain, rank))


@pytest.mark.parametrize("centered", [False, True])
def test_block_states_are_reduced_block_by_block(ranks, centered):
    """Block k after the reduction holds block k of every rank: the jackknife of one process
    that put the same batches in the same blocks."""
    z = _data()[1 if centered else 0]
    reference = rf.GramAccumulator(centered=centered, blocks=BLOCKS)
    for rank in range(WORLD):
        for index, batch in enumerate(_shard(z, rank).split(BATCH)):
            reference.update(batch, block=index % BLOCKS)
    expected = reference.rankme(ci=0.95)
    for result in ranks:
        assert result[f"blocked_accumulator_centered={centered}"] == pytest.approx(expected.left_out, rel=1e-9)
        logged = result[f"blocked_metric_centered={centered}"]
        assert logged["rankme"] == pytest.approx(expected.value, rel=1e-9)
        assert logged["rankme_se"] == pytest.approx(expected.standard_error, rel=1e-6)
        assert (logged["rankme_low"], logged["rankme_high"]) == pytest.approx(expected.interval, rel=1e-9)


def test_ranks_that_disagree_on_d_all_raise_and_keep_their_state(ranks):
    for result in ranks:
        assert "rank 0: D=8, rank 1: D=9" in str(result["mismatch"])
        assert result["mismatch_state_kept"]


def _nccl_worker(rank: int, init_file: str, result_dir: str) -> None:
    import datetime
    import traceback
    from pathlib import Path

    import torch.distributed as dist

    from rankme_fast.integrations import RankMeMetric

    try:
        torch.cuda.set_device(rank)
        dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=120))  # fmt: skip
        out = {}
        for centered, z in zip((False, True), _data(), strict=True):
            metric = RankMeMetric(z.shape[1], centered=centered).cuda()
            for batch in _shard(z, rank).split(64):
                metric.update(batch.float().cuda())
            out[centered] = float(metric.compute())
        dist.destroy_process_group()
    except BaseException:
        out = {"error": traceback.format_exc()}
    torch.save(out, Path(result_dir) / f"rank{rank}.pt")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two-process NCCL needs two GPUs")
def test_two_process_nccl_equals_one_process(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_nccl_worker, args=(r, str(tmp_path / "store"), str(tmp_path))) for r in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for result in results:
        assert "error" not in result, result.get("error")
        for centered, z in zip((False, True), _data(), strict=True):
            assert relative_error(result[centered], rf.rankme(z.float(), centered=centered)) <= 1e-9
