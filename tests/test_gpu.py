"""The same agreement checks on a CUDA device, and the CUDA kernel (csrc/cuda) itself against
float64 references; skipped cleanly without a GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import (
    DTYPES,
    SPECTRA,
    TOLERANCE,
    condition_class,
    make_embeddings,
    reference_rankme,
    relative_error,
)

import rankme_fast as rf
from rankme_fast.backends import cuda_backend as cuda

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", SPECTRA)
@pytest.mark.parametrize("shape", [(1000, 130), (70, 300), (1, 17)])
def test_cuda_exact_matches_svd(dtype, kind, shape, rng):
    z = torch.from_numpy(make_embeddings(kind, *shape, seed=int(rng.integers(1 << 31)))).to(dtype)
    value = rf.rankme(z.cuda())
    assert relative_error(value, reference_rankme(z)) <= TOLERANCE[condition_class(z)]


def test_cuda_state_stays_on_device_and_streams(rng):
    z = torch.from_numpy(rng.standard_normal((900, 64))).float().cuda()
    acc = rf.GramAccumulator(centered=True)
    for batch in z.split(100):
        acc.update(batch)
    assert acc.device.type == "cuda" and acc.last_backend == "cuda"
    assert "cpu" in acc.not_chosen
    assert relative_error(acc.rankme(), reference_rankme(z.cpu(), centered=True)) <= 1e-9


def test_cuda_runtime_visible_to_native_module():
    if rf._C is None or not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    assert rf._C.cuda_device_count() >= 1


# ---- the CUDA kernel ------------------------------------------------------------------------

VARIANT_NEEDS = {"dmma-16x8x8": 9, "dmma-8x8x4": 8, "simt": 0}  # minimum compute capability major


def _skip_unless_usable(variant: str) -> None:
    if rf._C is None or not rf._C.cuda_compiled:
        pytest.skip("rankme_fast._C built without CUDA")
    if torch.cuda.get_device_capability()[0] < VARIANT_NEEDS[variant]:
        pytest.skip(f"{variant} needs compute capability {VARIANT_NEEDS[variant]}.0")


def _poisoned_state(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random lower triangle (so += is checked) and a sentinel upper triangle (never written)."""
    lower = torch.tril(torch.ones(dim, dim, dtype=torch.bool, device="cuda"))
    start = torch.randn(dim, dim, dtype=torch.float64, device="cuda")
    return torch.where(lower, start, torch.full_like(start, 12345.0)), lower


def _check_added(gram, before, lower, reference, tol=1e-13):
    torch.cuda.synchronize()
    assert torch.equal(gram[~lower], before[~lower]), "the upper triangle was written"
    added = (gram - before)[lower].cpu()
    expected = reference[lower.cpu()]
    assert float((added - expected).norm() / expected.norm().clamp(min=1e-300)) <= tol


def _reference(z: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    x = z.detach().cpu().double()
    if shift is not None:
        x = x - shift.cpu()
    return x.T @ x


@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1000, 130), (257, 300), (33, 1), (4100, 64), (3, 129), (2000, 256)])
def test_cuda_kernel_matches_float64_gram(variant, dtype, shape, rng):
    _skip_unless_usable(variant)
    z = torch.from_numpy(rng.standard_normal(shape)).to(dtype).cuda()
    gram, lower = _poisoned_state(shape[1])
    before = gram.clone()
    used, splits = cuda.syrk_update(z, gram, variant=variant)
    assert used == variant and splits >= 1
    _check_added(gram, before, lower, _reference(z))


@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize("splits", [1, 3, 64])
def test_cuda_kernel_shift_column_sums_and_splits(variant, splits, rng):
    _skip_unless_usable(variant)
    z = torch.from_numpy(rng.standard_normal((3000, 200)) + 40.0).float().cuda()
    shift = torch.from_numpy(rng.standard_normal(200) + 40.0).cuda()
    sums = torch.from_numpy(rng.standard_normal(200)).cuda()
    sums_before = sums.clone()
    gram, lower = _poisoned_state(200)
    before = gram.clone()
    _, used_splits = cuda.syrk_update(z, gram, shift=shift, column_sums=sums, variant=variant, splits=splits)
    assert used_splits == splits
    _check_added(gram, before, lower, _reference(z, shift))
    expected_sums = z.cpu().double().sum(dim=0)
    assert float(((sums - sums_before).cpu() - expected_sums).abs().max()) <= 1e-9 * float(expected_sums.abs().max())


@pytest.mark.parametrize("variant", list(VARIANT_NEEDS))
@pytest.mark.parametrize(
    "view",
    [
        "unaligned_columns", "partial_last_vector", "every_third_row", "column_major", "every_other_column",
        "expanded_rows",
    ],
)  # fmt: skip
def test_cuda_kernel_reads_any_strides(variant, view, rng):
    _skip_unless_usable(variant)
    base = torch.from_numpy(rng.standard_normal((600, 264))).float().cuda()
    z = {
        "unaligned_columns": base[:, 3:131],  # rows 16-byte multiples, start 12 bytes off: scalar loads
        "partial_last_vector": base[:, :134],  # 16-byte loads, then a 2-column group at the edge
        "every_third_row": base[::3],
        "column_major": base.t().contiguous().t(),
        "every_other_column": base[:, ::2],
        "expanded_rows": base[0].expand(50, -1),  # row stride 0
    }[view]
    gram, lower = _poisoned_state(z.shape[1])
    before = gram.clone()
    cuda.syrk_update(z, gram, variant=variant)
    _check_added(gram, before, lower, _reference(z))


def test_cuda_kernel_row_offsets_beyond_32_bits():
    _skip_unless_usable("simt")
    rows, dim = (1 << 31) // 64 + 4096, 64  # the last rows start past element 2^31
    z = torch.randn(rows, dim, device="cuda", dtype=torch.float16)
    gram = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")
    cuda.syrk_update(z, gram)
    reference = torch.zeros_like(gram)
    for chunk in z.split(1 << 22):
        wide = chunk.double()
        reference += wide.T @ wide
    lower = torch.tril(torch.ones(dim, dim, dtype=torch.bool, device="cuda"))
    assert float((gram - reference)[lower].norm() / reference[lower].norm()) <= 1e-12


def test_cuda_backend_is_auto_for_gpu_tensors_in_exact_mode(rng):
    z = torch.from_numpy(rng.standard_normal((700, 90))).float().cuda()
    acc = rf.GramAccumulator().update(z)
    assert acc.last_backend == "cuda"
    assert relative_error(acc.rankme(), reference_rankme(z.cpu())) <= 1e-9


def test_cuda_kernel_refuses_host_memory_with_a_clear_message():
    _skip_unless_usable("simt")
    z = torch.ones(16, 8)
    gram = torch.zeros(8, 8, dtype=torch.float64, device="cuda")
    with pytest.raises(RuntimeError, match="z is not in the memory of CUDA device"):
        rf._C.cuda_syrk_update(z.data_ptr(), rf._C.DTYPE_FLOAT32, 16, 8, 8, 1, gram.data_ptr(), device=0)
    assert not gram.any()


_SANITIZER_SCRIPT = textwrap.dedent(
    """
    import torch
    from rankme_fast.backends import cuda_backend as cuda
    major = torch.cuda.get_device_capability()[0]
    variants = [v for v, need in (("dmma-16x8x8", 9), ("dmma-8x8x4", 8), ("simt", 0)) if major >= need]
    for variant in variants:
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            for rows, dim, splits in ((130, 131, 1), (300, 70, 3)):
                z = torch.randn(rows, dim, device="cuda").to(dtype)
                gram = torch.zeros(dim, dim, dtype=torch.float64, device="cuda")
                sums = torch.zeros(dim, dtype=torch.float64, device="cuda")
                shift = torch.randn(dim, dtype=torch.float64, device="cuda")
                cuda.syrk_update(z[:, 1:], gram[1:, 1:].contiguous(), variant=variant, splits=splits)
                cuda.syrk_update(z, gram, shift=shift, column_sums=sums, variant=variant, splits=splits)
    torch.cuda.synchronize()
    print("done")
    """
)


@pytest.mark.slow
def test_cuda_kernel_is_memcheck_clean():
    _skip_unless_usable("simt")
    sanitizer = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None
    )
    if sanitizer is None:
        pytest.skip("compute-sanitizer is not installed")
    result = subprocess.run(
        [sanitizer, "--tool", "memcheck", "--error-exitcode", "3", sys.executable, "-c", _SANITIZER_SCRIPT],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0 and "done" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in result.stdout + result.stderr


def test_slq_estimate_and_lidar_run_on_the_gpu(rng):
    from rankme_fast import slq
    from rankme_fast.lidar import ClassScatterAccumulator

    z = torch.from_numpy(rng.standard_normal((2000, 300)))
    gram = z.T @ z
    on_cpu = slq.estimate_rankme(gram, count=2000, seed=4)
    on_gpu = slq.estimate_rankme(gram.cuda(), count=2000, seed=4)
    assert on_gpu.value == pytest.approx(on_cpu.value, rel=1e-8)
    labels = torch.from_numpy(rng.integers(0, 10, 2000))
    cpu_lidar = ClassScatterAccumulator(10).update(z, labels).lidar()
    gpu_lidar = ClassScatterAccumulator(10).update(z.cuda(), labels.cuda()).lidar()
    assert gpu_lidar == pytest.approx(cpu_lidar, rel=1e-9)


@pytest.mark.parametrize(("name", "precision"), [("cuda", "exact"), ("cuda", "fast"), ("triton", "fast"),
                                                 ("triton-deterministic", "fast")])  # fmt: skip
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_kernels_pass_their_first_use_self_check(name, precision, dtype):
    from rankme_fast._inputs import dtype_name, kernel_input
    from rankme_fast.backends import _REGISTRY, self_check

    backend = _REGISTRY[name]
    reason = backend.unavailable_reason(kernel_input(torch.zeros(2, 2, dtype=dtype, device="cuda")), precision)
    if reason is not None:
        pytest.skip(reason)
    self_check.forget()
    assert self_check.failure(backend, torch.device("cuda"), dtype_name(dtype), precision) is None
    assert rf.available_backends(precision)[name] is None


# ---- RankMe inside compiled GPU training steps ------------------------------------------------


def test_metric_updates_never_wait_for_the_gpu():
    from rankme_fast.integrations import RankMeMetric

    for centered in (False, True):
        metric = RankMeMetric(64, centered=centered).cuda()  # nonfinite="auto" is "defer" on a GPU
        z = torch.randn(256, 64, device="cuda") + 3.0
        metric.update(z)  # first batch: backend choice and its self-check may read back
        torch.cuda.set_sync_debug_mode("error")
        try:
            for part in z.split(37):
                metric.update(part)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert int(metric.count) == 512
        expected = reference_rankme(torch.cat([z, z]).cpu(), centered)
        assert relative_error(float(metric.compute()), expected) <= 1e-9


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_and_cuda_graph_steps_equal_eager(mode):
    from torch._dynamo.utils import counters

    from rankme_fast.integrations import RankMeMetric

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 256), torch.nn.GELU(), torch.nn.Linear(256, 128)).cuda()
    compiled_metric, eager_metric = RankMeMetric(128).cuda(), RankMeMetric(128).cuda()

    def step(x, metric):
        embeddings = model(x)
        metric.update(embeddings)
        return embeddings.square().mean()

    compiled = torch.compile(step, fullgraph=True, mode=mode)
    inputs = [torch.randn(512, 96, device="cuda") for _ in range(8)]
    counters.clear()
    for x in inputs:
        torch.testing.assert_close(compiled(x, compiled_metric), step(x, eager_metric))
    torch.cuda.synchronize()
    assert counters["stats"]["unique_graphs"] == 1
    if mode == "reduce-overhead":
        assert not counters["inductor"]["cudagraph_skips"], "the step was not captured in a CUDA graph"
    assert int(compiled_metric.count) == int(eager_metric.count) == 8 * 512
    assert relative_error(float(compiled_metric.compute()), float(eager_metric.compute())) <= 1e-9


def _nccl_worker(rank: int, init_file: str, result_dir: str) -> None:
    import datetime
    import traceback
    from pathlib import Path

    import torch.distributed as dist
    from test_distributed import _data, _shard

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

    from test_distributed import _data

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
