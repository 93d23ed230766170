"""Dispatch by measured speed: each fast-mode (dtype, width class) is measured once, every
kernel that runs here takes part, a kernel whose sum is off is never routed to, the default
stays unless another is faster by the margin, exact mode keeps the feature-based choice, and a
hand-chosen instruction set (or RANKME_FAST_CPU_DISPATCH=features) turns the measurement off."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import rankme_fast as rf
from rankme_fast._native import native
from rankme_fast.backends import cpu_dispatch, mkl_bf16
from rankme_fast.backends.cpu_backend import cpu_info, instruction_set

pytestmark = pytest.mark.skipif(native is None, reason="rankme_fast._C is not built")


@pytest.fixture
def fresh_routes():
    before = cpu_dispatch.measuring()
    cpu_dispatch.set_measuring(True)
    yield
    cpu_dispatch.set_measuring(before)


def test_pick_keeps_the_default_unless_another_is_clearly_faster():
    assert cpu_dispatch.pick({"a": 1.0, "b": 0.9}, "a") == "a"  # 11 % faster: within the margin
    assert cpu_dispatch.pick({"a": 1.0, "b": 0.8}, "a") == "b"
    assert cpu_dispatch.pick({"b": 0.8}, "a") == "b"  # the default failed its check
    assert cpu_dispatch.pick({}, "a") == "a"


def test_a_route_is_measured_once_and_reported(fresh_routes):
    z = np.random.default_rng(0).standard_normal((500, 40)).astype(np.float32)
    acc = rf.GramAccumulator(precision="fast").update(z)
    routes = cpu_info()["routes"]
    route = routes["float32/fast/D<=64"]
    candidates = set(cpu_dispatch._candidates("float32", "fast"))
    assert route["kernel"] == acc.last_kernel and route["kernel"] in candidates
    measured = cpu_dispatch._routes[("float32", "fast", 0)]
    assert set(measured.seconds) == candidates and not measured.rejected
    acc.update(z[:100])
    assert cpu_dispatch._routes[("float32", "fast", 0)] is measured  # not measured again
    assert acc.gram().numpy() == pytest.approx(_gram(np.concatenate([z, z[:100]])), rel=1e-5, abs=1e-3)


def test_a_kernel_whose_sum_is_off_is_never_chosen(fresh_routes, monkeypatch):
    real = cpu_dispatch.run_route
    faulty = f"tiled-{native.cpu_isa()}"  # the default: otherwise it would be kept
    codes = cpu_dispatch._candidates()

    def run(probe, dtype, precision, code, gram):
        real(probe, dtype, precision, code, gram)
        if code == codes[faulty]:
            gram *= 2.0  # adds everything twice

    monkeypatch.setattr(cpu_dispatch, "run_route", run)
    route = cpu_dispatch.route_for("float64", "fast", 300)
    assert faulty in route.rejected and route.kernel != faulty and faulty not in route.seconds


def test_blas_is_a_candidate_only_where_it_is_the_default(monkeypatch):
    """OpenBLAS's own worker threads keep spinning after each call and fight torch's threads for
    the cores: never chosen over a vectorised tiled kernel for a bare-update win."""
    if native.blas is None:
        pytest.skip("built without BLAS")
    assert ("blas" in cpu_dispatch._candidates("float32", "fast")) == (native.auto_kernel() == "blas")
    monkeypatch.setattr(native, "auto_kernel", lambda: "blas")
    assert "blas" in cpu_dispatch._candidates("float32", "fast")


def test_blas_is_checked_and_timed_after_every_other_candidate(fresh_routes, monkeypatch):
    """Its spinning workers would otherwise slow whichever candidate is timed next."""
    if native.blas is None:
        pytest.skip("built without BLAS")
    monkeypatch.setattr(native, "auto_kernel", lambda: "blas")  # BLAS a candidate, as on an SSE2-only CPU
    real, order = cpu_dispatch.run_route, []

    def run(probe, dtype, precision, code, gram):
        order.append(code)
        real(probe, dtype, precision, code, gram)

    monkeypatch.setattr(cpu_dispatch, "run_route", run)
    route = cpu_dispatch._measure("float32", "fast", 0)
    blas = int(native.ROUTE_BLAS)
    assert "blas" in route.seconds and len(route.seconds) > 1
    first_blas = order.index(blas)
    assert blas not in order[:first_blas] and set(order[first_blas:]) == {blas}


def test_the_probe_reference_is_the_float64_gram():
    probe = cpu_dispatch._probe_rows("bfloat16", 600, 40)
    rows = probe.double().numpy()
    np.testing.assert_allclose(cpu_dispatch._reference(probe), np.tril(rows.T @ rows), rtol=1e-13, atol=1e-10)


def test_exact_mode_keeps_the_feature_based_choice(fresh_routes):
    route = cpu_dispatch.route_for("float32", "exact", 100)
    assert route.kernel == route.default and not route.seconds and route.code == native.ROUTE_UNSET


def test_a_hand_chosen_instruction_set_runs_everywhere(fresh_routes):
    z = np.random.default_rng(1).standard_normal((300, 100)).astype(np.float32)
    with instruction_set("baseline"):
        acc = rf.GramAccumulator().update(z)
        assert acc.last_kernel in ("tiled-baseline", "blas") and cpu_info()["dispatch"] == "by features"
        assert all(route["why"].startswith("the feature-based default") for route in cpu_info()["routes"].values())
    assert cpu_dispatch.measuring()


def test_the_environment_can_turn_the_measurement_off():
    code = ("import json, numpy as np, rankme_fast as rf; from rankme_fast.backends.cpu_backend import cpu_info;"
            "rf.rankme(np.ones((50, 8)) + np.eye(50, 8)); i = cpu_info();"
            "print(json.dumps([i['dispatch'], list(i['routes'].values())]))")  # fmt: skip
    env = os.environ | {"RANKME_FAST_CPU_DISPATCH": "features"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    dispatch, routes = json.loads(done.stdout)
    assert dispatch == "by features" and all(r["why"].startswith("the feature-based default") for r in routes)


def _gram(z: np.ndarray) -> np.ndarray:
    x = z.astype(np.float64)
    return x.T @ x


mkl_only = pytest.mark.skipif(
    native is None or mkl_bf16.unavailable_reason() is not None,
    reason=f"the oneMKL route: {mkl_bf16.unavailable_reason() if native is not None else 'no _C'}",
)


@mkl_only
def test_the_mkl_route_adds_the_lower_triangle_of_a_bfloat16_gram():
    z = torch.randn(mkl_bf16.BLOCK_ROWS + 808, 100, generator=torch.Generator().manual_seed(3)).bfloat16()
    gram = torch.full((100, 100), 7.0, dtype=torch.float64)
    mkl_bf16.add_gram(z, gram)
    reference = z.double().T @ z.double()
    lower = torch.tril(torch.ones(100, 100, dtype=torch.bool))
    assert torch.allclose(gram[lower] - 7.0, reference[lower], rtol=1e-5, atol=1e-3)
    assert torch.equal(gram[~lower], torch.full_like(gram[~lower], 7.0))  # the upper triangle is not touched
    assert mkl_bf16.usable(z, None) and not mkl_bf16.usable(z, torch.zeros(100))
    assert not mkl_bf16.usable(z.float(), None) and not mkl_bf16.usable(z[:, ::2], None)


@mkl_only
def test_the_mkl_route_is_measured_and_taken_where_it_is_routed(fresh_routes, monkeypatch):
    monkeypatch.setattr(cpu_dispatch, "tile_units", lambda: True)  # the wiring, on any CPU
    route = cpu_dispatch.route_for("bfloat16", "fast", 200)
    assert "mkl" in route.seconds  # a candidate, timed like the others
    cpu_dispatch.set_measuring(True)
    monkeypatch.setattr(cpu_dispatch, "pick", lambda seconds, default: "mkl")
    z = torch.randn(3000, 200, generator=torch.Generator().manual_seed(4)).bfloat16()
    acc = rf.GramAccumulator(precision="fast").update(z)
    assert acc.last_kernel == "mkl"
    assert acc.gram().numpy() == pytest.approx((z.double().T @ z.double()).numpy(), rel=1e-4, abs=1e-2)
    centred = rf.GramAccumulator(precision="fast", centered=True).update(z)  # shifted: the built-in kernel
    assert centred.last_kernel != "mkl"


def test_library_routes_are_candidates_only_where_the_cpu_has_tiles():
    names = set(cpu_dispatch._candidates("float32", "fast")) | set(cpu_dispatch._candidates("bfloat16", "fast"))
    expected = cpu_dispatch.tile_units() and mkl_bf16.unavailable_reason() is None
    assert ({"mkl", "mkl-split"} <= names) == expected and (not names & {"mkl", "mkl-split"}) == (not expected)
    assert not set(cpu_dispatch._candidates("float32", "exact")) & {"mkl", "mkl-split"}


def _split_bound(z: np.ndarray) -> np.ndarray:
    """The split route's bound per entry: ((4096 + 3)·u₃₂ + 3·2⁻¹⁶)·Σ|zᵢzⱼ|."""
    magnitude = np.abs(z.astype(np.float64))
    return ((4096 + 3) * 2.0**-24 + 3 * 2.0**-16) * (magnitude.T @ magnitude)


@mkl_only
@pytest.mark.parametrize("case", ["normal", "columns 2^-20..2^20", "offset 1e4", "one large row", "float16"])
def test_the_split_route_keeps_its_bound_on_adversarial_inputs(case):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((mkl_bf16.SPLIT_BLOCK_ROWS * 2 + 333, 48))
    if case == "columns 2^-20..2^20":
        z *= 2.0 ** np.linspace(-20, 20, 48)
    if case == "offset 1e4":
        z += 1e4  # a mean far above the spread: a centred Gram would need every digit
    if case == "one large row":
        z[5] *= 1e6
    z = z.astype(np.float16 if case == "float16" else np.float32)
    gram = torch.zeros(48, 48, dtype=torch.float64)
    mkl_bf16.add_gram_split(z, gram)
    reference = z.astype(np.float64).T @ z.astype(np.float64)
    lower = np.tril(np.ones((48, 48), dtype=bool))
    error = np.abs(gram.numpy() - reference)[lower]
    assert np.all(error <= _split_bound(z)[lower])
    assert np.all(gram.numpy()[~lower] == 0.0)  # the upper triangle is not touched
    assert mkl_bf16.usable_split(z, None) and not mkl_bf16.usable_split(z, torch.zeros(48))
    assert not mkl_bf16.usable_split(z[:, ::2], None) and not mkl_bf16.usable_split(z.astype(np.float64), None)


@mkl_only
def test_the_split_route_is_a_measured_candidate_and_taken_where_it_is_routed(fresh_routes, monkeypatch):
    monkeypatch.setattr(cpu_dispatch, "tile_units", lambda: True)  # the wiring, on any CPU
    route = cpu_dispatch.route_for("float32", "fast", 200)
    assert "mkl-split" in route.seconds and "mkl-split" not in route.rejected
    assert "mkl-split" not in cpu_dispatch.route_for("float32", "exact", 200).seconds  # exact: never measured
    cpu_dispatch.set_measuring(True)
    monkeypatch.setattr(cpu_dispatch, "pick", lambda seconds, default: "mkl-split")
    z = torch.randn(3000, 200, generator=torch.Generator().manual_seed(5))
    acc = rf.GramAccumulator(precision="fast").update(z)
    assert acc.last_kernel == "mkl-split"
    bound = torch.from_numpy(_split_bound(z.numpy()))
    assert torch.all((acc.gram() - z.double().T @ z.double()).abs() <= bound)
    assert rf.GramAccumulator(precision="fast", centered=True).update(z).last_kernel != "mkl-split"


def test_routes_kept_on_disk_are_read_back_by_a_later_process_on_the_same_machine(fresh_routes, tmp_path,
                                                                                  monkeypatch):
    path = tmp_path / "routes.json"
    monkeypatch.setenv("RANKME_FAST_CPU_ROUTES", str(path))
    first = cpu_dispatch.route_for("float32", "fast", 100)
    kept = json.loads(path.read_text())
    assert kept["routes"]["float32/fast/1"]["kernel"] == first.kernel and kept["machine"]["variants"]
    cpu_dispatch.forget()  # as a new process: nothing measured in memory

    def no_measuring(*args):
        raise AssertionError("a route kept on disk was measured again")

    monkeypatch.setattr(cpu_dispatch, "_measure", no_measuring)
    again = cpu_dispatch.route_for("float32", "fast", 100)
    assert (again.kernel, again.code, again.seconds) == (first.kernel, first.code, first.seconds)
    kept["machine"]["cpu"] = "another CPU"
    path.write_text(json.dumps(kept))
    cpu_dispatch.forget()
    with pytest.raises(AssertionError, match="measured again"):  # another machine's file: measured afresh
        cpu_dispatch.route_for("float32", "fast", 100)
    path.write_text("{not json")
    cpu_dispatch.forget()
    monkeypatch.undo()
    monkeypatch.setenv("RANKME_FAST_CPU_ROUTES", str(path))
    assert cpu_dispatch.route_for("float32", "fast", 100).seconds  # unreadable: measured and rewritten
    assert json.loads(path.read_text())["routes"]
