"""Named RankMe conventions: how other libraries compute "RankMe", so a user switching from one
gets the number they had. The default, "paper", is Garrido et al. (2023): p = σ/Σσ + 1e-7 on
uncentred σ (ARCHITECTURE.md, "Definitions"). Each convention is a formula on the singular
values σ of Z (centred Z where it says so); README.md has the table of how each differs from
the paper, with values on one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from rankme_fast.metrics import checked_spectrum, entropy


@dataclass(frozen=True)
class Convention:
    """p_k = w_k / (Σw + eps_inside) + eps_outside with w = σ^power, entropy with log(p + eps_log)."""

    name: str
    description: str
    centered: bool = False
    power: int = 1
    eps_inside: float = 0.0
    eps_outside: float = 0.0
    eps_log: float = 0.0

    def rankme(self, singular_values: ArrayLike) -> float:
        w = checked_spectrum(singular_values) ** self.power
        p = w / (w.sum() + self.eps_inside) + self.eps_outside
        if self.eps_log:
            return float(np.exp(-np.sum(p * np.log(p + self.eps_log))))
        return float(np.exp(entropy(p)))


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("paper", "Garrido et al. 2023: uncentred σ, p = σ/Σσ + 1e-7 (decalmlutils, ngclearn, most scripts)",
                   eps_outside=1e-7),
        Convention("canonical", "uncentred σ, p = σ/Σσ, no ε (Roy–Vetterli effective rank)"),
        Convention("stable-pretraining", "uncentred σ, p = σ/Σσ + 1e-5 (stable-pretraining's torch RankMe callback)",
                   eps_outside=1e-5),
        Convention("stable-pretraining-jax",
                   "uncentred σ, p = σ/(Σσ + 1e-7) + 1e-7 (stable-pretraining's JAX callback)",
                   eps_inside=1e-7, eps_outside=1e-7),
        Convention("lightly", "uncentred σ, p = σ/(Σσ + 1e-12), entropy with log(p + 1e-12) (lightly's DSE RankMe)",
                   eps_inside=1e-12, eps_log=1e-12),
        Convention("monai", "centred σ, p = σ/Σσ, no ε (MONAI effective_rank_score)", centered=True),
        Convention("reptrix", "centred σ², p = σ²/Σσ² + 1e-7 (reptrix get_rankme: covariance eigenvalues)",
                   centered=True, power=2, eps_outside=1e-7),
    )
}  # fmt: skip


def get_convention(name: str) -> Convention:
    """The convention called `name`; ValueError listing the known names otherwise."""
    if name not in CONVENTIONS:
        raise ValueError(f"unknown convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]

