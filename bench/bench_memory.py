"""Peak memory of a streaming GramAccumulator versus N: runs bench/stream_memory.py in fresh
processes for several row counts and writes bench/results/memory-<date>.json.

    python bench/bench_memory.py [--dim 1024] [--rows 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=8192)
    args = parser.parse_args()
    runs = []
    for rows in args.rows:
        command = [sys.executable, str(HERE / "stream_memory.py"), "--rows", str(rows), "--dim", str(args.dim),
                   "--batch", str(args.batch)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(runs[-1])
    result = {
        "benchmark": "bench/bench_memory.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "what": "peak RSS (VmHWM) growth while streaming, after the first batch has been added",
        "state_bytes_fp64": args.dim * args.dim * 8,
        "batch_bytes_fp32": args.batch * args.dim * 4,
        "runs": runs,
    }
    out_path = HERE / "results" / f"memory-{dt.date.today().isoformat()}.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
