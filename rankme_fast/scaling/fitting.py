"""Fitting a scaling-law form: Huber loss on log residuals, L-BFGS-B from a grid of starts
(the Chinchilla recipe: Hoffmann et al. 2022, App. D.2), standard errors, bootstrap
confidence intervals (in log space for positive parameters, so they stay positive), R² and
AIC in log space, held-out extrapolation error (the largest x; for joint forms the largest N
and, separately, the largest D), and which parameters ended at a bound of their range."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from rankme_fast.scaling.forms import Form, get

_LOG_BOUND = 80.0  # log-space parameters stay within e^±80
_FLOOR = 1e-300
EXPONENTS = frozenset({"b", "b1", "b2", "alpha", "beta", "alpha_N", "alpha_D"})
_ZERO_EXPONENT = 1e-6  # an exponent fitted below this is at its bound: no power law
OFFSETS = frozenset({"c", "L_inf", "E"})  # irreducible terms
_ZERO_OFFSET = 1e-4  # one below this share of the smallest y changes no prediction: it is absent


@dataclass
class Fit:
    """A fitted form: parameters with standard errors and bootstrap CIs, fit quality (R² and
    AIC of the log residuals), the error of predicting the largest x (and, for joint forms, the
    largest D) from a fit to the rest, and `pinned`: parameters that ended at a bound of their
    range (an exponent at 0, or any positive parameter at e^±80), whose value and CI are
    artefacts of the bound, not estimates."""

    form: Form
    params: dict[str, float]
    stderr: dict[str, float]
    ci: dict[str, tuple[float, float]]
    level: float
    r2_log: float
    loss: str
    delta: float
    x: np.ndarray
    y: np.ndarray
    converged: bool
    message: str
    extrapolation: dict[str, Any] = field(default_factory=dict)
    bootstrap: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    pinned: list[str] = field(default_factory=list)
    aic: float = math.nan
    extrapolation_d: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: Any) -> np.ndarray:
        """The fitted form at x ((n,) or (n, 2) for joint forms)."""
        return self.form(self.vector, _inputs(self.form, x))

    @property
    def vector(self) -> np.ndarray:
        return np.array([self.params[name] for name in self.form.parameters])

    def summary(self) -> str:
        """A text table: each parameter with its standard error and CI, then fit quality."""
        pct = round(100 * self.level)
        lines = [
            f"{self.form.name}: {self.form.formula}   ({len(self.y)} points, {self.loss} loss"
            + (f", δ={self.delta:g}" if self.loss == "huber" else "") + ")",
            f"{'parameter':<10} {'value':>12} {'std err':>12} {f'{pct}% CI (bootstrap, B={len(self.bootstrap)})':>36}",
        ]  # fmt: skip
        for name in self.form.parameters:
            low, high = self.ci[name]
            lines.append(f"{name:<10} {self.params[name]:>12.5g} {self.stderr[name]:>12.3g} "
                         f"{f'[{low:.5g}, {high:.5g}]':>36}")  # fmt: skip
        lines.append(f"R² (log space): {self.r2_log:.4f}   AIC (log residuals): {self.aic:.2f}")
        for what, e in (("x" if self.form.inputs == 1 else "N", self.extrapolation), ("D", self.extrapolation_d)):
            if e:
                lines.append(f"held-out extrapolation (fit on {what} < {e['held_out_x']:.4g}, {e['held_out_points']} "
                             f"points predicted): mean relative error {100 * e['relative_error']:.2f} %")  # fmt: skip
        if self.pinned:
            lines.append(f"at a bound (not estimates): {', '.join(self.pinned)}")
        if not self.converged:
            lines.append(f"WARNING: the fit did not converge: {self.message}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready values."""
        return {
            "form": self.form.name, "formula": self.form.formula, "source": self.form.source,
            "params": self.params, "stderr": self.stderr, "ci": {k: list(v) for k, v in self.ci.items()},
            "level": self.level, "r2_log": self.r2_log, "loss": self.loss, "delta": self.delta,
            "points": len(self.y), "bootstrap_resamples": len(self.bootstrap), "converged": self.converged,
            "message": self.message, "extrapolation": self.extrapolation, "extrapolation_d": self.extrapolation_d,
            "pinned": self.pinned, "aic": self.aic,
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def plot(self, ax: Any = None) -> Any:
        """Data and fit on log–log axes, with the bootstrap band for one-input forms; joint
        forms get one line per distinct D. Returns the axes."""
        from rankme_fast.scaling.plot import plot_fit

        return plot_fit(self, ax)


def fit(
    form: str | Form,
    x: Any,
    y: Any,
    *,
    loss: str = "huber",
    delta: float = 1e-3,
    bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
    extrapolate: bool = True,
) -> Fit:
    """Fit `form` to (x, y): minimise Σ loss(log f(x) − log y) with L-BFGS-B from every start of
    the form's grid (positive parameters in log space), keep the best; standard errors from the
    Jacobian of the log residuals; `bootstrap` resamples of the points (seeded) for percentile
    CIs; R² of log y; and, with `extrapolate`, a refit without the largest x that predicts it."""
    form = get(form)
    x, y = _inputs(form, x), np.asarray(y, dtype=np.float64)
    _check(form, x, y, loss, delta, bootstrap, level)
    best, converged, message = _fit_best(form, x, y, loss, delta, starts=None)
    vector = _natural(form, best)
    residuals = np.log(np.maximum(form(vector, x), _FLOOR)) - np.log(y)
    total = np.sum((np.log(y) - np.log(y).mean()) ** 2)
    r2 = 1.0 - float(np.sum(residuals**2) / total)
    aic = _aic(residuals, len(form.parameters))
    stderr = _standard_errors(form, x, y, best, residuals)

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(y), len(y))
        if np.unique(x[pick], axis=0).shape[0] < len(form.parameters):
            continue  # too few distinct points to fit: left out (the CIs use the other draws)
        theta, _, _ = _fit_best(form, x[pick], y[pick], loss, delta, starts=[best])
        samples.append(_natural(form, theta))
    draws = np.array(samples).reshape(-1, len(form.parameters))
    ci = _intervals(form, vector, draws, level)
    result = Fit(form, dict(zip(form.parameters, map(float, vector), strict=True)), stderr, ci, level, r2, loss,
                 delta, x, y, converged, message, bootstrap=draws, pinned=_pinned(form, best, y), aic=aic)  # fmt: skip
    if extrapolate:
        result.extrapolation = _held_out(form, x, y, loss, delta, column=0)
        if form.inputs == 2:
            result.extrapolation_d = _held_out(form, x, y, loss, delta, column=1)
    if not converged:
        warnings.warn(f"{form.name} fit did not converge: {message}", RuntimeWarning, stacklevel=2)
    return result


def _intervals(form: Form, vector: np.ndarray, draws: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    """Bootstrap CIs: the union of the percentile interval and the normal one (estimate ± z·sd
    of the draws), both taken in fit space (log space for positive parameters, so their CIs
    stay positive), then mapped back. With a Huber loss at small δ the estimator behaves like
    a median, whose bootstrap distribution is lumpy for a few dozen points; either interval
    alone covered the truth in 88 % of 30 scratch trials at 95 % nominal (16 points, 2 %
    noise), their union in 93 %; tests/scaling/test_scaling.py asserts >= 90 % for every form."""
    if len(draws) < 2:
        return {name: (math.nan, math.nan) for name in form.parameters}
    tail = 100 * (1 - level) / 2
    z = float(stats.norm.ppf(1 - tail / 100))
    space, centre = _fit_space(form, draws), _fit_space(form, vector)
    low, high = np.percentile(space, [tail, 100 - tail], axis=0)
    spread = z * space.std(axis=0, ddof=1)
    low, high = np.minimum(low, centre - spread), np.maximum(high, centre + spread)
    low, high = _natural(form, low), _natural(form, high)
    return {name: (float(low[i]), float(high[i])) for i, name in enumerate(form.parameters)}


def _pinned(form: Form, theta: np.ndarray, y: np.ndarray) -> list[str]:
    """Parameters at a bound of their range: a positive one at e^±80, an exponent at 0, an
    irreducible term at 0 (below 0.01 % of the smallest y: the optimiser's gradient in it
    vanishes there, so its bootstrap "CI" is a point)."""
    natural = _natural(form, theta)
    return [
        name
        for name, t, value, positive in zip(form.parameters, theta, natural, form.positive, strict=True)
        if positive
        and (
            abs(t) >= _LOG_BOUND - 1e-6
            or (name in EXPONENTS and value < _ZERO_EXPONENT)
            or (name in OFFSETS and value < _ZERO_OFFSET * y.min())
        )
    ]


def _aic(residuals: np.ndarray, parameters: int) -> float:
    """Akaike's information criterion of Gaussian log residuals: n·log(RSS/n) + 2k."""
    n = len(residuals)
    return float(n * math.log(max(float(np.sum(residuals**2)) / n, _FLOOR)) + 2 * parameters)


def _inputs(form: Form, x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if form.inputs == 2:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"the {form.name} form takes (N, D) pairs: x of shape (n, 2), got {x.shape}")
    elif x.ndim != 1:
        raise ValueError(f"the {form.name} form takes one input: x of shape (n,), got {x.shape}")
    return x


def _check(form: Form, x: np.ndarray, y: np.ndarray, loss: str, delta: float, bootstrap: int, level: float) -> None:
    if loss not in ("huber", "squared"):
        raise ValueError(f"loss must be 'huber' or 'squared', got {loss!r}")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    if not (isinstance(bootstrap, int) and bootstrap >= 0):
        raise ValueError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must be 1-D with one value per x, got shape {y.shape} for {len(x)} inputs")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite (found NaN or inf)")
    if np.any(x <= 0):
        raise ValueError(f"the {form.name} form needs positive x (a power of x), got min {x.min():g}")
    if np.any(y <= 0):
        raise ValueError(f"y must be positive (the fit is on log y), got min {y.min():g}")
    if len(y) <= len(form.parameters):
        raise ValueError(f"the {form.name} form has {len(form.parameters)} parameters and needs more points "
                         f"than that, got {len(y)}")  # fmt: skip
    if np.ptp(y) == 0:
        raise ValueError("y is constant: there is no trend to fit")


def _fit_space(form: Form, vector: np.ndarray) -> np.ndarray:
    positive = np.array(form.positive)
    return np.where(positive, np.log(np.maximum(np.abs(vector), _FLOOR)), vector)


def _natural(form: Form, theta: np.ndarray) -> np.ndarray:
    return np.where(np.array(form.positive), np.exp(theta), theta)


def _objective(form: Form, x: np.ndarray, y: np.ndarray, loss: str, delta: float):
    log_y = np.log(y)

    def value(theta: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            prediction = form(_natural(form, theta), x)
        if not np.all(np.isfinite(prediction)):
            return 1e30
        r = np.log(np.maximum(prediction, _FLOOR)) - log_y
        if loss == "squared":
            return float(np.sum(r * r) / 2)
        a = np.abs(r)
        return float(np.sum(np.where(a <= delta, r * r / 2, delta * (a - delta / 2))))

    return value


def _fit_best(form: Form, x: np.ndarray, y: np.ndarray, loss: str, delta: float, starts: list[np.ndarray] | None):
    """The best L-BFGS-B result over the starts (the form's grid when None), in fit space."""
    objective = _objective(form, x, y, loss, delta)
    if starts is None:
        starts = [_fit_space(form, s) for s in form.starts(x, y)]
    bounds = [(-_LOG_BOUND, _LOG_BOUND) if p else (None, None) for p in form.positive]
    options = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10}
    best = None
    for start in starts:
        start = np.clip(start, -_LOG_BOUND, _LOG_BOUND)
        result = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds, options=options)
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    # L-BFGS-B can stop on a failed line search at a Huber kink while already at the minimum:
    # a restart from there that finds nothing better (1e-9 relative) confirms it.
    success, message = bool(best.success), str(best.message)
    if not success:
        again = optimize.minimize(objective, best.x, method="L-BFGS-B", bounds=bounds, options=options)
        success = again.fun >= best.fun - 1e-9 * max(1.0, abs(best.fun))
        best = again if again.fun < best.fun else best
    at_bound = [name for name, t, p in zip(form.parameters, best.x, form.positive, strict=True)
                if p and abs(t) >= _LOG_BOUND - 1e-6]  # fmt: skip
    converged = success and not at_bound and best.fun < 1e29
    if at_bound:
        message = f"parameters at their bound: {at_bound}"
    elif best.fun >= 1e29:
        message = "the form is not finite at any start"
    return best.x, converged, "" if converged else message


def _standard_errors(form: Form, x: np.ndarray, y: np.ndarray, theta: np.ndarray, residuals: np.ndarray):
    """Asymptotic standard errors s²(JᵀJ)⁻¹ of the log residuals (J in fit space, mapped to natural
    units by the delta method: d exp(t) = exp(t) dt)."""
    p = len(theta)
    jacobian = np.empty((len(y), p))
    for j in range(p):
        step = 1e-6 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += step
        down[j] -= step
        with np.errstate(all="ignore"):
            f_up = np.log(np.maximum(form(_natural(form, up), x), _FLOOR))
            f_down = np.log(np.maximum(form(_natural(form, down), x), _FLOOR))
        jacobian[:, j] = (f_up - f_down) / (2 * step)
    dof = max(len(y) - p, 1)
    s2 = float(np.sum(residuals**2)) / dof
    covariance = s2 * np.linalg.pinv(jacobian.T @ jacobian)
    scale = np.where(np.array(form.positive), np.exp(theta), 1.0)
    errors = np.sqrt(np.maximum(np.diag(covariance), 0.0)) * scale
    return dict(zip(form.parameters, map(float, errors), strict=True))


def _held_out(form: Form, x: np.ndarray, y: np.ndarray, loss: str, delta: float, column: int = 0) -> dict[str, Any]:
    """Refit without the points at the largest x (for joint forms: the largest N, column 0, or
    the largest D, column 1) and predict them."""
    key = x if form.inputs == 1 else x[:, column]
    largest = key.max()
    held = key == largest
    train_x, train_y = x[~held], y[~held]
    if len(train_y) <= len(form.parameters) or np.ptp(train_y) == 0:
        return {}
    theta, converged, _ = _fit_best(form, train_x, train_y, loss, delta, starts=None)
    predicted = form(_natural(form, theta), x[held])
    relative = np.abs(predicted - y[held]) / y[held]
    return {
        "held_out_x": float(largest), "held_out_points": int(held.sum()), "predicted": predicted.tolist(),
        "actual": y[held].tolist(), "relative_error": float(relative.mean()), "converged": converged,
    }  # fmt: skip
