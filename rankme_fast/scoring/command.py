"""`rankme-fast score PATH...`: the command line of the scoring job."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rankme_fast.spectrum import METRIC_NAMES


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
    score.add_argument("--precision", default="exact", choices=["exact", "fast"])
    score.add_argument("--backend", default="auto")
    score.add_argument("--nonfinite", default="raise", choices=["raise", "drop"],
                       help="rows with NaN or Inf: stop, naming the file (raise), or skip and count them")  # fmt: skip
    score.add_argument("--batch-rows", type=int, help="rows per batch (default: 16 MiB of input)")
    score.add_argument("--max-rows", type=int, help="score only the first N rows (in file order)")
    score.add_argument("--metrics", default="rankme", help=f"comma-separated, of {', '.join(METRIC_NAMES)}")
    score.add_argument("--eps", type=float, default=1e-7, help="RankMe's epsilon")
    score.add_argument("--json", help="also write the result to this JSON file")
    score.add_argument("--per-file", action="store_true", help="metrics of each file too")
    add_job_options(score, checkpoint="every K batches", unit="batches")
    score.set_defaults(run=run)


def add_job_options(parser: argparse.ArgumentParser, *, checkpoint: str, unit: str) -> None:
    """The options every file-scoring job takes (`score`, `audio`): bad files, checkpoints and
    resuming, the progress bar. `checkpoint` says when or where saves go, `unit` what K counts."""
    parser.add_argument("--skip-bad", action="store_true", help="report and skip bad files instead of stopping")
    parser.add_argument("--checkpoint", help=f"save state and position here (atomically), {checkpoint}")
    parser.add_argument("--checkpoint-every", type=int, default=20, metavar="K", help=f"{unit} between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from rankme_fast.scoring.job import ScoreOptions, init_distributed_from_env, score_files

    options = ScoreOptions(
        key=args.key, column=args.column, centered=args.centered, precision=args.precision, backend=args.backend,
        nonfinite=args.nonfinite, batch_rows=args.batch_rows, max_rows=args.max_rows, eps=args.eps,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        per_file=args.per_file, skip_bad=args.skip_bad, checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every, resume=args.resume, progress=not args.no_progress,
    )  # fmt: skip
    joined = init_distributed_from_env()
    try:
        result = score_files(args.paths, options)
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()
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
        print(f"{name:<{width}}  {value:.6f}")
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
    if per_file:
        for report in result.files:
            shown = report.error or "  ".join(f"{k} {v:.6f}" for k, v in (report.metrics or {}).items())
            dropped = f"  dropped {report.dropped:,}" if report.dropped else ""
            print(f"  {report.path}  rows {report.rows:,}{dropped}  {shown}")
