"""What the tests share, in one place: the devices and backends under test, the input dtypes,
the spectra every backend is tested on, the float64 SVD reference, and the one tolerance table.
The tests take the device as a parameter (DEVICES: "cpu", and "cuda" where a GPU is present)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, settings

import rankme_fast as rf

ROOT = Path(__file__).resolve().parents[1]

# Property tests: "ci" (the default, in `make test`) replays the same small set of examples on
# every run; RANKME_FAST_HYPOTHESIS=thorough draws many fresh ones.
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("thorough", max_examples=1500, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("RANKME_FAST_HYPOTHESIS", "ci"))

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", *(["cuda"] if HAS_CUDA else [])]
# Backends that take each device's tensors here: "auto" and every backend that accepts them
# (on a GPU: "cuda", "triton" for precision="fast", and the torch reference).
BACKENDS = {
    device: [name for name in rf.available_backends() if rf.backends.backend_reason(name, torch.zeros(2, 2,
             device=device)) is None]
    for device in DEVICES
}  # fmt: skip
CPU_BACKENDS = BACKENDS["cpu"]
DEVICE_BACKENDS = [(device, backend) for device in DEVICES for backend in BACKENDS[device]]

# Relative RankMe error allowed against float64 SVD of the same (already rounded) values.
# precision="exact": the contract of ARCHITECTURE.md, "Numerics". precision="fast": the documented fast-mode
# bound (~1 % on collapsed spectra), or FAST_FACTOR x the error of torch's
# own float32 Gram route on the same data if that is larger (one random-rounding sample of the
# reference can be lucky, hence 4 rather than 2).
TOLERANCE = {"well_conditioned": 1e-9, "rank_deficient": 1e-5}
FAST_TOLERANCE = {"well_conditioned": 1e-3, "rank_deficient": 2e-2}
FAST_FACTOR = 4.0

SPECTRA = ["isotropic", "power_law", "large_mean", "duplicated_rows", "rank_deficient", "rank_deficient_noise"]


# A spectrum counts as rank-deficient for a precision mode when its smallest kept singular
# value lies near that mode's noise floor: an eigenvalue error of e·λ_max in the Gram moves a
# singular value σ by about e·σ_max²/(2σ), and one near the floor sqrt(e)·σ_max (1e-8 for
# float64 sums, 2.4e-4 for float32 ones) by as much as itself, which moves RankMe by up to
# ~1e-3 per such value in fast mode. Above 1e-6 (exact) or 1e-2 (fast) of σ_max, the move is
# below 1e-10 or 3e-6 of σ_max.
CONDITION_FLOOR = {"exact": 1e-6, "fast": 1e-2}


def condition_class(z, centered: bool = False, precision: str = "exact") -> str:
    """'rank_deficient' when the smallest kept singular value is below the precision mode's
    floor (CONDITION_FLOOR) relative to the largest, else 'well_conditioned'."""
    sigma = reference_singular_values(z, centered)
    return "rank_deficient" if sigma[-1] < CONDITION_FLOOR[precision] * sigma[0] else "well_conditioned"


def make_embeddings(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    """Fresh float64 data with a known kind of spectrum."""
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        return rng.standard_normal((n, d))
    if kind == "power_law":
        return rng.standard_normal((n, d)) * (np.arange(1, d + 1) ** -0.8)
    if kind == "large_mean":
        return rng.standard_normal((n, d)) + 50.0 * rng.standard_normal(d)
    if kind == "duplicated_rows":
        base = rng.standard_normal((max(1, n // 3), d))
        return base[rng.integers(0, base.shape[0], size=n)]
    rank = max(1, min(n, d) // 4)
    low = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    if kind == "rank_deficient":
        return low
    if kind == "rank_deficient_noise":
        return low + 1e-3 * rng.standard_normal((n, d))
    raise ValueError(kind)


def as_dtype(z: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(z).to(dtype)


def reference_singular_values(z: torch.Tensor | np.ndarray, centered: bool = False) -> np.ndarray:
    """Float64 numpy SVD of exactly the values the library sees."""
    x = z.double().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z, dtype=np.float64)
    x = x.reshape(-1, x.shape[-1])
    if centered:
        x = x - x.mean(axis=0)
    return np.linalg.svd(x, compute_uv=False)


def reference_rankme(z, centered: bool = False, eps: float = 1e-7) -> float:
    return rf.metrics.rankme(reference_singular_values(z, centered), eps)


def torch_float32_rankme(z) -> float:
    """What most code does in fast mode: a float32 Gram (the smaller side), float64 eigensolve."""
    x = torch.as_tensor(np.asarray(z, dtype=np.float64) if not isinstance(z, torch.Tensor) else z)
    x = x.reshape(-1, x.shape[-1]).float()
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    eig = torch.linalg.eigvalsh(gram.double()).clamp(min=0).flip(0)[: min(x.shape)]
    return rf.metrics.rankme(eig.sqrt().numpy())


def tolerance(z, precision: str, centered: bool = False) -> float:
    if precision == "exact":
        return TOLERANCE[condition_class(z, centered)]
    reference = reference_rankme(z, centered)
    torch_error = relative_error(torch_float32_rankme(z), reference)
    return max(FAST_TOLERANCE[condition_class(z, centered, "fast")], FAST_FACTOR * torch_error)


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def on_device(batch, device: str):
    """`batch` as the tests give it on the CPU (numpy or torch), or as a torch tensor on `device`."""
    if device == "cpu":
        return batch
    return torch.as_tensor(batch).to(device)


def skip_unless_takes(backend: str, batch, precision: str = "exact") -> None:
    """Skip the calling test when `backend` cannot take `batch` at `precision` (say, Triton and
    exact products on a GPU), naming why."""
    import pytest

    reason = rf.backends.backend_reason(backend, batch, precision)
    if reason is not None:
        pytest.skip(reason)
