"""The study's fits: Droppo & Elibol's L(N, D) with L_∞ on the grid's held-out pre-training
losses, downstream accuracy as a power law of RankMe (per task and pooled as the mean over
tasks, within each family), and how RankMe moves with each swept variable."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from rankme_fast.scaling import fit, rankme_law
from rankme_fast.study.presets import SWEEPS, StudyPreset

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


def loss_law(records: list[dict], preset: StudyPreset, bootstrap: int = 200) -> dict[str, Any]:
    """Droppo's L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D + L_∞ on held-out losses (D in seconds)."""
    rows = grid_rows(records, preset)
    x = np.array([[r["n_params"], r["data_seconds"]] for r in rows], dtype=np.float64).reshape(-1, 2)
    y = np.array([r["held_out_loss"] for r in rows], dtype=np.float64)
    result = _tried("droppo fit", fit, "droppo", x, y, bootstrap=bootstrap)
    return {**result, "runs": [r["id"] for r in rows]}


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


def sweep_correlations(records: list[dict], preset: StudyPreset) -> dict[str, Any]:
    """Per swept variable (and N, D on the grid): the values, clip RankMe and mean accuracy of
    its runs, and Spearman ρ of RankMe with the variable where it is a number."""
    out: dict[str, Any] = {}
    variables = {"N (width)": grid_rows(records, preset), "D (seconds)": grid_rows(records, preset)}
    variables.update({v: sweep_rows(records, preset, v) for v in SWEEPS if v in preset.sweeps})
    for variable, rows in variables.items():
        column = {"N (width)": "n_params", "D (seconds)": "data_seconds"}.get(variable, variable)
        if variable == "N (width)":
            rows = [r for r in rows if r["data_seconds"] == max(preset.data_seconds)]
        if variable == "D (seconds)":
            rows = [r for r in rows if r["width"] == preset.base.width]
        rows = sorted(rows, key=lambda r: (str(type(r[column])), r[column]))
        entry: dict[str, Any] = {
            "column": column,
            "values": [r[column] for r in rows],
            "clip_rankme": [r["clip_rankme"] for r in rows],
            "mean_accuracy": [r["mean_accuracy"] for r in rows],
        }
        numeric = all(isinstance(v, (int, float)) for v in entry["values"])
        if numeric and len(rows) >= 3:
            rho = stats.spearmanr(entry["values"], entry["clip_rankme"])
            entry.update(spearman_rankme=float(rho.statistic), spearman_rankme_p=float(rho.pvalue))
        out[variable] = entry
    return out


def analyse(records: list[dict], preset: StudyPreset, tasks: list[str], bootstrap: int = 200) -> dict[str, Any]:
    """Everything `fits.json` holds."""
    return {
        "preset": preset.name,
        "loss_law": loss_law(records, preset, bootstrap),
        "quality_laws": quality_laws(records, tasks, bootstrap),
        "sweeps": sweep_correlations(records, preset),
    }
