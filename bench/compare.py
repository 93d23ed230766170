"""Compare a run of the pytest-benchmark suites (bench/test_benchmarks.py) with the last one
committed under bench/results/: each case's median and its ratio against the baseline timed in
the same rounds. Ratios are what to read; medians drift with the machine.

    python bench/compare.py bench/results/benchmarks-<date>.json [--against OLDER.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cases(path: Path) -> dict[str, dict[str, float]]:
    data = json.loads(path.read_text())
    return {
        case["fullname"].split("::", 1)[-1]: {
            "median_s": case["stats"]["median"],
            "ratio": case.get("extra_info", {}).get("ratio", float("nan")),
        }
        for case in data["benchmarks"]
    }


def last_committed(excluding: Path) -> Path | None:
    """The newest benchmarks-*.json that git knows, other than `excluding`."""
    listed = subprocess.run(["git", "ls-files", "bench/results/benchmarks-*.json"], capture_output=True, text=True,
                            cwd=RESULTS.parent.parent).stdout.split()  # fmt: skip
    paths = sorted(RESULTS.parent.parent / p for p in listed)
    paths = [p for p in paths if p.resolve() != excluding.resolve()]
    return paths[-1] if paths else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new", type=Path)
    parser.add_argument("--against", type=Path, default=None, help="default: the last committed run")
    args = parser.parse_args()
    old_path = args.against or last_committed(args.new)
    new = cases(args.new)
    old = cases(old_path) if old_path else {}
    print(f"{args.new} against {old_path or 'nothing committed yet'}\n")
    print("| case | median s | before | ratio vs baseline | before |\n|---|---:|---:|---:|---:|")
    for name, now in new.items():
        then = old.get(name, {})
        before = f"{then['median_s']:.4f}" if then else "—"
        ratio_before = f"{then['ratio']:.2f}" if then else "—"
        print(f"| {name} | {now['median_s']:.4f} | {before} | {now['ratio']:.2f} | {ratio_before} |")


if __name__ == "__main__":
    main()
