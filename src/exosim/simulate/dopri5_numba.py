"""Compiled backend: per-member Dormand-Prince 5(4) in numba (extra ``exosim[fast]``), with a
compiled Rosenbrock method (Rodas4) for the members that turn out stiff.

The numpy solver (:mod:`exosim.simulate.dopri5`) advances a whole batch with one
shared step size, so every member takes as many steps as the stiffest member of
its batch needs, and every stage costs one pass of ~100 numpy operations over
the batch.  Sensitivity analyses sample rates over two decades, which makes both
costs large.  Here the batch is a loop over members, each with its own step-size
control, and the right-hand side is scalar code compiled by numba from the same
expression trees (:meth:`exosim.model.assemble.Model.prepared_scalar_source`): no temporaries,
no shared steps.  What depends on the parameters only (static derived constants and every
parameter-only subexpression of the rates) is computed once per member and segment, not at
every stage; Hill functions and powers with the exponents parameters usually take (1, 2) skip
the library's ``pow``; the stages are written out with the tableau's numbers as literals.  Per
explicit step of the 30-fraction course that is 0.33 us instead of 0.99 us.

Same method, tableau and step-size rule (:mod:`exosim.simulate.solver`), error
norm, landing on output times and failure policy (a member that cannot be
integrated is marked failed with the time and reason; the others go on) as the
numpy solver; both return a :class:`~exosim.simulate.solver.SegmentResult`, so the
scenario runner uses either unchanged.

Stiff members (``SolverOptions.stiff_fallback == "rosenbrock"``, the scenarios' default): a
member whose explicit steps are stability-limited and too many for the rest of its segment, or
that the explicit method would fail for step size or step budget, continues from where it is
with Rodas4 in the same kernel call (:mod:`exosim.simulate.rosenbrock`: when and how); with
``none`` or ``bdf`` the kernel is explicit only, as before.

The generated module (right-hand side + kernels) is written once per model
structure to a cache directory (``EXOSIM_CACHE_DIR``, default
``~/.cache/exosim``) and compiled with ``cache=True``, so later processes, and
worker processes of an analysis, load the machine code instead of compiling
again (about 10 s the first time); a process generates the source once per model object.
The cache is pruned to ``EXOSIM_CACHE_MAX_MB`` (:data:`CACHE_MAX_MB`), least recently used
kernels first, whenever a new kernel is written (:func:`prune_cache`).

Each member has its own step budget (``max_steps``, also judged by pace:
:data:`~exosim.simulate.solver.PACE_WINDOWS`), as in the numpy solver.  The wall-clock limit
(``max_seconds``) reaches the kernel as a deadline on the clock of :mod:`exosim.simulate.clock`;
the kernel reads the clock (about 25 ns) once every
:data:`CLOCK_EVERY` steps or members (every ``CLOCK_EVERY`` Rodas4 steps of
:mod:`~exosim.simulate.rosenbrock`), so the check costs nothing measurable, and once
the deadline has passed it fails the member in progress and every member after it.

References
----------
.. [1] Lam SK, Pitrou A, Seibert S (2015) Numba: a LLVM-based Python JIT
   compiler. Proc. LLVM-HPC '15. doi:10.1145/2833157.2833162
.. [2] Dormand JR, Prince PJ (1980) J Comput Appl Math 6:19-26.
   doi:10.1016/0771-050X(80)90013-3
.. [3] Hairer E, Wanner G (1996) Solving Ordinary Differential Equations II, 2nd ed.,
   sections IV.2 (stiffness detection) and IV.7 (Rodas4). Springer.
.. [4] Curtis AR, Powell MJD, Reid JK (1974) On the estimation of sparse Jacobian matrices.
   IMA J Appl Math 13:117-119 (columns differenced together).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

from exosim.model import expr as _expr
from exosim.simulate import clock as _clock
from exosim.simulate import rosenbrock as _rosenbrock
from exosim.simulate import solver as _solver
from exosim.simulate.solver import FAILED, MESSAGES, SegmentResult, SolverOptions, numba_available
from exosim.util.atomic import atomic_write

__all__ = ["NumbaDopri5", "kernel_for", "integrate_compiled"]

#: failure codes of the kernel -> keys of the shared failure messages
_CODES = {
    1: "max_steps",
    2: "min_step",
    3: "initial",
    4: "derivative",
    5: "max_seconds",
    6: "pace",
    7: "ros_max_steps",
    8: "ros_min_step",
    9: "ros_singular",
    10: "ros_derivative",
}

#: ``SolverOptions.stiff_fallback`` -> kernel mode (0: explicit only; 1: a stiff member continues
#: with Rodas4 in the same call)
_MODES = {"none": 0, "bdf": 0, "rosenbrock": 1}

#: the kernel reads the clock once per this many steps (and members started), and on entry
CLOCK_EVERY = 4096

#: with a progress callback the members are integrated in this many chunks (they are
#: independent, so the result is the same), the share done reported after each
PROGRESS_CHUNKS = 100

# fast-math flags without 'nnan'/'ninf': the kernel must see NaN and inf to reject steps
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_KERNEL = """
#CLOCK#


@numba.njit(cache=True, inline="always")
def _pow(x, w):
    # x ** w without the library call for the exponents parameters usually take
    if w == 1.0:
        return x
    if w == 2.0:
        return x * x
    return x ** w


@numba.njit(cache=True, inline="always")
#HILL#


@numba.njit(cache=True)
def rhs1(y, p, dy):
    # the one-member right-hand side with the parameters as given (the BDF fallback's)
    P = np.empty(NP)
    prep1(p, P)
    rhsp(y, P, dy)


@numba.njit(cache=True, fastmath=set(FASTMATH))
def lu_factor(a, piv, lptr, lcol, lval, uptr, ucol, uval, udinv):
    # in place, partial pivoting with whole-row swaps (LAPACK getrf convention); zero
    # multipliers are skipped, so a sparse matrix costs little more than its fill-in. The
    # factors are then packed by rows (L below, U above the diagonal) for sparse solves.
    n = a.shape[0]
    for k in range(n):
        p = k
        big = abs(a[k, k])
        for i in range(k + 1, n):
            v = abs(a[i, k])
            if v > big:
                big = v
                p = i
        piv[k] = p
        if not (big > 0.0) or not math.isfinite(big):
            return False
        if p != k:
            for j in range(n):
                v = a[k, j]
                a[k, j] = a[p, j]
                a[p, j] = v
        inv = 1.0 / a[k, k]
        for i in range(k + 1, n):
            m = a[i, k]
            if m != 0.0:
                m *= inv
                a[i, k] = m
                for j in range(k + 1, n):
                    a[i, j] -= m * a[k, j]
    nl = 0
    nu = 0
    for i in range(n):
        lptr[i] = nl
        uptr[i] = nu
        for j in range(i):
            if a[i, j] != 0.0:
                lcol[nl] = j
                lval[nl] = a[i, j]
                nl += 1
        for j in range(i + 1, n):
            if a[i, j] != 0.0:
                ucol[nu] = j
                uval[nu] = a[i, j]
                nu += 1
        udinv[i] = 1.0 / a[i, i]
    lptr[n] = nl
    uptr[n] = nu
    return True


@numba.njit(cache=True, fastmath=set(FASTMATH))
def lu_solve(piv, lptr, lcol, lval, uptr, ucol, uval, udinv, b):
    n = b.size
    for k in range(n):
        p = piv[k]
        if p != k:
            v = b[k]
            b[k] = b[p]
            b[p] = v
    for i in range(n):
        acc = b[i]
        for q in range(lptr[i], lptr[i + 1]):
            acc -= lval[q] * b[lcol[q]]
        b[i] = acc
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for q in range(uptr[i], uptr[i + 1]):
            acc -= uval[q] * b[ucol[q]]
        b[i] = acc * udinv[i]


@numba.njit(cache=True, fastmath=set(FASTMATH))
def rosenbrock(y, P, t, t1, t_eval, ke, ys_m, rtol, atol, h, max_steps, min_step, deadline, counts):
    # Rodas4 (Hairer & Wanner 1996, section IV.7) from (t, y) to t1: one Jacobian (forward
    # differences, columns without a common row together) and one LU of I/(h*gamma) - J per
    # step, six stages, error estimate = last stage (stiffly accurate). Returns status, t, h,
    # steps, ke; y holds the state reached, ys_m the states at the output times passed.
    n = y.size
    ne = t_eval.size
    J = np.zeros((n, n))
    G = np.empty((n, n))
    piv = np.empty(n, np.int64)
    lptr = np.empty(n + 1, np.int64)
    uptr = np.empty(n + 1, np.int64)
    lcol = np.empty(n * n, np.int64)
    ucol = np.empty(n * n, np.int64)
    lval = np.empty(n * n)
    uval = np.empty(n * n)
    udinv = np.empty(n)
    K = np.empty((6, n))
    f0 = np.empty(n)
    f = np.empty(n)
    ytmp = np.empty(n)
    ynew = np.empty(n)
    dcol = np.empty(n)
    typical = np.empty(n)
    for i in range(n):
        typical[i] = max(atol[i] / rtol, 1e-300)
    n_groups = JAC_GROUP_PTR.size - 1
    steps = 0
    rejected_run = 0
    status = 0
    while t < t1:
        if steps >= max_steps:
            status = 7
            break
        if steps % ROS_CLOCK_EVERY == ROS_CLOCK_EVERY - 1 and clock() > deadline:
            status = 5
            break
        rhsp(y, P, f0)
        finite = True
        for i in range(n):
            if not math.isfinite(f0[i]):
                finite = False
        if not finite:
            status = 10
            break
        # Jacobian by forward differences, one right-hand side per group of columns
        for g in range(n_groups):
            for i in range(n):
                ytmp[i] = y[i]
            for q in range(JAC_GROUP_PTR[g], JAC_GROUP_PTR[g + 1]):
                j = JAC_GROUP_COLS[q]
                ytmp[j] = y[j] + SQRT_EPS * max(abs(y[j]), typical[j])
                dcol[j] = ytmp[j] - y[j]
            rhsp(ytmp, P, f)
            for q in range(JAC_GROUP_PTR[g], JAC_GROUP_PTR[g + 1]):
                j = JAC_GROUP_COLS[q]
                for r in range(JAC_COL_PTR[j], JAC_COL_PTR[j + 1]):
                    i = JAC_ROWS[r]
                    J[i, j] = (f[i] - f0[i]) / dcol[j]
        counts[1] += 1 + n_groups
        while True:  # until the step is accepted (the Jacobian is kept for retries)
            t_stop = t_eval[ke] if (ke < ne and t_eval[ke] < t1) else t1
            landing = h >= t_stop - t
            ht = t_stop - t if landing else h
            diag = 1.0 / (ht * ROS_GAMMA)
            for i in range(n):
                for j in range(n):
                    G[i, j] = -J[i, j]
                G[i, i] += diag
            if not lu_factor(G, piv, lptr, lcol, lval, uptr, ucol, uval, udinv):
                rejected_run += 1
                if rejected_run > 5 or ht * 0.5 <= min_step:
                    status = 9
                    break
                h = ht * 0.5
                continue
            for s in range(6):
                if s == 0:
                    for i in range(n):
                        K[0, i] = f0[i]
                else:
                    for i in range(n):
                        acc = y[i]
                        for j in range(s):
                            acc += ROS_A[s, j] * K[j, i]
                        ytmp[i] = acc
                    rhsp(ytmp, P, f)
                    for i in range(n):
                        acc = f[i]
                        for j in range(s):
                            acc += (ROS_C[s, j] / ht) * K[j, i]
                        K[s, i] = acc
                lu_solve(piv, lptr, lcol, lval, uptr, ucol, uval, udinv, K[s])
            counts[1] += 5
            err = 0.0
            for i in range(n):
                acc = y[i]
                for j in range(6):
                    acc += ROS_M[j] * K[j, i]
                ynew[i] = acc
                tol = atol[i] + rtol * max(abs(y[i]), abs(acc))
                err += (K[5, i] / tol) ** 2
            err = math.sqrt(err / NACT)
            if not math.isfinite(err):
                err = np.inf
            steps += 1
            if err <= 1.0:
                fac = ROS_MAX_FACTOR
                if err > 0.0:
                    fac = min(ROS_MAX_FACTOR, max(MIN_FACTOR, SAFETY * err ** ROS_EXPONENT))
                if rejected_run > 0:
                    fac = min(fac, 1.0)
                rejected_run = 0
                t = t_stop if landing else t + ht
                for i in range(n):
                    y[i] = ynew[i]
                if landing and t_stop < t1:
                    ys_m[ke, :] = y
                    ke += 1
                if (not landing) or ht >= h:
                    h = ht * fac
                break
            counts[0] += 1
            if ht <= min_step:
                status = 8
                break
            rejected_run += 1
            if not math.isfinite(err) or rejected_run > 1:
                fac = REJECT_MIN_FACTOR
            else:
                fac = max(MIN_FACTOR, SAFETY * err ** ROS_EXPONENT)
            h = max(ht * fac, min_step)
            if steps >= max_steps:
                status = 7
                break
        if status != 0:
            break
    return status, t, h, steps, ke


@numba.njit(cache=True)
def integrate(y0, p, t0, t1, t_eval, rtol, atol, h0, max_steps, min_step, deadline, t_pace, mode):
    # mode 0: Dormand-Prince only; 1: a member found stiff continues with Rodas4; 2: Rodas4 only
    N, n = y0.shape
    ne = t_eval.size
    y_out = np.full((N, n), np.nan)
    ys = np.full((N, ne, n), np.nan)
    status = np.zeros(N, np.int64)
    t_failed = np.full(N, np.nan)
    h_last = np.full(N, np.nan)
    steps_of = np.zeros(N, np.int64)
    counts_of = np.zeros((N, 4), np.int64)  # rejected, rhs evaluations, members and steps of Rodas4
    late = np.zeros(1, np.bool_)  # the deadline has passed: fail what is left
    if N > 0 and clock() > deadline:
        late[0] = True
    for m in range(N):
        member(m, y0, p, t0, t1, t_eval, rtol, atol, h0, max_steps, min_step, deadline, t_pace, mode,
               y_out, ys, status, t_failed, h_last, steps_of, counts_of[m], late)
    counts = np.zeros(4, np.int64)
    for m in range(N):
        for c in range(4):
            counts[c] += counts_of[m, c]
    return y_out, ys, status, t_failed, h_last, steps_of, counts


@numba.njit(cache=True, fastmath=set(FASTMATH))
def member(m, y0, p, t0, t1, t_eval, rtol, atol, h0, max_steps, min_step, deadline, t_pace, mode,
           y_out, ys, status, t_failed, h_last, steps_of, counts, late):
    n = y0.shape[1]
    ne = t_eval.size
    k = np.empty((KROWS, n))
    y = np.empty(n)
    ytmp = np.empty(n)
    ynew = np.empty(n)
    ysti = np.empty(n)
    P = np.empty(NP)
    span = t1 - t0
    window = max(1, max_steps // PACE_WINDOWS)
    work = m % CLOCK_EVERY  # steps and members since the clock was last read (members spread it)
    if work == 0 and not late[0] and clock() > deadline:
        late[0] = True
    if late[0]:
        status[m] = 5
        t_failed[m] = t0
        return
    prep1(p[m], P)
    ok = True
    for i in range(n):
        y[i] = y0[m, i]
        # the stage points of frozen states (which the passes over the active ones never write)
        ytmp[i] = y[i]
        ysti[i] = y[i]
        ynew[i] = y[i]
        if not math.isfinite(y[i]):
            ok = False
    if not ok:
        status[m] = 3
        t_failed[m] = t0
        return
    ke = 0
    while ke < ne and t_eval[ke] <= t0:
        ys[m, ke, :] = y
        ke += 1
    if span <= 0.0:
        y_out[m, :] = y
        h_last[m] = h0[m]
        return
    t = t0
    h = h0[m] if (h0[m] > 0.0 and math.isfinite(h0[m])) else FIRST_STEP_FRACTION * span
    h = min(h, span)
    rhsp(y, P, k[0])
    counts[1] += 1
    for i in range(n):
        if not math.isfinite(k[0, i]):
            ok = False
    if not ok:
        status[m] = 4
        t_failed[m] = t
        return
    steps = 0
    rejected = 0
    w_start = 0  # the current pace window: first step and its time; windows over budget
    t_w = t
    strikes = 0
    s_start = 0  # the current stiffness window (mode 1): first step, its time, stiff steps
    t_s = t
    stiff = 0
    switch = mode == 2
    while t < t1 and not switch:
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
        if mode == 1 and done - s_start >= STIFF_WINDOW:
            # stability-limited in most steps of the window and too slow for the rest of the
            # segment: the implicit method is cheaper from here
            needed = (t1 - t) * (done - s_start) / (t - t_s) if t > t_s else np.inf
            # stiff by Hairer's test in a quarter of the window's steps (a state at a kink of
            # max(), e.g. saturated binding sites, is stiff on one side of it only); a member
            # that is merely slow (accuracy-limited) stays explicit: Rodas4 would take about as
            # many steps at ten times the cost (the ICCM Sobol job ran 3x slower switching them)
            if needed > SWITCH_STEPS and 4 * stiff >= done - s_start:
                switch = True
                break
            s_start = done
            t_s = t
            stiff = 0
        work += 1
        if work >= CLOCK_EVERY:
            work = 0
            if clock() > deadline:
                late[0] = True
                status[m] = 5
                break
        t_stop = t_eval[ke] if (ke < ne and t_eval[ke] < t1) else t1
        landing = h >= t_stop - t
        ht = t_stop - t if landing else h
#RK_STAGES#
        if not math.isfinite(err):
            err = np.inf
        if err <= 1.0:
            if mode == 1:
                # Hairer's stiffness test (dopri5): h*|lambda| from the last two stages, both at
                # t + h, against the boundary of the stability region (about 3.3)
                num = 0.0
                den = 0.0
                #LOOP#
                    num += (k[KLAST, i] - k[KLAST - 1, i]) ** 2
                    den += (ynew[i] - ysti[i]) ** 2
                if den > 0.0 and ht * ht * num > STIFF_H_LAMBDA**2 * den:
                    stiff += 1
            t = t_stop if landing else t + ht
            #LOOP#
                y[i] = ynew[i]
                k[0, i] = k[KLAST, i]
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
    if mode == 1 and (status[m] == 1 or status[m] == 2 or status[m] == 6):
        switch = True  # what the explicit method would fail as stiff, the implicit one takes on
        status[m] = 0
    if switch:
        code, t, h, ros_steps, ke = rosenbrock(
            y, P, t, t1, t_eval, ke, ys[m], rtol, atol, h, max_steps, min_step, deadline, counts
        )
        status[m] = code
        counts[2] += 1
        counts[3] += ros_steps
        steps += ros_steps
        if code == 5:
            late[0] = True
    counts[0] += rejected
    steps_of[m] = steps
    h_last[m] = h
    if status[m] != 0:
        t_failed[m] = t
        return
    while ke < ne and t_eval[ke] <= t1:
        ys[m, ke, :] = y
        ke += 1
    y_out[m, :] = y
"""

_loaded: dict[str, object] = {}
_by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


#: the kernel cache is pruned to this size (``EXOSIM_CACHE_MAX_MB``, MiB), least recently used
#: kernels first, whenever a new kernel is written: every model structure (a hypothesis, a
#: catalogue change, an analysis's last segment) adds about 1.5 MB of machine code
CACHE_MAX_MB = 1000.0
#: kernels used within this many seconds are never pruned (another process may be loading them)
CACHE_KEEP_SECONDS = 3600.0
_PREFIX = "exosim_kernel_"


def cache_limit_bytes() -> float:
    """The kernel cache's size bound in bytes (``EXOSIM_CACHE_MAX_MB``; a value that is not a
    number of at least 0: the default, with a warning)."""
    text = os.environ.get("EXOSIM_CACHE_MAX_MB", "").strip()
    if not text:
        return CACHE_MAX_MB * 2**20
    try:
        mb = float(text)
    except ValueError:
        mb = math.nan
    if not mb >= 0 or math.isinf(mb):
        import warnings

        warnings.warn(
            f"EXOSIM_CACHE_MAX_MB: expected a size in MB (0 or more), got {text!r}; the kernel cache is "
            f"kept to {CACHE_MAX_MB:g} MB",
            stacklevel=2,
        )
        mb = CACHE_MAX_MB
    return mb * 2**20


def prune_cache(directory: Path, limit: float, keep_seconds: float = CACHE_KEEP_SECONDS) -> list[str]:
    """Delete the least recently used kernels of ``directory`` (their source and numba's files)
    until the cache holds at most ``limit`` bytes; kernels used in the last ``keep_seconds`` stay.
    A kernel's last use is its source file's time (touched at every load).  Returns the digests
    deleted.  Files that vanish meanwhile (another process pruning) are skipped."""
    kernels: dict[str, dict] = {}  # digest -> its source's time, its newest file's, bytes, files
    for folder in (directory, directory / "__pycache__"):
        try:
            entries = [e for e in os.scandir(folder) if e.name.startswith(_PREFIX) and e.is_file()]
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            k = kernels.setdefault(entry.name[len(_PREFIX) :].split(".", 1)[0], {"bytes": 0, "files": []})
            if entry.name.endswith(".py") and folder == directory:
                k["source"] = st.st_mtime
            k["newest"] = max(k.get("newest", 0.0), st.st_mtime)
            k["bytes"] += st.st_size
            k["files"].append(entry.path)
    for k in kernels.values():  # numba's files without their source: last used when last written
        k["last"] = k.get("source", k["newest"])
    total = sum(k["bytes"] for k in kernels.values())
    now = time.time()
    deleted = []
    for digest, k in sorted(kernels.items(), key=lambda kv: kv[1]["last"]):
        if total <= limit or now - k["last"] < keep_seconds:
            break
        for f in k["files"]:
            try:
                os.remove(f)
            except OSError:
                pass
        total -= k["bytes"]
        deleted.append(digest)
    return deleted


def _writable(path: Path) -> bool:
    """``path`` is (or can be made) a folder this process can write files in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
        return True
    except OSError:
        return False


def _private(path: Path) -> bool:
    """``path`` is a folder of this user's that no one else can write (a cache in a shared folder
    such as /tmp: another user's files there would be unpickled when a kernel loads)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return False
    import stat

    owner = st.st_uid == os.getuid() if hasattr(os, "getuid") else True
    return stat.S_ISDIR(st.st_mode) and owner and not st.st_mode & 0o022


_SESSION_DIR: list[Path] = []  # the folder of last resort, made once per process


def _cache_dir() -> Path:
    """The kernel cache: ``EXOSIM_CACHE_DIR`` (or ``~/.cache/exosim``) ``/kernels``; if it cannot be
    written, a folder of this user's in the temporary folder (``exosim-kernels-<uid>``, private),
    else a new private folder for this process (kernels compiled again in each process)."""
    base = os.environ.get("EXOSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "exosim"
    )
    path = Path(base) / "kernels"
    if _writable(path):
        return path
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    shared = Path(tempfile.gettempdir()) / f"exosim-kernels-{user}"
    if _private(shared) and _writable(shared):
        return shared
    if not _SESSION_DIR:
        try:
            _SESSION_DIR.append(Path(tempfile.mkdtemp(prefix="exosim-kernels-")))
            import atexit
            import shutil

            atexit.register(shutil.rmtree, _SESSION_DIR[0], True)  # compiled for this process only
        except OSError as exc:
            from exosim.util.atomic import OutputError

            raise OutputError(
                f"no folder to write compiled kernels in: {path} and the temporary folder "
                f"{tempfile.gettempdir()} are not writable ({exc.strerror}); set EXOSIM_CACHE_DIR to a "
                "writable folder, or use --backend numpy"
            ) from None
    return _SESSION_DIR[0]


def _stage_source(rk: _solver.Method, indent: str = " " * 8, loop: str = "for i in range(n):") -> str:
    """One step of the pair ``rk`` written out with its tableau's numbers as literals: each
    stage's point in one pass over the components (``loop``), the last stage's point is the new
    solution (first same as last: the last row of A is B) and the one before it the other point
    at t + h (the stiffness test's), the error norm in the same pass as the error estimate."""
    A, E, E3, last = rk.A, rk.E, rk.E3, rk.stages

    def combination(row) -> str:
        return " + ".join(f"{float(c)!r} * k[{j}, i]" for j, c in enumerate(row) if c != 0.0)

    lines = []
    for s in range(1, last + 1):
        target = {last - 1: "ysti", last: "ynew"}.get(s, "ytmp")
        lines += [
            loop,
            f"    {target}[i] = y[i] + ht * ({combination(A[s, :s])})",
            f"rhsp({target}, P, k[{s}])",
        ]
    lines.append(f"counts[1] += {last}")
    if E3 is None:
        lines += [
            "err = 0.0",
            loop,
            f"    e = ht * ({combination(E)})",
            "    tol = atol[i] + rtol * max(abs(y[i]), abs(ynew[i]))",
            "    err += (e / tol) ** 2",
            "err = math.sqrt(err / NACT)",
        ]
    else:  # Hairer's dop853 norm: the 5th-order estimate, damped where the 3rd-order one is large
        lines += [
            "err = 0.0",
            "err3 = 0.0",
            loop,
            "    tol = atol[i] + rtol * max(abs(y[i]), abs(ynew[i]))",
            f"    e = ({combination(E)}) / tol",
            f"    e3 = ({combination(E3)}) / tol",
            "    err += e * e",
            "    err3 += e3 * e3",
            "den = math.sqrt((err + 0.01 * err3) * NACT)",
            "err = abs(ht) * err / den if den > 0.0 else (0.0 if err == 0.0 else np.inf)",
        ]
    return "\n".join(indent + line for line in lines)


def _jacobian_layout(rows_of: list[list[int]], n: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """The Jacobian's structure by columns and a greedy grouping of its columns (Curtis, Powell
    & Reid 1974): columns without a common row are differenced with one right-hand side call.
    ``rows_of[i]``: the columns row ``i`` can have.  Returns the column pointers and rows, the
    group pointers and the columns of the groups, as lists (the kernel's constants)."""
    cols: list[list[int]] = [[] for _ in range(n)]
    for i, row in enumerate(rows_of):
        for j in row:
            cols[j].append(i)
    col_ptr, col_rows = [0], []
    for rows in cols:
        col_rows += rows
        col_ptr.append(len(col_rows))
    groups: list[tuple[set[int], list[int]]] = []
    # most rows first, then index: deterministic, and the dense columns get groups of their own
    for j in sorted((j for j in range(n) if cols[j]), key=lambda j: (-len(cols[j]), j)):
        for taken, members in groups:
            if taken.isdisjoint(cols[j]):
                taken.update(cols[j])
                members.append(j)
                break
        else:
            groups.append((set(cols[j]), [j]))
    group_ptr, group_cols = [0], []
    for _, members in groups:
        group_cols += sorted(members)
        group_ptr.append(len(group_cols))
    return col_ptr, col_rows, group_ptr, group_cols


def module_source(model, method: str = "dopri5", frozen: tuple[int, ...] = ()) -> str:
    """Source of the compiled module of ``model``: Hill function, right-hand side, kernels, with
    the explicit pair ``method`` (:data:`exosim.simulate.solver.METHODS`).  With ``frozen``
    states (:attr:`~exosim.simulate.solver.SolverOptions.frozen`) the right-hand side gives them
    a zero derivative without computing it, and the error norms average over the other states."""
    rk = _solver.method(method)
    # the steps' passes over the components: over the states not frozen (whose values the frozen
    # right-hand side reads); frozen states keep their values and zero derivatives
    loop = "for i in ACTIVE:" if frozen else "for i in range(n):"
    rows_of = model.jacobian_pattern()
    col_ptr, col_rows, group_ptr, group_cols = _jacobian_layout(rows_of, model.n_states)
    return "\n".join(
        [
            "# generated by exosim.simulate.dopri5_numba from the model declarations; do not edit",
            "import math",
            "import time",
            "import numpy as np",
            "import numba",
            *(["from exosim.simulate.clock import monotonic"] if _clock.NATIVE else []),
            "",
            f"FASTMATH = {sorted(_FASTMATH)!r}",
            f"# explicit pair: {rk.name}; the stage array's rows, the last (f(t + h, y_new), the next",
            "# step's first) and the stiffness test's bound on h*|lambda|",
            f"KROWS = {rk.rows!r}",
            f"KLAST = {rk.stages!r}",
            f"EXPONENT = {rk.exponent!r}",
            f"STIFF_H_LAMBDA = {rk.stiff_h_lambda!r}",
            *(
                f"{name} = {getattr(_solver, name)!r}"
                for name in (
                    "SAFETY",
                    "MAX_FACTOR",
                    "MIN_FACTOR",
                    "REJECT_MIN_FACTOR",
                    "FIRST_STEP_FRACTION",
                    "PACE_WINDOWS",
                    "PACE_STRIKES",
                )
            ),
            f"CLOCK_EVERY = {CLOCK_EVERY!r}",
            f"ROS_A = np.array({_rosenbrock.A.tolist()!r})",
            f"ROS_C = np.array({_rosenbrock.C.tolist()!r})",
            f"ROS_M = np.array({_rosenbrock.M.tolist()!r})",
            *(
                f"{name} = {getattr(_rosenbrock, attr)!r}"
                for name, attr in (
                    ("ROS_GAMMA", "GAMMA"),
                    ("ROS_EXPONENT", "EXPONENT"),
                    ("ROS_MAX_FACTOR", "MAX_FACTOR"),
                    ("ROS_CLOCK_EVERY", "CLOCK_EVERY"),
                    ("SQRT_EPS", "FD_STEP"),
                    ("STIFF_WINDOW", "STIFF_WINDOW"),
                    ("SWITCH_STEPS", "SWITCH_STEPS"),
                )
            ),
            f"NP = {model.prepared_size()!r}  # parameters and the constants prepared from them",
            f"NACT = {model.n_states - len(frozen)!r}  # the states the error norms average over (not the frozen)",
            f"ACTIVE = np.array({[i for i in range(model.n_states) if i not in frozen]!r}, dtype=np.int64)",
            "# the Jacobian's structure (column j: rows JAC_ROWS[JAC_COL_PTR[j]:JAC_COL_PTR[j + 1]]) and the",
            "# groups of columns without a common row, differenced together (JAC_GROUP_*)",
            f"JAC_COL_PTR = np.array({col_ptr!r}, dtype=np.int64)",
            f"JAC_ROWS = np.array({col_rows!r}, dtype=np.int64)",
            f"JAC_GROUP_PTR = np.array({group_ptr!r}, dtype=np.int64)",
            f"JAC_GROUP_COLS = np.array({group_cols!r}, dtype=np.int64)",
            "",
            "@numba.njit(cache=True, fastmath=set(FASTMATH))",
            *model.prepared_scalar_source("prep1", "rhsp", power="_pow", frozen=frozen)
            .replace("\ndef rhsp", "\n@numba.njit(cache=True, fastmath=set(FASTMATH))\ndef rhsp")
            .splitlines(),
            _KERNEL.replace("#RK_STAGES#", _stage_source(rk, loop=loop))
            .replace("#LOOP#", loop)
            .replace("#HILL#", _expr.hill_fast_scalar_source("_hill"))
            .replace("#CLOCK#", _clock.KERNEL_SOURCE),
        ]
    )


def _module_for(model, method: str = "dopri5", frozen: tuple[int, ...] = ()):
    """The compiled module of a model, explicit pair and frozen states: loaded once per process
    and model structure, and its source generated once per model object (generating it walks
    every expression tree)."""
    key = (method, tuple(frozen))
    try:
        return _by_model[model][key]
    except (KeyError, TypeError):
        pass
    source = module_source(model, method, key[1])
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest not in _loaded:
        if not numba_available():
            raise RuntimeError('the numba backend needs numba: pip install "exosim[fast]"')
        directory = _cache_dir()
        path = directory / f"{_PREFIX}{digest}.py"
        if not _holds(path, source):
            atomic_write(path, source)  # concurrent worker processes never import a half-written file
            prune_cache(directory, cache_limit_bytes())  # a new kernel: the least used ones make room
        else:
            try:
                os.utime(path)  # its last use, for pruning
            except OSError:
                pass
        name = f"exosim_kernel_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _loaded[digest] = module
    try:
        _by_model.setdefault(model, {})[key] = _loaded[digest]
    except TypeError:  # a model that cannot be weakly referenced: generated again next time
        pass
    return _loaded[digest]


def _holds(path: Path, source: str) -> bool:
    """The file at ``path`` holds ``source`` (not a missing, damaged or other file)."""
    try:
        return path.read_bytes() == source.encode()
    except OSError:
        return False


def _cache_failure(exc: BaseException) -> bool:
    """An exception raised while numba read its disk cache (a damaged index or data file)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith("numba/core/caching.py"):
            return True
        tb = tb.tb_next
    return False


def _forget(module) -> None:
    """Remove a loaded kernel module's cached machine code (numba's files) and its copies in
    this process, so that the next use compiles it again."""
    name = module.__name__
    _loaded.pop(name[len(_PREFIX) :], None)
    sys.modules.pop(name, None)
    for keys in list(_by_model.values()):
        for key in [k for k, m in keys.items() if m is module]:
            del keys[key]
    folder = Path(module.__file__).parent / "__pycache__"
    for f in folder.glob(f"{name}.*"):
        try:
            f.unlink()
        except OSError:
            pass


def _load_cached(fn, args: tuple) -> bool:
    """Give the dispatcher ``fn`` the machine code its disk cache holds for the types of ``args``,
    without numba's first-call set-up; whether ``fn`` has compiled code now.

    numba's own first call from a cache installs every typing and lowering registry before it
    reads the cache (importing ``numba.np.arraymath``, ``numba.typed`` and a dozen more modules,
    and with them ``scipy.linalg``): 0.06-0.13 s in each process, needed only to compile.  Here
    the cached code is read and installed as numba's cache hit does (``Dispatcher.compile``: the
    runtime initialised, ``FunctionCache._load_overload``, the function registered for callers,
    the overload added).  On anything unexpected (a cache miss, damaged files, another numba's
    internals) nothing is added and the call goes numba's way.
    """
    if fn.overloads:  # compiled or loaded already (checked before the lock another thread may hold)
        return True
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.runtime import rtsys

        with global_compiler_lock:
            if fn.overloads:
                return True
            ctx = fn.targetctx
            rtsys.initialize(ctx)
            sig = tuple(fn.typeof_pyval(a) for a in args)
            cres = fn._cache._load_overload(sig, ctx)
            if cres is None:
                return False
            if not cres.objectmode:
                ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            fn.add_overload(cres)
            fn._cache_hits[sig] += 1
            return True
    except Exception:  # noqa: BLE001 - numba's first call does the same work again, and reports
        return False


class _Guarded:
    """A compiled function of a kernel module whose first call may find numba's cache files
    damaged (truncated by a full disk, overwritten): then they are removed, the kernel is
    compiled again (a one-line warning says why it takes seconds) and the call is repeated."""

    def __init__(self, model, method: str, frozen: tuple[int, ...], attr: str):
        self.model, self.method, self.frozen, self.attr = model, method, frozen, attr
        self.fn = getattr(_module_for(model, method, frozen), attr)

    def __call__(self, *args):
        if not getattr(self.fn, "overloads", True):  # a dispatcher without code yet
            _load_cached(self.fn, args)
        try:
            return self.fn(*args)
        except Exception as exc:
            if not _cache_failure(exc):
                raise
            import warnings

            module = sys.modules.get(self.fn.py_func.__module__)
            warnings.warn(
                f"the compiled kernel's cache files in {_cache_dir()} could not be read "
                f"({type(exc).__name__}: {exc}); removed and compiled again",
                RuntimeWarning,
                stacklevel=2,
            )
            if module is not None:
                _forget(module)
            self.fn = getattr(_module_for(self.model, self.method, self.frozen), self.attr)
            return self.fn(*args)


def kernel_for(model, method: str = "dopri5", frozen: tuple[int, ...] = ()):
    """The compiled ``integrate`` kernel of a model with the explicit pair ``method`` and the
    ``frozen`` states (cached on disk and per process; damaged cache files are compiled again)."""
    return _Guarded(model, method, tuple(frozen), "integrate")


def rhs_for(model, method: str = "dopri5"):
    """The compiled one-member right-hand side ``rhs1(y, p, dy)`` of a model (the kernel's; the
    same in the module of either pair: ``method`` only picks a module already loaded)."""
    return _Guarded(model, method, (), "rhs1")


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
    implicit_only: bool = False,
) -> SegmentResult:
    """Integrate a batch of ``model`` from ``t0`` to ``t1``; see :func:`exosim.simulate.dopri5.integrate`.

    ``h0`` may be an array: each member resumes with its own last step size.
    ``progress`` is called with the share of the members done (:data:`PROGRESS_CHUNKS`).
    ``stats["steps"]`` is the largest number of steps any member took (comparable with
    the numpy solver's shared steps), ``stats["member_steps"]`` their total and
    ``stats["rhs_evaluations"]`` counts per member; ``h_last`` is per member.  With
    ``options.stiff_fallback == "rosenbrock"`` a member found stiff continues with Rodas4
    (:mod:`exosim.simulate.rosenbrock`; ``stats["implicit_members"]`` and
    ``stats["implicit_steps"]`` count them and their steps); ``implicit_only`` integrates every
    member with Rodas4 from the start (the numpy solver's fallback).
    """
    kernel = kernel_for(model, options.method, tuple(options.frozen))
    y0 = np.ascontiguousarray(y0, dtype=float)
    p = np.ascontiguousarray(p, dtype=float)
    n_mem, n = y0.shape
    scale = np.ones(n) if atol_scale is None else np.asarray(atol_scale, dtype=float)
    t_eval = np.ascontiguousarray([] if t_eval is None else t_eval, dtype=float)
    h = np.full(n_mem, np.nan) if h0 is None else np.broadcast_to(np.asarray(h0, float), (n_mem,)).copy()
    deadline = _clock.now() + float(options.max_seconds)
    atol = np.ascontiguousarray(options.atol * scale)
    mode = 2 if implicit_only else _MODES[options.stiff_fallback]

    def run(a: int, b: int) -> tuple:
        args = (float(t0), float(t1), t_eval, float(options.rtol), atol, h[a:b])
        t_pace = max(float(t1), float(options.horizon)) if np.isfinite(options.horizon) else float(t1)
        return kernel(y0[a:b], p[a:b], *args, int(options.max_steps), float(options.min_step), deadline, t_pace, mode)

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
    if counts[2]:
        stats["implicit_members"] = int(counts[2])
        stats["implicit_steps"] = int(counts[3])
    return SegmentResult(y, status, t_failed, message, ys, stats, h_last=h_last, member_steps=steps)
