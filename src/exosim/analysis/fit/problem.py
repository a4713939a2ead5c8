"""A fit problem: a scenario, data sets and the parameters to estimate.

Parameters are estimated on a log10 scale within their documented ranges
(parameter table); the problem simulates only the arms and grid doses its data
need, through the batch adapter (:class:`exosim.analysis.batch.BatchModel`), and
turns runs into model values at the observations: survival normalised by the
conventions of :mod:`exosim.scenario.observables`, time courses in the data's
units, relative data with their closed-form scale factor
``s = sum(y m / sd^2) / sum(m^2 / sd^2)`` (Loos et al. 2018).

References
----------
.. [1] Loos C et al. (2018) Hierarchical optimization for the efficient parametrization of
   ODE models. Bioinformatics 34:4266. doi:10.1093/bioinformatics/bty514 (analytic scale
   factors for relative data)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exosim.analysis.batch import BatchError, BatchModel
from exosim.analysis.fit.data import FitError, FitWarning, Observations, default_likelihood, read_observations
from exosim.analysis.fit.likelihood import LIKELIHOODS, negative_log_likelihood
from exosim.model import catalogue as cat
from exosim.model.units import UNITS
from exosim.scenario import observables
from exosim.scenario.schema import Scenario
from exosim.simulate.solver import resolve_backend

__all__ = ["FitProblem", "calibration_problem", "FIT_RTOL"]

#: relative tolerance of fits with the compiled backend (per-member steps; see FitProblem)
FIT_RTOL = 1e-9


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

    scenario: Scenario
    data: Observations | list[Observations]
    params: list[str]
    likelihood: str = "normal"
    normalise: str = "control"
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    backend: str = "auto"

    def __post_init__(self):
        table = cat.parameter_table()
        if not self.params:
            raise FitError("--params: name at least one parameter")
        twice = sorted({k for k in self.params if list(self.params).count(k) > 1})
        if twice:
            raise FitError(f"--params: {', '.join(twice)} given twice")
        try:
            self.backend = resolve_backend(self.backend)
        except ValueError as exc:
            raise FitError(f"--backend: {exc}") from None
        solver = {"backend": self.backend}
        if self.backend == "numba":
            solver["rtol"] = min(self.scenario.solver.rtol, FIT_RTOL)
        self.scenario = self.scenario.model_copy(update={"solver": self.scenario.solver.model_copy(update=solver)})
        self.datasets = list(self.data) if isinstance(self.data, (list, tuple)) else [self.data]
        _check_distinct(self.datasets)
        kinds = {d.kind for d in self.datasets}
        if self.likelihood not in LIKELIHOODS:
            raise FitError(f"likelihood {self.likelihood!r}: expected one of {LIKELIHOODS}")
        counts = [d.source for d in self.datasets if d.kind == "colonies"]
        if (self.likelihood == "normal") == bool(counts):
            src = counts[0] if counts else self.datasets[0].source
            raise FitError(
                f"{src}: likelihood {self.likelihood!r} does not fit {'colony' if counts else 'these'} "
                f"data (survival+sd and time courses: normal; colonies+seeded: poisson or quasipoisson)"
            )
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
            doses = np.concatenate([d.dose[np.isfinite(d.dose)] for d in self.datasets]) / UNITS["dose"][grid.unit]
            values = set(doses.tolist()) | ({0.0} if survival_like and self.normalise != "none" else set())
            update["dose_grid"] = grid.model_copy(update={"values": sorted(values)})
        self.scenario = self.scenario.subset(**update)
        # what the likelihood reads of each member: a member none of it depends on (the control
        # arm, for uptake parameters) is integrated once per call, not once per parameter set
        scored = next(e.score.population for e in self.scenario.timeline if e.score is not None)
        outputs = [f"{scored}.surviving_fraction"] if survival_like else []
        outputs += [part for d in self.datasets for label in d.terms for part in label.split(" + ")]
        try:
            self.batch = BatchModel(self.scenario, self.params, outputs=outputs)
        except BatchError as exc:
            raise FitError(f"--params: {exc}") from None
        probe = self.batch.template
        unknown = set(self.ranges) - set(self.params)
        if unknown:
            raise FitError(f"--range names {sorted(unknown)}, which are not fitted (--params {','.join(self.params)})")
        self.bounds = [
            tuple(float(v) for v in self.ranges.get(n, table[n.split(".")[-1]]["range"])) for n in self.params
        ]
        for n, (lo, hi) in zip(self.params, self.bounds):
            if not 0 < lo < hi:
                raise FitError(
                    f"--params: {n!r} needs a positive range low < high for a log-scale fit, got [{lo}, {hi}]"
                )
        self.nominal = self.batch.nominal
        self.n_members = probe.n_members
        arms = [a.name for a in self.scenario.arms] or [self.scenario.name]
        self._member_arm, self._member_grid = probe.arm_index, probe.grid
        self._control = observables.control_arm(self.scenario.arms)
        if survival_like and self.normalise == "control" and self._control is None:
            raise FitError(f"--normalise control: scenario {self.scenario.name!r} has no control arm")
        for d in self.datasets:
            if d.kind == "survival" and self.normalise == "none" and np.any(d.y > 1):
                raise FitError(
                    f"{d.source}: survival {float(d.y[d.y > 1][0]):g} above 1 with --normalise none: absolute "
                    "surviving fractions are at most 1 (relative ones: --normalise control or within_arm)"
                )
        self._members = [self._member_of([arms.index(a) for a in d.arm], d.dose) for d in self.datasets]
        times = [d.time for d in self.datasets if d.kind == "timecourse"]
        self.record_times = np.unique(np.concatenate(times)) if times else None
        self.dispersion = 1.0  # quasi-Poisson weight of the colony term (set by fit)

    # ------------------------------------------------------------------ helpers
    def _member_of(self, arm, dose) -> np.ndarray:
        """Member (within one replicate) of each (arm, grid dose); NaN doses match the single member of an arm."""
        return np.array(
            [observables.member_index(self._member_arm, self._member_grid, a, d) for a, d in zip(arm, dose)], dtype=int
        )

    @property
    def slices(self) -> list[slice]:
        """Columns of each data set in :meth:`predict`'s output."""
        edges = np.cumsum([0] + [d.y.size for d in self.datasets])
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def name(self, ds: Observations) -> str:
        """How a data set is named in reports: its file, numbered if two data sets share one."""
        same = [d for d in self.datasets if d.source == ds.source]
        return ds.source if len(same) == 1 else f"{ds.source}#{next(i for i, d in enumerate(same) if d is ds) + 1}"

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

    @property
    def evaluations(self) -> int:
        """Parameter sets simulated so far."""
        return self.batch.evaluations

    def simulate(self, theta: np.ndarray, record_times=None):
        """Run the scenario for parameter sets ``theta`` (R, k); the RunResult."""
        return self.batch.simulate(theta, record_times=record_times)

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
            num, den = np.sum(m * y / w**2, axis=1), np.sum(m**2 / w**2, axis=1)
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
            rel = observables.normalise(sf, self._member_arm, self._member_grid, self.normalise, self._control)
            blocks.append(rel[:, members])
        return np.concatenate(blocks, axis=1), scales

    def nll(self, pred: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (up to a constant) per row of predictions."""
        return negative_log_likelihood(self, pred)


def calibration_problem(scenario: Scenario) -> FitProblem:
    """The fit problem a scenario's ``calibration`` block declares (data paths relative to the file)."""
    spec = scenario.calibration
    files = [spec.data] if isinstance(spec.data, str) else list(spec.data)
    data = [read_observations(Path(scenario.source).parent / f, scenario) for f in files]
    likelihood = spec.likelihood if spec.likelihood != "auto" else default_likelihood(data)
    return FitProblem(
        scenario, data, list(spec.params), likelihood=likelihood, normalise=spec.normalise, ranges=dict(spec.ranges)
    )


def _check_distinct(datasets: list[Observations]) -> None:
    """One file read twice is refused (its observations would count double and narrow every
    interval); two files with the same observations are noted."""
    seen: dict[str, str] = {}
    for d in datasets:
        key = str(Path(d.source).resolve()) if Path(d.source).exists() else d.source
        if key in seen:
            raise FitError(f"{d.source}: the data file is given twice (as {seen[key]!r} and {d.source!r})")
        seen[key] = d.source
    for i, a in enumerate(datasets):
        for b in datasets[i + 1 :]:
            if (
                a.kind == b.kind
                and a.arm == b.arm
                and np.array_equal(a.dose, b.dose, equal_nan=True)
                and (np.array_equal(a.y, b.y) and np.array_equal(a.w, b.w))
            ):
                warnings.warn(
                    f"{b.source}: the same observations as {a.source}; both are fitted, each counted",
                    FitWarning,
                    stacklevel=3,
                )
