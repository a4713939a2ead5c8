"""Batched explicit Runge-Kutta integration with per-member error control.

Why not ``scipy.integrate.solve_ivp`` on the flattened batch: its error norm is
an RMS over *all* components, so with N members one member's error is diluted
by sqrt(N) and its accuracy depends on how the batch was formed; and one bad
member aborts the whole solve.  Here every member's error is measured on its
own (the step is accepted only if *each* active member meets the tolerance),
and a member that cannot be integrated (non-finite values, step size below the
floor) is marked failed and dropped while the others continue: failures are
data (diffrax's ``throw=False``).  The method is Dormand-Prince 5(4), the
method of ``solve_ivp(method="RK45")``, against which the tests check it.

References
----------
.. [1] Dormand JR, Prince PJ (1980) A family of embedded Runge-Kutta formulae.
   J Comput Appl Math 6:19-26. doi:10.1016/0771-050X(80)90013-3
.. [2] Hairer E, Norsett SP, Wanner G (1993) Solving Ordinary Differential
   Equations I, 2nd ed., section II.4 (step size control). Springer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SolverOptions", "BatchSolution", "integrate"]

# Dormand-Prince 5(4) tableau
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_A_MAT = np.zeros((7, 7))
for _i, _row in enumerate(_A):
    _A_MAT[_i, :len(_row)] = _row
_B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
_E = np.array([71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])

FAILED = 1
OK = 0


@dataclass(frozen=True, kw_only=True)
class SolverOptions:
    """Integrator settings (keyword-only).

    Attributes
    ----------
    rtol : relative tolerance per member and component
    atol : absolute tolerance, multiplied by each state's declared scale
    max_steps : steps per segment before the remaining members are failed
    min_step : smallest step in h; a member that needs less is failed
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 200_000
    min_step: float = 1e-10


@dataclass
class BatchSolution:
    """Result of integrating a batch over one segment.

    Attributes
    ----------
    y : ndarray (N, n), states at the segment end (NaN for failed members)
    status : ndarray (N,), 0 = success, 1 = failed
    t_failed : ndarray (N,), h, time of failure (NaN if none)
    message : list of str, per member, empty on success
    ys : ndarray (N, len(t_eval), n), states at the requested output times
    n_steps, n_rejected, n_rhs : counters of the segment
    h_last : last step size (h), or one per member (compiled backend)
    member_steps : steps per member (compiled backend only)
    """

    y: np.ndarray
    status: np.ndarray
    t_failed: np.ndarray
    message: list[str]
    ys: np.ndarray
    n_steps: int = 0
    n_rejected: int = 0
    n_rhs: int = 0
    h_last: float | np.ndarray = field(default=np.nan)
    member_steps: np.ndarray | None = None


def integrate(fun: Callable[[float, np.ndarray, np.ndarray], np.ndarray], t0: float, t1: float,
              y0: np.ndarray, p: np.ndarray, *, atol_scale: np.ndarray | None = None,
              options: SolverOptions = SolverOptions(), t_eval: np.ndarray | None = None,
              h0: float | None = None) -> BatchSolution:
    """Integrate ``dy/dt = fun(t, y, p)`` for a batch from ``t0`` to ``t1``.

    Parameters
    ----------
    fun : vectorised right-hand side ``fun(t, y[N, n], p[N, k]) -> dy[N, n]``
    t0, t1 : float, h
        Segment start and end, ``t1 >= t0``.
    y0 : ndarray (N, n)
        Initial states; members with non-finite entries start failed.
    p : ndarray (N, k)
        Parameters, constant over the segment.
    atol_scale : ndarray (n,), optional
        Typical magnitude per state; the absolute tolerance is ``atol*atol_scale``.
    options : SolverOptions
    t_eval : ndarray, optional
        Output times in ``[t0, t1]``; steps are shortened to land on them exactly.
    h0 : float, optional
        First trial step (h); by default 1e-3 of the segment.

    Returns
    -------
    BatchSolution
    """
    y0 = np.asarray(y0, dtype=float)
    n_mem, n = y0.shape
    scale = np.ones(n) if atol_scale is None else np.asarray(atol_scale, dtype=float)
    atol = options.atol * scale
    t_eval = np.asarray([] if t_eval is None else t_eval, dtype=float)
    ys = np.full((n_mem, t_eval.size, n), np.nan)
    status = np.zeros(n_mem, dtype=int)
    t_failed = np.full(n_mem, np.nan)
    message = [""] * n_mem
    y_out = np.full_like(y0, np.nan)

    bad = ~np.all(np.isfinite(y0), axis=1)
    for i in np.flatnonzero(bad):
        status[i], t_failed[i], message[i] = FAILED, t0, "non-finite initial state"
    active = np.flatnonzero(~bad)
    y = y0[active].copy()
    pa = p[active]
    k_eval = 0
    while k_eval < t_eval.size and t_eval[k_eval] <= t0:
        ys[active, k_eval] = y
        k_eval += 1
    span = t1 - t0
    if span <= 0 or active.size == 0:
        y_out[active] = y
        return BatchSolution(y_out, status, t_failed, message, ys, h_last=h0 or np.nan)

    def fail(local_idx: np.ndarray, t: float, why: str) -> None:
        nonlocal active, y, pa, f
        for j in local_idx:
            i = active[j]
            status[i], t_failed[i], message[i] = FAILED, t, why
        keep = np.ones(active.size, dtype=bool)
        keep[local_idx] = False
        active, y, pa, f = active[keep], y[keep], pa[keep], f[keep]

    t = t0
    h = min(h0 if h0 and np.isfinite(h0) else 1e-3 * span, span)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        f = fun(t, y, pa)
    n_rhs, n_steps, n_rej = 1, 0, 0
    nonfinite = ~np.all(np.isfinite(f), axis=1)
    if nonfinite.any():
        fail(np.flatnonzero(nonfinite), t, "non-finite derivative at segment start")
    k = np.empty((7,) + y.shape)
    while t < t1 and active.size:
        if n_steps + n_rej >= options.max_steps:
            fail(np.arange(active.size), t, f"more than {options.max_steps} steps in one segment")
            break
        t_stop = t_eval[k_eval] if k_eval < t_eval.size and t_eval[k_eval] < t1 else t1
        h_try = min(h, t_stop - t)
        landing = h_try >= t_stop - t
        if landing:
            h_try = t_stop - t
        if k.shape[1] != y.shape[0]:
            k = np.empty((7,) + y.shape)
        k[0] = f
        # non-finite trial values are caught below (step rejected or member failed), so no warnings
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for s in range(1, 7):
                dy = np.tensordot(_A_MAT[s, :s], k[:s], axes=1)
                k[s] = fun(t + _C[s] * h_try, y + h_try * dy, pa)
            y_new = y + h_try * np.tensordot(_B, k, axes=1)
            err_vec = h_try * np.tensordot(_E, k, axes=1)
            tol = atol + options.rtol * np.maximum(np.abs(y), np.abs(y_new))
            err = np.sqrt(np.mean((err_vec / tol) ** 2, axis=1))
        n_rhs += 6
        err[~np.isfinite(err)] = np.inf
        err_max = err.max()
        if err_max <= 1.0:
            t = t_stop if landing else t + h_try
            y = y_new
            f = k[6]
            n_steps += 1
            if landing and t_stop < t1:
                ys[active, k_eval] = y
                k_eval += 1
            factor = 5.0 if err_max == 0 else min(5.0, max(0.2, 0.9 * err_max ** -0.2))
            if not landing or h_try >= h:
                h = h_try * factor
        else:
            n_rej += 1
            if h_try <= options.min_step:
                worst = np.flatnonzero(err > 1.0)
                fail(worst, t, f"step size below {options.min_step:g} h (error not controlled)")
                h = max(h, 1e-3 * span)
                continue
            h = h_try * max(0.1, 0.9 * err_max ** -0.2) if np.isfinite(err_max) else h_try * 0.1
            h = max(h, options.min_step)
    while k_eval < t_eval.size and t_eval[k_eval] <= t1:
        ys[active, k_eval] = y
        k_eval += 1
    y_out[active] = y
    return BatchSolution(y_out, status, t_failed, message, ys, n_steps, n_rej, n_rhs, h_last=h)
