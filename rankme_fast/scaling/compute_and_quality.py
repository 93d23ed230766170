"""The founding papers' analyses on top of a fit: the compute-optimal split of a budget
(Hoffmann et al. 2022; Droppo & Elibol 2021) and quality as a power law of RankMe with rank
correlations (Garrido et al. 2023)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from rankme_fast.scaling.fitting import Fit, fit
from rankme_fast.scaling.ranks import kendall, spearman


def compute_optimal(result: Fit, compute: float) -> dict[str, float]:
    """N_opt, D_opt and the loss there for a joint (N, D) fit under C ≈ 6·N·D: the N that
    minimises L(N, C / 6N) (a bounded 1-D search in log N)."""
    if result.form.inputs != 2:
        raise ValueError(f"compute_optimal needs a joint (N, D) form, got {result.form.name!r}")
    if not compute > 0:
        raise ValueError(f"compute must be positive, got {compute!r}")
    tokens = compute / 6.0

    def loss_at(log_n: float) -> float:
        n = math.exp(log_n)
        return float(result.predict(np.array([[n, tokens / n]]))[0])

    best = optimize.minimize_scalar(loss_at, bounds=(0.0, math.log(tokens)), method="bounded",
                                    options={"xatol": 1e-10})  # fmt: skip
    n_opt = math.exp(best.x)
    return {"compute": compute, "N_opt": n_opt, "D_opt": tokens / n_opt, "loss": float(best.fun)}


@dataclass
class RankMeLaw:
    """Quality = a·RankMe^b, with the rank correlations that say whether the ordering holds
    whatever the functional form."""

    fit: Fit
    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float

    def summary(self) -> str:
        return (f"{self.fit.summary()}\nSpearman ρ = {self.spearman:.3f} (p = {self.spearman_p:.2g}), "
                f"Kendall τ = {self.kendall:.3f} (p = {self.kendall_p:.2g})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**self.fit.to_dict(), "spearman": self.spearman, "spearman_p": self.spearman_p,
                "kendall": self.kendall, "kendall_p": self.kendall_p}  # fmt: skip


def rankme_law(rankme: Any, quality: Any, *, offset: bool = False, **options: Any) -> RankMeLaw:
    """Fit quality as a power law of RankMe (`increasing_power`, or with an additive offset),
    with Spearman and Kendall rank correlations and their p-values. `options` go to `fit`."""
    rankme, quality = np.asarray(rankme, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    result = fit("increasing_power_offset" if offset else "increasing_power", rankme, quality, **options)
    return RankMeLaw(result, *spearman(rankme, quality), *kendall(rankme, quality))
