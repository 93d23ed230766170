"""RankMe inside compiled training steps (on the CPU, and with a GPU its sync-free updates and
CUDA graphs): the update is the custom op rankme_fast::update_state_, a step that calls `metric.update`
compiles as one graph with torch.compile(fullgraph=True) and equals the eager step, and the
non-finite policies that never read back from the device keep their contract: nothing
silently lost, nothing counted twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import make_embeddings, reference_rankme, relative_error

import rankme_fast as rf
from rankme_fast import update
from rankme_fast.integrations import RankMeMetric
from rankme_fast.state import NonFiniteRowsError

EXACT = 1e-9


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(width: int = 24, dim: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim))


def _step_both(model, inputs, compiled_metric, eager_metric) -> None:
    """A training step updating the metric, compiled (fullgraph) and eager, on every input; the
    dynamo counters are cleared first, so they count this compilation."""
    from torch._dynamo.utils import counters

    def step(x, metric):
        embeddings = model(x)
        metric.update(embeddings)
        return embeddings.square().mean()

    compiled = torch.compile(step, fullgraph=True)
    counters.clear()
    for x in inputs:
        torch.testing.assert_close(compiled(x, compiled_metric), step(x, eager_metric))


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("nonfinite", ["auto", "defer"])
def test_a_compiled_step_with_the_metric_is_one_graph_and_equals_eager(centered, nonfinite):
    from torch._dynamo.utils import counters

    model = _model()
    compiled_metric = RankMeMetric(16, centered=centered, nonfinite=nonfinite)
    eager_metric = RankMeMetric(16, centered=centered, nonfinite=nonfinite)

    inputs = [torch.randn(64, 24) + 3.0 for _ in range(6)]
    _step_both(model, inputs, compiled_metric, eager_metric)
    assert counters["stats"]["unique_graphs"] == 1  # compiled once: no recompilation per step
    assert not counters["graph_break"]
    assert int(compiled_metric.count) == int(eager_metric.count) == 6 * 64
    assert relative_error(float(compiled_metric.compute()), float(eager_metric.compute())) <= EXACT
    with torch.no_grad():
        everything = torch.cat([model(x) for x in inputs])
    assert relative_error(float(compiled_metric.compute()), reference_rankme(everything, centered)) <= EXACT


@pytest.mark.parametrize("centered", [False, True])
def test_a_compiled_step_with_block_states_is_one_graph_and_fills_the_blocks_as_eager(centered):
    """With ci the block a batch goes to is a tensor inside the graph: no recompilation as it
    moves from block to block, and the same blocks as eager updates."""
    from torch._dynamo.utils import counters

    model = _model()
    compiled_metric = RankMeMetric(16, centered=centered, ci=0.95, blocks=4)
    eager_metric = RankMeMetric(16, centered=centered, ci=0.95, blocks=4)

    _step_both(model, [torch.randn(48, 24) + 3.0 for _ in range(7)], compiled_metric, eager_metric)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert compiled_metric.count.tolist() == eager_metric.count.tolist() == [96, 96, 96, 48]
    assert int(compiled_metric.next_block) == int(eager_metric.next_block) == 3
    logged, expected = compiled_metric.compute(), eager_metric.compute()
    for name in ("rankme", "rankme_se", "rankme_low", "rankme_high"):
        assert relative_error(float(logged[name]), float(expected[name])) <= 1e-7, name


def test_the_op_passes_torch_library_opcheck():
    gram = torch.zeros(5, 5, dtype=torch.float64)
    count, nonfinite = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
    mean = torch.zeros(5, dtype=torch.float64)
    z = torch.randn(9, 5)
    for centered, policy in ((False, "raise"), (True, "defer")):
        args = (gram, count, nonfinite, mean if centered else gram.new_empty(0), z, centered, "exact", "auto", policy)
        torch.library.opcheck(torch.ops.rankme_fast.update_state_.default, args)


def test_the_functional_op_on_state_tensors_equals_the_accumulator(rng):
    z = torch.from_numpy(make_embeddings("large_mean", 300, 12, seed=3)).float()
    gram = torch.zeros(12, 12, dtype=torch.float64)
    count, nonfinite = torch.zeros((), dtype=torch.int64), torch.zeros((), dtype=torch.int64)
    mean = torch.zeros(12, dtype=torch.float64)
    for part in z.split(77):
        torch.ops.rankme_fast.update_state_(gram, count, nonfinite, mean, part, True, "exact", "auto", "defer")
    acc = rf.GramAccumulator(centered=True).update(z)
    assert int(count) == 300 and int(nonfinite) == 0
    scale = float(acc.gram().abs().max())
    torch.testing.assert_close(torch.tril(gram), torch.tril(acc.gram()), rtol=0, atol=1e-11 * scale)
    torch.testing.assert_close(mean, acc.mean, rtol=1e-12, atol=1e-12)


def _with_bad_rows(z: torch.Tensor, rows: list[int]) -> torch.Tensor:
    dirty = z.clone()
    for i, row in enumerate(rows):
        dirty[row, i % dirty.shape[1]] = (float("nan"), float("inf"), -float("inf"))[i % 3]
    return dirty


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_defer_excludes_and_counts_bad_rows_on_the_device_and_compute_raises(centered, dtype):
    z = torch.from_numpy(make_embeddings("large_mean", 400, 10, seed=5)).to(dtype)
    bad = [3, 77, 78, 250, 399]
    metric = RankMeMetric(centered=centered, nonfinite="defer")
    for part in _with_bad_rows(z, bad).split(90):
        metric.update(part)  # never raises, never reads back
    assert int(metric.count) == 395 and int(metric.nonfinite_rows) == 5
    with pytest.raises(NonFiniteRowsError, match="5 of the 400 rows seen since the last reset held NaN or Inf"):
        metric.compute()
    clean = z[[i for i in range(400) if i not in bad]]
    drop = RankMeMetric(centered=centered, nonfinite="drop")
    for part in _with_bad_rows(z, bad).split(90):
        drop.update(part)
    with pytest.warns(RuntimeWarning, match="5 rows holding NaN or Inf were left out"):
        value = float(drop.compute())
    assert relative_error(value, reference_rankme(clean, centered)) <= EXACT
    metric.reset()
    assert int(metric.nonfinite_rows) == 0


def test_a_batch_of_only_bad_rows_changes_nothing_but_the_count_of_them():
    z = torch.full((4, 3), float("nan"))
    metric = RankMeMetric(3, centered=True, nonfinite="drop")
    metric.update(torch.randn(5, 3) + 2)
    before = (metric.gram.clone(), metric.mean.clone(), int(metric.count))
    metric.update(z)
    assert torch.equal(metric.gram, before[0]) and torch.equal(metric.mean, before[1])
    assert int(metric.count) == before[2] and int(metric.nonfinite_rows) == 4


def test_raise_is_the_cpu_default_and_changes_nothing():
    metric = RankMeMetric(4)
    metric.update(torch.randn(6, 4))
    gram = metric.gram.clone()
    with pytest.raises(NonFiniteRowsError, match="1 of 3 rows holding NaN or Inf"):
        metric.update(torch.tensor([[1.0, 2, 3, 4], [float("nan"), 0, 0, 0], [0.0, 1, 0, 1]]))
    assert torch.equal(metric.gram, gram) and int(metric.count) == 6 and int(metric.nonfinite_rows) == 0


@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "requires_grad"])
def test_embeddings_with_or_without_autograd_and_the_graph_is_not_kept(context):
    import gc
    import weakref

    model = _model()
    metric = RankMeMetric(16)
    x = torch.randn(32, 24)
    if context == "no_grad":
        with torch.no_grad():
            metric.update(model(x))
    elif context == "inference_mode":
        with torch.inference_mode():
            metric.update(model(x))
    else:
        embeddings = model(x)
        alive = weakref.ref(embeddings)
        metric.update(embeddings)
        assert not metric.gram.requires_grad and metric.gram.grad_fn is None
        del embeddings
        gc.collect()
        assert alive() is None  # the metric holds neither the embeddings nor their autograd graph
    assert int(metric.count) == 32


def test_backend_choice_is_made_once_per_kind_of_input(monkeypatch):
    from rankme_fast import backends

    calls = []
    cpu = backends._REGISTRY["cpu"]
    real = cpu.unavailable_reason
    monkeypatch.setattr(cpu, "unavailable_reason", lambda *a: calls.append(a) or real(*a))
    backends._choices.clear()
    metric = RankMeMetric(8)
    for _ in range(5):
        metric.update(torch.randn(4, 8))
    metric.update(torch.randn(4, 8, dtype=torch.float64))
    assert len(calls) == 2  # float32, then float64: one probe each


def test_bad_options_and_batches_are_refused_before_anything_changes():
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        RankMeMetric(nonfinite="ignore")
    metric = RankMeMetric(4)
    metric.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="D=5 but this metric has D=4"):
        metric.update(torch.ones(3, 5))
    with pytest.raises(TypeError, match=r"dtype torch\.int64"):
        metric.update(torch.ones(3, 4, dtype=torch.int64))
    assert int(metric.count) == 2
    assert update.NONFINITE_POLICIES == ("auto", "raise", "drop", "defer")


def test_reset_keeps_the_state_where_compiled_steps_write_it():
    from torch._dynamo.utils import counters

    model = _model()
    metric = RankMeMetric(16)
    gram, count = metric.gram, metric.count

    def step(x):
        embeddings = model(x)
        metric.update(embeddings)
        return embeddings.sum()

    compiled = torch.compile(step, fullgraph=True)
    counters.clear()
    epochs = [[torch.randn(40, 24) for _ in range(3)] for _ in range(2)]
    for batches in epochs:
        metric.reset()
        for x in batches:
            compiled(x)
        with torch.no_grad():
            expected = reference_rankme(torch.cat([model(x) for x in batches]))
        assert relative_error(float(metric.compute()), expected) <= EXACT
        assert int(metric.count) == 120
    assert metric.gram is gram and metric.count is count
    assert counters["stats"]["unique_graphs"] == 1


# ---- compiled steps on a GPU ----------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
def test_metric_updates_never_wait_for_the_gpu():
    from rankme_fast.integrations import RankMeMetric

    for centered in (False, True):
        metric = RankMeMetric(64, centered=centered).cuda()  # nonfinite="auto" is "defer" on a GPU
        z = torch.randn(256, 64, device="cuda") + 3.0
        metric.update(z)  # first batch: backend choice and its self-check may read back
        torch.cuda.set_sync_debug_mode("error")
        try:
            for part in z.split(37):
                metric.update(part)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert int(metric.count) == 512
        expected = reference_rankme(torch.cat([z, z]).cpu(), centered)
        assert relative_error(float(metric.compute()), expected) <= 1e-9


@needs_cuda
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_and_cuda_graph_steps_equal_eager(mode):
    from torch._dynamo.utils import counters

    from rankme_fast.integrations import RankMeMetric

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 256), torch.nn.GELU(), torch.nn.Linear(256, 128)).cuda()
    compiled_metric, eager_metric = RankMeMetric(128).cuda(), RankMeMetric(128).cuda()

    def step(x, metric):
        embeddings = model(x)
        metric.update(embeddings)
        return embeddings.square().mean()

    compiled = torch.compile(step, fullgraph=True, mode=mode)
    inputs = [torch.randn(512, 96, device="cuda") for _ in range(8)]
    counters.clear()
    for x in inputs:
        torch.testing.assert_close(compiled(x, compiled_metric), step(x, eager_metric))
    torch.cuda.synchronize()
    assert counters["stats"]["unique_graphs"] == 1
    if mode == "reduce-overhead":
        assert not counters["inductor"]["cudagraph_skips"], "the step was not captured in a CUDA graph"
    assert int(compiled_metric.count) == int(eager_metric.count) == 8 * 512
    assert relative_error(float(compiled_metric.compute()), float(eager_metric.compute())) <= 1e-9


