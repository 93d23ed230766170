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
    candidates = set(cpu_dispatch._candidates())
    assert route["kernel"] == acc.last_kernel and route["kernel"] in candidates
    measured = cpu_dispatch._routes[("float32", "fast", 0)]
    assert set(measured.seconds) == candidates and not measured.rejected
    acc.update(z[:100])
    assert cpu_dispatch._routes[("float32", "fast", 0)] is measured  # not measured again
    assert acc.gram().numpy() == pytest.approx(_gram(np.concatenate([z, z[:100]])), rel=1e-5, abs=1e-3)


def test_a_kernel_whose_sum_is_off_is_never_chosen(fresh_routes, monkeypatch):
    real = cpu_dispatch._run
    faulty = f"tiled-{native.cpu_isa()}"  # the default: otherwise it would be kept
    codes = cpu_dispatch._candidates()

    def run(probe, dtype, precision, code, gram):
        real(probe, dtype, precision, code, gram)
        if code == codes[faulty]:
            gram *= 2.0  # adds everything twice

    monkeypatch.setattr(cpu_dispatch, "_run", run)
    route = cpu_dispatch.route_for("float64", "fast", 300)
    assert faulty in route.rejected and route.kernel != faulty and faulty not in route.seconds


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
