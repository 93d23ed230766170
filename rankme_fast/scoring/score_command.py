"""`rankme-fast score PATH...`: the command line of the scoring job."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch

from rankme_fast.corpus import add_job_arguments, job_arguments
from rankme_fast.distributed import join_from_environment
from rankme_fast.scoring.embedding_corpus import ScoreOptions, score_files


def add_parser(commands: Any) -> None:
    score = commands.add_parser(
        "score",
        help="RankMe of embedding files of any size (npy, npz, safetensors, parquet, arrow, hdf5; dirs, globs)",
        description="Stream every row of the files into a float64 Gram state and print the metrics. "
        "Under torchrun each process takes a disjoint set of files and the states are summed.",
    )
    score.add_argument("paths", nargs="+", metavar="PATH", help="files, directories (recursive) or globs")
    score.add_argument("--key", help="array / tensor / dataset name in npz, safetensors or HDF5 files")
    score.add_argument("--column", help="list column of Parquet / Arrow files")
    score.add_argument("--centered", action="store_true", help="spectrum of the covariance instead of ZᵀZ")
    score.add_argument("--nonfinite", default="raise", choices=["raise", "drop"],
                       help="rows with NaN or Inf: stop, naming the file (raise), or skip and count them")  # fmt: skip
    score.add_argument("--batch-rows", type=int, help="rows per batch (default: 16 MiB of input)")
    score.add_argument("--max-rows", type=int, help="score only the first N rows (in file order)")
    score.add_argument("--blocks-by", default="rows", choices=["rows", "file"],
                       help="with --ci: cut each file into K runs of rows, one per block (rows), or put each whole "
                       "file in one block (file: when the rows of a file are alike, e.g. one source)")  # fmt: skip
    add_job_arguments(score, checkpoint="every K batches", unit="batches")
    score.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = ScoreOptions(
        key=args.key, column=args.column, centered=args.centered, nonfinite=args.nonfinite,
        batch_rows=args.batch_rows, max_rows=args.max_rows, blocks_by=args.blocks_by, **job_arguments(args),
    )  # fmt: skip
    joined = join_from_environment()
    try:
        result = score_files(args.paths, options)
    finally:
        if joined:
            torch.distributed.destroy_process_group()
    if _is_main(joined):
        _print(result, args.per_file)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result.to_json(), handle, indent=2)
    return 0


def _is_main(joined: bool) -> bool:
    return not joined or int(os.environ.get("RANK", "0")) == 0


def _print(result: Any, per_file: bool) -> None:
    width = max(len(name) for name in result.metrics)
    for name, value in result.metrics.items():
        print(f"{name:<{width}}  {value:.6f}" + (_interval(result.intervals[name]) if result.intervals else ""))
    files = len(result.files)
    skipped = sum(1 for f in result.files if f.error is not None)
    print(
        f"rows {result.rows:,}  dim {result.dim}  files {files}" + (f" ({skipped} skipped)" if skipped else "")
        + f"  time {result.seconds:.2f} s  {result.rows_per_second:,.0f} rows/s"
        + f"  {result.bytes / max(result.seconds, 1e-9) / 1e6:,.0f} MB/s  backend {result.backend}"
        + f"  processes {result.processes}"
        + (f"  dropped {result.dropped:,} rows holding NaN/Inf" if result.dropped else "")
        + (f"  resumed at row {result.resumed_from_row:,}" if result.resumed_from_row else "")
    )  # fmt: skip
    rising = [name for name, estimate in (result.intervals or {}).items() if estimate.still_rising]
    if rising:
        print(f"still rising with N: {', '.join(rising)} (the rise still to come, bias-corrected minus plain, "
              "exceeds the standard error): compare such values only at equal N")  # fmt: skip
    if result.growth is not None:
        print(result.growth)
        print("  " + "  ".join(f"N={n:,}: {v:.4f}" for n, v in zip(result.growth.counts, result.growth.values,
                                                                    strict=True)))  # fmt: skip
    if per_file:
        for report in result.files:
            shown = report.error or "  ".join(f"{k} {v:.6f}" for k, v in (report.metrics or {}).items())
            dropped = f"  dropped {report.dropped:,}" if report.dropped else ""
            print(f"  {report.path}  rows {report.rows:,}{dropped}  {shown}")


def _interval(estimate: Any) -> str:
    low, high = estimate.interval
    return (f"  ± {estimate.standard_error:.4g}  ({100 * estimate.level:g} % interval [{low:.6f}, {high:.6f}], "
            f"bias-corrected {estimate.bias_corrected:.6f}, {estimate.blocks} blocks)")
