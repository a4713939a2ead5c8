"""Compiled backend: per-member Dormand-Prince 5(4) in numba (extra ``exosim[fast]``).

The numpy integrator (:mod:`exosim._integrate`) advances a whole batch with one
shared step size, so every member takes as many steps as the stiffest member of
its batch needs, and every stage costs one pass of ~100 numpy operations over
the batch.  Sensitivity analyses sample rates over two decades, which makes both
costs large.  Here the batch is a loop over members, each with its own step-size
control, and the right-hand side is scalar code compiled by numba from the same
expression trees (:meth:`exosim._assemble.Model.scalar_source`): no temporaries,
no shared steps.

Same method, tableau, error norm, step-size rule, landing on output times and
failure policy (a member that cannot be integrated is marked failed with the
time and reason; the others go on) as :func:`exosim._integrate.integrate`, whose
:class:`~exosim._integrate.BatchSolution` it returns, so the protocol engine uses
either backend unchanged.

The generated module (right-hand side + kernel) is written once per model
structure to a cache directory (``EXOSIM_CACHE_DIR``, default
``~/.cache/exosim``) and compiled with ``cache=True``, so later processes, and
worker processes of an analysis, load the machine code instead of compiling
again (about 5 s the first time).

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
from pathlib import Path

import numpy as np

from exosim.model import expr as _expr
from exosim.simulate.dopri5 import _A_MAT, _B, _E, FAILED, BatchSolution, SolverOptions

__all__ = ["available", "kernel_for", "integrate_compiled", "BACKENDS", "resolve_backend"]

BACKENDS = ("numpy", "numba")

#: failure codes of the kernel -> messages (same wording as the numpy integrator)
_MESSAGES = {
    1: "more than {max_steps} steps in one segment",
    2: "step size below {min_step:g} h (error not controlled)",
    3: "non-finite initial state",
    4: "non-finite derivative at segment start",
}

# fast-math flags without 'nnan'/'ninf': the kernel must see NaN and inf to reject steps
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

_KERNEL = '''
@numba.njit(cache=True, fastmath=set(FASTMATH))
def integrate(y0, p, t0, t1, t_eval, rtol, atol, h0, max_steps, min_step):
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
    for m in range(N):
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
        h = h0[m] if (h0[m] > 0.0 and math.isfinite(h0[m])) else 1e-3 * span
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
        while t < t1:
            if steps + rejected >= max_steps:
                status[m] = 1
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
                fac = 5.0 if err == 0.0 else min(5.0, max(0.2, 0.9 * err ** -0.2))
                if (not landing) or ht >= h:
                    h = ht * fac
            else:
                rejected += 1
                if ht <= min_step:
                    status[m] = 2
                    break
                h = ht * max(0.1, 0.9 * err ** -0.2) if math.isfinite(err) else ht * 0.1
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
'''

_loaded: dict[str, object] = {}


def available() -> bool:
    """True if numba can be imported (``pip install "exosim[fast]"``)."""
    return importlib.util.find_spec("numba") is not None


def resolve_backend(name: str) -> str:
    """``auto`` -> ``numba`` when installed, else ``numpy``; check explicit names."""
    if name == "auto":
        return "numba" if available() else "numpy"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {('auto',) + BACKENDS}")
    if name == "numba" and not available():
        raise ValueError('backend "numba" needs numba: pip install "exosim[fast]"')
    return name


def _cache_dir() -> Path:
    base = os.environ.get("EXOSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "exosim")
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
    return "\n".join([
        "# generated by exosim._compiled from the model declarations; do not edit",
        "import math", "import numpy as np", "import numba", "",
        f"FASTMATH = {sorted(_FASTMATH)!r}",
        f"A = np.array({_A_MAT.tolist()!r})", f"B = np.array({_B.tolist()!r})",
        f"E = np.array({_E.tolist()!r})", "",
        "@numba.njit(cache=True, inline='always')",
        _expr.hill_scalar_source("_hill"),
        "@numba.njit(cache=True, fastmath=set(FASTMATH))",
        model.scalar_source("rhs1"),
        _KERNEL,
    ])


def kernel_for(model):
    """The compiled ``integrate`` kernel of a model (cached on disk and per process)."""
    source = module_source(model)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    if digest in _loaded:
        return _loaded[digest]
    if not available():
        raise RuntimeError('the numba backend needs numba: pip install "exosim[fast]"')
    directory = _cache_dir()
    path = directory / f"exosim_kernel_{digest}.py"
    if not path.exists() or path.read_text() != source:
        # atomic: concurrent worker processes never import a half-written file
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(source)
        os.replace(tmp, path)
    name = f"exosim_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _loaded[digest] = module.integrate
    return module.integrate


def integrate_compiled(model, t0: float, t1: float, y0: np.ndarray, p: np.ndarray, *,
                       atol_scale: np.ndarray | None = None, options: SolverOptions = SolverOptions(),
                       t_eval: np.ndarray | None = None, h0: np.ndarray | float | None = None) -> BatchSolution:
    """Integrate a batch of ``model`` from ``t0`` to ``t1``; see :func:`exosim._integrate.integrate`.

    ``h0`` may be an array: each member resumes with its own last step size.
    ``BatchSolution.n_steps`` is the largest number of steps any member took
    (comparable with the numpy integrator's shared steps); ``h_last`` is per member.
    """
    kernel = kernel_for(model)
    y0 = np.ascontiguousarray(y0, dtype=float)
    p = np.ascontiguousarray(p, dtype=float)
    n_mem, n = y0.shape
    scale = np.ones(n) if atol_scale is None else np.asarray(atol_scale, dtype=float)
    t_eval = np.ascontiguousarray([] if t_eval is None else t_eval, dtype=float)
    h = np.full(n_mem, np.nan) if h0 is None else np.broadcast_to(np.asarray(h0, float), (n_mem,)).copy()
    y, ys, code, t_failed, h_last, steps, counts = kernel(
        y0, p, float(t0), float(t1), t_eval, float(options.rtol), np.ascontiguousarray(options.atol * scale),
        h, int(options.max_steps), float(options.min_step))
    status = np.where(code != 0, FAILED, 0)
    message = [_MESSAGES[c].format(max_steps=options.max_steps, min_step=options.min_step) if c else ""
               for c in code.tolist()]
    return BatchSolution(y, status, t_failed, message, ys, int(steps.max(initial=0)), int(counts[0]),
                         int(counts[1]), h_last=h_last, member_steps=steps)
