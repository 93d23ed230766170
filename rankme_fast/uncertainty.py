"""Error bars from one pass: the delete-one-block jackknife over K block states.

Each row goes into one of K blocks (a batch to one block; rows sharing a `groups` key, such as
the frames of one file, to one block; the rows of a whole matrix in turn), and the total is the
merge of the blocks. Leaving block k out gives θ₋ₖ, the metric of the other rows; with θ the
metric of all N rows and θ̄ the mean of the θ₋ₖ, the jackknife (Quenouille 1956, Tukey 1958)
gives

    SE = sqrt((K−1)/K · Σₖ (θ₋ₖ − θ̄)²),   bias-corrected θ_bc = K·θ − (K−1)·θ̄,

and the interval θ ± t₍K−1₎·SE (Student t, K−1 degrees of freedom) for the metric of N rows of
this population: its sampling error at this N. RankMe keeps rising with N until N is well past
D, so it is not an interval for the limit; `still_rising` says when the jackknife's estimate of
the rise still to come, θ_bc − θ, exceeds the standard error (values at different N then differ
by more than noise), and `Growth` follows RankMe along the blocks' cumulative merge (N/K, 2N/K,
…, N) to a fitted plateau.

Checked by coverage against Monte Carlo truth (bench/bench_coverage.py; tests/core/test_uncertainty.py):
with N ≥ 2·D the 95 % interval covers the mean RankMe at that N in 92–98 % of draws for
power-law, low-rank-plus-noise, heavy-tailed (multivariate t, 5 degrees of freedom) and strongly
anisotropic, offset rows. Below 2·D rows leaving a block out changes how many singular values are
nonzero, the standard error comes out up to twice the truth and the interval covers nearly
always: it is conservative there, and the estimate warns; it warns too below 3 rows per block,
where a paired difference's interval covered only 91 %. Rows with infinite fourth moments
(t with 3 degrees of freedom) have no reliable interval from any resampling of this size.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankme_fast.spectrum import Spectrum, spectra_of_grams
from rankme_fast.state import GramState, merge

RELIABLE_ROWS_PER_DIM = 2  # below N = 2·D the jackknife interval is conservative (module docstring)
RELIABLE_ROWS_PER_BLOCK = 3  # below, a paired difference's interval covered 91 % (bench/bench_coverage.py)


def blocks_of(groups: Any, blocks: int) -> np.ndarray:
    """The block of each row from its group key (a sequence or 1-D array, one key per row):
    integer keys in turn (key mod K), any other key by a hash of its text that is stable across
    runs, processes and machines. Rows sharing a key always share a block."""
    keys = np.asarray(groups.cpu() if hasattr(groups, "cpu") else groups)
    if keys.ndim != 1:
        raise ValueError(f"groups must be one key per row (1-D), got shape {keys.shape}")
    if keys.dtype.kind in "iub":
        return np.mod(keys.astype(np.int64), blocks)
    return np.fromiter((zlib.crc32(str(key).encode()) % blocks for key in keys.tolist()), np.int64, keys.size)


def student_t_cdf(x: float, df: int) -> float:
    """P(T ≤ x) for Student's t with an integer number of degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3-4: a finite series in cos θ, θ = atan(x/√df))."""
    theta = math.atan(x / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        inside = theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0)
        return 0.5 + inside / math.pi
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return 0.5 + math.sin(theta) * total / 2


def student_t_quantile(probability: float, df: int) -> float:
    """The `probability` quantile of Student's t with `df` (a positive integer) degrees of
    freedom: the closed-form CDF inverted by bisection (no scipy in the core)."""
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if probability < 0.5:
        return -student_t_quantile(1 - probability, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < probability:
        high *= 2
    for _ in range(80):
        middle = (low + high) / 2
        low, high = (middle, high) if student_t_cdf(middle, df) < probability else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Estimate:
    """A metric of N rows with its jackknife error (see the module docstring). Behaves as its
    value where a float is expected."""

    metric: str
    value: float  # the metric of all rows
    standard_error: float
    bias_corrected: float  # K·value − (K−1)·mean(left_out): towards the metric's large-N value
    interval: tuple[float, float]  # for the metric of this many rows of this population
    level: float
    blocks: int  # blocks that hold rows (the jackknife's K)
    count: int
    left_out: tuple[float, ...]  # the metric without each block
    still_rising: bool  # bias_corrected − value, the rise still to come, exceeds the standard error

    def __float__(self) -> float:
        return self.value

    def excludes(self, value: float) -> bool:
        return not self.interval[0] <= value <= self.interval[1]

    def to_json(self) -> dict[str, Any]:
        """Plain values for a JSON report."""
        return {"value": self.value, "standard_error": self.standard_error, "bias_corrected": self.bias_corrected,
                "interval": list(self.interval), "level": self.level, "blocks": self.blocks, "count": self.count,
                "still_rising": self.still_rising}  # fmt: skip

    def __str__(self) -> str:
        low, high = self.interval
        rising = "; still rising with N" if self.still_rising else ""
        return (f"{self.metric} {self.value:.4g} ± {self.standard_error:.2g} ({100 * self.level:g} % interval "
                f"[{low:.4g}, {high:.4g}], {self.blocks} blocks of {self.count:,} rows{rising})")


def jackknife(
    metric: str, value: float, left_out: Sequence[float], *, count: int, dim: int, level: float
) -> Estimate:
    """The delete-one-block jackknife of a metric from its value on all rows and on each
    leave-one-block-out set (K ≥ 2 blocks)."""
    check_level(level)
    values = np.asarray(left_out, dtype=np.float64)
    blocks = values.size
    if blocks < 2:
        raise ValueError(f"an interval needs rows in at least 2 blocks; {blocks} of them hold rows")
    mean = float(values.mean())
    error = math.sqrt((blocks - 1) / blocks * float(np.sum((values - mean) ** 2)))
    half = student_t_quantile(0.5 + level / 2, blocks - 1) * error
    if count < RELIABLE_ROWS_PER_DIM * dim:
        warnings.warn(f"{metric}: {count:,} rows for D={dim}: with fewer than {RELIABLE_ROWS_PER_DIM}·D rows the "
                      "jackknife interval is conservative (up to twice as wide as the sampling error)",
                      RuntimeWarning, stacklevel=3)  # fmt: skip
    if count < RELIABLE_ROWS_PER_BLOCK * blocks:
        warnings.warn(f"{metric}: {count:,} rows in {blocks} blocks: with fewer than {RELIABLE_ROWS_PER_BLOCK} rows "
                      "per block the jackknife interval can be too narrow", RuntimeWarning, stacklevel=3)  # fmt: skip
    return Estimate(metric, value, error, blocks * value - (blocks - 1) * mean, (value - half, value + half), level,
                    blocks, count, tuple(float(v) for v in values), (blocks - 1) * (value - mean) > error)  # fmt: skip


def check_level(level: float) -> None:
    if not isinstance(level, float | int) or isinstance(level, bool) or not 0 < level < 1:
        raise ValueError(f"ci must be a confidence level in (0, 1), e.g. 0.95; got {level!r}")


@dataclass(frozen=True)
class BlockSpectra:
    """The spectrum of all rows and the spectra that each leave one block out (blocks holding no
    rows aside), with how rows were assigned to the blocks (`fingerprints`, for pairing)."""

    total: Spectrum
    left_out: tuple[Spectrum, ...]
    block_counts: tuple[int, ...]
    fingerprints: tuple[str, ...]

    def values(self, metric: str, eps: float = 1e-7) -> tuple[float, list[float]]:
        """The metric of all rows and without each block."""
        return self.total.metric(metric, eps), [s.metric(metric, eps) for s in self.left_out]

    def estimate(self, metric: str = "rankme", *, ci: float = 0.95, eps: float = 1e-7) -> Estimate:
        value, left_out = self.values(metric, eps)
        return jackknife(metric, value, left_out, count=self.total.count, dim=self.total.dim, level=ci)


@dataclass(frozen=True)
class Comparison:
    """Two embedding sets of the same rows, split into blocks alike: their metrics and the
    jackknife interval of the difference a − b, paired block by block."""

    a: Estimate
    b: Estimate
    difference: Estimate

    @property
    def conclusion(self) -> str:
        low, high = self.difference.interval
        level = f"{100 * self.difference.level:g} %"
        if low > 0:
            return f"a is above b: the {level} interval of a − b, [{low:.4g}, {high:.4g}], excludes 0"
        if high < 0:
            return f"a is below b: the {level} interval of a − b, [{low:.4g}, {high:.4g}], excludes 0"
        interval = f"[{low:.4g}, {high:.4g}]"
        return f"a and b differ by less than their noise: the {level} interval of a − b, {interval}, holds 0"

    def __str__(self) -> str:
        return f"a: {self.a}\nb: {self.b}\n{self.conclusion}"


def merged(parts: Sequence[GramState]) -> GramState:
    """A new state holding `parts` (at least one), merged in order."""
    first = parts[0]
    total = GramState.zeros(first.dim, centered=first.centered, precision=first.precision, device=first.gram.device)
    for part in parts:
        merge(total, part)
    return total


def spectra_of_states(states: Sequence[GramState]) -> list[Spectrum]:
    """The spectra of several states of one D, in one batched eigensolve."""
    first = states[0]
    return spectra_of_grams(torch.stack([state.gram for state in states]), counts=[int(s.count) for s in states],
                            dim=first.dim, centered=first.centered)  # fmt: skip


def block_spectra_of(parts: Sequence[GramState | None], fingerprints: Sequence[str]) -> BlockSpectra:
    """BlockSpectra of K block states (None or empty: a block that holds no rows): the total
    and each leave-one-block-out set made from prefix and suffix merges (3K merges, not K²),
    their K + 1 spectra in one batched eigensolve."""
    if len(parts) < 2:
        raise ValueError("an interval needs block states: blocks=K, K >= 2 (rf.rankme(Z, ci=...) takes blocks=, "
                         "default 10)")  # fmt: skip
    held = [part for part in parts if part is not None and int(part.count) > 0]
    if len(held) < 2:
        raise ValueError(f"an interval needs rows in at least 2 blocks; {len(held)} of them hold rows")
    last = len(held) - 1
    prefix = [merged(held[:1])]  # prefix[k]: blocks 0..k
    for part in held[1:last]:
        prefix.append(merged([prefix[-1], part]))
    suffix = [merged(held[last:])]  # suffix[k - 1]: blocks k..last
    for part in reversed(held[1:last]):
        suffix.insert(0, merged([part, suffix[0]]))
    left_out = [suffix[0], *(merged([prefix[k - 1], suffix[k]]) for k in range(1, last)), prefix[last - 1]]
    total = merged([prefix[-1], held[last]])
    spectra = spectra_of_states([total, *left_out])
    counts = tuple(0 if part is None else int(part.count) for part in parts)
    return BlockSpectra(spectra[0], tuple(spectra[1:]), counts, tuple(fingerprints))


def compare_blocks(a: BlockSpectra, b: BlockSpectra, *, metric: str, ci: float, eps: float) -> Comparison:
    """Paired comparison of two block-split sets (ValueError unless their rows went to the
    blocks alike: the same batches of the same sizes, or the same `groups` keys; by key, the
    two may hold different numbers of rows per key, e.g. frames of two encoders of one file)."""
    if len(a.fingerprints) != len(b.fingerprints):
        raise ValueError(f"a has {len(a.fingerprints)} blocks and b {len(b.fingerprints)}: compare needs paired sets "
                         "split into blocks alike")  # fmt: skip
    if a.fingerprints != b.fingerprints:
        differing = next(k for k, (x, y) in enumerate(zip(a.fingerprints, b.fingerprints, strict=False)) if x != y)
        counts = f"{a.block_counts[differing]:,} rows in a, {b.block_counts[differing]:,} in b"
        raise ValueError("a and b are not the same rows split into blocks alike: compare needs paired sets, scored "
                         "on the same rows (or groups) in the same order with the same blocks "
                         f"(block {differing} differs: {counts})")  # fmt: skip
    value_a, left_a = a.values(metric, eps)
    value_b, left_b = b.values(metric, eps)
    dim, count = a.total.dim, a.total.count
    difference = jackknife(f"{metric} a − b", value_a - value_b, np.subtract(left_a, left_b), count=count, dim=dim,
                           level=ci)  # fmt: skip
    with warnings.catch_warnings():  # what a warning would say of a and b, it said of a − b
        warnings.simplefilter("ignore", RuntimeWarning)
        return Comparison(jackknife(metric, value_a, left_a, count=count, dim=dim, level=ci),
                          jackknife(metric, value_b, left_b, count=count, dim=dim, level=ci), difference)  # fmt: skip


@dataclass(frozen=True)
class Growth:
    """A metric against the number of rows, along the cumulative merge of the blocks, with a
    fitted saturation value(n) = plateau − scale·n^(−exponent) and the plateau's jackknife
    interval (each block left out in turn, the curve and the fit made again). `still_rising`:
    the rise still to come (bias-corrected minus plain value) exceeds the standard error, so a
    value taken at another N differs from this one by more than noise."""

    metric: str
    counts: tuple[int, ...]
    values: tuple[float, ...]
    plateau: float
    plateau_interval: tuple[float, float]
    exponent: float
    level: float
    still_rising: bool

    @property
    def plateau_determined(self) -> bool:
        """The plateau's interval is narrower than the distance still to go to it (or than a
        tenth of the value, at the plateau): the fit says where the curve ends."""
        low, high = self.plateau_interval
        return high - low < max(abs(self.plateau - self.values[-1]), 0.1 * abs(self.values[-1]))

    def to_json(self) -> dict[str, Any]:
        """Plain values for a JSON report."""
        return {"metric": self.metric, "counts": list(self.counts), "values": list(self.values),
                "plateau": self.plateau, "plateau_interval": list(self.plateau_interval), "exponent": self.exponent,
                "level": self.level, "still_rising": self.still_rising,
                "plateau_determined": self.plateau_determined}  # fmt: skip

    def __str__(self) -> str:
        low, high = self.plateau_interval
        plateau = (f"fitted plateau {self.plateau:.4g} ({100 * self.level:g} % interval [{low:.4g}, {high:.4g}])"
                   if self.plateau_determined else "plateau not yet determined by these rows")  # fmt: skip
        state = ("still rising: a value at another N is not comparable" if self.still_rising else
                 "no longer rising beyond its noise")  # fmt: skip
        return f"{self.metric} at N = {self.counts[-1]:,}: {self.values[-1]:.4g}; {plateau}; {state}"


def fit_saturation(counts: Sequence[float], values: Sequence[float]) -> tuple[float, float, float]:
    """(plateau, scale, exponent) of value = plateau − scale·n^(−exponent), least squares: the
    exponent on a grid, plateau and scale in closed form at each."""
    n, y = np.asarray(counts, dtype=np.float64), np.asarray(values, dtype=np.float64)
    best = (math.inf, float(y[-1]), 0.0, 1.0)
    for exponent in np.geomspace(0.05, 4.0, 120):
        design = np.column_stack([np.ones_like(n), -(n**-exponent)])
        coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = float(np.sum((design @ coefficients - y) ** 2))
        if residual < best[0] and coefficients[1] >= 0:
            best = (residual, float(coefficients[0]), float(coefficients[1]), float(exponent))
    return best[1], best[2], best[3]


def growth(
    curve: Callable[[Sequence[int]], tuple[list[int], list[float]]], blocks: Sequence[int], *, metric: str,
    level: float, still_rising: bool,
) -> Growth:
    """`curve(order)` gives (counts, values) along the cumulative merge of the blocks in `order`;
    `blocks` are those that hold rows; `still_rising` comes from the metric's Estimate."""
    check_level(level)
    if len(blocks) < 4:
        raise ValueError(f"a growth curve needs rows in at least 4 blocks; {len(blocks)} of them hold rows")
    counts, values = curve(list(blocks))
    plateau, _, exponent = fit_saturation(counts, values)
    left_out = np.array([fit_saturation(*curve([b for b in blocks if b != k]))[0] for k in blocks])
    size = left_out.size
    error = math.sqrt((size - 1) / size * float(np.sum((left_out - left_out.mean()) ** 2)))
    half = student_t_quantile(0.5 + level / 2, size - 1) * error
    return Growth(metric, tuple(counts), tuple(values), plateau, (plateau - half, plateau + half), exponent, level,
                  still_rising)  # fmt: skip
