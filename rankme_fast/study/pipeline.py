"""`run_study`: data, runs, fits and report, resumable."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import scipy
import torch

import rankme_fast
from rankme_fast.study import extrapolation
from rankme_fast.study.extrapolation import write_predictions
from rankme_fast.study.layerwise import run_layerwise
from rankme_fast.study.noise_floor import against_seeds, run_noise, seed_means, seed_spread
from rankme_fast.study.presets import StudyPreset, get_preset
from rankme_fast.study.runner import StudyData, read_back, run_all
from rankme_fast.study.study_fits import analyse, grid_rows, unification, variable_rows
from rankme_fast.study.study_report import write_report
from rankme_fast.study.trajectory import run_trajectories
from rankme_fast.study.trajectory_fits import trajectory_analysis

NEEDS_NOISE = "registering predictions needs the seed noise of L: run with --noise-seeds first (or with it)"


@dataclass
class StudyResult:
    """Every run's record, the fits and where the outputs were written."""

    records: list[dict[str, Any]]
    fits: dict[str, Any]
    paths: dict[str, Path]


def run_study(
    preset: str | StudyPreset = "quick",
    out: str | Path = "study",
    *,
    ladder: bool = True,
    bootstrap: int = 200,
    verbose: bool = True,
    layers: bool = False,
    noise_seeds: tuple[int, ...] = (),
    noise_minutes: float | None = None,
    trajectory: bool = False,
    trajectory_minutes: float | None = None,
    predict: bool = False,
    extrapolate: bool = False,
) -> StudyResult:
    """Run the preset's study into `out` (runs already finished there are read back, not
    redone), fit the laws and write report.md, runs.csv, fits.json and the plots; with `layers`,
    also every layer of the depth sweep's and the ladder's encoders (layers.json, layers.png);
    with `noise_seeds`, the corner cells and sweep runs again with those training seeds and the
    untrained encoders (the noise floor, out/noise/), new replicates starting only within
    `noise_minutes`; with `trajectory`, the grid again with a clean early-stopping split and
    RankMe at every check (out/trajectory/); with `predict`, register the extrapolation cells'
    predicted losses (out/extrapolation/, once); with `extrapolate`, train those cells. Results
    of these parts already on disk are read back into the report either way."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        if verbose:
            print(line, flush=True)

    if predict and not noise_seeds and not (out / "noise" / "runs").is_dir():
        raise ValueError(NEEDS_NOISE)  # said before anything is trained
    started = time.perf_counter()
    say(
        f"rankme-fast study: preset {preset.name!r}, {len(preset.runs())} pre-training runs, "
        f"{len(preset.ladder) if ladder else 0} pretrained encoders → {out}"
    )
    data = StudyData.prepare(preset, progress=verbose)
    say(
        f"audio: {len(data.benchmark)} labelled clips ({data.benchmark.synthesizers} synthesizers), "
        f"{data.pool.seconds:.0f} s of pre-training audio"
    )
    records = run_all(preset, data, out, ladder=ladder, say=say)
    layerwise = run_layerwise(preset, records, data.benchmark, out, say) if layers else None
    replicates = run_noise(preset, data, out, noise_seeds, say, noise_minutes) if noise_seeds else []
    replicates = replicates or read_back(out / "noise")
    floor = seed_spread(records, replicates) if replicates else {}
    if predict:
        seed_sd = floor.get("median_sd", {}).get("held_out_loss")
        if seed_sd is None:
            raise ValueError(NEEDS_NOISE)
        say(f"registered: {write_predictions(out / 'extrapolation', extrapolation.predict(records, preset, seed_sd))}")
    cells = extrapolation.train(preset, data, out, say) if extrapolate else read_back(out / "extrapolation")
    trajectories = run_trajectories(preset, data, out, say, trajectory_minutes) if trajectory else []
    trajectories = trajectories or read_back(out / "trajectory")
    tasks = list(data.benchmark.tasks)
    fits = analyse(records, preset, tasks, bootstrap=bootstrap)
    if floor:
        groups = {variable: rows for variable, (_, rows) in variable_rows(records, preset).items()}
        means = seed_means(records, replicates)
        fits["noise_floor"] = floor | {"neighbours": against_seeds(groups, floor),
                                       "unification_on_means": unification(means, tasks)
                                       | {"averaged": sum(m["seeds"] > 1 for m in means)}}  # fmt: skip
    if trajectories:
        fits["trajectory"] = trajectory_analysis(trajectories, records, fits, preset, bootstrap)
    registered = out / "extrapolation" / extrapolation.PREDICTIONS
    if registered.exists():
        fits["extrapolation"] = extrapolation.score(json.loads(registered.read_text()), cells)
        grid = grid_rows(records, preset)
        fits["extrapolation"]["n_opt"] = {"grid": extrapolation.n_opt_exponent(grid),
                                          "with_cells": extrapolation.n_opt_exponent(grid + cells)}  # fmt: skip
    meta = {
        "runs": sum(r["family"] == "trained" for r in records),
        "pretrained": sum(r["family"] == "pretrained" for r in records),
        "minutes": (time.perf_counter() - started) / 60,
        "run_minutes": sum(r.get("pretrain_seconds", 0.0) + r["eval_seconds"] for r in records) / 60,
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "versions": _versions(),
        "eval_clips": len(data.benchmark),
        "synthesizers": data.benchmark.synthesizers,
        "pool_seconds": data.pool.seconds,
    }
    paths = write_report(records, fits, preset, tasks, out, meta, layerwise, trajectories)
    say(f"report: {paths['report.md']}")
    return StudyResult(records, fits, paths)


def _cpu() -> str:
    """The CPU's model name (Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _versions() -> dict[str, str]:
    return {"rankme_fast": rankme_fast.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}  # fmt: skip
