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

import rankme_fast as rf
from rankme_fast._native import native
from rankme_fast.backends import cpu_dispatch
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
