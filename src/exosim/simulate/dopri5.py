"""Batched explicit Runge-Kutta integration with per-member error control (numpy).

Why not ``scipy.integrate.solve_ivp`` on the flattened batch: its error norm is
an RMS over *all* components, so with N members one member's error is diluted
by sqrt(N) and its accuracy depends on how the batch was formed; and one bad
member aborts the whole solve.  Here every member's error is measured on its
own (the step is accepted only if *each* active member meets the tolerance),
and a member that cannot be integrated (non-finite values, step size below the
floor) is marked failed and dropped while the others continue: failures are
data (diffrax's ``throw=False``).

The steps are shared, so one stiff member (a rate far outside its range) forces
tiny steps on the whole batch.  The step budget (``max_steps``, also judged by pace,
see :data:`~exosim.simulate.solver.PACE_WINDOWS`) is therefore applied as in the
compiled solver, member by member: when the shared steps exceed it, or would at their
pace, the members whose error estimate limited the step over the last windows are
failed and the others go on with a new budget.  A shared step costs about a
millisecond, so a segment that would outlast the wall-clock limit (``max_seconds``)
at its pace is treated the same way; the limit itself fails whatever is still being
integrated.  The method is Dormand-Prince 5(4), the
method of ``solve_ivp(method="RK45")``, against which the tests check it, or with
``SolverOptions.method == "dop853"`` Dormand-Prince 8(5,3) (``solve_ivp(method="DOP853")``);
the tableaus and the step-size rule are :mod:`exosim.simulate.solver`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from exosim.simulate.solver import (
    FAILED,
    FIRST_STEP_FRACTION,
    MAX_FACTOR,
    MESSAGES,
    MIN_FACTOR,
    PACE_STRIKES,
    PACE_WINDOWS,
    REJECT_MIN_FACTOR,
    SAFETY,
    SegmentResult,
    SolverOptions,
    method,
)

__all__ = ["integrate", "NumpyDopri5"]

#: a member whose error is at least this share of the batch's largest limits the shared step
LIMITING = 0.1


class NumpyDopri5:
    """The batched numpy solver (:class:`~exosim.simulate.solver.Solver`): one shared step for
    the batch, accepted only when every member meets its tolerance; no compilation."""

    name = "numpy"
    description = "Dormand-Prince 5(4), batched: one shared step, per-member error control"
    reports_progress = True

    def integrate(self, model, t0: float, t1: float, y0: np.ndarray, p: np.ndarray, **options) -> SegmentResult:
        """Integrate one segment of ``model``'s batch (keyword options of :func:`integrate`)."""
        # parameter-only constants once per segment, not at every stage of every step
        return integrate(model.rhs_prepared, t0, t1, y0, model.prepare(p), **options)


def integrate(
    fun: Callable[[float, np.ndarray, np.ndarray], np.ndarray],
    t0: float,
    t1: float,
    y0: np.ndarray,
    p: np.ndarray,
    *,
    atol_scale: np.ndarray | None = None,
    options: SolverOptions = SolverOptions(),
    t_eval: np.ndarray | None = None,
    h0: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> SegmentResult:
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
    progress : callable, optional
        Called before every step with the share of the segment done.

    Returns
    -------
    SegmentResult
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
        status[i], t_failed[i], message[i] = FAILED, t0, MESSAGES["initial"]
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
        return SegmentResult(y_out, status, t_failed, message, ys, _stats(0, 0, 0, status), h_last=h0 or np.nan)

    def fail(local_idx: np.ndarray, t: float, why: str) -> None:
        nonlocal active, y, pa, f, limiting
        for j in local_idx:
            i = active[j]
            status[i], t_failed[i], message[i] = FAILED, t, why
        keep = np.ones(active.size, dtype=bool)
        keep[local_idx] = False
        active, y, pa, f, limiting = active[keep], y[keep], pa[keep], f[keep], limiting[:, keep]

    deadline = time.perf_counter() + options.max_seconds
    # the pace of steps is projected to the end of the run, not only of this segment
    t_pace = max(t1, options.horizon) if np.isfinite(options.horizon) else t1
    # steps (accepted or rejected) in which each active member's error was within a factor
    # LIMITING of the largest (its own step would be at most 1.6 times the shared one), in the
    # previous (row 0) and the current (row 1) window: the members that hold the shared step down
    limiting = np.zeros((2, active.size), dtype=int)
    window = max(1, options.max_steps // PACE_WINDOWS)
    budget_start = 0  # n_steps + n_rej when the current step budget began
    # the current window: first step, its time and clock; windows running over budget or time
    w_start, t_w, c_w, strikes = 0, t0, time.perf_counter(), 0
    w_len = window  # after a failure for pace, one short window judges the pace of the rest

    t = t0
    h = min(h0 if h0 and np.isfinite(h0) else FIRST_STEP_FRACTION * span, span)
    if options.frozen:  # held constant, and left out of the error norm
        fun = _frozen(fun, list(options.frozen))
    n_norm = n - len(options.frozen)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        f = fun(t, y, pa)
    n_rhs, n_steps, n_rej = 1, 0, 0
    nonfinite = ~np.all(np.isfinite(f), axis=1)
    if nonfinite.any():
        fail(np.flatnonzero(nonfinite), t, MESSAGES["derivative"])
    rk = method(options.method)
    A, B, C, E, E3, EXPONENT = rk.A, rk.B, rk.C, rk.E, rk.E3, rk.exponent
    k = np.empty((rk.rows,) + y.shape)
    while t < t1 and active.size:
        if progress is not None:
            progress((t - t0) / span)
        now = time.perf_counter()
        if now > deadline:
            fail(np.arange(active.size), t, MESSAGES["max_seconds"].format(max_seconds=options.max_seconds))
            break
        done = n_steps + n_rej
        used = done - budget_start
        why = ""
        if used >= options.max_steps:
            why = MESSAGES["max_steps"].format(max_steps=options.max_steps)
        elif done - w_start >= w_len:
            # the steps and the seconds still needed at the pace of this window (shared numpy
            # steps cost about a millisecond, so the wall-clock limit usually comes first)
            rate = (done - w_start) / (t - t_w) if t > t_w else np.inf
            steps_over = used + (t_pace - t) * rate > options.max_steps
            time_over = now + (t1 - t) * rate * (now - c_w) / (done - w_start) > deadline
            strikes = strikes + 1 if steps_over or time_over else 0
            w_start, t_w, c_w, w_len = done, t, now, window
            if strikes >= PACE_STRIKES:
                key = "pace" if steps_over else "pace_seconds"
                why = MESSAGES[key].format(max_steps=options.max_steps, max_seconds=options.max_seconds, window=window)
            else:
                limiting[0] = limiting[1]
                limiting[1] = 0
        if why:
            # fail the members that limited the step (all if none did), renew the budget for the rest
            counts = limiting.sum(axis=0)
            if counts.max() > 0:
                fail(np.flatnonzero(counts >= max(1, counts.max() // 2)), t, why + " (its error limited the step)")
            else:
                fail(np.arange(active.size), t, why)
            limiting[:] = 0
            budget_start, w_start, t_w, c_w, strikes = done, done, t, time.perf_counter(), 0
            if used < options.max_steps:  # failed for pace: the next stiffest member may be next
                strikes, w_len = PACE_STRIKES - 1, max(1, window // 10)
            continue
        t_stop = t_eval[k_eval] if k_eval < t_eval.size and t_eval[k_eval] < t1 else t1
        h_try = min(h, t_stop - t)
        landing = h_try >= t_stop - t
        if landing:
            h_try = t_stop - t
        if k.shape[1] != y.shape[0]:
            k = np.empty((rk.rows,) + y.shape)
        k[0] = f
        # non-finite trial values are caught below (step rejected or member failed), so no warnings
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for s in range(1, rk.stages + 1):
                dy = np.tensordot(A[s, :s], k[:s], axes=1)
                k[s] = fun(t + C[s] * h_try, y + h_try * dy, pa)
            y_new = y + h_try * np.tensordot(B, k, axes=1)
            tol = atol + options.rtol * np.maximum(np.abs(y), np.abs(y_new))
            if E3 is None:
                err_vec = h_try * np.tensordot(E, k, axes=1)
                err = np.sqrt(np.sum((err_vec / tol) ** 2, axis=1) / n_norm)
            else:  # Hairer's dop853 norm of the 5th- and 3rd-order estimates
                e5 = np.sum((np.tensordot(E, k, axes=1) / tol) ** 2, axis=1)
                e3 = np.sum((np.tensordot(E3, k, axes=1) / tol) ** 2, axis=1)
                den = np.sqrt((e5 + 0.01 * e3) * n_norm)
                err = np.where(den > 0, abs(h_try) * e5 / np.where(den > 0, den, 1.0), np.where(e5 == 0, 0.0, np.inf))
        n_rhs += rk.stages
        err[~np.isfinite(err)] = np.inf
        err_max = err.max()
        limiting[1] += err >= LIMITING * err_max
        if err_max <= 1.0:
            t = t_stop if landing else t + h_try
            y = y_new
            # FSAL (the last stage is at t + h, y_new); a copy: the next trial overwrites it, and
            # a rejected trial must restart from f(t, y)
            f = k[rk.stages].copy()
            n_steps += 1
            if landing and t_stop < t1:
                ys[active, k_eval] = y
                k_eval += 1
            factor = MAX_FACTOR if err_max == 0 else min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * err_max**EXPONENT))
            if not landing or h_try >= h:
                h = h_try * factor
        else:
            n_rej += 1
            if h_try <= options.min_step:
                worst = np.flatnonzero(err > 1.0)
                fail(worst, t, MESSAGES["min_step"].format(min_step=options.min_step))
                h = max(h, FIRST_STEP_FRACTION * span)
                continue
            h = (
                h_try * max(REJECT_MIN_FACTOR, SAFETY * err_max**EXPONENT)
                if np.isfinite(err_max)
                else h_try * REJECT_MIN_FACTOR
            )
            h = max(h, options.min_step)
    while k_eval < t_eval.size and t_eval[k_eval] <= t1:
        ys[active, k_eval] = y
        k_eval += 1
    y_out[active] = y
    return SegmentResult(y_out, status, t_failed, message, ys, _stats(n_steps, n_rej, n_rhs, status), h_last=h)


def _frozen(fun: Callable, frozen: list[int]) -> Callable:
    """``fun`` with a zero derivative for the states ``frozen``."""

    def rhs(t: float, y: np.ndarray, p: np.ndarray) -> np.ndarray:
        dy = fun(t, y, p)
        dy[:, frozen] = 0.0
        return dy

    return rhs


def _stats(steps: int, rejected: int, rhs: int, status: np.ndarray) -> dict:
    return {
        "steps": int(steps),
        "rejected": int(rejected),
        "rhs_evaluations": int(rhs),
        "failures": int(np.sum(status == FAILED)),
    }
