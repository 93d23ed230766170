"""Choosing by RankMe over training (observations at validation checks, the trajectory part and
its analysis) and the pre-registered extrapolation of L(N, D)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rankme_fast import audio
from rankme_fast.audio import pretrain as pretraining
from rankme_fast.audio.models import AudioModel, EncoderConfig, ModelEncoder
from rankme_fast.audio.pretrain import FrameCorpus, PretrainConfig, pretrain
from rankme_fast.scaling.forms import get
from rankme_fast.study import extrapolation, get_preset
from rankme_fast.study.trajectory import ProbeAudio, probe_steps
from rankme_fast.study.trajectory_fits import checkpoint_selection, early_prediction, model_selection


@pytest.fixture(scope="module")
def tiny(bench_cache):
    return audio.make_benchmark("tiny", seed=0)


def test_probe_steps_are_sqrt2_spaced_multiples_of_the_check_interval():
    assert probe_steps(100, 20000) == [100, 200, 300, 400, 600, 800, 1100, 1600, 2300, 3200, 4500, 6400, 9100,
                                       12800, 18100]  # fmt: skip
    assert probe_steps(100, 700) == [100, 200, 300, 400, 600]
    assert probe_steps(4, 4) == [4]


def test_probe_audio_embeds_clips_as_extract_does(tiny):
    model = AudioModel(EncoderConfig(width=16, depth=1, emb_dim=8, frames=40)).eval()
    batched = ProbeAudio(tiny).clip_embeddings(model, batch=7)  # batches that do not divide the clips
    one_by_one = audio.extract(ModelEncoder(model), tiny, progress=False).clip_embeddings
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)


def test_observations_are_kept_at_every_check_and_survive_a_crash(tiny, tmp_path, monkeypatch):
    """What `observe` returns at each validation check is in the result, and a run that crashed
    resumes with the observations made before the crash, ending as an uninterrupted run."""
    corpus = FrameCorpus.from_waves(tiny.waves, tiny.sr)
    middle = len(corpus) // 2
    validation = FrameCorpus(corpus.frames[:middle], corpus.seconds / 2)
    held_out = FrameCorpus(corpus.frames[middle:], corpus.seconds / 2)
    config = EncoderConfig(width=16, depth=1, emb_dim=8, frames=40)
    settings = PretrainConfig(steps=60, batch_size=4, warmup=2, eval_windows=8, patience=50, eval_every=10)

    def observe(step, model):
        assert not model.training
        return {"norm": float(sum(p.detach().abs().sum() for p in model.parameters()))}

    straight = pretrain(config, corpus.take(15), settings, held_out=held_out, validation=validation, observe=observe)
    assert [o["step"] for o in straight.observations] == [10, 20, 30, 40, 50, 60]
    assert [o["validation_loss"] for o in straight.observations] == [loss for _, loss in straight.curve]

    def crashing(step, model):
        if step == 40:
            raise KeyboardInterrupt
        return observe(step, model)

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, corpus.take(15), settings, held_out=held_out, validation=validation, observe=crashing,
                 checkpoint=path, checkpoint_every=5)  # fmt: skip
    resumed = pretrain(config, corpus.take(15), settings, held_out=held_out, validation=validation, observe=observe,
                       checkpoint=path, checkpoint_every=5)  # fmt: skip
    assert 30 <= resumed.resumed_from < 40
    assert resumed.observations == straight.observations and resumed.losses == straight.losses
    assert pretraining.PretrainResult.__dataclass_fields__["observations"]


def _record(name, width, accuracies, rankmes, losses, best_step, steps=None):
    """A trajectory record whose probed checkpoints are at 100, 200, … (the best among them)."""
    rows = enumerate(zip(accuracies, rankmes, losses, strict=True))
    points = [{"step": 100 * (i + 1), "clip_rankme": r, "clip_rankme_centered": r + 1, "validation_loss": v,
               "mean_accuracy": a} for i, (a, r, v) in rows]  # fmt: skip
    best = points[best_step // 100 - 1]
    return {"id": name, "width": width, "data_seconds": 100.0, "n_params": 1000, "frames": 10,
            "training": {"batch_size": 2}, "trajectory": points, "losses": [0.0] * (steps or 100 * len(points)),
            "best_step": best_step, "validation_curve": [[p["step"], p["validation_loss"]] for p in points],
            **{k: best[k] for k in ("clip_rankme", "clip_rankme_centered", "mean_accuracy")}}  # fmt: skip


def test_checkpoint_and_model_selection_costs_are_what_each_criterion_gives_up():
    a = _record("a", 8, accuracies=[0.5, 0.7, 0.6], rankmes=[1, 2, 3], losses=[0.9, 0.8, 0.85], best_step=200)
    b = _record("b", 16, accuracies=[0.6, 0.65, 0.8], rankmes=[3, 2, 4], losses=[0.7, 0.6, 0.65], best_step=200)
    chosen = checkpoint_selection([a, b])
    # a: RankMe picks step 300 (0.6; best 0.7), the loss step 200 (0.7); b: RankMe 300 (0.8, the best), loss 200
    assert chosen["cost"]["rankme"]["mean"] == pytest.approx((0.1 + 0.0) / 2)
    assert chosen["cost"]["validation_loss"]["mean"] == pytest.approx((0.0 + 0.15) / 2)
    assert chosen["cost"]["rankme"]["best_share"] == 0.5
    assert chosen["cost"]["chance"]["mean"] == pytest.approx(((0.7 - 0.6) + (0.8 - (0.6 + 0.65 + 0.8) / 3)) / 2)
    models = model_selection([a, b], budgets=2)
    last = models["budgets"][-1]  # every checkpoint fits: RankMe's overall pick is b@300, the best
    assert last["candidates"] == 6 and last["oracle"]["mean_accuracy"] == 0.8
    assert last["rankme"]["cost"] == 0.0 and last["validation_loss"]["cost"] == pytest.approx(0.15)
    early = early_prediction([a, b, _record("c", 32, [0.4, 0.45, 0.5], [0.5, 0.6, 0.7], [1.0, 0.99, 0.98], 300)])
    assert early["0.1"]["rankme"]["rho"] == pytest.approx(0.5)  # first checks: RankMe 1, 3, 0.5 vs finals .7 .65 .5


def _grid(preset, law):
    """Records of the preset's grid with losses from `law` (N from the real models)."""
    records = []
    for width in preset.widths:
        n_params = AudioModel(dataclasses.replace(preset.base, width=width)).n_params
        for seconds in preset.data_seconds:
            loss = float(get("droppo")(law, np.array([[n_params, seconds]]))[0])
            records.append({"id": f"w{width}-D{seconds}", "family": "trained", "objective": preset.training.objective,
                            "arch": preset.base.arch, "depth": preset.base.depth, "emb_dim": preset.base.emb_dim,
                            "frames": preset.base.frames, "width": width, "data_seconds": seconds,
                            "n_params": n_params, "held_out_loss": loss})  # fmt: skip
    return records


def test_registered_predictions_cover_the_truth_and_are_written_once(tmp_path):
    preset = get_preset("paper")
    law = np.array([70.0, 0.25, 0.45, 0.35, 0.27])  # N_c, D_c, α_N, α_D, L_∞
    predictions = extrapolation.predict(_grid(preset, law), preset, seed_sd=0.002, bootstrap=100)
    assert [c["width"] for c in predictions["cells"]] == [32, 64, 128, 256, 256]
    for cell in predictions["cells"]:
        truth = float(get("droppo")(law, np.array([[cell["n_params"], cell["data_seconds"]]]))[0])
        assert cell["predicted"] == pytest.approx(truth, rel=1e-3)
        assert cell["interval"][0] < truth < cell["interval"][1]
    with pytest.raises(ValueError, match="grid cells"):
        extrapolation.predict(_grid(dataclasses.replace(preset, widths=(8,)), law), preset, seed_sd=0.002)
    folder = tmp_path / "extrapolation"
    with pytest.raises(ValueError, match="no registered predictions"):
        extrapolation.train(preset, None, tmp_path)
    extrapolation.write_predictions(folder, predictions)
    with pytest.raises(ValueError, match="registered once"):
        extrapolation.write_predictions(folder, predictions)
    cell = predictions["cells"][0]
    scored = extrapolation.score(predictions, [{"id": cell["id"], "held_out_loss": cell["interval"][1] + 0.01}])
    assert (scored["trained"], scored["inside"]) == (1, 0) and "actual" not in scored["cells"][1]


def test_the_compute_optimal_size_exponent_is_recovered_from_curves_of_a_known_law():
    """L(N, T) = N^-½ + T^-½ with C = 6·N·T has N_opt ∝ C^½ (equal terms at the optimum)."""
    runs = []
    for n_params in np.geomspace(1e2, 1e6, 17):
        steps = np.unique(np.geomspace(1, 1e7, 60).astype(int))
        runs.append({"n_params": float(n_params), "frames": 1, "training": {"batch_size": 1},
                     "validation_curve": [(int(t), float(n_params**-0.5 + t**-0.5)) for t in steps]})  # fmt: skip
    result = extrapolation.n_opt_exponent(runs, budgets=10, bootstrap=50)
    assert result["exponent"] == pytest.approx(0.5, abs=0.08)
    assert result["interval"][0] <= result["exponent"] <= result["interval"][1]
