"""Compiled backend: per-member Dormand-Prince 5(4) in numba (extra ``exosim[fast]``).

The numpy solver (:mod:`exosim.simulate.dopri5`) advances a whole batch with one
shared step size, so every member takes as many steps as the stiffest member of
its batch needs, and every stage costs one pass of ~100 numpy operations over
the batch.  Sensitivity analyses sample rates over two decades, which makes both
costs large.  Here the batch is a loop over members, each with its own step-size
control, and the right-hand side is scalar code compiled by numba from the same
expression trees (:meth:`exosim.model.assemble.Model.scalar_source`): no temporaries,
no shared steps.

Same method, tableau and step-size rule (:mod:`exosim.simulate.solver`), error
norm, landing on output times and failure policy (a member that cannot be
integrated is marked failed with the time and reason; the others go on) as the
numpy solver; both return a :class:`~exosim.simulate.solver.SegmentResult`, so the
scenario runner uses either unchanged.

The generated module (right-hand side + kernel) is written once per model
structure to a cache directory (``EXOSIM_CACHE_DIR``, default
``~/.cache/exosim``) and compiled with ``cache=True``, so later processes, and
worker processes of an analysis, load the machine code instead of compiling
again (about 5 s the first time).

Each member has its own step budget (``max_steps``, also judged by pace:
:data:`~exosim.simulate.solver.PACE_WINDOWS`), as in the numpy solver.  The wall-clock limit
(``max_seconds``) reaches the kernel as a deadline on ``time.perf_counter``'s clock;
the kernel reads the clock (through ``numba.objmode``, about 1 us) once every
:data:`CLOCK_EVERY` steps or members, so the check costs nothing measurable, and once
the deadline has passed it fails the member in progress and every member after it.

References
----------
.. [1] Lam SK, Pitrou A, Seibert S (2015) Numba: a LLVM-based Python JIT
   compiler. Proc. LLVM-HPC '15. doi:10.1145/2833157.2833162
.. [2] Dormand JR, Prince PJ (1980) J Comput Appl Math 6:19-26.
   doi:10.1016/0771-050X(80)90013-3
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exosim.model import expr as _expr
from exosim.simulate import solver as _solver
from exosim.simulate.solver import FAILED, MESSAGES, SegmentResult, SolverOptions, numba_available
from exosim.util.atomic import atomic_write

__all__ = ["NumbaDopri5", "kernel_for", "integrate_compiled"]

#: failure codes of the kernel -> keys of the shared failure messages
_CODES = {1: "max_steps", 2: "min_step", 3: "initial", 4: "derivative", 5: "max_seconds", 6: "pace"}

#: the kernel reads the clock once per this many steps (and members started), and on entry
CLOCK_EVERY = 4096

#: with a progress callback the members are integrated in this many chunks (they are
#: independent, so the result is the same), the share done reported after each
PROGRESS_CHUNKS = 100

# fast-math flags without 'nnan'/'ninf': the kernel must see NaN and inf to reject steps
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_KERNEL = """
@numba.njit(cache=True)
def clock():
    with numba.objmode(now="float64"):
        now = time.perf_counter()
    return now


@numba.njit(cache=True, fastmath=set(FASTMATH))
def integrate(y0, p, t0, t1, t_eval, rtol, atol, h0, max_steps, min_step, deadline, t_pace):
    N, n = y0.shape
    ne = t_eval.size
    y_out = np.full((N, n), np.nan)
    ys = np.full((N, ne, n), np.nan)
    status = np.zeros(N, np.int64)
    t_failed = np.full(N, np.nan)
    h_last = np.full(N, np.nan)
    steps_of = np.zeros(N, np.int64)
    counts = np.zeros(2, np.int64)
    k = np.empty((7, n))
    y = np.empty(n)
    ytmp = np.empty(n)
    ynew = np.empty(n)
    span = t1 - t0
    window = max(1, max_steps // PACE_WINDOWS)
    work = CLOCK_EVERY - 1  # steps and members since the clock was last read (read on entry)
    late = False  # the deadline has passed: fail what is left
    for m in range(N):
        work += 1
        if work >= CLOCK_EVERY:
            work = 0
            late = late or clock() > deadline
        if late:
            status[m] = 5
            t_failed[m] = t0
            continue
        pm = p[m]
        ok = True
        for i in range(n):
            y[i] = y0[m, i]
            if not math.isfinite(y[i]):
                ok = False
        if not ok:
            status[m] = 3
            t_failed[m] = t0
            continue
        ke = 0
        while ke < ne and t_eval[ke] <= t0:
            ys[m, ke, :] = y
            ke += 1
        if span <= 0.0:
            y_out[m, :] = y
            h_last[m] = h0[m]
            continue
        t = t0
        h = h0[m] if (h0[m] > 0.0 and math.isfinite(h0[m])) else FIRST_STEP_FRACTION * span
        h = min(h, span)
        rhs1(y, pm, k[0])
        counts[1] += 1
        for i in range(n):
            if not math.isfinite(k[0, i]):
                ok = False
        if not ok:
            status[m] = 4
            t_failed[m] = t
            continue
        steps = 0
        rejected = 0
        w_start = 0  # the current pace window: first step and its time; windows over budget
        t_w = t
        strikes = 0
        while t < t1:
            done = steps + rejected
            if done >= max_steps:
                status[m] = 1
                break
            if done - w_start >= window:
                needed = (t_pace - t) * (done - w_start) / (t - t_w) if t > t_w else np.inf
                strikes = strikes + 1 if done + needed > max_steps else 0
                w_start = done
                t_w = t
                if strikes >= PACE_STRIKES:
                    status[m] = 6
                    break
            work += 1
            if work >= CLOCK_EVERY:
                work = 0
                if clock() > deadline:
                    late = True
                    status[m] = 5
                    break
            t_stop = t_eval[ke] if (ke < ne and t_eval[ke] < t1) else t1
            landing = h >= t_stop - t
            ht = t_stop - t if landing else h
            # inner loops run over components (contiguous rows of k): vectorisable
            for s in range(1, 7):
                for i in range(n):
                    ytmp[i] = y[i]
                for j in range(s):
                    c = ht * A[s, j]
                    if c != 0.0:
                        for i in range(n):
                            ytmp[i] += c * k[j, i]
                rhs1(ytmp, pm, k[s])
            counts[1] += 6
            for i in range(n):
                ynew[i] = y[i]
                ytmp[i] = 0.0
            for j in range(7):
                cb = ht * B[j]
                ce = ht * E[j]
                for i in range(n):
                    ynew[i] += cb * k[j, i]
                    ytmp[i] += ce * k[j, i]
            err = 0.0
            for i in range(n):
                tol = atol[i] + rtol * max(abs(y[i]), abs(ynew[i]))
                err += (ytmp[i] / tol) ** 2
            err = math.sqrt(err / n)
            if not math.isfinite(err):
                err = np.inf
            if err <= 1.0:
                t = t_stop if landing else t + ht
                for i in range(n):
                    y[i] = ynew[i]
                    k[0, i] = k[6, i]
                steps += 1
                if landing and t_stop < t1:
                    ys[m, ke, :] = y
                    ke += 1
                fac = MAX_FACTOR if err == 0.0 else min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * err ** EXPONENT))
                if (not landing) or ht >= h:
                    h = ht * fac
            else:
                rejected += 1
                if ht <= min_step:
                    status[m] = 2
                    break
                h = ht * (max(REJECT_MIN_FACTOR, SAFETY * err ** EXPONENT) if math.isfinite(err) else REJECT_MIN_FACTOR)
                h = max(h, min_step)
        counts[0] += rejected
        steps_of[m] = steps
        h_last[m] = h
        if status[m] != 0:
            t_failed[m] = t
            continue
        while ke < ne and t_eval[ke] <= t1:
            ys[m, ke, :] = y
            ke += 1
        y_out[m, :] = y
    return y_out, ys, status, t_failed, h_last, steps_of, counts
"""

_loaded: dict[str, object] = {}
_rhs: dict = {}


def _cache_dir() -> Path:
    base = os.environ.get("EXOSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "exosim"
    )
    path = Path(base) / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
    except OSError:
        path = Path(tempfile.gettempdir()) / "exosim-kernels"
        path.mkdir(parents=True, exist_ok=True)
    return path


def module_source(model) -> str:
    """Source of the compiled module of ``model``: Hill function, right-hand side, kernel."""
    return "\n".join(
        [
            "# generated by exosim.simulate.dopri5_numba from the model declarations; do not edit",
            "import math",
            "import time",
            "import numpy as np",
            "import numba",
            "",
            f"FASTMATH = {sorted(_FASTMATH)!r}",
            f"A = np.array({_solver.A.tolist()!r})",
            f"B = np.array({_solver.B.tolist()!r})",
            f"E = np.array({_solver.E.tolist()!r})",
            *(
                f"{k} = {getattr(_solver, k)!r}"
                for k in (
                    "SAFETY",
                    "EXPONENT",
                    "MAX_FACTOR",
                    "MIN_FACTOR",
                    "REJECT_MIN_FACTOR",
                    "FIRST_STEP_FRACTION",
                    "PACE_WINDOWS",
                    "PACE_STRIKES",
                )
            ),
            f"CLOCK_EVERY = {CLOCK_EVERY!r}",
            "",
            "@numba.njit(cache=True, inline='always')",
            _expr.hill_scalar_source("_hill"),
            "@numba.njit(cache=True, fastmath=set(FASTMATH))",
            model.scalar_source("rhs1"),
            _KERNEL,
        ]
    )


def kernel_for(model):
    """The compiled ``integrate`` kernel of a model (cached on disk and per process)."""
    source = module_source(model)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest in _loaded:
        return _loaded[digest]
    if not numba_available():
        raise RuntimeError('the numba backend needs numba: pip install "exosim[fast]"')
    directory = _cache_dir()
    path = directory / f"exosim_kernel_{digest}.py"
    if not path.exists() or path.read_text() != source:
        atomic_write(path, source)  # concurrent worker processes never import a half-written file
    name = f"exosim_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _loaded[digest] = module.integrate
    _rhs[digest] = module.rhs1
    return module.integrate


def rhs_for(model):
    """The compiled one-member right-hand side ``rhs1(y, p, dy)`` of a model (the kernel's)."""
    kernel_for(model)
    return _rhs[hashlib.sha256(module_source(model).encode()).hexdigest()[:20]]


class NumbaDopri5:
    """The compiled per-member solver (:class:`~exosim.simulate.solver.Solver`)."""

    name = "numba"
    description = "Dormand-Prince 5(4), compiled: per-member steps and error control"
    reports_progress = True

    def integrate(self, model, t0: float, t1: float, y0: np.ndarray, p: np.ndarray, **options) -> SegmentResult:
        """Integrate one segment of ``model``'s batch (keyword options of :func:`integrate_compiled`)."""
        return integrate_compiled(model, t0, t1, y0, p, **options)


def integrate_compiled(
    model,
    t0: float,
    t1: float,
    y0: np.ndarray,
    p: np.ndarray,
    *,
    atol_scale: np.ndarray | None = None,
    options: SolverOptions = SolverOptions(),
    t_eval: np.ndarray | None = None,
    h0: np.ndarray | float | None = None,
    progress: Callable[[float], None] | None = None,
) -> SegmentResult:
    """Integrate a batch of ``model`` from ``t0`` to ``t1``; see :func:`exosim.simulate.dopri5.integrate`.

    ``h0`` may be an array: each member resumes with its own last step size.
    ``progress`` is called with the share of the members done (:data:`PROGRESS_CHUNKS`).
    ``stats["steps"]`` is the largest number of steps any member took (comparable with
    the numpy solver's shared steps), ``stats["member_steps"]`` their total and
    ``stats["rhs_evaluations"]`` counts per member; ``h_last`` is per member.
    """
    kernel = kernel_for(model)
    y0 = np.ascontiguousarray(y0, dtype=float)
    p = np.ascontiguousarray(p, dtype=float)
    n_mem, n = y0.shape
    scale = np.ones(n) if atol_scale is None else np.asarray(atol_scale, dtype=float)
    t_eval = np.ascontiguousarray([] if t_eval is None else t_eval, dtype=float)
    h = np.full(n_mem, np.nan) if h0 is None else np.broadcast_to(np.asarray(h0, float), (n_mem,)).copy()
    deadline = time.perf_counter() + float(options.max_seconds)
    atol = np.ascontiguousarray(options.atol * scale)

    def run(a: int, b: int) -> tuple:
        args = (float(t0), float(t1), t_eval, float(options.rtol), atol, h[a:b])
        t_pace = max(float(t1), float(options.horizon)) if np.isfinite(options.horizon) else float(t1)
        return kernel(y0[a:b], p[a:b], *args, int(options.max_steps), float(options.min_step), deadline, t_pace)

    if progress is None or n_mem == 0:
        y, ys, code, t_failed, h_last, steps, counts = run(0, n_mem)
    else:
        size = -(-n_mem // PROGRESS_CHUNKS)
        parts = []
        for a in range(0, n_mem, size):
            parts.append(run(a, a + size))
            progress(min(a + size, n_mem) / n_mem)
        y, ys, code, t_failed, h_last, steps = (np.concatenate([part[i] for part in parts]) for i in range(6))
        counts = np.sum([part[6] for part in parts], axis=0)
    status = np.where(code != 0, FAILED, 0)
    limits = {
        "max_steps": options.max_steps,
        "min_step": options.min_step,
        "max_seconds": options.max_seconds,
        "window": max(1, options.max_steps // _solver.PACE_WINDOWS),
    }
    message = [MESSAGES[_CODES[c]].format(**limits) if c else "" for c in code.tolist()]
    stats = {
        "steps": int(steps.max(initial=0)),
        "rejected": int(counts[0]),
        "rhs_evaluations": int(counts[1]),
        "failures": int(np.sum(status == FAILED)),
        "member_steps": int(steps.sum()),
    }
    return SegmentResult(y, status, t_failed, message, ys, stats, h_last=h_last, member_steps=steps)
