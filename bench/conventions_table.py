"""The README's conventions table: every named RankMe convention on one fixed dataset
(N=4096, D=512, column scales k^-1/2, mean offset 1.0). Prints the markdown rows and writes
bench/results/conventions-<date>.json.

    python bench/conventions_table.py
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

import rankme_fast as rf

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    z = np.random.default_rng(0).standard_normal((4096, 512)) * np.arange(1, 513) ** -0.5 + 1.0
    base = rf.rankme(z, convention="canonical")
    rows = []
    for name, convention in rf.conventions.CONVENTIONS.items():
        value = rf.rankme(z, convention=name)
        rows.append({"convention": name, "formula": convention.description, "rankme": value,
                     "relative_to_canonical": (value - base) / base})  # fmt: skip
        print(f"| `{name}` | {convention.description} | {value:.3f} | {(value - base) / base:+.2e} |")
    date = dt.date.today().isoformat()
    out = RESULTS / f"conventions-{date}.json"
    data = {"date": date, "command": "python bench/conventions_table.py", "data": "N=4096, D=512, seed 0", "rows": rows}
    out.write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
