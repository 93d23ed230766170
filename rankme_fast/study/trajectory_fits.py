"""What the trajectories say about choosing by RankMe without labels: how early RankMe (and the
validation loss) ranks the runs' final accuracy, what choosing a checkpoint inside a run or a
(run, checkpoint) at a compute budget by each criterion costs in accuracy against the best
choice (the oracle, which needs labels), and whether the grid's conclusions hold on the clean
split."""

from __future__ import annotations

from typing import Any

import numpy as np

from rankme_fast.scaling.ranks import spearman
from rankme_fast.study.presets import StudyPreset
from rankme_fast.study.study_fits import grid_rows, loss_law, quality_laws, ranking

FRACTIONS = (0.1, 0.25)
# criterion → (column of a checkpoint, +1 to pick the largest, −1 the smallest)
CRITERIA = {"rankme": ("clip_rankme", 1), "rankme_centered": ("clip_rankme_centered", 1),
            "validation_loss": ("validation_loss", -1)}  # fmt: skip


def checkpoints(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's probed checkpoints and its early-stopping (best) model, each with step, compute,
    clip RankMe (raw, centred), validation loss and mean accuracy."""
    training = record["training"]
    per_step = 6.0 * record["n_params"] * training["batch_size"] * record["frames"]
    points = {p["step"]: p for p in record["trajectory"] if "mean_accuracy" in p}
    if record["best_step"] not in points:
        loss = dict(map(tuple, record["validation_curve"])).get(record["best_step"])
        measured = {k: record[k] for k in ("clip_rankme", "clip_rankme_centered", "mean_accuracy")}
        points[record["best_step"]] = {"step": record["best_step"], "validation_loss": loss, **measured}
    return [{**p, "compute": per_step * p["step"], "run": record["id"], "width": record["width"],
             "data_seconds": record["data_seconds"]} for _, p in sorted(points.items())]  # fmt: skip


def _at_fraction(record: dict[str, Any], fraction: float) -> dict[str, Any]:
    """The first validation check at or after `fraction` of the run's steps."""
    target = fraction * len(record["losses"])
    return next((p for p in record["trajectory"] if p["step"] >= target), record["trajectory"][-1])


def early_prediction(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman ρ of each criterion at 10 % and 25 % of every run (and at its end) with the runs'
    final mean accuracy (validation loss negated, so higher is better for every criterion)."""
    final = [r["mean_accuracy"] for r in records]
    out: dict[str, Any] = {"runs": len(records)}
    for fraction in (*FRACTIONS, 1.0):
        points = [_at_fraction(r, fraction) for r in records]
        out[f"{fraction:g}"] = {}
        for name, (column, sign) in CRITERIA.items():
            rho, p = spearman([sign * point[column] for point in points], final)
            out[f"{fraction:g}"][name] = {"rho": rho, "p": p}
    return out


def _pick(points: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    column, sign = CRITERIA[criterion]
    return max(points, key=lambda p: sign * p[column])


def checkpoint_selection(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Inside each run: the accuracy lost choosing the checkpoint by each criterion against the
    best checkpoint (accuracy points, mean/median/max over runs, and how often it is the best),
    and by `chance` (a checkpoint drawn at random: the expected loss)."""
    runs, regrets = [], {name: [] for name in (*CRITERIA, "chance")}
    for record in records:
        points = checkpoints(record)
        best = max(p["mean_accuracy"] for p in points)
        row = {"run": record["id"], "checkpoints": len(points), "oracle": best}
        for name in CRITERIA:
            picked = _pick(points, name)
            regrets[name].append(best - picked["mean_accuracy"])
            row[name] = {"step": picked["step"], "accuracy": picked["mean_accuracy"]}
        regrets["chance"].append(best - float(np.mean([p["mean_accuracy"] for p in points])))
        runs.append(row)
    return {"runs": runs, "cost": {name: _summary(values) for name, values in regrets.items()}}


def model_selection(records: list[dict[str, Any]], budgets: int = 6) -> dict[str, Any]:
    """At log-spaced compute budgets: among every (run, checkpoint) that fits the budget, the one
    each criterion picks and the accuracy it gives up against the best of them (`chance`: the
    expected loss of one drawn at random)."""
    points = [p for r in records for p in checkpoints(r)]
    compute = np.array([p["compute"] for p in points])
    rows = []
    for budget in np.geomspace(np.quantile(compute, 0.1), compute.max(), budgets):
        fits = [p for p in points if p["compute"] <= budget * (1 + 1e-9)]
        best = max(fits, key=lambda p: p["mean_accuracy"])
        row = {"budget": float(budget), "candidates": len(fits), "oracle": _choice(best)}
        for name in CRITERIA:
            picked = _pick(fits, name)
            row[name] = _choice(picked) | {"cost": best["mean_accuracy"] - picked["mean_accuracy"]}
        row["chance"] = {"cost": best["mean_accuracy"] - float(np.mean([p["mean_accuracy"] for p in fits]))}
        rows.append(row)
    names = (*CRITERIA, "chance")
    return {"budgets": rows, "cost": {name: _summary([r[name]["cost"] for r in rows]) for name in names}}


def _choice(point: dict[str, Any]) -> dict[str, Any]:
    return {k: point[k] for k in ("width", "data_seconds", "step", "mean_accuracy")}


def _summary(values: list[float]) -> dict[str, float]:
    values_ = np.asarray(values, dtype=np.float64)
    return {"mean": float(values_.mean()), "median": float(np.median(values_)), "max": float(values_.max()),
            "best_share": float(np.mean(values_ <= 1e-12))}  # fmt: skip


def grid_conclusions(
    records: list[dict[str, Any]], study: list[dict[str, Any]], fits: dict[str, Any], preset: StudyPreset,
    bootstrap: int,
) -> dict[str, Any]:
    """L(N, D), the quality law (mean accuracy = a·RankMe^b) and the RankMe-vs-accuracy ranking
    refitted on the clean-split runs, next to the study's on the same grid cells (early stopping
    on probe audio), and each cell's change."""
    clean = loss_law(records, preset, bootstrap)
    before = {r["id"]: r for r in grid_rows(study, preset)}
    changes = [{"id": r["id"], "loss": r["held_out_loss"] - before[r["id"]]["held_out_loss"],
                "accuracy": r["mean_accuracy"] - before[r["id"]]["mean_accuracy"],
                "best_step": r["best_step"] - before[r["id"]]["best_step"]}
               for r in grid_rows(records, preset) if r["id"] in before]  # fmt: skip
    keys = ("params", "ci", "r2_log", "pinned")
    quality = quality_laws(grid_rows(records, preset), [], bootstrap).get("trained/clip_rankme/mean", {})
    study_quality = quality_laws(grid_rows(study, preset), [], bootstrap).get("trained/clip_rankme/mean", {})
    return {"loss_law": {k: clean.get(k) for k in keys}, "study_loss_law": {k: fits["loss_law"].get(k) for k in keys},
            "quality_law": {k: quality.get(k) for k in keys},
            "study_quality_law": {k: study_quality.get(k) for k in keys},
            "ranking": ranking(records, preset), "study_ranking": fits.get("ranking", {}),
            "changes": changes,
            "mean_abs_change": {k: float(np.mean([abs(c[k]) for c in changes])) if changes else None
                                for k in ("loss", "accuracy", "best_step")}}  # fmt: skip


def trajectory_analysis(
    records: list[dict[str, Any]], study: list[dict[str, Any]], fits: dict[str, Any], preset: StudyPreset,
    bootstrap: int = 200,
) -> dict[str, Any]:
    """Everything fits.json's `trajectory` holds (`study`, `fits`: the study's own runs and fits)."""
    rows = [r for r in records if r.get("trajectory")]
    if len(rows) < 3:
        return {"runs": len(rows)}
    return {"runs": len(rows), "early": early_prediction(rows), "checkpoints": checkpoint_selection(rows),
            "models": model_selection(rows),
            "grid": grid_conclusions(rows, study, fits, preset, bootstrap)}  # fmt: skip
