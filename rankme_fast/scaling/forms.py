"""Scaling-law forms: each a formula in named parameters, which of them are positive (fitted in
log space), and data-driven starting points for the fit's grid of initialisations."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

_TINY = 1e-12


@dataclass(frozen=True)
class Form:
    """y = function(params, x); x is (n,) for one input, (n, 2) for (N, D)."""

    name: str
    parameters: tuple[str, ...]
    formula: str
    inputs: int
    positive: tuple[bool, ...]
    function: Callable[[np.ndarray, np.ndarray], np.ndarray]
    starts: Callable[[np.ndarray, np.ndarray], Iterator[np.ndarray]]
    source: str

    def __call__(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self.function(np.asarray(params, dtype=np.float64), np.asarray(x, dtype=np.float64))


def _loglog_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log a, b) of the least-squares line log y = log a + b log x."""
    slope, intercept = np.polyfit(np.log(x), np.log(np.maximum(y, _TINY)), 1)
    return float(intercept), float(slope)


def _power(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] * x ** -p[1]


def _power_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    log_a, slope = _loglog_line(x, y)
    yield np.array([np.exp(log_a), max(-slope, 1e-3)])
    for b in (0.05, 0.2, 0.5, 1.0, 2.0):
        yield np.array([np.exp(np.mean(np.log(y) + b * np.log(x))), b])


def _saturating(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] * x ** -p[1] + p[2]


def _saturating_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    for fraction in (1e-3, 0.3, 0.6, 0.9, 0.99):
        c = fraction * y.min()
        for start in _power_starts(x, y - c):
            yield np.append(start, c)


def _increasing(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] * x ** p[1]


def _increasing_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    log_a, slope = _loglog_line(x, y)
    yield np.array([np.exp(log_a), max(slope, 1e-3)])
    for b in (0.05, 0.2, 0.5, 1.0, 2.0):
        yield np.array([np.exp(np.mean(np.log(y) - b * np.log(x))), b])


def _increasing_offset(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] * x ** p[1] + p[2]


def _increasing_offset_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    spread = y.max() - y.min()
    for c in (y.min() - 10 * spread, y.min() - spread, y.min() - 0.1 * spread, 0.0, 0.5 * y.min()):
        if (y - c).min() > 0:
            for start in _increasing_starts(x, y - c):
                yield np.append(start, c)


def _rising_to(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] - p[1] * x ** -p[2]


def _rising_to_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    for ceiling in (1.001, 1.01, 1.05, 1.2, 2.0):
        a = ceiling * y.max()
        for start in _power_starts(x, a - y):
            yield np.concatenate([[a], start])


def _log_linear(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * np.log(x)


def _log_linear_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    slope, intercept = np.polyfit(np.log(x), y, 1)
    yield np.array([intercept, slope])
    yield np.array([y.mean(), 0.0])


def _droppo(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    n_c, d_c, alpha_n, alpha_d, floor = p
    n, d = x[:, 0], x[:, 1]
    return ((n_c / n) ** (alpha_n / alpha_d) + d_c / d) ** alpha_d + floor


def _kaplan(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _droppo(np.append(p, 0.0), x)


def _joint_starts(x: np.ndarray, y: np.ndarray, floors: tuple[float, ...]) -> Iterator[np.ndarray]:
    n_min, d_min = x[:, 0].min(), x[:, 1].min()
    for alpha_n, alpha_d, fraction in itertools.product((0.05, 0.15, 0.4), (0.05, 0.15, 0.4), floors):
        floor = fraction * y.min()
        excess = max(y.max() - floor, _TINY)
        # Each term alone reaches the largest excess at the smallest N (resp. D).
        n_c = n_min * excess ** (1 / alpha_n)
        d_c = d_min * excess ** (1 / alpha_d)
        yield np.array([n_c, d_c, alpha_n, alpha_d, floor])


def _droppo_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    yield from _joint_starts(x, y, (1e-3, 0.5, 0.9))


def _kaplan_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    for start in _joint_starts(x, y, (0.0,)):
        yield start[:4]


def _chinchilla(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    e, a, alpha, b, beta = p
    return e + a / x[:, 0] ** alpha + b / x[:, 1] ** beta


def _chinchilla_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    n_min, d_min = x[:, 0].min(), x[:, 1].min()
    for alpha, beta, fraction in itertools.product((0.1, 0.3, 0.6), (0.1, 0.3, 0.6), (1e-3, 0.5, 0.9)):
        e = fraction * y.min()
        half = max(y.max() - e, _TINY) / 2
        yield np.array([e, half * n_min**alpha, alpha, half * d_min**beta, beta])


def _broken(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b1, b2, x_b, s = p
    return a * x**-b1 * (1 + (x / x_b) ** (1 / s)) ** (-(b2 - b1) * s)


def _broken_starts(x: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    for quantile, b1, b2, s in itertools.product((0.25, 0.5, 0.75), (0.1, 0.5), (0.1, 0.5, 1.0), (0.1, 1.0)):
        x_b = float(np.quantile(x, quantile))
        a = np.exp(np.mean(np.log(y) + b1 * np.log(x)))
        yield np.array([a, b1, b2, x_b, s])


FORMS: dict[str, Form] = {
    form.name: form
    for form in (
        Form("power", ("a", "b"), "y = a·x^(−b)", 1, (True, True), _power, _power_starts,
             "Hestness et al. 2017, Deep learning scaling is predictable, empirically"),
        Form("saturating", ("a", "b", "c"), "y = a·x^(−b) + c", 1, (True, True, True), _saturating,
             _saturating_starts, "Hestness et al. 2017; irreducible term as in Henighan et al. 2020"),
        Form("increasing_power", ("a", "b"), "y = a·x^b", 1, (True, True), _increasing, _increasing_starts,
             "Agrawal et al. 2022 (α-ReQ) and Garrido et al. 2023 (RankMe): quality grows with rank"),
        Form("increasing_power_offset", ("a", "b", "c"), "y = a·x^b + c", 1, (True, True, False),
             _increasing_offset, _increasing_offset_starts, "increasing_power with an offset c (any sign)"),
        Form("rising_to", ("a", "b", "c"), "y = a − b·x^(−c)", 1, (True, True, True), _rising_to,
             _rising_to_starts, "quality saturating towards a ceiling a as the rank grows"),
        Form("log_linear", ("a", "b"), "y = a + b·ln x", 1, (False, False), _log_linear, _log_linear_starts,
             "quality linear in log RankMe"),
        Form("droppo", ("N_c", "D_c", "alpha_N", "alpha_D", "L_inf"),
             "L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D + L_∞", 2, (True,) * 5, _droppo, _droppo_starts,
             "Droppo & Elibol 2021, Scaling laws for acoustic models (Kaplan et al. 2020 plus L_∞)"),
        Form("kaplan", ("N_c", "D_c", "alpha_N", "alpha_D"), "L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D", 2,
             (True,) * 4, _kaplan, _kaplan_starts, "Kaplan et al. 2020, Scaling laws for neural language models"),
        Form("chinchilla", ("E", "A", "alpha", "B", "beta"), "L = E + A/N^α + B/D^β", 2, (True,) * 5,
             _chinchilla, _chinchilla_starts, "Hoffmann et al. 2022, Training compute-optimal LLMs"),
        Form("broken", ("a", "b1", "b2", "x_b", "s"), "y = a·x^(−b1)·(1 + (x/x_b)^(1/s))^(−(b2−b1)·s)", 1,
             (True,) * 5, _broken, _broken_starts,
             "Caballero et al. 2022, Broken neural scaling laws (one break, no offset)"),
    )
}  # fmt: skip


def get(form: str | Form) -> Form:
    """The form named `form` (or `form` itself)."""
    if isinstance(form, Form):
        return form
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {sorted(FORMS)}")
    return FORMS[form]
