"""The report's decision sections: choosing checkpoints and models by RankMe over training (the
trajectory runs), and the pre-registered extrapolation of L(N, D), with their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from rankme_fast.study.trajectory_fits import CRITERIA, checkpoints

LEVEL_TEXT = "95 %"
NAMES = {"rankme": "clip RankMe", "rankme_centered": "clip RankMe (centred)", "validation_loss": "validation loss",
         "chance": "one at random (expected)"}


def plot_trajectory(records: list[dict[str, Any]], path: Path) -> None:
    """Clip RankMe at every check of every run (left) and mean accuracy against clip RankMe at
    the probed checkpoints (right), coloured by width."""
    figure = Figure(figsize=(11, 4.2))
    left, right = figure.subplots(1, 2)
    widths = sorted({r["width"] for r in records})
    colours = dict(zip(widths, (colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, len(widths))), strict=True))
    seconds = sorted({r["data_seconds"] for r in records})
    for record in records:
        steps = [p["step"] for p in record["trajectory"]]
        shade = 0.3 + 0.7 * (seconds.index(record["data_seconds"]) + 1) / len(seconds)  # more audio: darker
        left.plot(steps, [p["clip_rankme"] for p in record["trajectory"]], color=colours[record["width"]],
                  alpha=shade, lw=1)  # fmt: skip
        points = checkpoints(record)
        right.scatter([p["clip_rankme"] for p in points], [p["mean_accuracy"] for p in points], s=10,
                      color=colours[record["width"]])  # fmt: skip
    for width in widths:
        left.plot([], [], color=colours[width], label=f"width {width}")
    left.set(xscale="log", xlabel="training step", ylabel="clip RankMe", title="RankMe at every validation check")
    right.set(xlabel="clip RankMe", ylabel="mean probe accuracy", title="probed checkpoints")
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_extrapolation(result: dict[str, Any], path: Path) -> None:
    """Each registered cell's predicted loss with its interval, and the outcome where trained."""
    figure = Figure(figsize=(6.5, 4))
    ax = figure.subplots()
    cells = result["cells"]
    x = np.arange(len(cells))
    predicted = np.array([c["predicted"] for c in cells])
    low, high = np.array([c["interval"] for c in cells]).T
    ax.errorbar(x, predicted, yerr=[predicted - low, high - predicted], fmt="o", capsize=4,
                label="registered prediction")  # fmt: skip
    trained = [i for i, c in enumerate(cells) if "actual" in c]
    ax.scatter(trained, [cells[i]["actual"] for i in trained], marker="x", s=60, color="C3", zorder=3, label="outcome")
    ax.set_xticks(x, [f"w{c['width']}\n{c['data_seconds']:g} s" for c in cells])
    ax.set(ylabel="held-out loss", title=f"pre-registered cells ({result['level']:.0%} prediction intervals)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def decision_findings(fits: dict[str, Any]) -> list[str]:
    """The findings lines of the trajectory and extrapolation parts, from their numbers."""
    lines = []
    analysis = fits.get("trajectory", {})
    if "early" in analysis:
        early, inside, models = analysis["early"], analysis["checkpoints"]["cost"], analysis["models"]["cost"]
        lines.append(
            f"Choosing without labels ({analysis['runs']} grid runs, early stopping on audio apart from the probe "
            f"clips): at 10 % of each run, clip RankMe ranks the runs' final accuracy with ρ = "
            f"{early['0.1']['rankme']['rho']:.2f} (validation loss: {early['0.1']['validation_loss']['rho']:.2f}); "
            f"inside a run, the checkpoint of highest RankMe gives up {inside['rankme']['mean']:.4f} mean accuracy "
            f"on average (worst {inside['rankme']['max']:.4f}) against the best probed checkpoint, the lowest "
            f"validation loss {inside['validation_loss']['mean']:.4f}, one at random "
            f"{inside['chance']['mean']:.4f}; across runs at a compute budget, RankMe gives up "
            f"{models['rankme']['mean']:.4f} on average (worst {models['rankme']['max']:.4f}), the validation loss "
            f"{models['validation_loss']['mean']:.4f}, chance {models['chance']['mean']:.4f}.")  # fmt: skip
    result = fits.get("extrapolation", {})
    if result.get("trained"):
        misses = [f"width {c['width']} at {c['data_seconds']:g} s ({c['error']:+.1%})" for c in result["cells"]
                  if "actual" in c and not c["inside"]]  # fmt: skip
        lines.append(
            f"Pre-registered extrapolation of L(N, D): {result['inside']} of {result['trained']} cells trained so far "
            f"(of {len(result['cells'])} registered) landed inside their {result['level']:.0%} prediction intervals"
            + (f"; missed: {', '.join(misses)}" if misses else "") + ".")  # fmt: skip
    return lines


def trajectory_section(analysis: dict[str, Any], accuracy_seed_sd: float | None = None) -> list[str]:
    """Early prediction, checkpoint and model selection, and the grid on the clean split (with
    the seed noise of mean accuracy for scale, where measured)."""
    if "early" not in analysis:
        return []
    md = ["", "## Choosing checkpoints and models by RankMe (trajectories, clean split)", "",
          "![trajectories](trajectory.png)", "",
          f"The {analysis['runs']} grid runs trained again with early-stopping audio rendered apart from every probe "
          "clip (another rendering of the pool's kind). At every validation check the clip RankMe (raw and centred) "
          "of the probe audio is recorded; the probes run at √2-spaced checks (100, 200, 300, 400, 600, 800, … "
          "steps) and on the early-stopping checkpoint. The oracle below chooses by probe accuracy, which needs "
          "labels; the costs are accuracy given up against it, in points of mean accuracy"
          + (f" (for scale: training seeds alone move a run's mean accuracy by a median SD of {accuracy_seed_sd:.4f})"
             if accuracy_seed_sd is not None else "") + ".", "",
          "**Early prediction.** Spearman ρ (exact or asymptotic p) of each criterion, read at the first check at or "
          "after 10 % and 25 % of each run's steps (and at its last check), with the runs' final mean accuracy "
          "(validation loss negated).", "",
          "| read at | " + " | ".join(NAMES[c] for c in CRITERIA) + " |", "|---|" + "---|" * len(CRITERIA)]  # fmt: skip
    for fraction, row in analysis["early"].items():
        if fraction == "runs":
            continue
        label = "last check" if fraction == "1" else f"{float(fraction):.0%} of the run"
        md.append(f"| {label} | " + " | ".join(f"{row[c]['rho']:.2f} ({row[c]['p']:.2g})" for c in CRITERIA) + " |")
    cost = analysis["checkpoints"]["cost"]
    md += ["", "**Checkpoint selection inside a run**: the checkpoint each criterion picks among the run's probed "
           "checkpoints against the best of them.", "",
           "| criterion | mean cost | median | worst | picks the best |", "|---|---|---|---|---|"]  # fmt: skip
    md += [f"| {NAMES[c]} | {cost[c]['mean']:.4f} | {cost[c]['median']:.4f} | {cost[c]['max']:.4f} | "
           f"{cost[c]['best_share']:.0%} of runs |" for c in CRITERIA]  # fmt: skip
    md.append(f"| {NAMES['chance']} | {cost['chance']['mean']:.4f} | {cost['chance']['median']:.4f} | "
              f"{cost['chance']['max']:.4f} | |")
    md += ["", "**Model selection at a compute budget**: among every (run, probed checkpoint) whose compute "
           "(6·N·tokens up to it) fits the budget, the one each criterion picks (width, seconds, step, accuracy) "
           "and its cost.", "",
           "| budget (FLOP) | candidates | oracle | " + " | ".join(NAMES[c] for c in CRITERIA) + " | at random |",
           "|---|---|---|" + "---|" * (len(CRITERIA) + 1)]  # fmt: skip
    for row in analysis["models"]["budgets"]:
        picks = [f"{_choice(row[c])}, −{row[c]['cost']:.3f}" for c in CRITERIA]
        picks.append(f"−{row['chance']['cost']:.3f}")
        md.append(f"| {row['budget']:.2g} | {row['candidates']} | {_choice(row['oracle'])} | {' | '.join(picks)} |")
    grid = analysis["grid"]
    md += ["", "**The grid's conclusions on the clean split.**", "", "| | study (early stopping on probe audio) | "
           "clean split |", "|---|---|---|"]  # fmt: skip
    for name in ("alpha_N", "alpha_D", "L_inf"):
        md.append(f"| L(N, D): {name} | {_law(grid['study_loss_law'], name)} | {_law(grid['loss_law'], name)} |")
    md.append(f"| mean accuracy = a·RankMe^b over the grid: b | {_law(grid.get('study_quality_law', {}), 'b')} | "
              f"{_law(grid.get('quality_law', {}), 'b')} |")
    for key, label in (("rankme", "ρ(clip RankMe, accuracy)"), ("negative_loss", "ρ(−held-out loss, accuracy)")):
        md.append(f"| {label} | {_rho(grid['study_ranking'], key)} | {_rho(grid['ranking'], key)} |")
    change = grid["mean_abs_change"]
    if change.get("loss") is not None:
        md += ["", f"Cell by cell, clean split minus study: mean |Δ held-out loss| {change['loss']:.4f}, mean |Δ mean "
               f"accuracy| {change['accuracy']:.4f}, mean |Δ best step| {change['best_step']:.0f}."]  # fmt: skip
    return md


def extrapolation_section(result: dict[str, Any]) -> list[str]:
    """The registered predictions next to their outcomes, hits and misses alike."""
    md = ["", "## A pre-registered extrapolation of L(N, D)", "", "![extrapolation](extrapolation.png)", "",
          f"Predictions for cells outside the grid were written to `extrapolation/predictions.json` and committed "
          f"before any of them was trained (each trained run records the file's SHA-256): Droppo's law fitted on "
          f"the grid, {result['level']:.0%} prediction intervals from the parameter bootstrap plus the seed noise "
          f"of L. Trained so far: {result['trained']} of {len(result['cells'])}; inside their interval: "
          f"{result['inside']} of {result['trained']}.", "",
          "| cell | N | predicted [interval] | outcome | relative error | inside |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for cell in result["cells"]:
        outcome = (f"{cell['actual']:.4f} | {cell['error']:+.1%} | {'yes' if cell['inside'] else '**no**'}"
                   if "actual" in cell else "not trained yet | | ")  # fmt: skip
        low, high = cell["interval"]
        md.append(f"| width {cell['width']}, {cell['data_seconds']:g} s | {cell['n_params']:,} | "
                  f"{cell['predicted']:.4f} [{low:.4f}, {high:.4f}] | {outcome} |")  # fmt: skip
    n_opt = result.get("n_opt", {})
    if n_opt:
        md += ["", "Compute-optimal size, N_opt(C) ∝ C^a (at log-spaced budgets, the parameter count of the run whose "
               "validation curve reaches the lowest loss within the budget; slope of log N_opt on log C, "
               f"{LEVEL_TEXT} interval from resampling the runs): "
               + "; ".join(f"{label} a = {n_opt[key]['exponent']:.2f} [{n_opt[key]['interval'][0]:.2f}, "
                           f"{n_opt[key]['interval'][1]:.2f}] ({n_opt[key]['runs']} runs)"
                           for key, label in (("grid", "the grid:"), ("with_cells", "with the cells trained so far:"))
                           if key in n_opt) + "."]  # fmt: skip
    return md


def _choice(choice: dict[str, Any]) -> str:
    return f"w{choice['width']} {choice['data_seconds']:g} s @{choice['step']} ({choice['mean_accuracy']:.3f})"


def _law(law: dict[str, Any], name: str) -> str:
    if not law.get("params"):
        return "—"
    low, high = law["ci"][name]
    return f"{law['params'][name]:.3g} [{low:.3g}, {high:.3g}]"


def _rho(ranking: dict[str, Any], key: str) -> str:
    return f"{ranking[key]['rho']:.2f} (p {ranking[key]['p']:.2g}, {ranking['points']} runs)" if ranking else "—"
