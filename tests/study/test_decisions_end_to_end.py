"""The study's decision parts end to end on a converged micro preset: the noise floor, registered
predictions and the cell outside the grid trained against them, and the trajectories."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rankme_fast.study import get_preset, run_study
from rankme_fast.study.runner import StudyData, read_back
from rankme_fast.study.trajectory import run_trajectories


def test_the_decision_parts_end_to_end_resume_and_reach_the_report(bench_cache, tmp_path):
    """A converged micro study: the noise floor, registered predictions, the cell outside the grid
    trained against them, and the trajectories; every part in the report, nothing trained twice."""
    micro = get_preset("micro")
    preset = dataclasses.replace(
        micro, name="micro-converged", widths=(8, 12, 16), sweeps={}, ladder=(), extrapolation=((24, 200),),
        extrapolation_pool_seeds=(1,),
        training=dataclasses.replace(micro.training, steps=16, eval_every=8, patience=2))  # fmt: skip
    out = tmp_path / "study"
    with pytest.raises(ValueError, match="seed noise"):
        run_study(preset, out, verbose=False, predict=True)
    assert not out.exists() or not any(out.rglob("*.json"))  # refused before anything was trained
    result = run_study(preset, out, bootstrap=10, verbose=False, noise_seeds=(1,), predict=True, extrapolate=True,
                       trajectory=True)  # fmt: skip
    registered = (out / "extrapolation" / "predictions.json").read_bytes()
    (cell,) = result.fits["extrapolation"]["cells"]
    assert cell["width"] == 24 and "actual" in cell and result.fits["extrapolation"]["trained"] == 1
    assert set(result.fits["extrapolation"]["n_opt"]) == {"grid", "with_cells"}
    run = json.loads(next((out / "extrapolation" / "runs").glob("*.json")).read_text())
    assert run["predictions_sha256"] and (out / "extrapolation" / "predictions.json").read_bytes() == registered
    on_means = result.fits["noise_floor"]["unification_on_means"]
    assert on_means["averaged"] == 6 and all(
        0 < entry["detectable_r2"] < 1 for entry in on_means["tasks"]["mean"].values() if isinstance(entry, dict))
    analysis = result.fits["trajectory"]
    assert analysis["runs"] == 6 and set(analysis["checkpoints"]["cost"]) >= {"rankme", "validation_loss", "chance"}
    assert all(0 <= c["mean"] <= 1 for c in analysis["checkpoints"]["cost"].values())
    report = (out / "report.md").read_text()
    assert "## Choosing checkpoints and models by RankMe" in report and "## A pre-registered extrapolation" in report
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "extrapolation.png").stat().st_size > 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / "trajectory" / "runs").iterdir()}
    again = run_trajectories(preset, StudyData.prepare(preset), out, say=lambda line: None)  # read back
    assert sorted(r["id"] for r in again) == [r["id"] for r in read_back(out / "trajectory")]
    assert {p: p.stat().st_mtime_ns for p in (out / "trajectory" / "runs").iterdir()} == stamps
