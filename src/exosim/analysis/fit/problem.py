"""Estimate model parameters from survival, colony and time-course data: maximum likelihood
with profile intervals.

Data (CSV, one row per observation; one or more files fitted jointly):

* survival points: ``arm, dose, survival, sd`` -- Gaussian likelihood (weighted least
  squares); the model value is the scored survival relative to the control arm at grid
  dose 0 (``--normalise control``, the usual "relative survival"), relative to the same
  arm at dose 0 (``within_arm``) or absolute (``none``);
* colony counts: ``arm, dose, colonies, seeded`` -- Poisson, or quasi-Poisson with an
  estimated dispersion, with ``colonies ~ seeded * PE * SF``; the plating efficiency PE
  is a nuisance parameter whose maximum-likelihood value given SF is closed-form,
  ``PE = sum(colonies) / sum(seeded * SF)`` (the model of CFAssay, Braselmann et al. 2015);
* time courses: ``time, observable, value, sd`` and optionally ``arm``, ``dose`` (grid
  dose of the member, default the lowest) and ``unit`` -- Gaussian likelihood.  The
  observable is any state or rule of the model written ``namespace.name`` (e.g.
  ``donor_flask.vesicle_concentration`` from nanoparticle tracking,
  ``recipients.internalised_vesicles`` from labelled-vesicle uptake), or a sum such as
  ``recipients.bound_vesicles + recipients.internalised_vesicles`` (a membrane dye does
  not tell bound from internalised vesicles).  Times are timeline times (``"30 min"`` or
  a number in h); a value at the time of an event is the value just before it.  ``unit``
  is the model's unit or one convertible to it (``particles/uL``); ``relative`` (a.u.,
  e.g. mean fluorescence) fits one scale factor per observable and file, in closed form
  ``s = sum(y m / sd^2) / sum(m^2 / sd^2)``, so that only the shape of the time course
  informs the parameters.

Parameters are estimated on a log10 scale within their documented ranges (parameter
table) by L-BFGS-B; every evaluation runs the scenario for a batch of parameter vectors
at once (the central-difference gradient is one batch).  Intervals are profile-likelihood
intervals: for each parameter the other parameters are re-optimised on a grid of fixed
values and the interval is where ``2 (NLL - NLL_min)`` stays below the chi-square
(1 d.o.f.) quantile; with quasi-Poisson colony data the colony part of the NLL is divided
by the estimated dispersion ``phi`` (Pearson chi-square / d.o.f., at least 1) and, when
other data are fitted with it, the estimate is recomputed with that weighting.  With a
single parameter the profile is the likelihood itself and is computed in one batch.

References
----------
.. [1] Braselmann H et al. (2015) CFAssay: statistical analysis of the colony formation
   assay. Radiat Oncol 10:223. doi:10.1186/s13014-015-0529-y
.. [2] Raue A et al. (2009) Structural and practical identifiability analysis of partially
   observed dynamical models by exploiting the profile likelihood. Bioinformatics 25:1923.
   doi:10.1093/bioinformatics/btp358
.. [3] McCullagh P, Nelder JA (1989) Generalized Linear Models, 2nd ed. (quasi-likelihood).
.. [4] Loos C et al. (2018) Hierarchical optimization for the efficient parametrization of
   ODE models. Bioinformatics 34:4266. doi:10.1093/bioinformatics/bty514 (analytic scale
   factors for relative data)
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from exosim.model import catalogue as cat
from exosim.model.units import UNITS, QuantityError, parse_quantity

__all__ = ["FitError", "Observations", "read_observations", "FitProblem", "FitResult", "fit", "calibration_problem",
           "default_likelihood", "plot_fit", "write_fit"]

_UNIT = UNITS["dose"]  # grid unit -> Gy
LIKELIHOODS = ("normal", "poisson", "quasipoisson")
GAUSSIAN = ("survival", "timecourse")
RELATIVE = ("relative", "a.u.", "au", "arbitrary")
#: relative tolerance of fits with the compiled backend (per-member steps; see FitProblem)
FIT_RTOL = 1e-9


class FitError(ValueError):
    """Bad data file or fit request; the message names the file, row and column."""


@dataclass
class Observations:
    """Observations read from one data file (doses in Gy, times in h).

    ``y`` is survival, colonies or the observed value; ``w`` the standard deviation
    (survival, time courses) or cells seeded (colonies).  Time courses also carry the
    time, the observable (label and model terms), the factor from model to data unit
    (NaN for relative data) and the relative group of each row.
    """

    source: str
    kind: str  # "survival" | "colonies" | "timecourse"
    arm: list[str]
    dose: np.ndarray
    y: np.ndarray
    w: np.ndarray
    time: np.ndarray | None = None
    observable: list[str] = field(default_factory=list)
    terms: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)
    unit: list[str] = field(default_factory=list)
    factor: np.ndarray | None = None

    @property
    def groups(self) -> list[str]:
        """Observables measured in relative units: one fitted scale factor each."""
        if self.factor is None:
            return []
        return sorted({o for o, f in zip(self.observable, self.factor) if np.isnan(f)}, key=self.observable.index)


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number in the file, row) pairs; blank and '#' lines are skipped."""
    if not path.is_file():
        raise FitError(f"{path}: no such data file")
    with path.open(newline="") as fh:
        lines = [(n, text) for n, text in enumerate(fh, start=1) if text.strip() and not text.lstrip().startswith("#")]
    if not lines:
        return [], []
    records = list(csv.reader(text for _, text in lines))
    header = [h.strip() for h in records[0]]
    rows = [(n, {h: v.strip() for h, v in zip(header, rec)}) for (n, _), rec in zip(lines[1:], records[1:])]
    return header, rows


def read_observations(path, scenario) -> Observations:
    """Read and check a data file against a scenario (arms, doses, times, observables)."""
    path = Path(path)
    header, rows = _read_rows(path)
    cols = set(header)
    if {"survival", "sd"} <= cols:
        kind, ycol, wcol = "survival", "survival", "sd"
    elif {"colonies", "seeded"} <= cols:
        kind, ycol, wcol = "colonies", "colonies", "seeded"
    elif {"time", "observable", "value", "sd"} <= cols:
        kind, ycol, wcol = "timecourse", "value", "sd"
    else:
        raise FitError(f"{path}: columns {header}: expected 'dose' with either 'survival' and 'sd' "
                       f"or 'colonies' and 'seeded' (and optionally 'arm'), or a time course: "
                       f"'time', 'observable', 'value', 'sd' (and optionally 'arm', 'dose', 'unit')")
    grid = scenario.dose_grid
    if kind != "timecourse":
        if "dose" not in cols:
            raise FitError(f"{path}: missing column 'dose' (in {grid.unit if grid else 'Gy'})")
        if grid is None:
            raise FitError(f"{path}: scenario {scenario.name!r} has no dose grid to compare doses with")
    elif grid is None and "dose" in cols and any(row.get("dose") for _, row in rows):
        raise FitError(f"{path}: column 'dose': scenario {scenario.name!r} has no dose grid; leave the column out")
    arms = [a.name for a in scenario.arms] or [scenario.name]
    default_arm = next((a.name for a in scenario.arms if not a.control), arms[0])
    if grid is not None:
        unit = _UNIT[grid.unit]
        lo, hi = min(grid.values), max(grid.values)
    model = window = None
    if kind == "timecourse":
        from exosim.scenario.runner import CompiledScenario
        probe = CompiledScenario(scenario)
        model = probe.model
        window = (scenario.timeline_start, probe.score_event.at)
    obs = Observations(str(path), kind, [], np.empty(0), np.empty(0), np.empty(0))
    arm, dose, y, w, time, factor = [], [], [], [], [], []
    for r, row in rows:  # r: line of the file

        def number(col: str) -> float:
            try:
                value = float(row[col])
            except (KeyError, ValueError):
                raise FitError(f"{path}: row {r}, column {col!r}: expected a number, got {row.get(col)!r}") from None
            if not np.isfinite(value):
                raise FitError(f"{path}: row {r}, column {col!r}: expected a finite number, got {row[col]!r}")
            return value

        def fail(col: str, what: str) -> FitError:
            return FitError(f"{path}: row {r}, column {col!r}: {what}")
        a = row.get("arm") or default_arm
        if a not in arms:
            near = difflib.get_close_matches(a, arms, n=1)
            raise fail("arm", f"no arm {a!r} in scenario {scenario.name!r}"
                       + (f"; did you mean {near[0]!r}?" if near else f"; arms: {arms}"))
        if grid is None:
            d = float("nan")
        else:
            d = number("dose") if (kind != "timecourse" or row.get("dose")) else lo
            if not lo <= d <= hi:
                raise fail("dose", f"{d:g} {grid.unit} is outside the scenario's dose grid "
                                   f"[{lo:g}, {hi:g}] {grid.unit}")
            d *= unit
        yy, ww = number(ycol), number(wcol)
        if kind == "survival":
            if not 0 < yy <= 1:
                raise fail("survival", f"{yy:g} is outside (0, 1]")
            if not ww > 0:
                raise fail("sd", f"expected a positive standard deviation, got {ww:g}")
        elif kind == "colonies":
            if yy < 0 or yy != int(yy):
                raise fail("colonies", f"expected a non-negative count, got {yy:g}")
            if not ww >= 1:
                raise fail("seeded", f"expected at least one cell, got {ww:g}")
        else:
            if yy < 0:
                raise fail("value", f"expected a non-negative value, got {yy:g}")
            if not ww > 0:
                raise fail("sd", f"expected a positive standard deviation, got {ww:g}")
            time.append(_time(row.get("time", ""), window, fail))
            label, model_unit = _observable(row.get("observable", ""), model, obs, fail)
            data_unit = row.get("unit") or model_unit
            factor.append(_unit_factor(data_unit, model_unit, label, fail))
            obs.observable.append(label)
            obs.unit.append(data_unit)
        arm.append(a)
        dose.append(d)
        y.append(yy)
        w.append(ww)
    if not arm:
        raise FitError(f"{path}: no data rows")
    obs.arm, obs.dose, obs.y, obs.w = arm, np.array(dose), np.array(y), np.array(w)
    if kind == "timecourse":
        obs.time, obs.factor = np.array(time), np.array(factor)
        for label in obs.groups:
            units = {u for o, u in zip(obs.observable, obs.unit) if o == label}
            if len(units) > 1:
                raise FitError(f"{path}: column 'unit': observable {label!r} is given both in relative and in "
                               f"absolute units ({sorted(units)}); use one")
    return obs


def _time(text: str, window: tuple[float, float], fail) -> float:
    """A timeline time: a number in h or a quantity such as '30 min'; inside the timeline."""
    try:
        t = float(text)
    except ValueError:
        try:
            t = parse_quantity(text, "time", allow_negative=True)
        except QuantityError as exc:
            raise fail("time", str(exc)) from None
    if not np.isfinite(t):
        raise fail("time", f"expected a finite time, got {text!r}")
    if not window[0] <= t <= window[1]:
        raise fail("time", f"{t:g} h is outside the scenario's timeline [{window[0]:g}, {window[1]:g}] h "
                           f"(first event to scoring)")
    return t


def _observable(text: str, model, obs: Observations, fail) -> tuple[str, str]:
    """Resolve 'ns.name [+ ns.name ...]' to model states/rules; returns (label, unit)."""
    from exosim.model.declare import SEP
    parts = [p.strip() for p in text.split("+")]
    label = " + ".join(p.replace(SEP, ".", 1) for p in parts)
    if label in obs.terms:
        return label, obs.terms[label][0][2]
    units = {**{s.name: s.unit for s in model.states}, **{s.name: s.unit for s in model.derived + model.rules}}
    known = [n.replace(SEP, ".", 1) for n in list(model.state_index) + list(model.observable_index)]
    terms = []
    for p in parts:
        q = p.replace(".", SEP, 1)
        if q in model.state_index:
            terms.append(("state", model.state_index[q], units[q]))
        elif q in model.observable_index:
            terms.append(("obs", model.observable_index[q], units[q]))
        else:
            near = difflib.get_close_matches(p.replace(SEP, ".", 1), known, n=1)
            raise fail("observable", f"no state or rule {p!r} in the model" +
                       (f"; did you mean {near[0]!r}?" if near else " (write namespace.name, e.g. "
                        "'recipients.internalised_vesicles' or 'donor_flask.vesicle_concentration')"))
    if len({t[2] for t in terms}) > 1:
        raise fail("observable", f"{label!r} adds quantities of different units {[t[2] for t in terms]}")
    obs.terms[label] = terms
    return label, terms[0][2]


def _unit_factor(data_unit: str, model_unit: str, label: str, fail) -> float:
    """Data value per model value (NaN for relative data)."""
    if data_unit.lower() in RELATIVE:
        return float("nan")
    if data_unit == model_unit:
        return 1.0
    for table in UNITS.values():
        if data_unit in table and model_unit in table:
            return table[model_unit] / table[data_unit]
    raise fail("unit", f"{data_unit!r} cannot be converted to {model_unit!r}, the unit of {label!r}; "
                       f"give values in {model_unit!r} or 'relative' (one fitted scale factor)")


@dataclass
class FitProblem:
    """A scenario, observations (one data set or a list, fitted jointly) and the parameters to estimate.

    ``params`` are parameter-table keys (every instance) or ``namespace.key`` (one
    population or medium), estimated in log10 within ``ranges[name]`` (default: the
    table's range); the resolved ranges are ``bounds``, one per parameter.
    ``likelihood`` is that of colony counts (``poisson``/``quasipoisson``); survival and
    time courses are Gaussian (``normal``).  ``backend`` is the integrator (``auto``: the
    compiled one when numba is installed); with it the relative tolerance is tightened to
    ``FIT_RTOL`` so that the per-member step control does not blur the finite-difference
    gradient.
    """

    scenario: object
    data: Observations | list[Observations]
    params: list[str]
    likelihood: str = "normal"
    normalise: str = "control"
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    backend: str = "auto"

    def __post_init__(self):
        from exosim.simulate.dopri5_numba import resolve_backend
        from exosim.scenario.runner import CompiledScenario
        table = cat.parameter_table()
        try:
            self.backend = resolve_backend(self.backend)
        except ValueError as exc:
            raise FitError(f"--backend: {exc}") from None
        solver = {"backend": self.backend}
        if self.backend == "numba":
            solver["rtol"] = min(self.scenario.solver.rtol, FIT_RTOL)
        self.scenario = self.scenario.model_copy(update={"solver": self.scenario.solver.model_copy(update=solver)})
        self.datasets = list(self.data) if isinstance(self.data, (list, tuple)) else [self.data]
        kinds = {d.kind for d in self.datasets}
        if self.likelihood not in LIKELIHOODS:
            raise FitError(f"likelihood {self.likelihood!r}: expected one of {LIKELIHOODS}")
        counts = [d.source for d in self.datasets if d.kind == "colonies"]
        if (self.likelihood == "normal") == bool(counts):
            src = counts[0] if counts else self.datasets[0].source
            raise FitError(f"{src}: likelihood {self.likelihood!r} does not fit {'colony' if counts else 'these'} "
                           f"data (survival+sd and time courses: normal; colonies+seeded: poisson or quasipoisson)")
        # members are independent: simulate only the arms and grid doses the data (and their
        # normalisation) refer to
        survival_like = bool(kinds - {"timecourse"})
        arms_used = {a for d in self.datasets for a in d.arm}
        if survival_like and self.normalise == "control":
            arms_used |= {a.name for a in self.scenario.arms if a.control}
        update = {}
        if self.scenario.arms:
            update["arms"] = [a for a in self.scenario.arms if a.name in arms_used]
        grid = self.scenario.dose_grid
        if grid is not None:
            doses = np.concatenate([d.dose[np.isfinite(d.dose)] for d in self.datasets]) / _UNIT[grid.unit]
            values = set(doses.tolist()) | ({0.0} if survival_like and self.normalise != "none" else set())
            update["dose_grid"] = grid.model_copy(update={"values": sorted(values)})
        self.scenario = self.scenario.subset(**update)
        probe = CompiledScenario(self.scenario)
        self.columns = []
        for name in self.params:
            ns, key = name.split(".", 1) if "." in name else (None, name)
            if key not in table:
                near = difflib.get_close_matches(key, list(table), n=1)
                raise FitError(f"--params: unknown parameter {key!r}" + (f"; did you mean {near[0]!r}?" if near else ""))
            cols = probe.instances(key, ns)
            if not cols:
                raise FitError(f"--params: {name!r} does not occur in scenario {self.scenario.name!r}")
            self.columns.append(cols)
        unknown = set(self.ranges) - set(self.params)
        if unknown:
            raise FitError(f"--range names {sorted(unknown)}, which are not fitted (--params {','.join(self.params)})")
        self.bounds = [tuple(float(v) for v in self.ranges.get(n, table[n.split(".")[-1]]["range"]))
                       for n in self.params]
        for n, (lo, hi) in zip(self.params, self.bounds):
            if not 0 < lo < hi:
                raise FitError(f"--params: {n!r} needs a positive range low < high for a log-scale fit, got [{lo}, {hi}]")
        self.nominal = np.array([probe.parameters[0, c[0]] for c in self.columns])
        self.n_members = probe.n_members
        arms = [a.name for a in self.scenario.arms] or [self.scenario.name]
        self._member_arm, self._member_grid = probe.arm_index, probe.grid
        self._control = next((i for i, a in enumerate(self.scenario.arms) if a.control), None)
        if survival_like and self.normalise == "control" and self._control is None:
            raise FitError(f"--normalise control: scenario {self.scenario.name!r} has no control arm")
        self._members = [self._member_of([arms.index(a) for a in d.arm], d.dose) for d in self.datasets]
        times = [d.time for d in self.datasets if d.kind == "timecourse"]
        self.record_times = np.unique(np.concatenate(times)) if times else None
        self.dispersion = 1.0  # quasi-Poisson weight of the colony term (set by fit)
        self.evaluations = 0
        self._compiled = {1: probe}

    # ------------------------------------------------------------------ helpers
    def _member_of(self, arm, dose) -> np.ndarray:
        """Member (within one replicate) of each (arm, grid dose); NaN doses match the single member of an arm."""
        out = []
        for a, d in zip(arm, dose):
            match = (self._member_arm == a) & (np.isnan(self._member_grid) if np.isnan(d)
                                               else np.isclose(self._member_grid, d, rtol=0, atol=1e-12))
            out.append(int(np.flatnonzero(match)[0]))
        return np.array(out, dtype=int)

    @property
    def slices(self) -> list[slice]:
        """Columns of each data set in :meth:`predict`'s output."""
        edges = np.cumsum([0] + [d.y.size for d in self.datasets])
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def name(self, ds: Observations) -> str:
        """How a data set is named in reports: its file, numbered if two data sets share one."""
        same = [d for d in self.datasets if d.source == ds.source]
        return ds.source if len(same) == 1 else f"{ds.source}#{same.index(ds) + 1}"

    def scale_key(self, ds: Observations, label: str) -> str:
        """Key of a relative observable's scale factor in :attr:`FitResult.nuisance`."""
        return f"scale[{self.name(ds)}: {label}]"

    def plating_key(self, ds: Observations) -> str:
        """Key of a colony data set's plating efficiency in :attr:`FitResult.nuisance`."""
        return f"plating_efficiency[{self.name(ds)}]"

    @property
    def log_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """log10 of the lower and upper bounds, the space the optimiser works in."""
        return np.log10([b[0] for b in self.bounds]), np.log10([b[1] for b in self.bounds])

    @property
    def n_nuisance(self) -> int:
        """Plating efficiencies and relative-scale factors estimated in closed form."""
        return sum(d.kind == "colonies" for d in self.datasets) + sum(len(d.groups) for d in self.datasets)

    def simulate(self, theta: np.ndarray, record_times=None):
        """Run the scenario for parameter sets ``theta`` (R, k); the RunResult."""
        from exosim.scenario.runner import CompiledScenario
        theta = np.atleast_2d(theta)
        reps = theta.shape[0]
        if reps not in self._compiled:  # building the model is costlier than a small run: reuse it
            self._compiled[reps] = CompiledScenario(self.scenario, replicates=reps)
        compiled = self._compiled[reps]
        p = compiled.parameters.copy()
        for j, cols in enumerate(self.columns):
            p[:, cols] = np.repeat(theta[:, j], self.n_members)[:, None]
        self.evaluations += reps
        return compiled.run(parameters=p, time_courses=False, record_times=record_times)

    def timecourse_values(self, res, ds: Observations, members, times, labels) -> np.ndarray:
        """Model values (model units, R x n) of ``labels`` for members at ``times`` (recorded in ``res``)."""
        per = self.n_members
        reps = res.status.size // per
        ok = (res.status == 0).reshape(reps, per)
        ti = np.searchsorted(res.times, times)
        out = np.zeros((reps, len(labels)))
        for i, (m, t, label) in enumerate(zip(members, ti, labels)):
            for kind, idx, _ in ds.terms[label]:
                src = res.states if kind == "state" else res.observables
                out[:, i] += src[m::per, t, idx]
            out[:, i] = np.where(ok[:, m], out[:, i], np.nan)
        return out

    def relative_scales(self, ds: Observations, model: np.ndarray) -> dict[str, np.ndarray]:
        """Closed-form scale factor (per parameter set) of each relative observable of ``ds``."""
        scales = {}
        for label in ds.groups:
            sel = np.array([o == label for o in ds.observable])
            m, y, w = model[:, sel], ds.y[sel], ds.w[sel]
            num, den = np.sum(m * y / w ** 2, axis=1), np.sum(m ** 2 / w ** 2, axis=1)
            scales[label] = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        return scales

    def to_data_units(self, ds: Observations, model: np.ndarray, scales: dict) -> np.ndarray:
        """Model values in the data's units (relative observables multiplied by their scale)."""
        out = model * np.where(np.isnan(ds.factor), 1.0, ds.factor)
        for label, s in scales.items():
            sel = np.array([o == label for o in ds.observable])
            out[:, sel] = model[:, sel] * s[:, None]
        return out

    # ------------------------------------------------------------------ model and likelihood
    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Model values at all observations (R, n), in the data's units; NaN where a run failed."""
        return self.evaluate(theta)[0]

    def evaluate(self, theta: np.ndarray) -> tuple[np.ndarray, dict]:
        """:meth:`predict` and the relative scale factors ({data-set index: {observable: (R,)}})."""
        res = self.simulate(theta, self.record_times)
        per = self.n_members
        reps = res.status.size // per
        sf = np.where(res.status == 0, res.surviving_fraction, np.nan).reshape(reps, per)
        blocks, scales = [], {}
        for i, (ds, members) in enumerate(zip(self.datasets, self._members)):
            if ds.kind == "timecourse":
                model = self.timecourse_values(res, ds, members, ds.time, ds.observable)
                scales[i] = self.relative_scales(ds, model)
                blocks.append(self.to_data_units(ds, model, scales[i]))
                continue
            ref = 1.0
            if self.normalise == "control":
                ref = sf[:, self._member_of([self._control], [0.0])[0]][:, None]
            elif self.normalise == "within_arm":
                ref = sf[:, self._member_of(self._member_arm[members], np.zeros(members.size))]
            blocks.append(sf[:, members] / ref)
        return np.concatenate(blocks, axis=1), scales

    def nll(self, pred: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (up to a constant) per row of predictions."""
        total = np.zeros(pred.shape[0])
        for ds, sl in zip(self.datasets, self.slices):
            p, y, w = pred[:, sl], ds.y, ds.w
            if ds.kind in GAUSSIAN:
                total += 0.5 * np.sum(((y - p) / w) ** 2, axis=1)
                continue
            mu = _expected_colonies(y, w, p)[1]
            total += np.sum(mu - y * np.log(np.where(mu > 0, mu, 1e-300)), axis=1) / self.dispersion
        return total


def _expected_colonies(colonies, seeded, sf) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood plating efficiency given SF (rows of ``sf``), ``sum(colonies) /
    sum(seeded * SF)``, and the expected colonies ``PE * seeded * SF`` (CFAssay's model)."""
    per_unit_pe = seeded * sf
    pe = colonies.sum() / per_unit_pe.sum(axis=1, keepdims=True)
    return pe, pe * per_unit_pe


@dataclass
class FitResult:
    """Estimates, profile intervals, goodness of fit and the fitted values."""

    params: list[str]
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    nll: float
    dispersion: float
    gof: dict
    predicted: np.ndarray  # at the observations of all data sets, in order (problem.slices)
    plating_efficiency: float | None  # of the colony data set, if there is exactly one
    nuisance: dict  # closed-form nuisance estimates: plating efficiencies, relative scale factors
    profiles: dict
    evaluations: int
    converged: bool
    message: str
    #: per parameter: "", "low", "high" or "low, high" -- sides where the profile stays below the
    #: threshold up to the search range, so the interval ends at the range (not identifiable there)
    open_ends: list[str] = field(default_factory=list)


def _objective(problem: FitProblem, h: float = 1e-4):
    """f(x) and its central-difference gradient in log10 space, from one batch."""
    def fun(x):
        k = x.size
        xs = np.vstack([x] + [x + h * e for e in np.eye(k)] + [x - h * e for e in np.eye(k)])
        vals = problem.nll(problem.predict(10.0 ** xs))
        if not np.all(np.isfinite(vals)):
            return np.inf, np.zeros(k)
        return vals[0], (vals[1:k + 1] - vals[k + 1:]) / (2 * h)
    return fun


def _minimise(problem: FitProblem, x0: np.ndarray, free: np.ndarray, fixed: np.ndarray):
    """Minimise over the free coordinates (log10), others fixed; returns x, f, result."""
    lo, hi = problem.log_bounds
    full = _objective(problem)

    def sub(z):
        x = fixed.copy()
        x[free] = z
        f, g = full(x)
        return f, g[free]
    res = optimize.minimize(sub, x0[free], jac=True, method="L-BFGS-B",
                            bounds=list(zip(lo[free], hi[free])), options={"maxiter": 200})
    x = fixed.copy()
    x[free] = res.x
    return x, float(res.fun), res


def _goodness(problem: FitProblem, pred: np.ndarray, scales: dict) -> tuple[dict, float, dict]:
    """Goodness of fit (totals and, for several files, per file), quasi-Poisson dispersion, nuisance estimates."""
    k = len(problem.params)
    n = sum(d.y.size for d in problem.datasets)
    dof = max(n - k - problem.n_nuisance, 1)
    gof: dict = {"n_observations": int(n), "n_parameters": k, "n_nuisance": problem.n_nuisance, "dof": int(dof)}
    per_file, nuisance = [], {}
    chi2 = dev = pearson = 0.0
    n_col = nuis_col = 0
    for i, (ds, sl) in enumerate(zip(problem.datasets, problem.slices)):
        p, y = pred[sl], ds.y
        entry = {"file": problem.name(ds), "kind": ds.kind, "n_observations": int(y.size)}
        if ds.kind in GAUSSIAN:
            c = float(np.sum(((y - p) / ds.w) ** 2))
            entry["chi_square"] = c
            chi2 += c
            for label, sc in scales.get(i, {}).items():
                nuisance[problem.scale_key(ds, label)] = float(sc[0])
        else:
            pe, mu = _expected_colonies(y, ds.w, p[None, :])
            pe, mu = float(pe[0, 0]), mu[0]
            d_ = float(2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0) - (y - mu)))
            ps = float(np.sum((y - mu) ** 2 / mu))
            entry.update(deviance=d_, pearson_chi_square=ps, plating_efficiency=pe)
            nuisance[problem.plating_key(ds)] = pe
            dev, pearson = dev + d_, pearson + ps
            n_col, nuis_col = n_col + y.size, nuis_col + 1
        per_file.append(entry)
    if any(d.kind in GAUSSIAN for d in problem.datasets):
        gof["chi_square"] = chi2
    phi = 1.0
    if n_col:
        gof.update(deviance=dev, pearson_chi_square=pearson)
        if problem.likelihood == "quasipoisson":
            phi = max(pearson / max(n_col - nuis_col - k, 1), 1.0)
            gof["dispersion"] = phi
    gof["p_value"] = float(stats.chi2.sf(chi2 + dev, dof))
    if len(per_file) > 1:
        gof["files"] = per_file
    return gof, phi, nuisance


def fit(problem: FitProblem, level: float = 0.95, points: int = 25) -> FitResult:
    """Maximum-likelihood estimates with profile-likelihood intervals."""
    k = len(problem.params)
    lo, hi = problem.log_bounds
    problem.dispersion = 1.0
    x0 = np.clip(np.log10(problem.nominal), lo, hi)
    # multi-start on a coarse batch first: the best of a few points seeds the optimiser
    starts = np.vstack([x0] + [lo + (hi - lo) * f for f in (0.2, 0.5, 0.8)])
    vals = problem.nll(problem.predict(10.0 ** starts))
    x0 = starts[int(np.nanargmin(vals))] if np.isfinite(vals).any() else x0
    x_hat, f_hat, res = _minimise(problem, x0, np.ones(k, bool), x0.copy())
    pred, scales = problem.evaluate(10.0 ** x_hat)
    gof, phi, nuisance = _goodness(problem, pred[0], scales)
    if phi > 1 and any(d.kind in GAUSSIAN for d in problem.datasets):
        # quasi-Poisson counts fitted with Gaussian data: re-weight the counts by 1/phi and refit
        problem.dispersion = phi
        x_hat, f_hat, res = _minimise(problem, x_hat, np.ones(k, bool), x_hat.copy())
        pred, scales = problem.evaluate(10.0 ** x_hat)
        gof, _, nuisance = _goodness(problem, pred[0], scales)
        gof["dispersion"] = phi
    problem.dispersion = phi
    pred = pred[0]
    f_hat = float(problem.nll(pred[None, :])[0])
    crit = stats.chi2.ppf(level, 1)
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    profiles, open_ends = {}, []
    for i in range(k):
        grid = np.linspace(lo[i], hi[i], points)
        if k == 1:  # one batch: refine around the optimum, where the crossings are
            grid = np.concatenate([grid, x_hat[i] + np.linspace(-0.5, 0.5, 4 * points + 1)])
        grid = np.unique(np.clip(np.concatenate([grid, [x_hat[i]]]), lo[i], hi[i]))
        if k == 1:
            prof = problem.nll(problem.predict(10.0 ** grid[:, None]))
        else:
            prof = np.empty(grid.size)
            free = np.ones(k, bool)
            free[i] = False
            for j in np.argsort(np.abs(grid - x_hat[i])):
                fixed = x_hat.copy()
                fixed[i] = grid[j]
                _, prof[j], _ = _minimise(problem, fixed, free, fixed)
        stat = 2 * (prof - f_hat)
        profiles[problem.params[i]] = {"log10_value": grid.tolist(), "statistic": stat.tolist()}
        low[i], high[i] = _crossing(grid, stat, x_hat[i], crit)
        finite = np.where(np.isfinite(stat), stat, np.inf)
        open_ends.append(", ".join(side for side, v in (("low", finite[0]), ("high", finite[-1])) if v < crit))
    pes = [v for n, v in nuisance.items() if n.startswith("plating_efficiency")]
    return FitResult(problem.params, 10.0 ** x_hat, 10.0 ** low, 10.0 ** high, f_hat, phi, gof, pred,
                     pes[0] if len(pes) == 1 else None, nuisance, profiles, problem.evaluations,
                     bool(res.success), str(res.message), open_ends)


def _crossing(grid: np.ndarray, stat: np.ndarray, x_hat: float, crit: float) -> tuple[float, float]:
    """Where the profile statistic crosses ``crit`` on each side of the optimum (linear interpolation).

    A side that never crosses within the range is unbounded there: the range bound is
    returned and the parameter is reported as not identifiable on that side.
    """
    stat = np.where(np.isfinite(stat), stat, np.inf)
    i0 = int(np.argmin(np.abs(grid - x_hat)))
    out = []
    for step in (-1, 1):
        j = i0
        while 0 <= j + step < grid.size and stat[j + step] < crit:
            j += step
        nxt = j + step
        if not 0 <= nxt < grid.size:
            out.append(grid[j])
            continue
        s0, s1 = stat[j], stat[nxt]
        t = 1.0 if not np.isfinite(s1) else (crit - s0) / (s1 - s0)
        out.append(grid[j] + t * (grid[nxt] - grid[j]))
    return out[0], out[1]


def default_likelihood(datasets: list[Observations]) -> str:
    """``auto``: quasi-Poisson when colony counts are fitted, else normal."""
    return "quasipoisson" if any(d.kind == "colonies" for d in datasets) else "normal"


def _dose_panel(ax, problem: FitProblem, result: FitResult, ds: Observations) -> None:
    if ds.kind == "survival":
        obs, err = ds.y, ds.w
        ylabel = {"control": "survival relative to control", "within_arm": "surviving fraction (within arm)",
                  "none": "surviving fraction"}[problem.normalise]
    else:
        pe = result.nuisance[problem.plating_key(ds)]
        obs = ds.y / (ds.w * pe)
        err = np.sqrt(np.maximum(ds.y, 1.0) * result.dispersion) / (ds.w * pe)
        ylabel = "surviving fraction (colonies / seeded / PE)"
    unit = problem.scenario.dose_grid.unit
    scale = _UNIT[unit]
    positive = ds.dose[ds.dose > 0]
    logscale = bool(positive.size) and ds.dose.max() / positive.min() > 50
    # the model as a curve: the fitted problem evaluated on a dense dose grid
    if logscale:
        lin = np.linspace(min(ds.dose.min(), 0.0), positive.min(), 20)  # the linear part of the axis
        dense = np.unique(np.concatenate([lin, np.geomspace(positive.min(), ds.dose.max(), 60)]))
    else:
        dense = np.linspace(ds.dose.min(), ds.dose.max(), 60)
    arms = sorted(set(ds.arm), key=ds.arm.index)
    grid = Observations("curve", "survival", [a for a in arms for _ in dense], np.tile(dense, len(arms)),
                        np.ones(dense.size * len(arms)), np.ones(dense.size * len(arms)))
    curve = FitProblem(problem.scenario, grid, problem.params, normalise=problem.normalise,
                       ranges=dict(zip(problem.params, problem.bounds)), backend=problem.backend)
    curve = curve.predict(result.estimate[None, :])[0].reshape(len(arms), dense.size)
    for a, model in zip(arms, curve):
        sel = np.array([x == a for x in ds.arm])
        line = ax.errorbar(ds.dose[sel] / scale, obs[sel], yerr=err[sel], fmt="o", capsize=3, label=f"{a} (data)")
        ax.plot(dense / scale, model, "-", color=line[0].get_color(), label=f"{a} (model)")
    ax.set_xlabel(f"{problem.scenario.dose_grid.label or 'dose'} ({unit})")
    ax.set_ylabel(ylabel)
    if logscale:
        ax.set_xscale("symlog", linthresh=max(positive.min() / scale, 1e-6))


def _timecourse_panel(ax, problem: FitProblem, result: FitResult, ds: Observations, members: np.ndarray) -> None:
    """Data with error bars and the fitted model as a continuous curve, one per (arm, dose, observable)."""
    dense = np.unique(np.concatenate([np.linspace(ds.time.min(), ds.time.max(), 200), ds.time]))
    res = problem.simulate(result.estimate, record_times=dense)
    scales = {label: np.array([result.nuisance[problem.scale_key(ds, label)]]) for label in ds.groups}
    keys = sorted({(a, d, o) for a, d, o in zip(ds.arm, ds.dose, ds.observable)},
                  key=lambda k: (ds.arm.index(k[0]), np.nan_to_num(k[1]), ds.observable.index(k[2])))
    for a, d, o in keys:
        sel = np.array([(x, y, z) == (a, d, o) for x, y, z in zip(ds.arm, ds.dose, ds.observable)], dtype=bool)
        m = members[sel][0]
        curve = problem.timecourse_values(res, ds, [m] * dense.size, dense, [o] * dense.size)
        fac = ds.factor[sel][0]
        curve = curve * (scales[o][:, None] if o in scales else fac)
        label = f"{a}: {o}" + ("" if np.isnan(d) or problem.scenario.dose_grid is None or
                                len(problem.scenario.dose_grid.values) < 2 else f" ({d:g} Gy)")
        line = ax.errorbar(ds.time[sel], ds.y[sel], yerr=ds.w[sel], fmt="o", capsize=3, label=label)
        ax.plot(dense, curve[0], "-", color=line[0].get_color())
    ax.set_xlabel("time (h)")
    units = sorted({"relative (a.u.)" if u.lower() in RELATIVE else u for u in ds.unit})
    ax.set_ylabel(units[0] if len(units) == 1 else "value (" + ", ".join(units) + ")")


def plot_fit(problem: FitProblem, result: FitResult, path) -> None:
    """One panel per data file (data with error bars over the fitted model) and the profiles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(problem.datasets)
    fig = Figure(figsize=(5 * (n + 1), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n + 1)
    for ax, ds, members in zip(axes, problem.datasets, problem._members):
        if ds.kind == "timecourse":
            _timecourse_panel(ax, problem, result, ds, members)
        else:
            _dose_panel(ax, problem, result, ds)
        ax.set_title(f"{problem.scenario.name}: {Path(ds.source).name}", fontsize=9)
        ax.legend(fontsize=6)
    axp = axes[-1]
    crit = stats.chi2.ppf(0.95, 1)
    for name, prof in result.profiles.items():
        axp.plot(10.0 ** np.array(prof["log10_value"]), prof["statistic"], label=name)
    axp.axhline(crit, color="k", lw=0.8, ls="--", label="95% threshold")
    axp.set_xscale("log")
    axp.set_ylim(0, max(4 * crit, 1))
    axp.set_xlabel("parameter value")
    axp.set_ylabel("2 (NLL - NLL_min)" + (" (counts / dispersion)" if result.dispersion > 1 else ""))
    axp.set_title("profile likelihood", fontsize=9)
    axp.legend(fontsize=7)
    fig.savefig(path, dpi=120)


def _observation_rows(problem: FitProblem, result: FitResult) -> list[dict]:
    rows = []
    for ds, sl in zip(problem.datasets, problem.slices):
        for i, model in enumerate(result.predicted[sl]):
            row = {"file": problem.name(ds), "kind": ds.kind, "arm": ds.arm[i], "dose_Gy": ds.dose[i]}
            if ds.kind == "timecourse":
                row.update(time_h=ds.time[i], observable=ds.observable[i], unit=ds.unit[i])
            row.update(observed=ds.y[i], weight=ds.w[i], model=model)
            rows.append(row)
    return rows


def write_fit(problem: FitProblem, result: FitResult, outdir, provenance: dict) -> list:
    """estimates.csv, fit.json (provenance, goodness of fit, profiles) and fit.png, atomically."""
    import json

    from exosim.io.outputs import _rows_csv, staged_outputs
    table = cat.parameter_table()
    rows = [{"parameter": n, "estimate": e, "low": lo, "high": hi,
             "unit": table[n.split(".")[-1]]["unit"], "nominal": nom, "range_low": b[0], "range_high": b[1],
             "interval_open_at": o}
            for n, e, lo, hi, nom, b, o in zip(result.params, result.estimate, result.low, result.high,
                                                 problem.nominal, problem.bounds, result.open_ends)]
    stage = staged_outputs(outdir)
    with stage as tmp:
        (tmp / "estimates.csv").write_text(_rows_csv(rows))
        doc = dict(provenance, estimates=rows, goodness_of_fit=result.gof, nll=result.nll,
                   dispersion=result.dispersion, plating_efficiency=result.plating_efficiency,
                   nuisance=result.nuisance, converged=result.converged, optimiser_message=result.message,
                   model_runs=result.evaluations, profiles=result.profiles,
                   observations=_observation_rows(problem, result))
        (tmp / "fit.json").write_text(json.dumps(doc, indent=1, default=float))
        plot_fit(problem, result, tmp / "fit.png")
    return stage.written


def calibration_problem(scenario) -> FitProblem:
    """The fit problem a scenario's ``calibration`` block declares (data paths relative to the file)."""
    spec = scenario.calibration
    files = [spec.data] if isinstance(spec.data, str) else list(spec.data)
    data = [read_observations(Path(scenario.source).parent / f, scenario) for f in files]
    likelihood = spec.likelihood if spec.likelihood != "auto" else default_likelihood(data)
    return FitProblem(scenario, data, list(spec.params), likelihood=likelihood,
                      normalise=spec.normalise, ranges=dict(spec.ranges))
