"""The study: the encoder family, APC/MAE pre-training (determinism, learning, exact resume),
and a micro sweep end to end through `rankme-fast study`, resumed."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from rankme_fast import audio, cli
from rankme_fast.audio import pretrain as pretraining
from rankme_fast.audio.models import ARCHS, AudioModel, EncoderConfig, ModelEncoder
from rankme_fast.audio.pretrain import FrameCorpus, PretrainConfig, pretrain


@pytest.fixture(scope="module")
def corpus(bench_cache) -> FrameCorpus:
    tiny = audio.make_benchmark("tiny", seed=0)
    return FrameCorpus.from_waves(tiny.waves, tiny.sr)


# -- the encoder family -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("causal", [True, False])
def test_parameter_count_is_the_sum_of_parameter_sizes_and_grows_with_width(arch, causal):
    small = AudioModel(EncoderConfig(width=16, depth=2, emb_dim=8, arch=arch, causal=causal))
    large = AudioModel(EncoderConfig(width=64, depth=2, emb_dim=8, arch=arch, causal=causal))
    assert small.n_params == sum(p.numel() for p in small.parameters())
    assert ModelEncoder(small).n_params == small.n_params
    assert large.n_params > 4 * small.n_params


@pytest.mark.parametrize("arch", ARCHS)
def test_causal_models_do_not_see_the_future_and_keep_the_shape(arch):
    torch.manual_seed(0)
    model = AudioModel(EncoderConfig(width=32, depth=2, emb_dim=12, arch=arch, frames=40)).eval()
    x = torch.randn(2, 40, 64)
    changed = x.clone()
    changed[:, 25:] = torch.randn(2, 15, 64)
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (2, 40, 12)
    torch.testing.assert_close(a[:, :25], b[:, :25])
    assert not torch.allclose(a[:, 25:], b[:, 25:])


def test_bidirectional_models_do_see_the_future():
    model = AudioModel(EncoderConfig(width=32, depth=1, emb_dim=8, causal=False)).eval()
    x = torch.randn(1, 30, 64)
    changed = x.clone()
    changed[:, 20:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :20], model(changed)[:, :20])


def test_model_encoder_embeds_a_clip_in_training_sized_windows():
    model = AudioModel(EncoderConfig(width=16, depth=1, emb_dim=8, frames=30))
    encoder = ModelEncoder(model, name="m")
    frames = encoder.embed(np.zeros(16000, dtype=np.float32) + 0.01, 16000)
    assert frames.values.shape == (101, 8) and encoder.frame_rate == 100.0
    assert torch.isfinite(frames.values).all()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(width=0), "width"),
        (dict(depth=1.5), "depth"),
        (dict(arch="rnn"), "arch"),
        (dict(frames=1), "frames"),
        (dict(emb_dim=True), "emb_dim"),
    ],
)
def test_bad_encoder_configs_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**options)


# -- pre-training -----------------------------------------------------------------------------


def test_apc_loss_decreases_and_runs_are_deterministic(corpus):
    config = EncoderConfig(width=32, depth=1, emb_dim=16, frames=50)
    settings = PretrainConfig(steps=40, batch_size=8, warmup=4, eval_windows=8)
    first = pretrain(config, corpus, settings, held_out=corpus)
    again = pretrain(config, corpus, settings, held_out=corpus)
    assert first.losses == again.losses and first.held_out_loss == again.held_out_loss
    assert np.mean(first.losses[-5:]) < 0.8 * np.mean(first.losses[:5])
    assert first.tokens == 40 * 8 * 50 and first.compute == 6.0 * first.n_params * first.tokens
    other_seed = pretrain(config, corpus, PretrainConfig(steps=40, batch_size=8, warmup=4, eval_windows=8, seed=1))
    assert other_seed.losses != first.losses


def test_mae_objective_trains_a_bidirectional_model(corpus):
    result = pretrain(
        EncoderConfig(width=32, depth=1, emb_dim=16, frames=50, causal=False, arch="conv"),
        corpus,
        PretrainConfig(objective="mae", steps=30, batch_size=8, warmup=3, eval_windows=8),
        held_out=corpus,
    )
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert np.isfinite(result.held_out_loss)


def test_an_interrupted_run_resumes_from_its_checkpoint_bit_identical(corpus, tmp_path, monkeypatch):
    config = EncoderConfig(width=16, depth=1, emb_dim=8, frames=40)
    settings = PretrainConfig(steps=12, batch_size=4, warmup=2, eval_windows=4)
    straight = pretrain(config, corpus, settings, held_out=corpus)

    real = pretraining.objective_loss
    calls = {"n": 0}

    def crash_at_step_8(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretraining, "objective_loss", crash_at_step_8)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, corpus, settings, held_out=corpus, checkpoint=path, checkpoint_every=5)
    monkeypatch.setattr(pretraining, "objective_loss", real)
    resumed = pretrain(config, corpus, settings, held_out=corpus, checkpoint=path, checkpoint_every=5)
    assert resumed.resumed_from == 5
    assert resumed.losses == straight.losses and resumed.held_out_loss == straight.held_out_loss
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    with pytest.raises(ValueError, match="checkpoint of a different run"):
        pretrain(config, corpus, PretrainConfig(steps=13, batch_size=4), checkpoint=path)


def _halves(corpus: FrameCorpus) -> tuple[FrameCorpus, FrameCorpus]:
    middle = len(corpus) // 2
    return (FrameCorpus(corpus.frames[:middle], corpus.seconds / 2),
            FrameCorpus(corpus.frames[middle:], corpus.seconds / 2))  # fmt: skip


def test_training_to_convergence_stops_on_the_validation_loss_and_keeps_the_best_model(corpus):
    """Early stopping: a small model on 20 s overfits, the validation curve turns up, training
    stops `patience` checks after its best and returns that checkpoint (measured on held-out
    audio); tokens and compute count the steps up to it."""
    config = EncoderConfig(width=16, depth=1, emb_dim=8, frames=40)
    settings = PretrainConfig(steps=3000, batch_size=8, warmup=5, eval_windows=16, patience=3, eval_every=20)
    validation, held_out = _halves(corpus)
    result = pretrain(config, corpus.take(20), settings, held_out=held_out, validation=validation)
    assert result.stopped_by == "patience" and len(result.losses) < settings.steps
    steps = [step for step, _ in result.curve]
    assert steps == list(range(20, len(result.losses) + 1, 20))
    best_step, best_loss = min(result.curve, key=lambda point: point[1])
    assert result.best_step == best_step == len(result.losses) - 3 * 20
    assert pretraining.held_out_loss(result.model, result.head, validation, settings) == best_loss
    assert result.held_out_loss == pretraining.held_out_loss(result.model, result.head, held_out, settings)
    assert result.tokens == best_step * 8 * 40 and result.compute == 6.0 * result.n_params * result.tokens
    window = 40 + settings.shift
    assert result.epochs == pytest.approx(len(result.losses) * 8 * window / len(corpus.take(20)))
    capped = pretrain(config, corpus.take(20), PretrainConfig(steps=40, batch_size=8, warmup=5, eval_windows=16,
                      patience=50, eval_every=20), held_out=held_out, validation=validation)  # fmt: skip
    assert capped.stopped_by == "cap" and len(capped.losses) == 40 and [s for s, _ in capped.curve] == [20, 40]
    with pytest.raises(ValueError, match="needs validation audio"):
        pretrain(config, corpus, settings, held_out=held_out)
    with pytest.raises(ValueError, match="patience"):
        PretrainConfig(patience=0)


def test_a_run_to_convergence_resumes_bit_identical(corpus, tmp_path, monkeypatch):
    config = EncoderConfig(width=16, depth=1, emb_dim=8, frames=40)
    settings = PretrainConfig(steps=400, batch_size=4, warmup=2, eval_windows=8, patience=2, eval_every=10)
    validation, held_out = _halves(corpus)
    data = corpus.take(15)
    straight = pretrain(config, data, settings, held_out=held_out, validation=validation)
    assert straight.stopped_by == "patience" and straight.best_step > 10
    real = pretraining.objective_loss
    calls = {"n": 0}

    def crash(model, *args, **kwargs):
        calls["n"] += model.training  # training steps only, not the validation passes
        if calls["n"] == straight.best_step + 7:  # after the best checkpoint, before the stop
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(pretraining, "objective_loss", crash)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, data, settings, held_out=held_out, validation=validation, checkpoint=path, checkpoint_every=5)
    monkeypatch.setattr(pretraining, "objective_loss", real)
    resumed = pretrain(config, data, settings, held_out=held_out, validation=validation, checkpoint=path,
                       checkpoint_every=5)  # fmt: skip
    assert resumed.resumed_from > straight.best_step
    assert (resumed.losses, resumed.curve, resumed.best_step, resumed.held_out_loss) == (
        straight.losses, straight.curve, straight.best_step, straight.held_out_loss)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_pretraining_bad_input_is_named(corpus):
    with pytest.raises(ValueError, match="needs EncoderConfig\\(causal=True\\)"):
        pretrain(EncoderConfig(causal=False), corpus)
    with pytest.raises(ValueError, match="do not fit"):
        pretrain(EncoderConfig(frames=len(corpus)), corpus)
    with pytest.raises(ValueError, match="the corpus has"):
        corpus.take(corpus.seconds * 2)
    with pytest.raises(ValueError, match="objective"):
        PretrainConfig(objective="cpc")
    with pytest.raises(ValueError, match="mask_fraction"):
        PretrainConfig(mask_fraction=1.0)
    assert corpus.take(10).seconds == 10 and len(corpus.take(10)) == round(len(corpus) * 10 / corpus.seconds)


# -- the study end to end ---------------------------------------------------------------------


def test_micro_study_writes_the_report_and_resumes_without_redoing_runs(bench_cache, tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    assert cli.main(["study", "--preset", "micro", "--out", str(out), "--bootstrap", "20"]) == 0
    for name in ("report.md", "runs.csv", "fits.json", "loss_vs_n.png", "quality_vs_rankme.png",
                 "rankme_vs_variables.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    with (out / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    tasks = list(audio.make_benchmark("tiny", seed=0).tasks)
    expected = {"id", "n_params", "data_seconds", "held_out_loss", "clip_rankme", "frame_rankme", "mean_accuracy"}
    assert expected | {f"accuracy_{t}" for t in tasks} <= set(rows[0])
    trained = [r for r in rows if r["family"] == "trained"]
    assert len(trained) == 5 and [r["family"] for r in rows].count("pretrained") == 1  # 2×2 grid + conv, log-mel
    fits = json.loads((out / "fits.json").read_text())
    assert {"loss_law", "quality_laws", "sweeps", "quality_forms", "ranking", "noise"} <= set(fits)
    assert {"trained/increasing_power", "trained/rising_to", "trained/log_linear"} <= set(fits["quality_forms"])
    assert -1 <= fits["ranking"]["rankme"]["rho"] <= 1 and fits["ranking"]["points"] == 4
    assert "cells" in fits["outer_cells"] or "too few" in fits["outer_cells"]["error"]  # 2×2: one inner cell
    assert {"trained/clip_rankme/mean", "trained/clip_rankme/digit"} <= set(fits["quality_laws"])
    report = (out / "report.md").read_text()
    assert "![quality vs RankMe](quality_vs_rankme.png)" in report and "## Findings" in report
    calls = [c for group in fits["noise"]["groups"].values() for c in group]
    assert calls and all(c["interval"][0] <= c["difference"] <= c["interval"][1] for c in calls)
    assert "## Which RankMe differences are beyond noise" in report and " ± " in report

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("rankme_fast.study.runner.pretrain", no_training)
    capsys.readouterr()
    assert cli.main(["study", "--preset", "micro", "--out", str(out), "--bootstrap", "20"]) == 0
    assert capsys.readouterr().out.count("(done before)") == 5
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamps

    assert cli.main(["study", "--preset", "micro", "--out", str(out), "--bootstrap", "20", "--layers"]) == 0
    layers = json.loads((out / "layers.json").read_text())
    depth_runs = [key for key, result in layers.items() if result["family"] == "trained"]
    assert depth_runs and all(len(layers[key]["layers"]) >= 1 for key in depth_runs)  # log-mel has none: skipped
    assert "## Layer by layer" in (out / "report.md").read_text() and (out / "layers.png").stat().st_size > 0

    monkeypatch.undo()  # the seed replicates train
    assert cli.main(["study", "--preset", "micro", "--out", str(out), "--bootstrap", "20", "--noise-seeds", "1"]) == 0
    floor = json.loads((out / "fits.json").read_text())["noise_floor"]
    assert floor["cells"] and all(cell["seeds"] == [0, 1] for cell in floor["cells"].values())
    assert {u["width"] for u in floor["untrained"]} == {8, 16}
    assert floor["neighbours"] and all("beyond" in c["mean_accuracy"] for c in floor["neighbours"])
    assert "## Noise floor: training seeds" in (out / "report.md").read_text()
