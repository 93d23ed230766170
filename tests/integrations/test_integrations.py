"""The training-loop integrations in one process: RankMeMetric (torchmetrics), RankMeRecorder
(plain PyTorch hook) and RankMeCallback (Lightning). tests/integrations/test_distributed.py covers
several processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import make_embeddings
from torch import nn

import rankme_fast as rf

pytest.importorskip("torchmetrics")
from rankme_fast.integrations import RankMeMetric, RankMeRecorder

EXACT = 1e-9


def _close(value, expected, tol=EXACT):
    return abs(float(value) - expected) <= tol * abs(expected)


def _batches(z: torch.Tensor, seed: int) -> list[torch.Tensor]:
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(z)), size=6, replace=False))
    return list(torch.tensor_split(z, torch.as_tensor(cuts)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("centered", [False, True])
def test_metric_equals_rankme_of_all_rows(dtype, centered):
    z = torch.from_numpy(make_embeddings("large_mean" if centered else "power_law", 700, 48, seed=3)).to(dtype)
    metric = RankMeMetric(centered=centered)
    for batch in _batches(z, seed=1):
        assert metric(batch) is None  # forward = update: no eigensolve per step
    assert int(metric.count) == 700
    assert metric.gram.dtype == torch.float64
    assert _close(metric.compute(), rf.rankme(z, centered=centered))


def test_metric_frame_level_dims_and_numpy_batches():
    z = make_embeddings("isotropic", 120, 16, seed=4).astype(np.float32)
    metric = RankMeMetric(16)
    metric.update(z[:60].reshape(6, 10, 16))
    metric.update(torch.from_numpy(z[60:]))
    assert _close(metric.compute(), rf.rankme(z))


def test_metric_dict_of_metrics():
    z = torch.from_numpy(make_embeddings("power_law", 300, 32, seed=5))
    metric = RankMeMetric(centered=True, metrics=["rankme", "effective_rank", "participation_ratio", "nesum"])
    metric.update(z)
    values = metric.compute()
    spectrum = rf.spectrum(z, centered=True)
    assert _close(values["rankme"], spectrum.rankme())
    assert _close(values["effective_rank"], spectrum.effective_rank())
    assert _close(values["participation_ratio"], spectrum.participation_ratio())
    assert _close(values["nesum"], spectrum.nesum())


def test_reset_forgets_everything():
    first = torch.from_numpy(make_embeddings("isotropic", 200, 24, seed=6))
    second = torch.from_numpy(make_embeddings("power_law", 150, 24, seed=7))
    metric = RankMeMetric(centered=True)
    metric.update(first)
    metric.compute()
    metric.reset()
    assert int(metric.count) == 0
    metric.update(second)
    assert _close(metric.compute(), rf.rankme(second, centered=True))


@pytest.mark.parametrize("centered", [False, True])
def test_state_dict_round_trip_and_resume(centered):
    z = torch.from_numpy(make_embeddings("large_mean", 400, 20, seed=8))
    metric = RankMeMetric(centered=centered)
    metric.update(z[:250])
    saved = metric.state_dict()
    assert set(saved) == {"gram", "count", "nonfinite_rows"} | ({"mean"} if centered else set())
    resumed = RankMeMetric(centered=centered)
    resumed.load_state_dict(saved)
    resumed.update(z[250:])
    assert _close(resumed.compute(), rf.rankme(z, centered=centered))
    assert not RankMeMetric(persistent=False).state_dict()
    older = {k: v for k, v in saved.items() if k != "nonfinite_rows"}  # saved before that state existed
    resumed = RankMeMetric(centered=centered)
    resumed.load_state_dict(older)
    assert int(resumed.nonfinite_rows) == 0 and int(resumed.count) == 250


def test_load_state_dict_rejects_bad_states_and_keeps_its_own():
    z = torch.from_numpy(make_embeddings("isotropic", 100, 12, seed=9))
    metric = RankMeMetric()
    metric.update(z)
    gram = metric.gram.clone()
    bad_gram = metric.state_dict()
    bad_gram["gram"] = bad_gram["gram"].float()
    negative = metric.state_dict()
    negative["count"] = torch.tensor(-3)
    wrong_dim = RankMeMetric()
    wrong_dim.update(torch.randn(10, 13, dtype=torch.float64))
    for state, message in [(bad_gram, "float64"), (negative, "non-negative"), (wrong_dim.state_dict(), "D=13")]:
        with pytest.raises(ValueError, match=message):
            metric.load_state_dict(state)
        assert int(metric.count) == 100 and torch.equal(metric.gram, gram)


def test_states_stay_float64_under_half_and_to_dtype():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 8)
            self.rankme = RankMeMetric()

    z = torch.from_numpy(make_embeddings("power_law", 64, 8, seed=10))
    model = Model()
    model.rankme.update(z[:32])
    model.half()
    model.to(torch.bfloat16)
    assert model.linear.weight.dtype == torch.bfloat16
    assert model.rankme.gram.dtype == torch.float64 and model.rankme.count.dtype == torch.int64
    model.rankme.update(z[32:].half())
    expected = rf.rankme(torch.cat([z[:32], z[32:].half().double()]))
    assert _close(model.rankme.compute(), expected)


def test_bad_batches_raise_and_leave_the_state_unchanged():
    z = torch.from_numpy(make_embeddings("isotropic", 50, 6, seed=11))
    metric = RankMeMetric()
    metric.update(z)
    gram = metric.gram.clone()
    nan = z.clone()
    nan[3, 2] = float("nan")
    for bad, error, message in [
        (torch.randn(5, 7), ValueError, "D=7"),
        (torch.zeros(5, 6, dtype=torch.int32), TypeError, "dtype"),
        (torch.zeros(0, 6, dtype=torch.int32), TypeError, "dtype"),
        (torch.zeros(0, 7), ValueError, "D=7"),
        (torch.randn(6), ValueError, "at least 2 dimensions"),
        (nan, ValueError, "1 of 50 rows"),
        ([1.0, 2.0], TypeError, "torch.Tensor or numpy"),
    ]:
        with pytest.raises(error, match=message):
            metric.update(bad)
        assert int(metric.count) == 50 and torch.equal(metric.gram, gram)
    metric.update(torch.zeros(0, 6))  # a step with no rows adds nothing
    assert int(metric.count) == 50


def test_constructor_rejects_bad_options():
    for kwargs, message in [
        ({"max_samples": 0}, "max_samples"),
        ({"metrics": ["rankme", "bogus"]}, "metrics"),
        ({"metrics": ["nesum"]}, "centered=True"),
        ({"precision": "sloppy"}, "precision"),
        ({"eps": -1.0}, "eps"),
    ]:
        with pytest.raises(ValueError, match=message):
            RankMeMetric(**kwargs)


def test_compute_before_any_rows_names_the_problem():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no rows were seen"):
        RankMeMetric().compute()


def test_max_samples_keeps_the_first_rows():
    z = torch.from_numpy(make_embeddings("power_law", 500, 40, seed=12))
    metric = RankMeMetric(max_samples=333)
    for batch in z.split(100):
        metric.update(batch)
    assert int(metric.count) == 333
    assert _close(metric.compute(), rf.rankme(z[:333]))


@pytest.mark.parametrize("centered", [False, True])
def test_merge_state(centered):
    z = torch.from_numpy(make_embeddings("large_mean", 300, 16, seed=13))
    left, right = RankMeMetric(centered=centered), RankMeMetric(centered=centered)
    left.update(z[:120])
    right.update(z[120:])
    left.merge_state(right)
    assert _close(left.compute(), rf.rankme(z, centered=centered))
    other = RankMeMetric(centered=centered)
    other.update(z[:100])
    other.merge_state({k: v for k, v in right.state_dict().items()})
    assert _close(other.compute(), rf.rankme(torch.cat([z[:100], z[120:]]), centered=centered))


def test_recorder_hooks_a_module_in_a_plain_loop():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(12, 40), nn.GELU(), nn.Linear(40, 30))
    model = nn.Sequential(encoder, nn.Linear(30, 2))
    inputs = torch.randn(5, 64, 12)
    seen = []
    handle = encoder.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    with RankMeRecorder(encoder, max_samples=200) as recorder:
        for x in inputs:
            model(x)
        with recorder.paused():
            model(torch.randn(64, 12))
    model(torch.randn(64, 12))  # after the block: not recorded
    handle.remove()
    assert recorder.count == 200
    assert _close(recorder.rankme(), rf.rankme(torch.cat(seen[:5])[:200]))


def test_recorder_selects_from_tuples_and_rejects_mappings():
    lstm = nn.LSTM(6, 10, batch_first=True)
    with RankMeRecorder(lstm) as recorder:
        out, _ = lstm(torch.randn(3, 7, 6))
    assert recorder.count == 21 and _close(recorder.rankme(), rf.rankme(out.detach()))

    class Dict(nn.Module):
        def forward(self, x):
            return {"embedding": x}

    with RankMeRecorder(Dict()) as recorder, pytest.raises(TypeError, match="select="):
        recorder._capture.module(torch.randn(4, 3))
    with RankMeRecorder(Dict(), select=lambda out: out["embedding"]) as recorder:
        recorder._capture.module(torch.randn(4, 3))
    assert recorder.count == 4


# -- Lightning ---------------------------------------------------------------------------------


def _tiny_lightning_run(tmp_path, callback_args: dict, epochs: int = 2, validate: bool = False):
    lightning = pytest.importorskip("lightning.pytorch")
    from rankme_fast.integrations import RankMeCallback

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(16, 48), nn.Tanh(), nn.Linear(48, 24))
            self.head = nn.Linear(24, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            embedding = self.encoder(x)
            loss = nn.functional.mse_loss(self.head(embedding).squeeze(-1), y)
            return {"loss": loss, "embedding": embedding}

        def validation_step(self, batch, batch_idx):
            self.encoder(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(256, 16)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :3].sum(1)), batch_size=32)
    model = Tiny()
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    callback = RankMeCallback(**callback_args)
    trainer = lightning.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        accelerator="cpu",
        devices=1,
        logger=lightning.loggers.CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(96, 16)), batch_size=32)
    trainer.fit(model, data, val if validate else None)
    return trainer, callback, seen


def test_lightning_callback_logs_rankme_per_epoch(tmp_path):
    trainer, callback, seen = _tiny_lightning_run(tmp_path, {"layer_or_hook": "encoder"})
    assert len(seen) == 16  # 8 batches x 2 epochs, no validation
    expected = [rf.rankme(torch.cat(seen[8 * e : 8 * e + 8])) for e in range(2)]
    assert [entry.epoch for entry in callback.history] == [0, 1]
    assert all(_close(entry.value, want) for entry, want in zip(callback.history, expected, strict=True))
    assert _close(trainer.logged_metrics["rankme"], expected[1])
    assert callback._capture is None  # the hook is removed at teardown


def test_lightning_callback_every_n_steps_with_a_cap(tmp_path):
    _, callback, seen = _tiny_lightning_run(
        tmp_path, {"layer_or_hook": "encoder", "every_n_steps": 3, "max_samples": 70}
    )
    windows = [torch.cat(seen[start : start + 3])[:70] for start in range(0, 15, 3)]
    assert [entry.rows for entry in callback.history] == [70] * 5
    assert all(_close(e.value, rf.rankme(w)) for e, w in zip(callback.history, windows, strict=True))


def test_lightning_callback_with_a_step_hook(tmp_path):
    trainer, _, seen = _tiny_lightning_run(
        tmp_path,
        {"layer_or_hook": lambda module, batch, outputs: outputs["embedding"], "name": "emb_rankme"},
        epochs=1,
    )
    assert _close(trainer.logged_metrics["emb_rankme"], rf.rankme(torch.cat(seen)))


def test_lightning_callback_on_validation_skips_the_sanity_check(tmp_path):
    trainer, callback, seen = _tiny_lightning_run(
        tmp_path, {"layer_or_hook": "encoder", "stage": "validation"}, validate=True
    )
    assert len(seen) == 2 + 8 + 3 + 8 + 3  # sanity check, then per epoch 8 train and 3 validation batches
    expected = [rf.rankme(torch.cat(seen[10:13])), rf.rankme(torch.cat(seen[21:24]))]
    assert [entry.rows for entry in callback.history] == [96, 96]
    assert all(_close(e.value, want) for e, want in zip(callback.history, expected, strict=True))
    assert _close(trainer.logged_metrics["val_rankme"], expected[1])


def test_lightning_callback_logs_the_interval_that_a_checkpoint_can_monitor(tmp_path):
    trainer, callback, seen = _tiny_lightning_run(
        tmp_path, {"layer_or_hook": "encoder", "stage": "validation", "ci": 0.95, "blocks": 3}, validate=True
    )
    want = rf.rankme(torch.cat(seen[21:24]), ci=0.95, blocks=3)  # the last validation run: batches in blocks 0, 1, 2
    logged = trainer.logged_metrics
    assert _close(logged["val_rankme"], want.value) and _close(logged["val_rankme_se"], want.standard_error)
    assert _close(logged["val_rankme_low"], want.interval[0]) and _close(logged["val_rankme_high"], want.interval[1])
    last = callback.history[-1]
    assert _close(last.low, want.interval[0]) and _close(last.high, want.interval[1])


def test_metric_logged_from_a_lightning_module(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")

    class WithMetric(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(16, 24), nn.Tanh())  # full rank: the 1e-9 class
            self.rankme = RankMeMetric()
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, batch_idx):
            embedding = self.encoder(batch[0])
            self.seen.append(embedding.detach().clone())
            self.rankme(embedding)
            self.log("train_rankme", self.rankme, on_step=False, on_epoch=True)
            return embedding.square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(128, 16)), batch_size=32)
    model = WithMetric()
    trainer = lightning.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    logged, want = float(trainer.logged_metrics["train_rankme"]), rf.rankme(torch.cat(model.seen[4:]))
    assert _close(logged, want), (logged, want)


def test_lightning_callback_rejects_bad_arguments():
    pytest.importorskip("lightning.pytorch")
    from rankme_fast.integrations import RankMeCallback

    with pytest.raises(ValueError, match="every_n_steps"):
        RankMeCallback("encoder", every_n_steps=0)
    with pytest.raises(ValueError, match="stage"):
        RankMeCallback("encoder", stage="test")
    with pytest.raises(TypeError, match="layer_or_hook"):
        RankMeCallback(3)
