"""The first-use self-check (rankme_fast.backends.self_check), exercised on the CPU with kernels that
are wrong on purpose: each fault is caught, `auto` moves on to the next backend, the reason is
reported by `available_backends()`, the user is warned once, and a correct kernel passes."""

from __future__ import annotations

import warnings

import pytest
import torch
from common import DTYPES, reference_rankme, relative_error

import rankme_fast as rf
from rankme_fast import backends
from rankme_fast._inputs import KernelInput
from rankme_fast.backends import self_check
from rankme_fast.backends.torch_backend import TorchBackend


class CheckedTorch(TorchBackend):
    """The torch reference kernel, marked as one to self-check; `fault` breaks it on purpose."""

    verify_on_first_use = True

    def __init__(self, fault: str | None = None) -> None:
        self.name = "checked" if fault is None else f"broken-{fault}"
        self.fault = fault
        self.calls = 0

    def kernel_in_use(self):
        return self.name

    def add_gram(self, matrix, gram, shift, precision):
        self.calls += 1
        if self.fault == "raises":
            raise RuntimeError("no kernel image is available for execution on the device")
        if self.fault == "stores":  # overwrites the state instead of adding to it
            gram.zero_()
        if self.fault == "last_row_lost":  # a ragged row block dropped
            matrix = KernelInput(matrix.torch()[:-1], matrix.dtype, matrix.device)
        super().add_gram(matrix, gram, shift, precision)
        if self.fault == "last_column_lost":  # a ragged edge tile dropped
            gram[-1, :] = 0.0
        if self.fault == "shift_ignored" and shift is not None:
            gram.add_(shift[:, None] * shift[None, :] * matrix.rows)
        if self.fault == "nan":
            gram[3, 2] = float("nan")
        if self.fault == "rows_only" and matrix.torch().stride(0) == 1:  # wrong for column-major input
            gram.mul_(1.0 + 1e-3)


FAULTS = ["raises", "stores", "last_row_lost", "last_column_lost", "shift_ignored", "nan", "rows_only"]


@pytest.fixture
def registry(monkeypatch):
    """A registry where the given backend is preferred over every real one; self-check results reset."""
    self_check.forget()

    def install(backend):
        monkeypatch.setitem(backends._REGISTRY, backend.name, backend)
        monkeypatch.setattr(backends, "_PREFERENCE", (backend.name, *backends._PREFERENCE))
        return backend

    yield install
    self_check.forget()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_wrong_kernel_is_caught_and_auto_moves_on(registry, fault, rng):
    broken = registry(CheckedTorch(fault))
    z = rng.standard_normal((500, 20)).astype("float32")
    with pytest.warns(RuntimeWarning, match=f"backend 'broken-{fault}' failed its self-check on cpu for float32"):
        acc = rf.GramAccumulator().update(z)
    assert acc.last_backend != broken.name
    assert "self-check" in acc.not_chosen[broken.name]
    assert relative_error(acc.rankme(), reference_rankme(z)) <= 1e-9
    calls = broken.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per case, not one per batch
        acc.update(z)
    assert broken.calls == calls  # the result is kept: no second self-check, no real batch
    reason = rf.available_backends()[broken.name]
    assert reason is not None and "float32" in reason and "self-check" in reason
    assert rf.available_backends("fast")[broken.name] is None  # not checked at this precision yet
    with pytest.raises(ValueError, match="failed its self-check"):
        rf.GramAccumulator(backend=broken.name).update(z)


def test_a_correct_kernel_passes_once_per_case_and_is_used(registry, rng):
    checked = registry(CheckedTorch())
    z = rng.standard_normal((50, 7))
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        for precision in ("exact", "fast"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                acc = rf.GramAccumulator(precision=precision).update(torch.from_numpy(z).to(dtype))
            assert acc.last_backend == "checked"
    assert len(self_check.seconds_spent) == 6 and all(s < 5.0 for s in self_check.seconds_spent.values())
    calls = checked.calls
    rf.GramAccumulator().update(z)
    assert checked.calls == calls + 1  # the real batch only
    assert rf.available_backends()["checked"] is None


def test_the_self_check_leaves_the_users_state_alone(registry, rng):
    registry(CheckedTorch("stores"))
    acc = rf.GramAccumulator(centered=True, backend="torch").update(rng.standard_normal((40, 5)) + 3)
    before = acc.state_dict()
    with pytest.warns(RuntimeWarning):
        rf.rankme(rng.standard_normal((40, 5)))  # runs the self-check
    after = acc.state_dict()
    assert before["count"] == after["count"] and torch.equal(before["gram"], after["gram"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(("name", "precision"), [("cuda", "exact"), ("cuda", "fast"), ("triton", "fast"),
                                                 ("triton-deterministic", "fast")])  # fmt: skip
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpu_kernels_pass_their_first_use_self_check(name, precision, dtype):
    from rankme_fast._inputs import dtype_name, kernel_input
    from rankme_fast.backends import _REGISTRY, self_check

    backend = _REGISTRY[name]
    reason = backend.unavailable_reason(kernel_input(torch.zeros(2, 2, dtype=dtype, device="cuda")), precision)
    if reason is not None:
        pytest.skip(reason)
    self_check.forget()
    assert self_check.failure(backend, torch.device("cuda"), dtype_name(dtype), precision) is None
    assert rf.available_backends(precision)[name] is None


