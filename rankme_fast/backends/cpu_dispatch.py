"""Dispatch by measured speed: at the first fast-mode CPU update of a (dtype, width class), every
kernel that can run here — each vectorised instruction-set variant of the tiled kernel, BLAS
where it is the feature-based default, oneMKL and the tile kernel where the CPU has AMX — adds
the same probe block into a float64 state; a candidate whose sum is
off is dropped, and the fastest of the rest is routed to (rf_cpu_set_route), so no CPU keeps a
fast path slower than another available one (a bfloat16 kernel slower than the float32 one on
the same numbers, say). The feature-based default keeps the route unless another candidate's
median is faster by more than MARGIN (timings on a busy machine wobble), and the measurement
stops after BUDGET seconds with what it has.

Exact mode keeps the feature-based choice: its results are then the same bit for bit in every
process on a machine (a resumed job equals an uninterrupted one), and the tiled exact kernel
is the fastest exact path on every CPU measured (bench/README.md).

Width classes: D ≤ 64, ≤ 256, ≤ 1024, above (rf_cpu_width_class); the probe has the class's
typical width and enough rows for a few milliseconds of work. `RANKME_FAST_CPU_DISPATCH=features`
turns the measurement off (the feature-based choice everywhere), and so does choosing an
instruction set by hand (RANKME_FAST_CPU_ISA, `cpu_backend.instruction_set`): that one runs.

Routes last for the process. With `RANKME_FAST_CPU_ROUTES=<file.json>` they are also kept on
disk: read back by a later process on the same machine (same CPU model, kernel variants,
rankme_fast version and oneMKL availability; anything else and the file is measured afresh and
rewritten), so only the first process pays for the measurement."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankme_fast._native import native
from rankme_fast.backends import mkl_bf16

ROUTE_MKL = -3  # the oneMKL bfloat16 route, taken on the Python side (the C table keeps its default)
ROUTE_MKL_SPLIT = -4  # float32/float16 through oneMKL as a bfloat16 split (hi, lo), likewise
# library route code -> (whether a batch can take it, what adds its Gram)
LIBRARY_ROUTES = {ROUTE_MKL: (mkl_bf16.usable, mkl_bf16.add_gram),
                  ROUTE_MKL_SPLIT: (mkl_bf16.usable_split, mkl_bf16.add_gram_split)}  # fmt: skip
MARGIN = 0.15  # another kernel's median must be this much faster than the default's to take its place
PROBE_WIDTH = (64, 256, 768, 1536)  # per width class
PROBE_MULTIPLY_ADDS = 2e8  # of one probe update (lower triangle): a few ms at tens of GF/s
PROBE_MIN_ROWS = 512
ROUNDS = 5  # the candidates take turns, so a stall on a busy machine hits one round of each
BUDGET = 0.5  # seconds of measuring per (dtype, width class) at most
TOLERANCE = {"exact": 1e-12, "fast": 1e-4}  # |error| / max |reference| over the triangle, as the self-check
DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


@dataclass
class Route:
    """What runs for one (dtype, precision, width class), and why."""

    kernel: str  # "blas" or "tiled-<variant>"
    code: int  # the route code rf_cpu_syrk_update_with takes
    default: str
    seconds: dict[str, float] = field(default_factory=dict)  # candidate -> median probe time
    rejected: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not kept

    @property
    def why(self) -> str:
        if not self.seconds:
            return "the feature-based default (not measured: exact mode, or measurement off)"
        timings = ", ".join(f"{name} {1e3 * t:.2f} ms" for name, t in sorted(self.seconds.items(), key=lambda x: x[1]))
        kept = "the default, no other kernel faster by more than 15 %" if self.kernel == self.default else "fastest"
        return f"{kept}: {timings}"


_routes: dict[tuple[str, str, int], Route] = {}
_lock = threading.Lock()
_measuring = os.environ.get("RANKME_FAST_CPU_DISPATCH", "measure") != "features" and not os.environ.get(
    "RANKME_FAST_CPU_ISA"
)


def measuring() -> bool:
    """Whether routes are measured (else the instruction set in use runs everywhere)."""
    return _measuring


def set_measuring(on: bool) -> None:
    """Measure routes (on) or run the instruction set in use everywhere (off); drops the routes
    measured so far either way."""
    global _measuring
    forget()
    _measuring = on


def route_for(dtype: str, precision: str, cols: int) -> Route:
    """The route of this (dtype, precision, width class), measured on first call."""
    key = (dtype, precision, int(native.width_class(cols)))
    found = _routes.get(key)
    if found is None:
        with _lock:
            found = _routes.get(key)
            if found is None:
                found = _stored(key) or _measure(*key)
                _store(key, found)
                native_route = int(native.ROUTE_UNSET) if found.code in LIBRARY_ROUTES else found.code  # Python-side
                native.set_route(_dtype_code(dtype), precision == "fast", key[2], native_route)
                _routes[key] = found
    return found


def routes() -> dict[str, dict[str, object]]:
    """Every route measured so far in this process: kernel, default and why (for cpu_info)."""
    return {f"{d}/{p}/{_class_name(c)}": {"kernel": r.kernel, "default": r.default, "why": r.why}
            for (d, p, c), r in _routes.items()}  # fmt: skip


def forget() -> None:
    """Drop every measured route (the instruction set in use changed)."""
    with _lock:
        for dtype, precision, width_class in _routes:
            native.set_route(_dtype_code(dtype), precision == "fast", width_class, native.ROUTE_UNSET)
        _routes.clear()


def _stored(key: tuple[str, str, int]) -> Route | None:
    """The route of `key` kept on disk for this machine, if RANKME_FAST_CPU_ROUTES names a file
    that holds one (and measurement is on)."""
    kept = _kept_routes()
    entry = kept.get("routes", {}).get("/".join(map(str, key))) if kept.get("machine") == _machine() else None
    return Route(**entry) if entry is not None and _measuring else None


def _store(key: tuple[str, str, int], route: Route) -> None:
    """Keep a measured route in the RANKME_FAST_CPU_ROUTES file (written atomically)."""
    path = os.environ.get("RANKME_FAST_CPU_ROUTES")
    if not path or not route.seconds:
        return
    kept = _kept_routes()
    if kept.get("machine") != _machine():
        kept = {"machine": _machine(), "routes": {}}
    kept["routes"]["/".join(map(str, key))] = asdict(route)
    temporary = Path(path).with_name(Path(path).name + f".{os.getpid()}.tmp")
    temporary.parent.mkdir(parents=True, exist_ok=True)
    temporary.write_text(json.dumps(kept, indent=1) + "\n")
    temporary.replace(path)


def _kept_routes() -> dict[str, Any]:
    path = os.environ.get("RANKME_FAST_CPU_ROUTES")
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except (OSError, ValueError):
        return {}  # absent or unreadable: measured afresh


def _machine() -> dict[str, Any]:
    """What a kept route is valid for."""
    from rankme_fast import __version__  # the package's, imported once it is loaded

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    return {"cpu": model, "variants": native.cpu_isa_variants(), "version": __version__,
            "mkl": mkl_bf16.unavailable_reason() is None}  # fmt: skip


def _class_name(width_class: int) -> str:
    return ("D<=64", "D<=256", "D<=1024", "D>1024")[width_class]


def _dtype_code(dtype: str) -> int:
    return int(getattr(native, f"DTYPE_{dtype.upper()}"))


def tile_units() -> bool:
    """Whether this process can run AMX-BF16 tiles (the CPU has them, the OS saves their state
    and Linux granted tile data): where oneMKL's bfloat16 products can beat the built-in kernels."""
    features = set(native.cpu_features().split())
    return {"amx_bf16", "amx_permitted"} <= features


def _candidates(dtype: str = "float32", precision: str = "exact") -> dict[str, int]:
    """Kernel name -> route code of every kernel that can run here (the SSE2 baseline only where
    nothing vectorised runs: it never beats AVX2; the amx variant, fast mode on the tile units,
    only where the CPU has them and its forked self-test passed; BLAS only where it is the
    default, since OpenBLAS keeps its own worker threads spinning after each call, fighting
    torch's threads for the cores: in a training-like loop the step ran 1.1-2.3× slower with it,
    bench/README.md), with oneMKL's bfloat16 product in fast mode
    where it is installed and the CPU has AMX tiles (for bfloat16 as it is, for float32 and
    float16 as a split). Without tiles oneMKL's bfloat16 products lose to the built-in kernels
    (bench/README.md), and loading the library would cost every process probe time and resident
    memory for nothing."""
    found = {f"tiled-{name}": index for index, (name, runs) in enumerate(native.cpu_isa_variants().items()) if runs}
    if len(found) > 1:
        found.pop("tiled-baseline", None)
    if native.blas is not None and native.auto_kernel() == "blas":
        found["blas"] = int(native.ROUTE_BLAS)
    if precision == "fast" and tile_units() and mkl_bf16.unavailable_reason() is None:
        if dtype == "bfloat16":
            found["mkl"] = ROUTE_MKL
        elif dtype in ("float32", "float16"):
            found["mkl-split"] = ROUTE_MKL_SPLIT
    return found


def _default(candidates: dict[str, int]) -> str:
    if "blas" in candidates:  # a candidate only where it is the default
        return "blas"
    return f"tiled-{native.cpu_isa()}"


def _measure(dtype: str, precision: str, width_class: int) -> Route:
    candidates = _candidates(dtype, precision)
    default = _default(candidates)
    if not _measuring or precision != "fast" or len(candidates) == 1:
        return Route(default, int(native.ROUTE_UNSET), default)
    started = time.perf_counter()
    cols = PROBE_WIDTH[width_class]
    rows = max(PROBE_MIN_ROWS, int(PROBE_MULTIPLY_ADDS / (cols * (cols + 1) / 2)))
    probe = _probe_rows(dtype, rows, cols)
    reference = _reference(probe)
    gram = np.zeros((cols, cols), dtype=np.float64)
    seconds: dict[str, float] = {}
    rejected: dict[str, str] = {}
    for group in _in_turn(candidates):
        for name, code in group.items():  # each candidate's sum checked (and its code warmed up)
            gram[:] = 0.0
            run_route(probe, dtype, precision, code, gram)
            error = _relative_error(np.tril(gram), reference)
            if not error <= TOLERANCE[precision]:
                rejected[name] = f"off by {error:.2g} of the largest entry"
        passed = {name: code for name, code in group.items() if name not in rejected}
        times: dict[str, list[float]] = {name: [] for name in passed}
        for _ in range(ROUNDS):
            if time.perf_counter() - started > BUDGET and all(times.values()):
                break  # over budget: decide on the rounds done
            for name, code in passed.items():
                times[name].append(_timed(probe, dtype, precision, code, gram))
        seconds.update({name: float(np.median(values)) for name, values in times.items()})
    keep = pick(seconds, default)
    return Route(keep, int(candidates[keep]) if keep != default else int(native.ROUTE_UNSET), default, seconds,
                 rejected)  # fmt: skip


def _in_turn(candidates: dict[str, int]) -> list[dict[str, int]]:
    """The candidates in the groups they are checked and timed in: BLAS (a candidate where it is
    the default) after all the others. OpenBLAS keeps its own worker threads spinning for ~0.1 s
    after each call, which took the cores from whatever ran next: timed between the others, it
    slowed the kernel timed after it and hid a 1.3× win of the AVX2 kernel (float16, D ≤ 64)
    in some processes (bench/README.md)."""
    own_pool = {name: code for name, code in candidates.items() if name == "blas"}
    shared = {name: code for name, code in candidates.items() if name not in own_pool}
    return [group for group in (shared, own_pool) if group]


def pick(seconds: dict[str, float], default: str) -> str:
    """The kernel to keep: the fastest, unless the default (when it passed) is within MARGIN of it."""
    if not seconds:
        return default
    fastest = min(seconds, key=seconds.__getitem__)
    return default if default in seconds and seconds[default] <= (1 + MARGIN) * seconds[fastest] else fastest


def _probe_rows(dtype: str, rows: int, cols: int) -> np.ndarray | object:
    """Random rows of `dtype` (bfloat16 through torch, which numpy lacks), seeded."""
    values = np.random.default_rng(1000 + cols).standard_normal((rows, cols)).astype(np.float32)
    if dtype == "bfloat16":
        return torch.from_numpy(values).to(torch.bfloat16)
    return values.astype(DTYPES[dtype])


def _reference(probe: object) -> np.ndarray:
    """The probe's float64 Gram, lower triangle, through torch: it shares the OpenMP threads of
    the kernels timed next (numpy's product runs on its own OpenBLAS, whose workers keep
    spinning into the first rounds of timing)."""
    rows = probe.double() if isinstance(probe, torch.Tensor) else torch.from_numpy(np.asarray(probe, np.float64))
    return torch.tril(rows.T @ rows).numpy()


def _address(probe: object) -> int:
    return probe.data_ptr() if hasattr(probe, "data_ptr") else probe.ctypes.data


def add_through_library(route: Route, matrix: object, shift: torch.Tensor | None, gram: torch.Tensor) -> bool:
    """Add the batch's Gram through the route's library product when the route is one and the
    batch can take it (False: the caller runs the built-in kernel)."""
    usable, add = LIBRARY_ROUTES.get(route.code, (None, None))
    if usable is None or not usable(matrix, shift):
        return False
    add(matrix, gram)
    return True


def run_route(probe: object, dtype: str, precision: str, code: int, gram: np.ndarray) -> None:
    """Add the Gram of `probe` (rows, cols; numpy, or torch for bfloat16) into `gram` through
    route `code`: a kernel of the C route table, ROUTE_UNSET (the feature-based one) or a
    library route."""
    if code in LIBRARY_ROUTES:
        LIBRARY_ROUTES[code][1](probe, torch.from_numpy(gram))
        return
    rows, cols = probe.shape
    native.syrk_update_with(_address(probe), _dtype_code(dtype), rows, cols, cols, 1, gram.ctypes.data, 0,
                            precision == "fast", code)  # fmt: skip


def _timed(probe: object, dtype: str, precision: str, code: int, gram: np.ndarray) -> float:
    started = time.perf_counter()
    run_route(probe, dtype, precision, code, gram)
    return time.perf_counter() - started


def _relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(got - reference)) / max(np.max(np.abs(reference)), 1e-300))
