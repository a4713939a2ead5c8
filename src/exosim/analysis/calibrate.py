"""Calibration of shared parameters to the calibration entries of the evidence, at once.

One objective over every ``calibration`` entry (never a ``validation`` one): the sum of
squared standardised residuals, each entry's band read as +/- 2 standard deviations
(:meth:`~exosim.analysis.evidence.Observed.bounds`), so the objective is a chi-square
and a change of 3.84 marks a 95 % profile interval of one parameter.  A failed run adds
:data:`FAILED_PENALTY`.  Parameters are searched on a log scale inside their documented
ranges (or given ranges); each one gets a profile (the others re-optimised) over its range,
which says whether the evidence identifies it.  A documented range that starts at 0 is
searched from :data:`LOW_WHEN_ZERO` times its upper end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from exosim.analysis.evidence import Evidence, EvidenceError, run_evidence_sets
from exosim.model import catalogue as cat

__all__ = [
    "CalibrationResult",
    "CalibrationObjective",
    "calibration_objective",
    "calibrate",
    "search_bounds",
    "FAILED_PENALTY",
    "CHI2_95",
]

#: objective added by an entry whose run failed (far above any fit's chi-square)
FAILED_PENALTY = 1e4
#: 95 % quantile of chi-square with one degree of freedom
CHI2_95 = 3.841
#: a documented range starting at 0 is searched from this fraction of its upper end (log scale)
LOW_WHEN_ZERO = 1e-3


@dataclass
class CalibrationResult:
    """Estimates, profile intervals and what the evidence identifies."""

    params: list[str]
    estimates: dict[str, float]
    nominal: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    objective: float
    nominal_objective: float
    intervals: dict[str, tuple[float, float]]
    identified: dict[str, bool]
    profiles: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    evaluations: int = 0
    #: per parameter, whether each end of its interval is the end of the search range (open: the
    #: profile stays below the threshold up to it, so the evidence does not bound it there)
    open_ends: dict[str, tuple[bool, bool]] = field(default_factory=dict)


def profile_interval(z: np.ndarray, d: np.ndarray, z_hat: float, threshold: float = CHI2_95):
    """The interval of a profile: where the objective's rise ``d`` (at log values ``z``, the
    estimate ``z_hat`` at 0) crosses ``threshold`` on each side, linearly interpolated in log
    space between the last grid point inside and the first outside; a side that never crosses
    ends at its last grid point and is open.  Returns (low, high) in log space and (open_low,
    open_high)."""
    pts = sorted(zip(np.append(z, z_hat), np.append(d, 0.0)))
    zs, ds = np.array([q[0] for q in pts]), np.array([q[1] for q in pts])
    k = int(np.searchsorted(zs, z_hat))
    ends, opened = [], []
    for step in (-1, 1):
        i = k
        while 0 <= i + step < zs.size and ds[i + step] <= threshold:
            i += step
        j = i + step
        if 0 <= j < zs.size and math.isfinite(ds[j]):  # crossing between i (inside) and j (outside)
            w = (threshold - ds[i]) / (ds[j] - ds[i])
            ends.append(float(zs[i] + w * (zs[j] - zs[i])))
            opened.append(False)
        else:
            ends.append(float(zs[i]))
            opened.append(not (0 <= j < zs.size))  # no point beyond: the range ends inside the interval
    return (ends[0], ends[1]), (opened[0], opened[1])


def _key(name: str) -> str:
    return name.split(".", 1)[-1]


def _catalogue_value(name: str, entry: dict) -> float:
    """The value the catalogues give ``name``: a cargo's own field for ``cargo.key``, a cell
    line's for ``cell_line.key``, the parameter table's default otherwise."""
    if "." in name:
        prefix, key = name.split(".", 1)
        for catalogue in (cat.cargo_catalogue(), cat.cell_lines()):
            record = catalogue.get(prefix)
            if record is not None and key in record:
                return float(record[key])
    return float(entry["value"])


def _chi_square(rows: list[dict]) -> float:
    """Sum of squared standardised residuals of scorecard rows (hypothesis rows never count)."""
    total = 0.0
    for r in rows:
        if r["status"] == "hypothesis (not counted)":
            continue
        if r["status"] == "failed" or not math.isfinite(r["model"]):
            total += FAILED_PENALTY
            continue
        sd = (r["high"] - r["low"]) / 4.0
        if r.get("bound_only"):  # a direction or a bound: nothing inside the band, the distance outside
            miss = max(0.0, r["low"] - r["model"], r["model"] - r["high"])
            total += (miss / sd) ** 2
            continue
        total += ((r["model"] - r["observed"]) / sd) ** 2
    return total


class CalibrationObjective:
    """The chi-square of ``params`` over the calibration entries of an evidence set.

    Call it with one vector of values (or None: the catalogue values, every instance as it
    is); :meth:`batch` takes R parameter sets and runs each protocol once for all of them.
    Entries whose protocol has none of ``params`` add a constant, computed once.
    """

    def __init__(self, cal: Evidence, params: Sequence[str], *, solver: str | None = None, runner=None):
        self.cal, self.params, self.solver, self.runner = cal, list(params), solver, runner
        moves = [e for e in cal.entries if any(cal.compiled[e.protocol].columns(n) for n in self.params)]
        self.active = replace(cal, entries=moves)
        self.fixed = replace(cal, entries=[e for e in cal.entries if e not in moves])
        self._constant: float | None = None
        self.evaluations = 0

    def _run(self, ev: Evidence, theta: np.ndarray, names: Sequence[str]) -> list[list[dict]]:
        return run_evidence_sets(ev, names, theta, solver=self.solver, runner=self.runner)

    def batch(self, theta: np.ndarray) -> np.ndarray:
        """Chi-square of every parameter set of ``theta`` (R, len(params)), values not logs."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        if self._constant is None:
            self._constant = _chi_square(self._run(self.fixed, np.zeros((1, 0)), [])[0]) if self.fixed.entries else 0.0
        self.evaluations += theta.shape[0]
        sets = self._run(self.active, theta, self.params) if self.active.entries else [[]] * theta.shape[0]
        return np.array([_chi_square(rows) + self._constant for rows in sets])

    def __call__(self, values: np.ndarray | None) -> float:
        """Chi-square at ``values`` (None: the catalogue values)."""
        if values is None:
            return _chi_square(self._run(self.cal, np.zeros((1, 0)), [])[0])
        return float(self.batch(np.asarray(values, dtype=float)[None, :])[0])


def calibration_objective(
    ev: Evidence, params: Sequence[str], *, solver: str | None = None, runner: Callable | None = None
) -> tuple[CalibrationObjective, Evidence]:
    """The objective of ``params`` over the calibration entries of ``ev``, and those entries.
    Validation entries are dropped here, before anything runs."""
    cal = ev.select(["calibration"])
    if not cal.entries:
        raise EvidenceError("evidence", "", "no calibration entries to calibrate to")
    table = cat.parameter_table()
    for name in params:
        if _key(name) not in table:
            raise EvidenceError("calibrate", name, f"unknown parameter {_key(name)!r}")
        if not any(cal.compiled[e.protocol].columns(name) for e in cal.entries):
            raise EvidenceError(
                "calibrate", name, "no calibration protocol has this parameter: it cannot be calibrated"
            )
    return CalibrationObjective(cal, params, solver=solver, runner=runner), cal


def search_bounds(
    params: Sequence[str], ranges: dict[str, tuple[float, float]] | None = None
) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """The (log-scale) search range and the catalogue value of each parameter: a given range,
    else the documented one (a documented range starting at 0 starts at :data:`LOW_WHEN_ZERO`
    times its upper end)."""
    table = cat.parameter_table()
    bounds, nominal = {}, {}
    for name in params:
        entry = table[_key(name)]
        low, high = (float(x) for x in (ranges or {}).get(name, entry["range"]))
        if name not in (ranges or {}) and low == 0 < high:  # a log search needs a positive start
            low = high * LOW_WHEN_ZERO
        if not 0 < low < high:
            raise EvidenceError("calibrate", name, f"needs a positive range low < high, got [{low:g}, {high:g}]")
        bounds[name] = (low, high)
        nominal[name] = _catalogue_value(name, entry)
    return bounds, nominal


def calibrate(
    ev: Evidence,
    params: Sequence[str],
    *,
    ranges: dict[str, tuple[float, float]] | None = None,
    solver: str | None = None,
    profile_points: int = 7,
    maxiter: int = 60,
) -> CalibrationResult:
    """Fit ``params`` to the calibration entries (log scale, Powell within bounds), then profile
    each over its range; a parameter is identified when its profile rises by more than
    :data:`CHI2_95` on both sides of the estimate inside the range."""
    from scipy.optimize import minimize, minimize_scalar

    objective, cal = calibration_objective(ev, params, solver=solver)
    count = [0]

    def f_log(z: np.ndarray) -> float:
        count[0] += 1
        return objective(np.exp(z))

    bounds, nominal = search_bounds(params, ranges)
    lb = np.log([bounds[n][0] for n in params])
    ub = np.log([bounds[n][1] for n in params])

    def fit(fixed: dict[int, float]) -> tuple[np.ndarray, float]:
        free = [i for i in range(len(params)) if i not in fixed]

        def full(zf):
            z = np.empty(len(params))
            z[free] = zf
            for i, v in fixed.items():
                z[i] = v
            return z

        if not free:
            z = full([])
            return z, f_log(z)
        if len(free) == 1:
            i = free[0]
            res = minimize_scalar(
                lambda t: f_log(full([t])),
                bounds=(lb[i], ub[i]),
                method="bounded",
                options={"xatol": 1e-3, "maxiter": maxiter},
            )
            return full([res.x]), float(res.fun)
        start = [max(nominal[params[i]], bounds[params[i]][0]) for i in free]  # a catalogue 0 starts at the low end
        z0 = np.clip(np.log(start), lb[free], ub[free])
        res = minimize(
            lambda zf: f_log(full(zf)),
            z0,
            method="Powell",
            bounds=list(zip(lb[free], ub[free])),
            options={"xtol": 1e-3, "ftol": 1e-6, "maxiter": maxiter},
        )
        return full(res.x), float(res.fun)

    nominal_objective = objective(None)
    z_hat, f_hat = fit({})
    intervals, identified, profiles, open_ends = {}, {}, {}, {}
    for i, name in enumerate(params if profile_points else []):
        grid = np.linspace(lb[i], ub[i], profile_points)
        prof = [(float(np.exp(g)), fit({i: g})[1]) for g in grid]
        profiles[name] = prof
        x = np.array([p[0] for p in prof])
        d = np.array([p[1] for p in prof]) - f_hat
        est = float(np.exp(z_hat[i]))
        (lo_z, hi_z), open_ends[name] = profile_interval(grid, d, float(z_hat[i]))
        intervals[name] = (float(np.exp(lo_z)), float(np.exp(hi_z)))
        below, above = d[x < est], d[x > est]
        identified[name] = bool(below.size and above.size and below.max() > CHI2_95 and above.max() > CHI2_95)
    if not profile_points:  # no profiles: no intervals, and nothing said about identifiability
        intervals = {n: (math.nan, math.nan) for n in params}
        identified = {n: False for n in params}
    return CalibrationResult(
        params=list(params),
        estimates={n: float(np.exp(z_hat[i])) for i, n in enumerate(params)},
        nominal=nominal,
        bounds=bounds,
        objective=f_hat,
        nominal_objective=nominal_objective,
        intervals=intervals,
        identified=identified,
        profiles=profiles,
        entries=[e.id for e in cal.entries],
        evaluations=count[0],
        open_ends=open_ends,
    )
