"""Fitted on the inner cells of a grid, L(N, D) predicts the outer ones; next to it the
baseline that copies each outer cell's nearest inner neighbour. On losses that follow the law
exactly, the law's error is ~0 and the copy's is not."""

from __future__ import annotations

import dataclasses

import pytest

from rankme_fast.scaling import FORMS
from rankme_fast.study.presets import get_preset
from rankme_fast.study.study_fits import outer_cells


def test_the_law_beats_the_copy_on_losses_that_follow_it():
    preset = dataclasses.replace(get_preset("paper"), sweeps={})
    base = preset.base
    law = FORMS["droppo"]
    params = [2e5, 3e3, 0.35, 0.45, 0.25]  # N_c, D_c, α_N, α_D, L_∞
    records = []
    for width in preset.widths:
        n = 1000.0 * width**2
        for seconds in preset.data_seconds:
            loss = float(law(params, [[n, seconds]])[0])
            records.append({"family": "trained", "objective": preset.training.objective, "arch": base.arch,
                            "depth": base.depth, "emb_dim": base.emb_dim, "frames": base.frames, "width": width,
                            "data_seconds": seconds, "n_params": n, "held_out_loss": loss})  # fmt: skip
    result = outer_cells(records, preset)
    assert (result["inner"], result["outer"]) == (16, 9)
    assert result["law_error"] < 1e-3 < result["copy_error"]
    corner = next(c for c in result["cells"] if (c["width"], c["data_seconds"]) == (128, 4096))
    assert corner["copied_from"] == [64, 1024] and corner["predicted"] == pytest.approx(corner["actual"], rel=1e-3)
