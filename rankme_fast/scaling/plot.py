"""Plots of fitted scaling laws (matplotlib, log–log axes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rankme_fast._extras import require


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    require("plotting a fit", "fit", "matplotlib")
    import matplotlib.pyplot as plt  # the user's backend (a notebook's, or Agg when headless)

    return plt.subplots(figsize=(6, 4.2))[1]


def plot_fit(fit: Any, ax: Any = None) -> Any:
    """Data, the fitted curve and (one-input forms) the bootstrap band of the curve, of a
    scaling.fitting.Fit (which calls this from Fit.plot: this module imports nothing of it)."""
    ax = _axes(ax)
    level = round(100 * fit.level)
    if fit.form.inputs == 1:
        grid = np.geomspace(fit.x.min() / 1.5, fit.x.max() * 1.5, 200)
        ax.scatter(fit.x, fit.y, s=18, color="black", zorder=3, label="data")
        ax.plot(grid, fit.predict(grid), color="C0", label=f"{fit.form.name} fit")
        if len(fit.bootstrap):
            with np.errstate(all="ignore"):
                curves = np.array([fit.form(p, grid) for p in fit.bootstrap])
            tail = (100 - level) / 2
            low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
            ax.fill_between(grid, low, high, color="C0", alpha=0.2, label=f"{level}% bootstrap band")
        ax.set_xlabel("x")
    else:
        for i, d in enumerate(np.unique(fit.x[:, 1])):
            rows = fit.x[:, 1] == d
            n = np.geomspace(fit.x[rows, 0].min() / 1.5, fit.x[rows, 0].max() * 1.5, 100)
            ax.scatter(fit.x[rows, 0], fit.y[rows], s=18, color=f"C{i % 10}", zorder=3)
            ax.plot(n, fit.predict(np.column_stack([n, np.full_like(n, d)])), color=f"C{i % 10}", label=f"D = {d:.3g}")
        ax.set_xlabel("N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("y")
    ax.set_title(f"{fit.form.formula}   (R² log = {fit.r2_log:.3f})", fontsize=9)
    ax.legend(fontsize=8)
    return ax
