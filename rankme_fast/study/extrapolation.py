"""A pre-registered test of L(N, D): predict the held-out loss of cells outside the grid (wider
models, more audio) with prediction intervals before they are trained, write the predictions
once (`predict`, never overwritten, committed on their own), then train the cells (`train`,
resumable, each run recording the digest of the predictions it tests) and score hits and
misses (`score`). Files under `out/extrapolation/`."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast.audio import make_benchmark
from rankme_fast.audio.models import AudioModel
from rankme_fast.audio.pretrain import FrameCorpus
from rankme_fast.scaling import fit
from rankme_fast.study.presets import RunSpec, StudyPreset
from rankme_fast.study.runner import StudyData, run_resumable, write_json
from rankme_fast.study.study_fits import compute_curve, grid_rows

LEVEL = 0.95
PREDICTIONS = "predictions.json"


def cells(preset: StudyPreset) -> list[RunSpec]:
    """The preset's cells outside its grid, smallest first."""
    specs = [RunSpec(dataclasses.replace(preset.base, width=w), preset.training, d) for w, d in preset.extrapolation]
    return sorted(specs, key=lambda s: (s.data_seconds * s.encoder.width**2, s.encoder.width))


def predict(
    records: list[dict[str, Any]], preset: StudyPreset, seed_sd: float, *, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Droppo's L(N, D) fitted on the grid; each outside cell's predicted loss with a
    `LEVEL` prediction interval: the law at each bootstrap draw of its parameters plus a normal
    draw of the training-seed noise (`seed_sd`, the standard deviation of L between seeds)."""
    rows = grid_rows(records, preset)
    if len(rows) <= 5:
        raise ValueError(f"predicting needs more grid cells than the law's 5 parameters, the grid has {len(rows)}")
    x = np.array([[r["n_params"], r["data_seconds"]] for r in rows], dtype=np.float64)
    law = fit("droppo", x, np.array([r["held_out_loss"] for r in rows]), bootstrap=bootstrap, seed=seed,
              extrapolate=False)  # fmt: skip
    rng = np.random.default_rng(seed)
    tail = (1 - LEVEL) / 2
    predictions = []
    for spec in cells(preset):
        n_params = AudioModel(spec.encoder).n_params
        point = np.array([[n_params, spec.data_seconds]], dtype=np.float64)
        draws = np.array([law.form(theta, point)[0] for theta in law.bootstrap])
        draws = draws + rng.normal(0.0, seed_sd, len(draws))
        low, high = np.quantile(draws, [tail, 1 - tail])
        predictions.append({"id": spec.id, "width": spec.encoder.width, "data_seconds": spec.data_seconds,
                            "n_params": n_params, "predicted": float(law.predict(point)[0]),
                            "interval": [float(low), float(high)]})  # fmt: skip
    return {"form": "droppo", "params": law.params, "level": LEVEL, "bootstrap": len(law.bootstrap),
            "seed_sd": seed_sd, "fitted_on": [r["id"] for r in rows], "cells": predictions}  # fmt: skip


def write_predictions(folder: Path, predictions: dict[str, Any]) -> Path:
    """Write the predictions once: an existing file is the registered one and is kept."""
    path = folder / PREDICTIONS
    if path.exists():
        raise ValueError(f"{path} exists: predictions are registered once, before training; remove it by hand "
                         "only to register new ones (and commit them before training)")  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, predictions)
    return path


def larger_pool(preset: StudyPreset, data: StudyData) -> StudyData:
    """The study's pool followed by renderings of the pool's kind with `extrapolation_pool_seeds`
    (so each amount of audio starts with the grid's)."""
    waves = np.concatenate([make_benchmark(preset.pool_preset, seed=s).waves for s in preset.extrapolation_pool_seeds])
    order = np.random.default_rng(0).permutation(len(waves))
    extra = FrameCorpus.from_waves(waves[order], data.benchmark.sr)
    pool = FrameCorpus(torch.cat([data.pool.frames, extra.frames]), data.pool.seconds + extra.seconds,
                       data.pool.frame_rate)  # fmt: skip
    return dataclasses.replace(data, pool=pool)


def train(preset: StudyPreset, data: StudyData, out: Path, say: Any = print) -> list[dict[str, Any]]:
    """Train the registered cells (finished ones read back); refuses without registered predictions."""
    folder = out / "extrapolation"
    path = folder / PREDICTIONS
    if not path.exists():
        raise ValueError(f"no registered predictions at {path}: write them first (rankme-fast study --predict) "
                         "and commit them before training")  # fmt: skip
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return run_resumable(cells(preset), larger_pool(preset, data), folder, "extrapolation", say,
                         extra={"predictions_sha256": digest})  # fmt: skip


def score(predictions: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each registered cell next to its outcome (when trained): inside its interval or not."""
    by_id = {r["id"]: r for r in records}
    rows = []
    for cell in predictions["cells"]:
        row = dict(cell)
        record = by_id.get(cell["id"])
        if record is not None:
            actual = record["held_out_loss"]
            row |= {"actual": actual, "inside": cell["interval"][0] <= actual <= cell["interval"][1],
                    "error": (cell["predicted"] - actual) / actual}  # fmt: skip
        rows.append(row)
    trained = [r for r in rows if "actual" in r]
    return {"level": predictions["level"], "cells": rows, "trained": len(trained),
            "inside": sum(r["inside"] for r in trained)}  # fmt: skip


def n_opt_exponent(
    runs: list[dict[str, Any]], budgets: int = 12, bootstrap: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """N_opt(C) ∝ C^a: at log-spaced compute budgets, the parameter count of the run whose
    validation curve reaches the lowest loss within the budget; a is the least-squares slope of
    log N_opt on log C, with a percentile interval from resampling the runs."""
    curves = [(r["n_params"], np.array(compute_curve(r))) for r in runs]
    low = np.quantile([c[:, 0].min() for _, c in curves], 0.5)  # every budget affords some of the runs
    grid = np.geomspace(low, max(c[:, 0].max() for _, c in curves), budgets)

    def slope(chosen: list[tuple[int, np.ndarray]]) -> tuple[float, list[float]]:
        best = []
        for budget in grid:
            within = [(c[c[:, 0] <= budget, 1].min(), n) for n, c in chosen if (c[:, 0] <= budget).any()]
            best.append(min(within)[1] if within else np.nan)
        keep = np.isfinite(best)
        if keep.sum() < 3 or np.ptp(np.asarray(best)[keep]) == 0:
            return float("nan"), best
        return float(np.polyfit(np.log(grid[keep]), np.log(np.asarray(best)[keep]), 1)[0]), best

    exponent, n_opt = slope(curves)
    rng = np.random.default_rng(seed)
    resamples = (rng.integers(0, len(curves), len(curves)) for _ in range(bootstrap))
    draws = np.array([slope([curves[i] for i in pick])[0] for pick in resamples])
    draws = draws[np.isfinite(draws)]
    tail = (1 - LEVEL) / 2
    interval = [float(v) for v in np.quantile(draws, [tail, 1 - tail])] if len(draws) else [float("nan")] * 2
    return {"exponent": exponent, "interval": interval, "level": LEVEL, "draws": len(draws), "runs": len(runs),
            "budgets": [{"compute": float(c), "n_opt": n} for c, n in zip(grid, n_opt, strict=True)]}  # fmt: skip
