"""Streaming SYRK in Triton: gram[lower] += (Z - shift)ᵀ (Z - shift) for one batch.

* A 2-D grid: axis 0 walks the lower-triangle tiles only (T = nb(nb+1)/2 ids, no early exits,
  in bands of tile rows for L2 reuse), axis 1 the row splits (split-N) used when T alone
  cannot fill the GPU.
* The dtype cast and the shift are fused into the load; products run on tensor cores with
  float32 accumulation (fp16/bf16 natively, fp32 via tf32x3 or ieee as asked).
* Each program adds its float32 tile into the float64 state with float64 atomic adds (one
  add per entry and split: with one split the result is deterministic), or, with
  `deterministic=True` and several splits, a per-split float32 workspace reduced in a fixed
  order by a second kernel. (A read-add-write of the float64 tile spilled registers at 128-wide
  tiles.)
* Optional fused column sums (from the diagonal tiles), added into a float64 vector.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from rankme_fast.backends.syrk_arguments import check_syrk_arguments

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FP32_PRECISIONS = ("tf32x3", "ieee", "tf32")

ATOMIC, WORKSPACE = 0, 1  # the two epilogues (MODE)
# Triton reads TRITON_INTERPRET when it is imported, as this module does
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
TILE_GROUP = 8  # tile rows per band of the launch order
_ROW_ALIGN = 256  # split boundaries are multiples of every BLOCK_K tried
_INTERPRETER_CONFIG = {"BLOCK_K": 32}
REDUCE_ROWS = 16  # tile rows per program of the split reduction


@triton.jit
def _tile_coords(t):
    """Lower-triangle tile id -> (i, j), j <= i, ordered row by row."""
    i = ((tl.sqrt((8 * t + 1).to(tl.float32)) - 1.0) * 0.5).to(tl.int32)
    i = tl.where(i * (i + 1) // 2 > t, i - 1, i)  # undo float rounding either way
    i = tl.where((i + 1) * (i + 2) // 2 <= t, i + 1, i)
    return i, t - i * (i + 1) // 2


@triton.jit
def _grouped_tile_coords(t, n_blocks, GROUP: tl.constexpr):
    """Tile id -> (i, j), j <= i, in bands of GROUP tile rows walked column by column, so the
    programs running at one time share few column blocks of Z (L2 reuse, as GEMM swizzles do).
    Band b holds the ids from T(bG) on, T(x) = x(x+1)/2: first the full columns j < bG (h tiles
    each, h = rows in the band), then the band's own small triangle, row by row."""
    row, _ = _tile_coords(t)
    first = (row // GROUP) * GROUP
    height = tl.maximum(tl.minimum(GROUP, n_blocks - first), 1)  # ids past the last tile stay finite
    local = t - first * (first + 1) // 2
    before_diagonal = first * height
    r, c = _tile_coords(tl.maximum(local - before_diagonal, 0))
    in_columns = local < before_diagonal
    i = tl.where(in_columns, first + local % height, first + r)
    j = tl.where(in_columns, local // height, first + c)
    return i, j


@triton.jit
def _syrk_kernel(
    z_ptr, n_rows, n_cols, stride_n, stride_d, rows_per_split,
    shift_ptr, gram_ptr, colsum_ptr, ws_ptr, ws_col_ptr,
    HAS_SHIFT: tl.constexpr, COLSUM: tl.constexpr, MODE: tl.constexpr, WIDE_OFFSETS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, GROUP: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    split = tl.program_id(1)
    i, j = _grouped_tile_coords(t, tl.cdiv(n_cols, BLOCK), GROUP)
    cols_i = i * BLOCK + tl.arange(0, BLOCK)
    cols_j = j * BLOCK + tl.arange(0, BLOCK)
    in_i = cols_i < n_cols
    in_j = cols_j < n_cols
    if WIDE_OFFSETS:  # (D-1)·stride_d ≥ 2³¹ (say, column-major input of many rows): 64-bit offsets
        offsets_i = cols_i.to(tl.int64) * stride_d
        offsets_j = cols_j.to(tl.int64) * stride_d
    else:  # 32-bit: fewer registers (64-bit ones made 128-wide tiles spill)
        offsets_i = cols_i * stride_d
        offsets_j = cols_j * stride_d
    if HAS_SHIFT:
        shift_i = tl.load(shift_ptr + cols_i, mask=in_i, other=0.0).to(tl.float32)
        shift_j = tl.load(shift_ptr + cols_j, mask=in_j, other=0.0).to(tl.float32)
    row_start = split * rows_per_split
    row_end = tl.minimum(n_rows, row_start + rows_per_split)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    col_sum = tl.zeros((BLOCK,), dtype=tl.float32)
    for k0 in range(row_start, row_end, BLOCK_K):
        rows = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        in_rows = rows < row_end
        mask_i = in_rows[:, None] & in_i[None, :]
        mask_j = in_rows[:, None] & in_j[None, :]
        a = tl.load(z_ptr + rows[:, None] * stride_n + offsets_i[None, :], mask=mask_i, other=0.0)
        b = tl.load(z_ptr + rows[:, None] * stride_n + offsets_j[None, :], mask=mask_j, other=0.0)
        if COLSUM:  # kept by the diagonal tile only (cheap: 1/BLOCK of the dot's work)
            col_sum += tl.sum(a.to(tl.float32), axis=0)
        if HAS_SHIFT:
            a = tl.where(mask_i, a.to(tl.float32) - shift_i[None, :], 0.0).to(z_ptr.dtype.element_ty)
            b = tl.where(mask_j, b.to(tl.float32) - shift_j[None, :], 0.0).to(z_ptr.dtype.element_ty)
        acc = tl.dot(tl.trans(a), b, acc, input_precision=INPUT_PRECISION)

    out_mask = in_i[:, None] & in_j[None, :] & (cols_i[:, None] >= cols_j[None, :])
    if MODE == 1:
        tile = (split * tl.num_programs(0) + t).to(tl.int64) * BLOCK * BLOCK
        offs = tl.arange(0, BLOCK)[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
        tl.store(ws_ptr + tile + offs, acc)
        if COLSUM:
            tl.store(ws_col_ptr + split.to(tl.int64) * n_cols + cols_i, col_sum, mask=in_i & (cols_i == cols_j))
    else:
        offs = cols_i.to(tl.int64)[:, None] * n_cols + cols_j[None, :]
        tl.atomic_add(gram_ptr + offs, acc.to(tl.float64), mask=out_mask)
        if COLSUM:
            tl.atomic_add(colsum_ptr + cols_i, col_sum.to(tl.float64), mask=in_i & (cols_i == cols_j))


@triton.jit
def _reduce_splits_kernel(
    ws_ptr, gram_ptr, n_cols, n_splits, BLOCK: tl.constexpr, ROWS: tl.constexpr, GROUP: tl.constexpr
):
    """gram[tile t, lower] += sum over splits s = 0, 1, ... (in that order) of ws[s, t]. Program
    (t, p) takes ROWS rows of tile t: a float64 sum of a whole 128-wide tile would not fit in a
    program's registers."""
    t = tl.program_id(0)
    i, j = _grouped_tile_coords(t, tl.cdiv(n_cols, BLOCK), GROUP)
    local = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    cols_i = i * BLOCK + local
    cols_j = j * BLOCK + tl.arange(0, BLOCK)
    offs = local[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    total = tl.zeros((ROWS, BLOCK), dtype=tl.float64)
    for s in range(n_splits):
        tile = (s * tl.num_programs(0) + t).to(tl.int64) * BLOCK * BLOCK
        total += tl.load(ws_ptr + tile + offs).to(tl.float64)
    mask = (cols_i[:, None] < n_cols) & (cols_j[None, :] < n_cols) & (cols_i[:, None] >= cols_j[None, :])
    dst = gram_ptr + cols_i.to(tl.int64)[:, None] * n_cols + cols_j[None, :]
    tl.store(dst, tl.load(dst, mask=mask, other=0.0) + total, mask=mask)


# (BLOCK_K, warps, stages). Each tile width keeps the configs that compile on sm_80 and sm_90
# within the shared memory of a block and without spilling registers (bench/gpu_compile.py
# checks every one and records the figures; tests/kernels/test_gpu_compile.py keeps it so): 4 warps
# cannot hold a 128-wide float32 tile, and float32 input needs half the depth of 16-bit input.
CONFIGS = {
    (64, "16-bit"): [(32, 4, 4), (64, 4, 3), (64, 8, 3), (32, 8, 4), (128, 8, 2)],
    (64, "float32"): [(32, 4, 4), (32, 8, 4)],
    (128, "16-bit"): [(64, 8, 3), (32, 8, 4)],
    (128, "float32"): [(32, 8, 4)],
}


def configs_for(block: int, dtype: torch.dtype) -> list[tuple[int, int, int]]:
    """The (BLOCK_K, warps, stages) tried for a tile width and input dtype."""
    return CONFIGS[(block, "float32" if dtype == torch.float32 else "16-bit")]


def _keep(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    allowed = configs_for(kwargs["BLOCK"], named_args["z_ptr"].dtype)
    return [c for c in configs if (c.kwargs["BLOCK_K"], c.num_warps, c.num_stages) in allowed]


_ALL_CONFIGS = sorted({config for configs in CONFIGS.values() for config in configs})
# Tuned per (D, every constexpr that changes the compiled program, dtype of every tensor
# argument); the state is restored after each trial run.
_syrk_tuned = triton.autotune(
    [triton.Config({"BLOCK_K": k}, num_warps=w, num_stages=s) for k, w, s in _ALL_CONFIGS],
    key=["n_cols", "HAS_SHIFT", "COLSUM", "MODE", "WIDE_OFFSETS", "INPUT_PRECISION", "BLOCK"],
    prune_configs_by={"early_config_prune": _keep},
    restore_value=["gram_ptr", "colsum_ptr", "ws_ptr", "ws_col_ptr"],
)(_syrk_kernel)


def tile_size(dim: int, shifted: bool = False, wide_offsets: bool = False) -> int:
    """Square tile edge: 32 under the interpreter; on a GPU 128 from D=1024 on, else 64, and 64
    for shifted (centred) batches or 64-bit column offsets, whose extra registers spill at 128."""
    if _INTERPRETED:
        return 32
    return 64 if dim < 1024 or shifted or wide_offsets else 128


def needs_wide_offsets(z: torch.Tensor) -> bool:
    """Whether an element offset along a row of z can reach 2³¹ (then 64-bit column offsets)."""
    return (z.shape[1] - 1) * abs(z.stride(1)) >= 2**31


def triangle_tiles(dim: int, block: int) -> int:
    blocks = -(-dim // block)
    return blocks * (blocks + 1) // 2


def default_splits(rows: int, tiles: int, device: torch.device) -> int:
    """Row splits so that tiles x splits fills the GPU about twice, each split ≥ 4 chunks."""
    if device.type != "cuda":
        return 1
    target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    by_work = max(1, rows // (4 * _ROW_ALIGN))
    return max(1, min(math.ceil(target / tiles), by_work))


def syrk_update(
    z: torch.Tensor,
    gram: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    column_sums: torch.Tensor | None = None,
    input_precision: str = "tf32x3",
    deterministic: bool = False,
    splits: int | None = None,
) -> None:
    """gram[lower] += (z - shift)ᵀ (z - shift); column_sums += Σ_rows z when given.

    z: (N, D) float32/float16/bfloat16, any strides; gram: (D, D) contiguous float64; shift
    and column_sums: (D,) float64; all on one device. `input_precision` applies to float32
    input ("tf32x3" ≈ fp32 accuracy on tensor cores, "ieee", or "tf32"). `splits` overrides
    the split-N heuristic. The upper triangle of gram is never written.
    """
    _check(z, gram, shift, column_sums, input_precision, splits)
    if z.shape[0] == 0:
        return
    if _INTERPRETED and z.dtype == torch.bfloat16:
        z = z.float()  # the interpreter computes with numpy, which has no bfloat16
    rows, dim = z.shape
    wide = needs_wide_offsets(z)
    block = tile_size(dim, shifted=shift is not None, wide_offsets=wide)
    tiles = triangle_tiles(dim, block)
    n_splits = splits if splits is not None else default_splits(rows, tiles, z.device)
    n_splits = max(1, min(n_splits, -(-rows // _ROW_ALIGN)))
    rows_per_split = -(-rows // (n_splits * _ROW_ALIGN)) * _ROW_ALIGN
    n_splits = -(-rows // rows_per_split)
    mode = WORKSPACE if deterministic and n_splits > 1 else ATOMIC

    placeholder = gram.new_zeros(1)
    ws = ws_col = placeholder
    if mode == WORKSPACE:
        ws = torch.empty(n_splits * tiles * block * block, dtype=torch.float32, device=z.device)
        if column_sums is not None:
            ws_col = torch.zeros(n_splits, dim, dtype=torch.float32, device=z.device)
    args = (
        z, rows, dim, z.stride(0), z.stride(1), rows_per_split,
        placeholder if shift is None else shift, gram,
        placeholder if column_sums is None else column_sums, ws, ws_col,
    )  # fmt: skip
    meta = {
        "HAS_SHIFT": shift is not None,
        "COLSUM": column_sums is not None,
        "MODE": mode,
        "WIDE_OFFSETS": wide,
        "INPUT_PRECISION": input_precision if z.dtype == torch.float32 else "ieee",
        "BLOCK": block,
        "GROUP": TILE_GROUP,
    }
    grid = (tiles, n_splits)
    if _INTERPRETED:
        _syrk_kernel[grid](*args, **meta, **_INTERPRETER_CONFIG)
    else:
        _syrk_tuned[grid](*args, **meta, enable_fp_fusion=True)
    if mode == WORKSPACE:
        reduce_grid = (tiles, block // REDUCE_ROWS)
        _reduce_splits_kernel[reduce_grid](ws, gram, dim, n_splits, BLOCK=block, ROWS=REDUCE_ROWS, GROUP=TILE_GROUP)
        if column_sums is not None:
            column_sums += ws_col.to(torch.float64).sum(dim=0)


def _check(
    z: torch.Tensor,
    gram: torch.Tensor,
    shift: torch.Tensor | None,
    column_sums: torch.Tensor | None,
    input_precision: str,
    splits: int | None,
) -> None:
    check_syrk_arguments("Triton SYRK", INPUT_DTYPES, z, gram, shift, column_sums, splits)
    if input_precision not in FP32_PRECISIONS:
        raise ValueError(f"input_precision must be one of {FP32_PRECISIONS}, got {input_precision!r}")
