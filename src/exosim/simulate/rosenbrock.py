"""Rodas4, the compiled implicit method for members too stiff for explicit steps.

Both shipped solvers step with Dormand-Prince 5(4): fast for the mildly stiff problems exosim
mostly poses, but a member whose parameters make a process far faster than the protocol (a
binding rate that empties the medium in seconds, an internalisation rate of 1e5 /h) crawls at the
explicit stability limit, thousands of steps per segment.  Such a member is integrated with
Rodas4 instead, inside the compiled kernel (:mod:`exosim.simulate.dopri5_numba`), from where its
explicit steps left it to the end of the segment (``solver: {stiff_fallback: rosenbrock}``, the
default):

* **when**: the kernel watches every member's explicit steps in windows of :data:`STIFF_WINDOW`
  steps.  When, at a window's pace, the member would need more than :data:`SWITCH_STEPS` explicit
  steps to the end of the segment, it is switched if at least a quarter of the window's accepted
  steps were stability-limited (Hairer's test in ``dopri5``: ``h*|lambda| > 3.25``, in ``dop853``
  6.1: ``solver.Method.stiff_h_lambda``; ``|lambda|`` estimated from the last two stages, both at
  ``t + h``; a quarter, not a half, because a state at a kink of ``max()``, saturated binding
  sites, is stiff on one side of it only), or if the previous window was as slow.  A Rodas4 step
  costs about as much as ten explicit ones, so a mildly stiff member, whose explicit steps are
  only a few times below its accuracy limit, stays explicit.  Whatever the explicit method would
  fail for step size or step budget is switched too.  Every segment starts explicit again (after
  an irradiation the fast transients are not stiff).
* **how**: Rodas4 (Hairer & Wanner 1996, section IV.7; the coefficients of their code
  ``rodas.f``), a six-stage Rosenbrock method of order 4 with an embedded order-3 estimate,
  L-stable and stiffly accurate.  The model's right-hand side is autonomous (dose rates are
  parameters that events change), so no time derivative enters.  Per step: one Jacobian by
  forward differences (only the columns of states some rate reads: cumulative counters are
  read by none), one LU factorisation with partial pivoting of ``I/(h*gamma) - J`` (zero
  multipliers skipped: the model's Jacobian has about 2 non-zeros per row), six stage solves.
  Written in the transformed variables ``k_i`` of Hairer & Wanner (their eq. IV.7.4'):

      (I/(h*gamma) - J) k_i = f(y + sum_j A_ij k_j) + sum_j (C_ij / h) k_j
      y_new = y + sum_j M_j k_j,       error = k_6

  The step-size rule is the explicit one (:mod:`exosim.simulate.solver`) with the exponent
  -1/4 of the embedded order 3, growth up to :data:`MAX_FACTOR`, no growth right after a
  rejection and a tenfold cut after two rejections running; the error norm, tolerances, landing
  on output times, step budget (``max_steps``), smallest step and wall-clock limit are the
  explicit solvers'.  A member Rodas4 cannot integrate either fails (reported, with a message
  naming Rodas4) like any other.

``stiff_fallback: bdf`` keeps the former fallback (scipy's BDF, member by member, in Python:
:mod:`exosim.simulate.implicit`); ``none`` fails stiff members.  The numpy solver has no
kernel to switch in: after it, the runner integrates the members it failed as stiff again,
from the start of the segment, with this compiled Rodas4 (BDF when numba is not installed).

References
----------
.. [1] Hairer E, Wanner G (1996) Solving Ordinary Differential Equations II: Stiff and
   Differential-Algebraic Problems, 2nd ed., section IV.7 (Rosenbrock methods, RODAS).
   Springer. doi:10.1007/978-3-642-05221-7
   Section IV.2 ("automatic stiffness detection") gives the test of ``dopri5`` used here.
.. [2] Sandu A, Verwer JG, Blom JG, Spee EJ, Carmichael GR, Potra FA (1997) Benchmarking
   stiff ODE solvers for atmospheric chemistry problems II: Rosenbrock solvers. Atmos
   Environ 31:3459-3472 (the A, C, M form of the coefficients used here)
"""

from __future__ import annotations

import numpy as np

__all__ = ["A", "C", "M", "GAMMA", "ORDER", "EXPONENT", "STIFF_WINDOW", "SWITCH_STEPS"]

#: gamma_ii of every stage
GAMMA = 0.25
#: nodes (the right-hand side is autonomous here; kept for the order checks of the tests)
ALPHA = np.array([0.0, 0.386, 0.21, 0.63, 1.0, 1.0])
#: sum_j gamma_ij per stage (for the order checks; autonomous problems do not need them)
GAMMA_SUM = np.array([0.25, -0.1043, 0.1035, -0.0362, 0.0, 0.0])

A = np.zeros((6, 6))
A[1, 0] = 1.544
A[2, :2] = [0.9466785280815826, 0.2557011698983284]
A[3, :3] = [3.314825187068521, 2.896124015972201, 0.9986419139977817]
A[4, :4] = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.687886036105895]
A[5, :5] = [*A[4, :4], 1.0]

C = np.zeros((6, 6))
C[1, 0] = -5.6688
C[2, :2] = [-2.430093356833875, -0.2063599157091915]
C[3, :3] = [-0.1073529058151375, -9.594562251023355, -20.47028614809616]
C[4, :4] = [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.7089089320616]
C[5, :5] = [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.3193054312314, -6.058818238834054]

#: weights of the solution: stiffly accurate, y_new is the last stage's point plus k_6
M = np.array([*A[4, :4], 1.0, 1.0])

#: order of the method and of its embedded estimate
ORDER = 4
EXPONENT = -1.0 / ORDER  # -1/(q + 1) with q = 3, the order of the embedded estimate
#: largest growth of the step after an accepted step (rodas.f: 6)
MAX_FACTOR = 6.0
#: forward-difference step of the Jacobian, relative (sqrt of the unit round-off), applied to
#: max(|y_j|, atol_j/rtol)
FD_STEP = 1.4901161193847656e-08
#: the kernel reads the clock once per this many Rodas4 steps
CLOCK_EVERY = 64

#: explicit steps per stiffness window (mode 1 of the kernel)
STIFF_WINDOW = 50
#: a member is switched when, at its window's pace, it would need more explicit steps than this
#: to the end of the segment (and most of the window's steps were stability-limited)
SWITCH_STEPS = 1000
