"""Throughput of `rankme-fast score` on a corpus larger than a few GB, against its two
ceilings measured on the same machine and files: raw sequential read of the files, and the
Gram kernel alone on rows already in memory. The job overlaps the two (a reader thread), so
it should reach the slower one.

Each read-side case starts from a cold page cache (/proc/sys/vm/drop_caches, as root) when
the machine allows it; the JSON says whether it did. The cases run in interleaved rounds (this
machine's speed drifts by ±20 % between runs) and the ratios use medians over the rounds.

    python bench/bench_score.py [--gib 4] [--dim 768] [--rounds 3] [--dir /tmp/rankme-fast-corpus] [--keep]

Writes bench/results/score-<date>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # see bench_cpu.py

import numpy as np
import torch
from bench_cpu import cpu_model

import rankme_fast as rf
from rankme_fast.io import open_source
from rankme_fast.scoring import ScoreOptions, score_files
from rankme_fast.scoring.embedding_corpus import BATCH_BYTES

RESULTS = Path(__file__).resolve().parent / "results"
SHARD_BYTES = 512 << 20


def make_corpus(directory: Path, gib: float, dim: int) -> list[Path]:
    """fp16 .npy shards of 512 MiB, written with write() as np.save does; a power-law spectrum."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    rows_per_shard = SHARD_BYTES // (2 * dim)
    shards = int(np.ceil(gib * (1 << 30) / (rows_per_shard * 2 * dim)))
    paths = []
    for index in range(shards):
        path = directory / f"shard{index:03d}.npy"
        paths.append(path)
        header = {"descr": "<f2", "fortran_order": False, "shape": (rows_per_shard, dim)}
        if reusable_shard(path, header):
            continue
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, rows_per_shard, 1 << 15):
                rows = min(1 << 15, rows_per_shard - start)
                handle.write((rng.standard_normal((rows, dim), dtype=np.float32) * scale).astype(np.float16).tobytes())
    return paths


def reusable_shard(path: Path, header: dict) -> bool:
    """True when `path` is a whole .npy shard of exactly this header (shape, dtype, order): a
    shard from another D or dtype, or one cut short, is written again."""
    from rankme_fast.io.numpy_files import read_npy_header

    try:
        with open(path, "rb") as handle:
            shape, fortran, dtype = read_npy_header(handle)
            data_start = handle.tell()
    except (OSError, ValueError):
        return False
    if (shape, fortran, dtype.str) != (header["shape"], header["fortran_order"], header["descr"]):
        return False
    return path.stat().st_size == data_start + int(np.prod(shape)) * dtype.itemsize


def drop_page_cache() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def raw_read(paths: list[Path]) -> float:
    """Seconds to read every byte of the files in order, 16 MiB at a time."""
    buffer = bytearray(16 << 20)
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return time.perf_counter() - started


def kernel_alone(dim: int, precision: str, rows: int) -> float:
    """Rows per second of GramAccumulator.update on in-memory fp16 batches of the job's size
    (four distinct ones in turn, 64 MiB: more than the caches hold, as in the job)."""
    batch_rows = BATCH_BYTES // (2 * dim)
    batches = [torch.randn(batch_rows, dim).to(torch.float16) for _ in range(4)]
    accumulator = rf.GramAccumulator(precision=precision)
    accumulator.update(batches[0])
    done, started = 0, time.perf_counter()
    while done < rows:
        accumulator.update(batches[(done // batch_rows) % len(batches)])
        done += batch_rows
    return done / (time.perf_counter() - started)


def median(values: list[float]) -> float:
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/rankme-fast-corpus"))
    parser.add_argument("--keep", action="store_true", help="keep the corpus for another run")
    parser.add_argument("--kernel-fraction", type=float, default=0.25, help="share of rows for the kernel-only case")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    paths = make_corpus(args.dir, args.gib, args.dim)
    total_bytes = sum(p.stat().st_size for p in paths)
    rows = sum(int(np.load(p, mmap_mode="r").shape[0]) for p in paths)
    probe = open_source(str(paths[0]))
    direct = probe.reads_directly  # how the .npy reader reads these files
    probe.close()
    cold = drop_page_cache()
    read_rows_s: list[float] = []
    runs: dict[str, dict[str, list[float]]] = {p: {"kernel": [], "score": []} for p in ("exact", "fast")}
    results = {}
    for _ in range(args.rounds):
        drop_page_cache()
        read_rows_s.append(rows / raw_read(paths))
        for precision, times in runs.items():
            times["kernel"].append(kernel_alone(args.dim, precision, int(rows * args.kernel_fraction)))
            drop_page_cache()
            results[precision] = score_files([str(args.dir)], ScoreOptions(precision=precision, progress=False))
            times["score"].append(results[precision].rows_per_second)
    read_median = median(read_rows_s)
    cases = {}
    for precision, times in runs.items():
        kernel, score = median(times["kernel"]), median(times["score"])
        cases[precision] = {
            "score_rows_per_s": score,
            "score_rows_per_s_runs": times["score"],
            "score_mb_per_s": score * 2 * args.dim / 1e6,
            "kernel_alone_rows_per_s": kernel,
            "kernel_alone_rows_per_s_runs": times["kernel"],
            "slower_of_read_and_kernel": "read" if read_median < kernel else "kernel",
            "score_vs_slower_ceiling": score / min(read_median, kernel),
            "score_vs_kernel_per_round": [s / k for s, k in zip(times["score"], times["kernel"], strict=True)],
            "rankme": results[precision].metrics["rankme"],
            "backend": results[precision].backend,
        }
    out = args.out or RESULTS / f"score-{dt.date.today().isoformat()}.json"
    report = {
        "benchmark": "bench/bench_score.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "logical_cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "rankme_fast": rf.__version__},
        "corpus": {
            "files": len(paths),
            "bytes": total_bytes,
            "rows": rows,
            "dim": args.dim,
            "dtype": "float16",
            "format": ".npy shards of 512 MiB",
        },
        "cold_page_cache": cold,
        "rounds": args.rounds,
        "npy_reader": "O_DIRECT pread" if direct else "buffered pread",
        "raw_read": {
            "how": "buffered sequential read(), 16 MiB at a time",
            "rows_per_s": read_median,
            "mb_per_s": read_median * 2 * args.dim / 1e6,
            "rows_per_s_runs": read_rows_s,
        },
        "floor": {"gram_multiply_adds_per_row": args.dim * (args.dim + 1) // 2, "bytes_per_row": 2 * args.dim},
        "precisions": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(args.dir)

    print(f"{total_bytes / 1e9:.2f} GB fp16, D={args.dim}, {rows:,} rows, {len(paths)} files; "
          f"{'cold' if cold else 'warm'} page cache; {cpu_model()}; medians of {args.rounds} rounds\n")  # fmt: skip
    print(f"raw sequential read: {read_median:,.0f} rows/s ({read_median * 2 * args.dim / 1e6:,.0f} MB/s)\n")
    print("| precision | score rows/s | kernel alone rows/s | score / slower ceiling |\n|---|---:|---:|---:|")
    for precision, case in cases.items():
        print(f"| {precision} | {case['score_rows_per_s']:,.0f} | {case['kernel_alone_rows_per_s']:,.0f} | "
              f"{case['score_vs_slower_ceiling']:.2f} ({case['slower_of_read_and_kernel']}) |")  # fmt: skip
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
