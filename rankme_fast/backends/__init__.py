"""Backend registry: picks the first backend, in order of preference, that supports an input,
and says why each other one was passed over. A backend that asks for it (the GPU ones) is
self-checked on its first batch of each (device, dtype, precision) and skipped where it fails
(rankme_fast.backends.self_check)."""

from __future__ import annotations

from typing import Any

from rankme_fast._inputs import KernelInput, kernel_input
from rankme_fast.backends import self_check
from rankme_fast.backends.contract import PRECISIONS, Backend
from rankme_fast.backends.cpu_backend import CpuBackend
from rankme_fast.backends.cuda_backend import CudaBackend
from rankme_fast.backends.torch_backend import TorchBackend
from rankme_fast.backends.triton_backend import TritonBackend

# Fastest first: "auto" takes the first one that accepts the input. "cpu" runs the kernel that
# rankme_fast._C.auto_kernel names (the tiled one when it is vectorised); the other two pin one.
# On a GPU, "triton" takes precision="fast" (bf16/fp16/tf32 tensor cores) and "cuda" takes
# "exact" (float64 tensor cores), and "fast" too when Triton is unavailable. "triton" comes
# after "cpu", so CPU tensors reach it only when "cpu" is unavailable and TRITON_INTERPRET=1.
_REGISTRY: dict[str, Backend] = {
    "cpu": CpuBackend(),
    "cpu-tiled": CpuBackend(kernel="tiled"),
    "cpu-blas": CpuBackend(kernel="blas"),
    "cuda": CudaBackend(),
    "triton": TritonBackend(),
    "triton-deterministic": TritonBackend(deterministic=True),
    "torch": TorchBackend(),
}
_PREFERENCE = ("cpu", "triton", "cuda", "torch")


def check_choice(backend: str, precision: str) -> None:
    """Raise for an unknown backend or precision name."""
    if backend != "auto" and backend not in _REGISTRY:
        raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {', '.join(_REGISTRY)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def available_backends(precision: str = "exact") -> dict[str, str | None]:
    """Backend name -> None if usable on this machine at `precision`, else the reason it is not."""
    check_choice("auto", precision)
    reasons = {}
    for name, backend in _REGISTRY.items():
        reason = backend.unavailable_reason(None, precision)
        if reason is None and backend.verify_on_first_use:
            reason = "; ".join(self_check.failures(name, precision)) or None
        reasons[name] = reason
    return reasons


def backend_reason(name: str, batch: Any, precision: str = "exact") -> str | None:
    """None when backend `name` can take `batch` at `precision`, else why it cannot."""
    check_choice(name, precision)
    return _reason(_REGISTRY[name], kernel_input(batch), precision)


# Choices already made, by what they depend on: the request, the precision, the input's device
# and dtype, the preference order, and self_check.generation (bumped when self-check results are
# forgotten or the kernels behind a backend change). A training loop's update thus costs a
# dict lookup instead of probing every backend (and the CUDA runtime) again.
_choices: dict[tuple, tuple[Backend, dict[str, str]]] = {}


def select_backend(matrix: KernelInput, precision: str, requested: str = "auto") -> tuple[Backend, dict[str, str]]:
    """The backend for this input and, for 'auto', why each preferred one was passed over."""
    key = (requested, precision, matrix.device, matrix.dtype, _PREFERENCE, self_check.generation)
    choice = _choices.get(key)
    if choice is None:
        choice = _choices[key] = _select(matrix, precision, requested)
    return choice[0], dict(choice[1])


def _select(matrix: KernelInput, precision: str, requested: str) -> tuple[Backend, dict[str, str]]:
    check_choice(requested, precision)
    if requested != "auto":
        backend = _REGISTRY[requested]
        reason = _reason(backend, matrix, precision)
        if reason is not None:
            raise ValueError(f"backend {requested!r} cannot take this input: {reason}")
        return backend, {}
    not_chosen: dict[str, str] = {}
    for name in _PREFERENCE:
        reason = _reason(_REGISTRY[name], matrix, precision)
        if reason is None:
            return _REGISTRY[name], not_chosen
        not_chosen[name] = reason
    raise RuntimeError(f"no backend accepts this input: {not_chosen}")  # torch always does


def _reason(backend: Backend, matrix: KernelInput, precision: str) -> str | None:
    """Why `backend` cannot take `matrix`, including a failed first-use self-check."""
    reason = backend.unavailable_reason(matrix, precision)
    if reason is None and backend.verify_on_first_use:
        reason = self_check.failure(backend, matrix.device, matrix.dtype, precision)
    return reason
