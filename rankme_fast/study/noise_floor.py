"""The study's noise floor: runs repeated with other training seeds (the grid's corner cells and
every sweep run), and untrained encoders of each width, so that a difference the report
interprets can be set against the spread that training seeds alone produce. Each run is one
JSON file under `out/noise/runs/` (a study started again reads it back; an interrupted
pre-training resumes from `out/noise/checkpoints/`)."""

from __future__ import annotations

import dataclasses
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast.audio.models import AudioModel, ModelEncoder
from rankme_fast.study.presets import StudyPreset
from rankme_fast.study.runner import StudyData, evaluate, run_resumable, write_json

MEASURES = ("held_out_loss", "clip_rankme", "mean_accuracy")


def run_noise(
    preset: StudyPreset, data: StudyData, out: Path, seeds: tuple[int, ...], say: Any = print,
    minutes: float | None = None,
) -> list[dict[str, Any]]:
    """The seed replicates (seed order first, so every cell gets its first replicate early) and
    the untrained encoders; finished ones are read back. With `minutes`, no new replicate starts
    after that long: the rest is left for a later call (the report shows what is done)."""
    folder = out / "noise"
    untrained = [_untrained(width, preset, data, folder, say) for width in preset.widths]
    return untrained + run_resumable(preset.noise_runs(seeds), data, folder, "noise", say, minutes=minutes)


def _untrained(width: int, preset: StudyPreset, data: StudyData, folder: Path, say: Any) -> dict[str, Any]:
    """The base model at `width` with its initial weights (seed 0), normalised on the pool."""
    path = folder / "runs" / f"untrained-w{width}.json"
    if path.exists():
        return json.loads(path.read_text())
    config = dataclasses.replace(preset.base, width=width)
    torch.manual_seed(0)
    model = AudioModel(config)
    model.set_normalisation(data.pool.frames)
    name = f"untrained-w{width}"
    record = {"id": name, "family": "untrained", "name": name, "width": width, "n_params": model.n_params,
              **evaluate(ModelEncoder(model, name=name), data.benchmark)}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    say(f"[noise] untrained width {width:4d}: RankMe {record['clip_rankme']:6.1f} acc {record['mean_accuracy']:.3f}")
    return record


def seed_spread(records: list[dict[str, Any]], replicates: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration with ≥ 2 seeds: each measure's mean and standard deviation over the
    seeds (seed 0 from the main runs), and the median SD over configurations."""
    cells = {}
    for config, runs in _by_config(records, replicates).items():
        if len(runs) < 2:
            continue
        cells[config] = {"seeds": sorted(int(r["training"]["seed"]) for r in runs)} | {
            measure: {"mean": float(np.mean([r[measure] for r in runs])),
                      "sd": float(np.std([r[measure] for r in runs], ddof=1))}
            for measure in MEASURES
        }  # fmt: skip
    summary = {measure: float(np.median([c[measure]["sd"] for c in cells.values()])) for measure in MEASURES}
    untrained = sorted((r for r in replicates if r.get("family") == "untrained"), key=lambda r: r["width"])
    return {"cells": cells, "median_sd": summary if cells else {},
            "untrained": [{k: r[k] for k in ("width", "clip_rankme", "mean_accuracy")} for r in untrained]}  # fmt: skip


def seed_means(records: list[dict[str, Any]], replicates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per trained configuration: clip RankMe and every accuracy averaged over its
    seeds (seed 0 from the main runs), `seeds` saying how many; other columns from seed 0."""
    means = []
    for runs in _by_config(records, replicates).values():
        averaged = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]
                    if key == "clip_rankme" or key.startswith("accuracy_") or key == "mean_accuracy"}  # fmt: skip
        means.append(runs[0] | averaged | {"seeds": len(runs)})
    return means


def against_seeds(groups: dict[str, list[dict[str, Any]]], floor: dict[str, Any]) -> list[dict[str, Any]]:
    """Each group's neighbouring runs (in the order given): the difference of each measure and
    whether it exceeds twice the seed noise of the difference, 2·√(SD_a² + SD_b²), where both
    configurations were repeated."""
    calls = []
    cells = floor.get("cells", {})
    for group, rows in groups.items():
        for a, b in pairwise(rows):
            spread_a, spread_b = cells.get(_without_seed(a["id"])), cells.get(_without_seed(b["id"]))
            call: dict[str, Any] = {"group": group, "a": a["id"], "b": b["id"]}
            for measure in MEASURES:
                difference = b[measure] - a[measure]
                call[measure] = {"difference": difference}
                if spread_a and spread_b:
                    noise = 2 * float(np.hypot(spread_a[measure]["sd"], spread_b[measure]["sd"]))
                    call[measure] |= {"twice_seed_sd": noise, "beyond": abs(difference) > noise}
            calls.append(call)
    return calls


def _by_config(records: list[dict[str, Any]], replicates: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The trained runs grouped by configuration (the id without its seed), main runs first."""
    by_config: dict[str, list[dict[str, Any]]] = {}
    for record in [*records, *replicates]:
        if record.get("family") == "trained":
            by_config.setdefault(_without_seed(record["id"]), []).append(record)
    return by_config


def _without_seed(run_id: str) -> str:
    return run_id.rsplit("-seed", 1)[0]

