"""Maximum-likelihood estimation: L-BFGS-B on log10 parameters with batched gradients.

Every evaluation runs the scenario for a batch of parameter vectors at once (the
central-difference gradient is one batch); a few starting points are tried in one
batch first.  With quasi-Poisson colony counts fitted together with Gaussian data,
the counts are re-weighted by 1/dispersion and the fit repeated.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

from exosim.analysis.fit.data import FitError
from exosim.analysis.fit.likelihood import GAUSSIAN, goodness_of_fit
from exosim.analysis.fit.problem import FitProblem
from exosim.analysis.fit.profile import profile_intervals
from exosim.analysis.fit.result import FitResult

__all__ = ["fit", "minimise", "check_level"]


def _objective(problem: FitProblem, h: float = 1e-4):
    """f(x) and its central-difference gradient in log10 space, from one batch."""

    def fun(x):
        k = x.size
        xs = np.vstack([x] + [x + h * e for e in np.eye(k)] + [x - h * e for e in np.eye(k)])
        vals = problem.nll(problem.predict(10.0**xs))
        if not np.all(np.isfinite(vals)):
            return np.inf, np.zeros(k)
        return vals[0], (vals[1 : k + 1] - vals[k + 1 :]) / (2 * h)

    return fun


def minimise(problem: FitProblem, x0: np.ndarray, free: np.ndarray, fixed: np.ndarray):
    """Minimise over the free coordinates (log10), others fixed; returns x, f, result."""
    lo, hi = problem.log_bounds
    full = _objective(problem)

    def sub(z):
        x = fixed.copy()
        x[free] = z
        f, g = full(x)
        return f, g[free]

    res = optimize.minimize(
        sub, x0[free], jac=True, method="L-BFGS-B", bounds=list(zip(lo[free], hi[free])), options={"maxiter": 200}
    )
    x = fixed.copy()
    x[free] = res.x
    if not res.success and _is_local_minimum(problem, x, float(res.fun), free):
        res.success = True
        res.message = f"{res.message} (line search stopped at a minimum: no lower value {PROBE} away in log10)"
    return x, float(res.fun), res


#: step in log10 units of the stationarity probe after a failed line search
PROBE = 1e-3


def _is_local_minimum(problem: FitProblem, x: np.ndarray, f: float, free: np.ndarray) -> bool:
    """True when no free coordinate moved by :data:`PROBE` (log10) in either direction lowers
    the objective (one batch).  L-BFGS-B stops with ABNORMAL_TERMINATION_IN_LNSRCH when the
    objective is flat to its finite-difference noise, e.g. at an exact fit of summary values."""
    lo, hi = problem.log_bounds
    steps = np.eye(x.size)[free] * PROBE
    xs = np.clip(np.vstack([x + steps, x - steps]), lo, hi)
    vals = problem.nll(problem.predict(10.0**xs))
    return bool(np.all(np.isfinite(vals)) and np.all(vals >= f - 1e-9 * max(1.0, abs(f))))


def check_level(level: float) -> None:
    """A confidence level must lie in (0, 1); raises :class:`FitError` otherwise."""
    if not 0 < level < 1:
        raise FitError(f"--level must be in (0, 1), got {level}")


def fit(problem: FitProblem, level: float = 0.95, points: int = 25) -> FitResult:
    """Maximum-likelihood estimates with profile-likelihood intervals at confidence ``level``."""
    check_level(level)
    k = len(problem.params)
    lo, hi = problem.log_bounds
    problem.dispersion = 1.0
    x0 = np.clip(np.log10(problem.nominal), lo, hi)
    # multi-start on a coarse batch first: the best of a few points seeds the optimiser
    starts = np.vstack([x0] + [lo + (hi - lo) * f for f in (0.2, 0.5, 0.8)])
    vals = problem.nll(problem.predict(10.0**starts))
    x0 = starts[int(np.nanargmin(vals))] if np.isfinite(vals).any() else x0
    x_hat, f_hat, res = minimise(problem, x0, np.ones(k, bool), x0.copy())
    pred, scales = problem.evaluate(10.0**x_hat)
    gof, phi, nuisance = goodness_of_fit(problem, pred[0], scales)
    if phi > 1 and any(d.kind in GAUSSIAN for d in problem.datasets):
        # quasi-Poisson counts fitted with Gaussian data: re-weight the counts by 1/phi and refit
        problem.dispersion = phi
        x_hat, f_hat, res = minimise(problem, x_hat, np.ones(k, bool), x_hat.copy())
        pred, scales = problem.evaluate(10.0**x_hat)
        gof, _, nuisance = goodness_of_fit(problem, pred[0], scales)
        gof["dispersion"] = phi
    problem.dispersion = phi
    pred = pred[0]
    f_hat = float(problem.nll(pred[None, :])[0])
    low, high, profiles, open_ends = profile_intervals(problem, x_hat, f_hat, minimise, level, points)
    pes = [v for n, v in nuisance.items() if n.startswith("plating_efficiency")]
    return FitResult(
        problem.params,
        10.0**x_hat,
        10.0**low,
        10.0**high,
        f_hat,
        phi,
        gof,
        pred,
        pes[0] if len(pes) == 1 else None,
        nuisance,
        profiles,
        problem.evaluations,
        bool(res.success),
        str(res.message),
        open_ends,
    )
