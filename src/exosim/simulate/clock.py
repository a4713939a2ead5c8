"""The compiled kernels' wall clock: ``clock_gettime(CLOCK_MONOTONIC)`` read inside compiled code.

The compiled solver (:mod:`exosim.simulate.dopri5_numba`) checks a deadline (``max_seconds``)
every few thousand steps.  Reading Python's clock there needs ``numba.objmode``, whose lifted
code numba compiles again in every process at the kernel's first call, uncached (about 0.07 s
per process and kernel module: in every worker of an analysis).  :func:`monotonic` instead calls
the C library's ``clock_gettime`` by name, so the kernel caches whole; :func:`now` reads the same
clock from Python (the deadline).  Where the C library has no ``clock_gettime`` (Windows),
:data:`NATIVE` is False and the kernels read ``time.perf_counter`` through ``objmode``.
"""

from __future__ import annotations

import ctypes
import time

#: the compiled kernels can read the clock natively (``time.clock_gettime`` exists on this platform)
NATIVE = hasattr(time, "clock_gettime") and hasattr(time, "CLOCK_MONOTONIC")


def now() -> float:
    """Seconds on the kernels' clock (``CLOCK_MONOTONIC``, else ``time.perf_counter``)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC) if NATIVE else time.perf_counter()


def _define():
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    long_t = ir.IntType(8 * ctypes.sizeof(ctypes.c_long))  # struct timespec {time_t tv_sec; long tv_nsec;}
    int_t = ir.IntType(8 * ctypes.sizeof(ctypes.c_int))
    double = ir.DoubleType()

    @intrinsic
    def monotonic(typingctx):
        """Seconds on ``CLOCK_MONOTONIC`` (nopython mode; the symbol resolved when the code loads)."""

        def codegen(context, builder, signature, args):
            spec_t = ir.LiteralStructType([long_t, long_t])
            spec = cgutils.alloca_once(builder, spec_t)
            fnty = ir.FunctionType(int_t, [int_t, spec_t.as_pointer()])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
            builder.call(fn, [ir.Constant(int_t, time.CLOCK_MONOTONIC), spec])
            sec = builder.sitofp(builder.load(cgutils.gep_inbounds(builder, spec, 0, 0)), double)
            nsec = builder.sitofp(builder.load(cgutils.gep_inbounds(builder, spec, 0, 1)), double)
            return builder.fadd(sec, builder.fmul(nsec, ir.Constant(double, 1e-9)))

        return types.float64(), codegen

    return monotonic


def __getattr__(name: str):
    # numba is imported only by a kernel that reads the clock (this module is imported without it)
    if name == "monotonic" and NATIVE:
        globals()["monotonic"] = fn = _define()
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: the kernel source's clock: changing it must change this text (the kernels' cache key is a
#: hash of their source, and numba's cache does not see this module)
_NATIVE_SOURCE = """@numba.njit(cache=True)
def clock():
    # clock_gettime(CLOCK_MONOTONIC = {clock_id}), exosim.simulate.clock.monotonic v1
    return monotonic()
"""
_OBJMODE_SOURCE = """@numba.njit(cache=True)
def clock():
    with numba.objmode(now="float64"):
        now = time.perf_counter()
    return now
"""
KERNEL_SOURCE = _NATIVE_SOURCE.format(clock_id=getattr(time, "CLOCK_MONOTONIC", -1)) if NATIVE else _OBJMODE_SOURCE
