"""The study's fits: Droppo & Elibol's L(N, D) with L_∞ on the grid's held-out pre-training
losses, against Kaplan's form without L_∞; loss, RankMe and quality against compute with the
compute-optimal frontier; downstream accuracy as a power law of RankMe (per task and pooled as
the mean over tasks, within each family); how RankMe moves with each swept variable; and
whether any variable explains quality beyond RankMe (the unification test)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rankme_fast.scaling import fit, rankme_law
from rankme_fast.scaling import forms as fit_forms
from rankme_fast.scaling.nested import unification_test
from rankme_fast.scaling.ranks import spearman
from rankme_fast.study.presets import SWEEPS, StudyPreset
from rankme_fast.study.study_noise import noise_calls

RANKMES = ("clip_rankme", "frame_rankme")


def grid_rows(records: list[dict], preset: StudyPreset) -> list[dict]:
    """The (N, D) grid: trained runs of the base model that differ only in width and data."""
    base = preset.base
    return [
        r
        for r in records
        if r["family"] == "trained"
        and r["objective"] == preset.training.objective
        and (r["arch"], r["depth"], r["emb_dim"], r["frames"]) == (base.arch, base.depth, base.emb_dim, base.frames)
        and r["width"] in preset.widths
        and r["data_seconds"] in preset.data_seconds
    ]


def sweep_rows(records: list[dict], preset: StudyPreset, variable: str) -> list[dict]:
    """The base model at the base width and the most data, and the runs that change only `variable`."""
    base = {**_base_variables(preset), "width": preset.base.width, "data_seconds": max(preset.data_seconds)}
    return [r for r in records if r["family"] == "trained" and all(r[k] == v for k, v in base.items() if k != variable)]


def _base_variables(preset: StudyPreset) -> dict[str, Any]:
    b = preset.base
    return {
        "arch": b.arch,
        "depth": b.depth,
        "emb_dim": b.emb_dim,
        "frames": b.frames,
        "objective": preset.training.objective,
    }


def _tried(what: str, function, *args, **kwargs) -> dict[str, Any]:
    """A fit as a dict, or the reason it could not be made."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return function(*args, **kwargs).to_dict()
    except (ValueError, np.linalg.LinAlgError) as error:
        return {"error": f"{what}: {error}"}


def loss_law(records: list[dict], preset: StudyPreset, bootstrap: int = 200, form: str = "droppo") -> dict[str, Any]:
    """Droppo's L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D + L_∞ (or another joint `form`) on
    the grid's held-out losses (D in seconds), with held-out predictions of the largest-N row
    and of the largest-D column."""
    rows = grid_rows(records, preset)
    x = np.array([[r["n_params"], r["data_seconds"]] for r in rows], dtype=np.float64).reshape(-1, 2)
    y = np.array([r["held_out_loss"] for r in rows], dtype=np.float64)
    result = _tried(f"{form} fit", fit, form, x, y, bootstrap=bootstrap)
    return {**result, "runs": [r["id"] for r in rows]}


def outer_cells(records: list[dict], preset: StudyPreset, form: str = "droppo") -> dict[str, Any]:
    """Fit L(N, D) on the grid's inner cells (all but its largest width and its most data) and
    predict the outer ones, next to the baseline that copies each outer cell's nearest inner
    neighbour (one step down in width, in data, or both): the error a law must beat to have
    said anything about extrapolation."""
    rows = grid_rows(records, preset)
    widest, most = max(r["width"] for r in rows), max(r["data_seconds"] for r in rows)
    inner = [r for r in rows if r["width"] != widest and r["data_seconds"] != most]
    outer = [r for r in rows if r["width"] == widest or r["data_seconds"] == most]
    if len(inner) <= 5 or not outer:
        return {"error": f"{len(inner)} inner cells: too few to fit {form}"}
    x = np.array([[r["n_params"], r["data_seconds"]] for r in inner], dtype=np.float64)
    y = np.array([r["held_out_loss"] for r in inner], dtype=np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            law = fit(form, x, y, bootstrap=0, extrapolate=False)
    except (ValueError, np.linalg.LinAlgError) as error:
        return {"error": f"{form} fit on the inner cells: {error}"}
    widths = sorted({r["width"] for r in rows})
    seconds = sorted({r["data_seconds"] for r in rows})
    by_cell = {(r["width"], r["data_seconds"]): r for r in rows}
    cells = []
    for r in outer:
        width, data = r["width"], r["data_seconds"]
        below = (widths[widths.index(width) - 1] if width == widest else width,
                 seconds[seconds.index(data) - 1] if data == most else data)  # fmt: skip
        predicted = float(law.predict(np.array([[r["n_params"], r["data_seconds"]]]))[0])
        copied = by_cell[below]["held_out_loss"]
        cells.append({"width": r["width"], "data_seconds": r["data_seconds"], "actual": r["held_out_loss"],
                      "predicted": predicted, "copied_from": list(below), "copied": copied,
                      "law_error": abs(predicted - r["held_out_loss"]) / r["held_out_loss"],
                      "copy_error": abs(copied - r["held_out_loss"]) / r["held_out_loss"]})  # fmt: skip
    return {"form": form, "inner": len(inner), "outer": len(outer), "cells": cells,
            "law_error": float(np.mean([c["law_error"] for c in cells])),
            "copy_error": float(np.mean([c["copy_error"] for c in cells]))}  # fmt: skip


def law_comparison(laws: dict[str, dict]) -> dict[str, Any]:
    """Each law's AIC, R² and held-out errors side by side, and the one AIC prefers (Droppo's
    point: whether the irreducible term L_∞ earns its parameter)."""
    table = {
        name: {
            "parameters": len(law["params"]),
            "aic": law["aic"],
            "r2_log": law["r2_log"],
            "held_out_largest_N": (law.get("extrapolation") or {}).get("relative_error"),
            "held_out_largest_D": (law.get("extrapolation_d") or {}).get("relative_error"),
        }
        for name, law in laws.items()
        if "params" in law
    }
    preferred = min(table, key=lambda name: table[name]["aic"]) if table else None
    return {"table": table, "preferred_by_aic": preferred}


def compute_curve(record: dict) -> list[tuple[float, float]]:
    """A run's (compute C ≈ 6·N·tokens, validation loss) along its validation curve; a run of a
    fixed number of steps has only its end point."""
    per_step = 6.0 * record["n_params"] * record["training"]["batch_size"] * record["frames"]
    curve = record.get("validation_curve") or [(record["steps"], record["held_out_loss"])]
    return [(per_step * step, loss) for step, loss in curve]


def compute_frontier(records: list[dict], preset: StudyPreset) -> dict[str, Any]:
    """Loss against compute along each grid run's validation curve; the frontier is the lowest
    loss reached at or below each compute (Kaplan et al. 2020, Fig. 2), with the width that
    reaches it; plus Spearman ρ of each run's final compute with its loss, clip RankMe and mean
    accuracy."""
    rows = grid_rows(records, preset)
    points = sorted(
        (compute, loss, r["width"], r["data_seconds"]) for r in rows for compute, loss in compute_curve(r)
    )
    frontier, best = [], np.inf
    for compute, loss, width, seconds in points:
        if loss < best:
            best = loss
            frontier.append({"compute": compute, "loss": loss, "width": width, "data_seconds": seconds})
    out: dict[str, Any] = {"frontier": frontier}
    if len(frontier) > 3:
        c = np.array([p["compute"] for p in frontier])
        out["frontier_law"] = _tried("frontier fit", fit, "saturating", c, np.array([p["loss"] for p in frontier]),
                                     bootstrap=0)  # fmt: skip
    if len(rows) >= 3:
        compute = [r["compute"] for r in rows]
        for column in ("held_out_loss", "clip_rankme", "mean_accuracy"):
            rho, p = spearman(compute, [r[column] for r in rows])
            out[f"spearman_{column}"] = {"rho": rho, "p": p}
    return out


UNIFICATION_VARIABLES = {
    "N (parameters)": lambda r: float(np.log(r["n_params"])),
    "D (seconds)": lambda r: float(np.log(r["data_seconds"])),
    "C (compute)": lambda r: float(np.log(r["compute"])),
    "embedding dimension": lambda r: float(np.log(r["emb_dim"])),
    "depth": lambda r: float(r["depth"]),
    "input length": lambda r: float(np.log(r["frames"])),
    "architecture": lambda r: r["arch"],
    "objective": lambda r: r["objective"],
}


def unification(records: list[dict], tasks: list[str]) -> dict[str, Any]:
    """Pool the trained runs; per task and for the mean accuracy, test whether each variable
    (numbers on a log scale, except depth) explains log accuracy beyond log clip RankMe."""
    rows = [r for r in records if r["family"] == "trained"]
    out: dict[str, Any] = {"runs": len(rows), "variables": list(UNIFICATION_VARIABLES), "tasks": {}}
    if len(rows) < 4:
        return {**out, "error": f"{len(rows)} trained runs: too few for the nested tests"}
    rankme = [r["clip_rankme"] for r in rows]
    variables = {name: [get(r) for r in rows] for name, get in UNIFICATION_VARIABLES.items()}
    for task in [*tasks, "mean"]:
        quality = [r["mean_accuracy" if task == "mean" else f"accuracy_{task}"] for r in rows]
        try:
            tests = unification_test(quality, rankme, variables)
        except ValueError as error:
            out["tasks"][task] = {"error": str(error)}
            continue
        out["tasks"][task] = {name: t if isinstance(t, str) else t.to_dict() for name, t in tests.items()}
    return out


def quality_laws(records: list[dict], tasks: list[str], bootstrap: int = 200) -> dict[str, Any]:
    """accuracy = a·RankMe^b per family: clip-embedding RankMe (what the probes see) per task and
    for the mean over tasks; frame-embedding RankMe for the mean. With Spearman and Kendall ρ, τ."""
    laws: dict[str, Any] = {}
    for family in sorted({r["family"] for r in records}):
        rows = [r for r in records if r["family"] == family]
        for kind in RANKMES:
            for task in [*tasks, "mean"] if kind == "clip_rankme" else ["mean"]:
                key = "mean_accuracy" if task == "mean" else f"accuracy_{task}"
                x = np.array([r[kind] for r in rows], dtype=np.float64)
                y = np.array([r[key] for r in rows], dtype=np.float64)
                if len(rows) < 3 or np.any(y <= 0) or np.ptp(x) == 0:
                    laws[f"{family}/{kind}/{task}"] = {"error": f"{len(rows)} runs, not enough to fit"}
                    continue
                laws[f"{family}/{kind}/{task}"] = {
                    **_tried("RankMe law", rankme_law, x, y, bootstrap=bootstrap),
                    "points": len(rows),
                }
    return laws


def variable_rows(records: list[dict], preset: StudyPreset) -> dict[str, tuple[str, list[dict]]]:
    """Per swept variable (and N, D on the grid): its record column and its runs in the order
    of that column."""
    out = {}
    variables = {"N (width)": grid_rows(records, preset), "D (seconds)": grid_rows(records, preset)}
    variables.update({v: sweep_rows(records, preset, v) for v in SWEEPS if v in preset.sweeps})
    for variable, rows in variables.items():
        column = {"N (width)": "n_params", "D (seconds)": "data_seconds"}.get(variable, variable)
        if variable == "N (width)":
            rows = [r for r in rows if r["data_seconds"] == max(preset.data_seconds)]
        if variable == "D (seconds)":
            rows = [r for r in rows if r["width"] == preset.base.width]
        out[variable] = (column, sorted(rows, key=lambda r: (str(type(r[column])), r[column])))
    return out


def sweep_correlations(records: list[dict], preset: StudyPreset) -> dict[str, Any]:
    """Per swept variable (and N, D on the grid): the values, clip RankMe (with its standard
    error where recorded) and mean accuracy of its runs, and Spearman ρ of RankMe with the
    variable where it is a number."""
    out: dict[str, Any] = {}
    for variable, (column, rows) in variable_rows(records, preset).items():
        entry: dict[str, Any] = {
            "column": column,
            "values": [r[column] for r in rows],
            "clip_rankme": [r["clip_rankme"] for r in rows],
            "clip_rankme_se": [r.get("clip_rankme_se") for r in rows],
            "mean_accuracy": [r["mean_accuracy"] for r in rows],
        }
        numeric = all(isinstance(v, (int, float)) for v in entry["values"])
        if numeric and len(rows) >= 3:
            rho, p = spearman(entry["values"], entry["clip_rankme"])
            entry.update(spearman_rankme=rho, spearman_rankme_p=p)
        out[variable] = entry
    return out


QUALITY_FORMS = ("increasing_power", "log_linear", "rising_to")


def quality_forms(records: list[dict]) -> dict[str, Any]:
    """Mean accuracy against clip RankMe in three forms side by side, per family: a power law,
    linear in log RankMe, and rising to a ceiling (a − b·RankMe^−c); AIC, R² (log), the error
    predicting the largest-RankMe run from the others, and the leave-one-out error."""
    out: dict[str, Any] = {}
    for family in sorted({r["family"] for r in records}):
        rows = [r for r in records if r["family"] == family]
        x = np.array([r["clip_rankme"] for r in rows], dtype=np.float64)
        y = np.array([r["mean_accuracy"] for r in rows], dtype=np.float64)
        for name in QUALITY_FORMS:
            parameters = len(fit_forms.get(name).parameters)
            if len(rows) < parameters + 2 or np.ptp(x) == 0:
                continue
            whole = _tried(f"{name} fit", fit, name, x, y, bootstrap=0)
            if "error" in whole:
                out[f"{family}/{name}"] = whole
                continue
            errors = []
            for left in range(len(rows)):  # leave one out: fit the others, predict it
                keep = np.arange(len(rows)) != left
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        part = fit(name, x[keep], y[keep], bootstrap=0, extrapolate=False)
                except (ValueError, np.linalg.LinAlgError):
                    continue
                errors.append(abs(float(part.predict(x[left : left + 1])[0]) - y[left]) / y[left])
            out[f"{family}/{name}"] = {
                "formula": whole["formula"], "params": whole["params"], "aic": whole["aic"], "r2_log": whole["r2_log"],
                "points": len(rows), "largest_held_out_error": (whole.get("extrapolation") or {}).get("relative_error"),
                "leave_one_out_error": float(np.mean(errors)) if errors else None,
            }  # fmt: skip
    return out


def ranking(records: list[dict], preset: StudyPreset) -> dict[str, Any]:
    """Over the (N, D) grid, how well clip RankMe and the pre-training loss each rank mean
    accuracy (Spearman ρ; the loss enters negated, so higher is better for both)."""
    rows = grid_rows(records, preset)
    if len(rows) < 3:
        return {}
    accuracy = [r["mean_accuracy"] for r in rows]
    by_rankme = spearman([r["clip_rankme"] for r in rows], accuracy)
    by_loss = spearman([-r["held_out_loss"] for r in rows], accuracy)
    return {"points": len(rows), "rankme": {"rho": by_rankme[0], "p": by_rankme[1]},
            "negative_loss": {"rho": by_loss[0], "p": by_loss[1]}}  # fmt: skip


def analyse(records: list[dict], preset: StudyPreset, tasks: list[str], bootstrap: int = 200) -> dict[str, Any]:
    """Everything `fits.json` holds."""
    droppo = loss_law(records, preset, bootstrap)
    kaplan = loss_law(records, preset, bootstrap, form="kaplan")
    return {
        "preset": preset.name,
        "loss_law": droppo,
        "loss_law_kaplan": kaplan,
        "loss_law_comparison": law_comparison({"droppo": droppo, "kaplan": kaplan}),
        "outer_cells": outer_cells(records, preset),
        "compute": compute_frontier(records, preset),
        "quality_laws": quality_laws(records, tasks, bootstrap),
        "quality_forms": quality_forms(records),
        "ranking": ranking(records, preset),
        "sweeps": sweep_correlations(records, preset),
        "unification": unification(records, tasks),
        "noise": noise_calls(records, {v: rows for v, (_, rows) in variable_rows(records, preset).items()}),
    }
