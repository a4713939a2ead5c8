"""The solver protocol: what the scenario runner asks of an integrator, and the pieces the
Dormand-Prince 5(4) implementations share.

The runner (:mod:`exosim.scenario.runner`) is the one driver: it walks the timeline,
applies events and, between event times, asks a :class:`Solver` to integrate the whole
batch over one segment (scipy's ``_ivp`` split: the driver owns the loop, a method owns
the step).  A solver returns a :class:`SegmentResult` whose ``status`` marks failed
members (failures are data, never an abort) and whose ``stats`` counts its work.

Solvers shipped: ``numpy`` (:class:`exosim.simulate.dopri5.NumpyDopri5`, batched, shared
steps) and ``numba`` (:class:`exosim.simulate.dopri5_numba.NumbaDopri5`, compiled,
per-member steps).  Both take the tableau and the step-size rule below, so they are the
same method.  Members too stiff for explicit steps are integrated with an implicit method
(``SolverOptions.stiff_fallback``): the compiled Rodas4 of :mod:`exosim.simulate.rosenbrock`
(the numba solver switches such a member within its segment) or scipy's BDF
(:mod:`exosim.simulate.implicit`).  Any object with ``name`` and ``integrate`` plugs in the same way
(the benchmark's scipy ``solve_ivp`` solver does).

References
----------
.. [1] Dormand JR, Prince PJ (1980) A family of embedded Runge-Kutta formulae.
   J Comput Appl Math 6:19-26. doi:10.1016/0771-050X(80)90013-3
.. [2] Hairer E, Norsett SP, Wanner G (1993) Solving Ordinary Differential
   Equations I, 2nd ed., section II.4 (step size control). Springer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Solver",
    "SolverOptions",
    "SegmentResult",
    "FAILED",
    "get_solver",
    "resolve_backend",
    "BACKENDS",
    "numba_available",
]

#: status of a member whose integration failed
FAILED = 1

# Dormand-Prince 5(4) tableau: nodes C, stage matrix A, 5th-order weights B, error weights E
C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
A = np.zeros((7, 7))
for _i, _row in enumerate(
    [
        [],
        [1 / 5],
        [3 / 40, 9 / 40],
        [44 / 45, -56 / 15, 32 / 9],
        [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
        [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
        [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
    ]
):
    A[_i, : len(_row)] = _row
B = np.array([35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0])
E = np.array([71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])


@dataclass(frozen=True)
class Method:
    """An explicit embedded Runge-Kutta pair as both solvers use it.

    Attributes
    ----------
    name : ``dopri5`` or ``dop853`` (``solver.method`` of a scenario)
    title : its name in the integrators' descriptions (provenance)
    C, A, B : nodes, stage matrix and solution weights over ``stages`` stages
    E : error weights (``dopri5``: of the 4th-order estimate, with the 7th, FSAL stage)
    E3 : ``dop853`` only: weights of its 3rd-order estimate; the error norm is then Hairer's
        ``|h| * |e5|^2 / sqrt(n * (|e5|^2 + 0.01 * |e3|^2))`` (e5 with ``E``, each component
        divided by its tolerance), as in his dop853 code
    exponent : step-size exponent, -1/(q+1) with q the order of the error estimate
    stiff_h_lambda : Hairer's bound on h*|lambda| (from the last two derivatives at t + h)
        above which an accepted step counts as stability-limited
    rows : rows of the stage array: ``stages`` stages and f(t + h, y_new) (the next step's first)
    """

    name: str
    title: str
    C: np.ndarray
    A: np.ndarray
    B: np.ndarray
    E: np.ndarray
    E3: np.ndarray | None
    exponent: float
    stiff_h_lambda: float
    stages: int

    @property
    def rows(self) -> int:
        return self.stages + 1


def _dop853_coefficients():
    """scipy's module of dop853 coefficients (numpy arrays only), loaded from its file: importing it
    as ``scipy.integrate._ivp.dop853_coefficients`` imports all of ``scipy.integrate`` first
    (0.2-0.4 s of every process that integrates with dop853)."""
    name = "scipy.integrate._ivp.dop853_coefficients"
    if name in sys.modules:
        return sys.modules[name]
    scipy = importlib.util.find_spec("scipy")
    folders = (scipy.submodule_search_locations or []) if scipy is not None else []
    for folder in folders:
        path = Path(folder) / "integrate" / "_ivp" / "dop853_coefficients.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("_exosim_dop853_coefficients", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return importlib.import_module(name)  # another layout: through the package


def _dop853() -> Method:
    """Dormand & Prince's 8(5,3) pair (Hairer, Norsett & Wanner, Solving ODEs I, 2nd ed., II.10;
    the coefficients of Hairer's dop853 code, as scipy ships them)."""
    d = _dop853_coefficients()
    n = d.N_STAGES  # 12; row 12 of the stage array holds f(t + h, y_new)
    return Method(
        "dop853",
        title="Dormand-Prince 8(5,3)",
        C=np.array(d.C[: n + 1], dtype=float),
        A=np.array(d.A[: n + 1, : n + 1], dtype=float),
        B=np.append(np.array(d.B, dtype=float), 0.0),
        E=np.array(d.E5, dtype=float),
        E3=np.array(d.E3, dtype=float),
        exponent=-1.0 / 8.0,
        stiff_h_lambda=6.1,
        stages=n,
    )


# step-size control (Hairer et al. II.4): h_new = h * clip(SAFETY * err^EXPONENT)
SAFETY = 0.9
EXPONENT = -0.2  # -1/(q+1) with q = 4, the order of the embedded error estimate
MAX_FACTOR = 5.0  # largest growth after an accepted step
MIN_FACTOR = 0.2  # smallest change after an accepted step
REJECT_MIN_FACTOR = 0.1  # smallest shrink after a rejected step (and for a non-finite error)
FIRST_STEP_FRACTION = 1e-3  # first trial step, as a fraction of the segment

# the step budget judged by pace (both solvers): every max_steps // PACE_WINDOWS steps of a
# member (2,000 by default), the steps it still needs at the pace of that window are projected;
# a member projected beyond max_steps in PACE_STRIKES windows running is failed without spending
# the whole budget.  A stiff member crawls at its explicit-stability limit (about 1e-9 h per
# step for a rate of 1e9 /h: far more steps than any budget, and minutes of shared numpy steps
# at 1-2 ms each); a member of the shipped scenarios needs a few hundred steps per segment
PACE_WINDOWS = 100
PACE_STRIKES = 2

#: the methods of ``solver.method``; the 7th row of DOPRI5's A is B (first same as last)
METHODS = {
    "dopri5": Method(
        "dopri5",
        title="Dormand-Prince 5(4)",
        C=C,
        A=A,
        B=B,
        E=E,
        E3=None,
        exponent=EXPONENT,
        stiff_h_lambda=3.25,  # the boundary of DOPRI5's stability region (Hairer's dopri5 code)
        stages=6,
    ),
}


def method(name: str) -> Method:
    """The :class:`Method` of a name (``dopri5``, ``dop853``); ValueError for others."""
    if name == "dop853" and name not in METHODS:
        METHODS[name] = _dop853()
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected dopri5 or dop853") from None


#: failure messages shared by every solver (formatted with the options)
MESSAGES = {
    "max_steps": "more than {max_steps} steps in one segment",
    "pace": "would need more than {max_steps} steps before the end of the run at the pace of its last {window} steps",
    "pace_seconds": "would exceed the wall-clock limit of {max_seconds:g} s in one segment at the pace of its "
    "last {window} steps",
    "max_seconds": "wall-clock limit of {max_seconds:g} s exceeded in one segment",
    "min_step": "step size below {min_step:g} h (error not controlled)",
    "initial": "non-finite initial state",
    "derivative": "non-finite derivative at segment start",
    # the compiled Rosenbrock method (stiff_fallback: rosenbrock); none starts like the explicit
    # failures above, so the runner never hands these members to another fallback
    "ros_max_steps": "Rosenbrock (Rodas4): more than {max_steps} steps in one segment",
    "ros_min_step": "Rosenbrock (Rodas4): step size below {min_step:g} h (error not controlled)",
    "ros_singular": "Rosenbrock (Rodas4): iteration matrix singular in 6 tries",
    "ros_derivative": "Rosenbrock (Rodas4): non-finite derivative",
}


@dataclass(frozen=True, kw_only=True)
class SolverOptions:
    """Integrator settings (keyword-only).

    Attributes
    ----------
    rtol : relative tolerance per member and component
    atol : absolute tolerance, multiplied by each state's declared scale
    max_steps : step budget per member and segment (accepted and rejected steps); a member
        that needs more, or would need more at its pace (:data:`PACE_WINDOWS`), is failed.
        The batched numpy solver shares its steps: it fails the members whose error limited
        the shared step and goes on with the others (:mod:`exosim.simulate.dopri5`)
    min_step : smallest step in h; a member that needs less is failed
    max_seconds : wall-clock seconds one segment may take; members still being integrated
        then are failed (a guard against stiff members that explicit steps cannot cross)
    horizon : end of the run (h); the pace rule projects the steps a member still needs to
        it, so a stiff member is failed within a few windows even in a short segment (the
        runner sets the scoring time; NaN: the end of the segment)
    stiff_fallback : what happens to a member too stiff for explicit steps: ``none`` (it
        fails), ``bdf`` (the runner integrates it again with scipy's BDF,
        :mod:`exosim.simulate.implicit`) or ``rosenbrock`` (the compiled solver switches it to
        Rodas4 within the segment, :mod:`exosim.simulate.rosenbrock`; after the numpy solver,
        the runner integrates it again with the compiled Rodas4, or BDF without numba).  The
        runner sets the scenario's ``solver.stiff_fallback``.
    method : the explicit pair, ``dopri5`` (Dormand-Prince 5(4)) or ``dop853`` (Dormand-Prince
        8(5,3): about twice the work per step, fewer steps at tight tolerances on smooth
        protocols; ``python benchmarks/bench_order.py`` measures it), :data:`METHODS`
    frozen : indices of states held at their values (zero derivative) and left out of the error
        norm, which averages over the other states.  The runner freezes, in the last segment of a
        run that reads only some outputs, the states those cannot depend on
        (:meth:`exosim.model.assemble.Model.relevant_states`).  The explicit solvers hold them
        exactly, the compiled Rodas4 to rounding; scipy's BDF fallback integrates every state
    """

    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 200_000
    min_step: float = 1e-10
    max_seconds: float = 120.0
    horizon: float = float("nan")
    stiff_fallback: str = "none"
    method: str = "dopri5"
    frozen: tuple[int, ...] = ()


@dataclass
class SegmentResult:
    """Result of integrating a batch over one segment.

    Attributes
    ----------
    y : ndarray (N, n), states at the segment end (NaN for failed members)
    status : ndarray (N,), 0 = success, :data:`FAILED` = failed
    t_failed : ndarray (N,), h, time of failure (NaN if none)
    message : list of str, per member, empty on success
    ys : ndarray (N, len(t_eval), n), states at the requested output times
    stats : dict
        ``steps`` (accepted steps; per-member solvers: the largest member's),
        ``rejected``, ``rhs_evaluations`` (per member for per-member solvers),
        ``failures``; per-member solvers add ``member_steps`` (total over members).
    h_last : last step size (h), shared or one per member; the next segment starts with it
    member_steps : ndarray (N,), steps per member (per-member solvers only)
    """

    y: np.ndarray
    status: np.ndarray
    t_failed: np.ndarray
    message: list[str]
    ys: np.ndarray
    stats: dict = field(default_factory=dict)
    h_last: float | np.ndarray = field(default=np.nan)
    member_steps: np.ndarray | None = None


@runtime_checkable
class Solver(Protocol):
    """What the scenario runner needs of an integrator.

    ``integrate(model, t0, t1, y0, p, ...)`` advances every member of a batch of
    ``model`` (an :class:`exosim.model.assemble.Model`) from ``t0`` to ``t1`` with
    parameters ``p`` (N, k) held constant, records the states at ``t_eval`` and
    returns a :class:`SegmentResult`; ``h0`` is the previous segment's ``h_last``.
    An optional ``description`` attribute names the method in provenance records.
    A solver with ``reports_progress = True`` also accepts ``progress``, a callable it
    calls now and then with the share (0 to 1) of the segment done (the runner's progress
    line on stderr); the limits of :class:`SolverOptions` apply to every solver.
    """

    name: str

    def integrate(
        self,
        model,
        t0: float,
        t1: float,
        y0: np.ndarray,
        p: np.ndarray,
        *,
        atol_scale: np.ndarray | None = None,
        options: SolverOptions = SolverOptions(),
        t_eval: np.ndarray | None = None,
        h0=None,
    ) -> SegmentResult:
        """Integrate one segment of a batch."""
        ...


#: solvers known by name (``auto`` picks numba when installed)
BACKENDS = ("numpy", "numba")


#: why numba cannot be used: None (usable), "" (not installed) or the error importing it gave
_NUMBA_PROBLEM: list[str | None] = []


def numba_problem() -> str | None:
    """None if numba imports; "" if it is not installed; else the error importing it raised (an
    installed numba that refuses this numpy, a broken installation).  Checked once per process."""
    if not _NUMBA_PROBLEM:
        if importlib.util.find_spec("numba") is None:
            _NUMBA_PROBLEM.append("")
        else:
            try:
                import numba  # noqa: F401
            except Exception as exc:  # noqa: BLE001 - any import failure makes the backend unusable
                _NUMBA_PROBLEM.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            else:
                _NUMBA_PROBLEM.append(None)
    return _NUMBA_PROBLEM[0]


def numba_available() -> bool:
    """True if numba can be imported (``pip install "exosim[fast]"``)."""
    return numba_problem() is None


def resolve_backend(name: str) -> str:
    """``auto`` -> ``numba`` when it imports, else ``numpy`` (with a warning if numba is installed
    but does not import); check explicit names."""
    if name == "auto":
        if numba_available():
            return "numba"
        problem = numba_problem()
        if problem:
            import warnings

            warnings.warn(
                f"numba is installed but does not import ({problem}): the numpy backend is used", stacklevel=2
            )
        return "numpy"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {('auto',) + BACKENDS}")
    if name == "numba" and not numba_available():
        problem = numba_problem()
        raise ValueError(
            'backend "numba" needs numba: pip install "exosim[fast]"'
            + (f" (it is installed but does not import: {problem})" if problem else "")
        )
    return name


def get_solver(solver: str | Solver) -> Solver:
    """The solver for a name (``numpy``, ``numba``, ``auto``) or the solver object itself."""
    if not isinstance(solver, str):
        if not isinstance(solver, Solver):
            raise TypeError(f"expected a solver name or an object with 'name' and 'integrate', got {solver!r}")
        return solver
    name = resolve_backend(solver)
    if name == "numba":
        from exosim.simulate.dopri5_numba import NumbaDopri5

        return NumbaDopri5()
    from exosim.simulate.dopri5 import NumpyDopri5

    return NumpyDopri5()
