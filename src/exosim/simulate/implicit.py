"""scipy's BDF as the fallback for members the explicit solvers give up on as stiff
(``solver: {stiff_fallback: bdf}``; the default, ``rosenbrock``, is the compiled Rodas4 of
:mod:`exosim.simulate.rosenbrock`, which this module also uses without numba).

Both shipped solvers are explicit (Dormand-Prince 5(4)): fast for the non-stiff problems
exosim mostly poses, but a member whose parameters make a process far faster than the
protocol (an internalisation rate of 1e5 /h over a day, a binding rate that empties the
medium in seconds) forces steps at the stability limit and is failed by the step budget.
With ``bdf`` such a member is integrated again, alone, from the start of the segment with the
variable-order BDF method of :func:`scipy.integrate.solve_ivp` (L-stable orders 1-2, the
Jacobian by finite differences), at the scenario's tolerances, in Python, one member and one
segment at a time (the 30-fraction course's Morris job took over 15 minutes this way); the
runner falls back only for failures of step size and step budget, never for a non-finite state
or derivative or the wall-clock limit, and reports how many members it rescued.

References
----------
.. [1] Shampine LF, Reichelt MW (1997) The MATLAB ODE suite. SIAM J Sci Comput 18:1.
   doi:10.1137/S1064827594276424
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from exosim.simulate.solver import MESSAGES

__all__ = ["FALLBACK_REASONS", "ImplicitResult", "integrate_member", "falls_back"]

#: failures of the explicit solvers that an implicit method can fix: step size and step budget
FALLBACK_REASONS = tuple(MESSAGES[k].split("{")[0] for k in ("max_steps", "pace", "pace_seconds", "min_step"))


def falls_back(message: str) -> bool:
    """True if an explicit failure ``message`` is a stiffness symptom the fallback may fix."""
    return any(message.startswith(prefix) for prefix in FALLBACK_REASONS)


@dataclass
class ImplicitResult:
    """One member's segment: success, final state, states at the output times, message, rhs calls."""

    ok: bool
    y: np.ndarray
    ys: np.ndarray
    message: str
    rhs_evaluations: int


class _Deadline(Exception):
    pass


def integrate_member(
    model,
    t0: float,
    t1: float,
    y0: np.ndarray,
    p_row: np.ndarray,
    *,
    rtol: float,
    atol: np.ndarray,
    t_eval: np.ndarray,
    max_seconds: float,
    rhs1=None,
) -> ImplicitResult:
    """Integrate one member from ``t0`` to ``t1`` with BDF.

    Parameters
    ----------
    model : exosim.model.assemble.Model
        The assembled model (its vectorised right-hand side, one member at a time).
    t0, t1 : float
        Segment, h.
    y0 : ndarray (n,)
        State at ``t0``.
    p_row : ndarray (k,)
        The member's parameters.
    rtol : float
        Relative tolerance.
    atol : ndarray (n,)
        Absolute tolerance per state.
    t_eval : ndarray
        Output times inside ``(t0, t1]``.
    max_seconds : float
        Wall-clock limit for this member's segment.
    rhs1 : callable, optional
        The compiled one-member right-hand side ``rhs1(y, p, dy)`` (numba backend); default the
        model's numpy right-hand side for one member.

    Returns
    -------
    ImplicitResult
    """
    from scipy.integrate import solve_ivp

    deadline = time.perf_counter() + max_seconds
    calls = 0
    if rhs1 is not None:
        p_c = np.ascontiguousarray(p_row, dtype=float)

        def derivative(t: float, y: np.ndarray) -> np.ndarray:
            dy = np.empty_like(y)
            rhs1(np.ascontiguousarray(y), p_c, dy)
            return dy

    else:
        prepared = model.prepare(np.asarray(p_row, dtype=float)[None, :])

        def derivative(t: float, y: np.ndarray) -> np.ndarray:
            return model.rhs_prepared(t, y[None, :], prepared)[0]

    def f(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls % 64 == 0 and time.perf_counter() > deadline:
            raise _Deadline
        return derivative(t, y)

    times = np.unique(np.append(np.asarray(t_eval, dtype=float), t1))
    n = y0.size
    fail = ImplicitResult(False, np.full(n, np.nan), np.full((len(t_eval), n), np.nan), "", calls)
    try:
        with np.errstate(all="ignore"):
            sol = solve_ivp(f, (t0, t1), np.asarray(y0, dtype=float), method="BDF", rtol=rtol, atol=atol, t_eval=times)
    except _Deadline:
        fail.message, fail.rhs_evaluations = f"BDF fallback exceeded {max_seconds:g} s", calls
        return fail
    if not sol.success or not np.all(np.isfinite(sol.y)):
        fail.message, fail.rhs_evaluations = f"BDF fallback failed: {sol.message}", calls
        return fail
    ys = sol.y.T
    return ImplicitResult(True, ys[-1].copy(), ys[: len(t_eval)].copy(), "", calls)
