"""Prints the README's conventions table: every named RankMe convention on one fixed dataset
(N=4096, D=512, column scales k^-1/2, mean offset 1.0).

    python bench/conventions_table.py
"""

from __future__ import annotations

import numpy as np

import rankme_fast as rf


def main() -> None:
    z = np.random.default_rng(0).standard_normal((4096, 512)) * np.arange(1, 513) ** -0.5 + 1.0
    base = rf.rankme(z, convention="canonical")
    for name, convention in rf.conventions.CONVENTIONS.items():
        value = rf.rankme(z, convention=name)
        print(f"| `{name}` | {convention.description} | {value:.3f} | {(value - base) / base:+.2e} |")


if __name__ == "__main__":
    main()
