"""First-use self-check of kernels that the test suite may never have run on the hardware at
hand (the GPU backends): before a backend's first real batch for a (device, dtype, precision),
it adds a small Gram with ragged edges into a state and the result is compared with torch
float64 on the same device. A mismatch marks the backend unusable for that case, with the
reason, and warns once; `select_backend` then moves on, so no number from an unverified kernel
reaches a user.

What is checked, in two layouts (rows contiguous, columns contiguous) and with and without the
centring shift: every lower-triangle entry (the authoritative half, by the backend contract) of
(Z - shift)ᵀ(Z - shift) is *added* into a state that starts random, so a kernel that stores
instead of adding fails too.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import torch

from rankme_fast._inputs import kernel_input, torch_dtype

if TYPE_CHECKING:
    from rankme_fast.backends.contract import Backend

# 300 rows: not a multiple of any row block (32/64/128) or split alignment (256); 144 columns:
# not a multiple of the 64- and 128-wide tiles (and 4.5 of the 32-wide one), yet a multiple of
# 16, so Triton compiles the same specialisation as for the usual embedding widths.
ROWS, COLS = 300, 144
OFFSET = 3.0  # a column mean far from 0, so a shift applied wrongly shows
# Largest allowed |error| / max |reference| over the lower triangle. Exact kernels multiply in
# float64. Fast kernels sum in float32 (300 terms: ≲ 2e-5); with a shift, a fast kernel may
# round Z - shift back to the input dtype (unit roundoff u below) before the product, which
# moves an entry by at most 2u of the largest diagonal entry. Every fault the check exists for
# (a tile or row block missed or added twice, a wrong index, a race) is an error of order 1.
TOLERANCE = {"exact": 1e-12, "fast": 1e-4}
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}

# (backend name, kernel in use, device, dtype, precision) -> None (passed) or why it failed
_failures: dict[tuple[str, str, str, str, str], str | None] = {}
seconds_spent: dict[tuple[str, str, str, str, str], float] = {}  # what each self-check cost, for benchmarks


def failure(backend: Backend, device: torch.device, dtype: str, precision: str) -> str | None:
    """None when `backend` passed its self-check for this case (running it on first call), else
    why it failed; the first failure of a case is also warned about."""
    key = _key(backend, device, dtype, precision)
    if key not in _failures:
        started = time.perf_counter()
        reason = _self_check(backend, device, dtype, precision)
        seconds_spent[key] = time.perf_counter() - started
        if reason is not None:
            where = f"{device} ({key[1]})" if key[1] != backend.name else str(device)
            reason = f"failed its self-check on {where} for {dtype} at precision={precision!r}: {reason}"
            warnings.warn(f"rankme_fast: backend {backend.name!r} {reason}; it will not be used", RuntimeWarning,
                          stacklevel=4)  # fmt: skip
        _failures[key] = reason
    return _failures[key]


def seconds(backend: Backend, device: torch.device, dtype: str, precision: str) -> float | None:
    """What the self-check of this case cost, in seconds (None if it has not run)."""
    return seconds_spent.get(_key(backend, device, dtype, precision))


def _key(backend: Backend, device: torch.device, dtype: str, precision: str) -> tuple[str, str, str, str, str]:
    return (backend.name, backend.kernel_in_use(), str(device), dtype, precision)


def failures(name: str, precision: str) -> list[str]:
    """The failed self-checks of backend `name` at `precision`, each as its reason."""
    return [reason for (n, _, _, _, p), reason in _failures.items() if n == name and p == precision and reason]


generation = 0  # bumped whenever self-check results, or the kernels behind a backend, change


def forget() -> None:
    """Drop every self-check result (tests; a process that swapped a kernel)."""
    _failures.clear()
    seconds_spent.clear()
    kernels_changed()


def kernels_changed() -> None:
    """The kernel a backend runs changed (another CPU instruction set): choices made with the
    old one are stale, and the new one is self-checked on its first batch."""
    global generation
    generation += 1


def _self_check(backend: Backend, device: torch.device, dtype: str, precision: str) -> str | None:
    generator = torch.Generator().manual_seed(20260501)
    values = torch.randn(ROWS, COLS, generator=generator, dtype=torch.float64) + OFFSET
    z = values.to(torch_dtype(dtype)).to(device)
    exact_values = z.to(torch.float64)
    lower = torch.tril(torch.ones(COLS, COLS, dtype=torch.bool, device=device))
    for layout, batch in (("row-major", z), ("column-major", z.T.contiguous().T)):
        for shift in (None, exact_values.mean(dim=0)):
            start = torch.randn(COLS, COLS, generator=generator, dtype=torch.float64).to(device)
            gram = start.clone()
            try:
                backend.add_gram(kernel_input(batch), gram, shift, precision)
            except Exception as error:  # any failure to run is a failed check, reported as such
                return f"{layout} input raised {type(error).__name__}: {error}"
            centred = exact_values if shift is None else exact_values - shift
            reference = centred.T @ centred
            what = f"{layout} input{'' if shift is None else ' with a shift'}"
            error = float(((gram - start - reference)[lower]).abs().max() / reference[lower].abs().max())
            rounded = shift is not None and precision == "fast"
            allowed = TOLERANCE[precision] + (2 * UNIT_ROUNDOFF[dtype] if rounded else 0.0)
            if not error <= allowed:  # also catches NaN
                return f"{what}: relative error {error:.2e} against torch float64 (allowed {allowed:.0e})"
    return None
