"""Estimate model parameters from survival data: maximum likelihood with profile intervals.

Data (CSV, one row per observation, dose in the unit of the scenario's dose grid):

* survival points: ``arm, dose, survival, sd`` -- Gaussian likelihood (weighted least
  squares); the model value is the scored survival relative to the control arm at grid
  dose 0 (``--normalise control``, the usual "relative survival"), relative to the same
  arm at dose 0 (``within_arm``) or absolute (``none``);
* colony counts: ``arm, dose, colonies, seeded`` -- Poisson, or quasi-Poisson with an
  estimated dispersion, with ``colonies ~ seeded * PE * SF``; the plating efficiency PE
  is a nuisance parameter whose maximum-likelihood value given SF is closed-form,
  ``PE = sum(colonies) / sum(seeded * SF)`` (the model of CFAssay, Braselmann et al. 2015).

Parameters are estimated on a log10 scale within their documented ranges (parameter
table) by L-BFGS-B; every evaluation runs the scenario for a batch of parameter vectors
at once (the central-difference gradient is one batch).  Intervals are profile-likelihood
intervals: for each parameter the other parameters are re-optimised on a grid of fixed
values and the interval is where ``2 (NLL - NLL_min) / phi`` stays below the chi-square
(1 d.o.f.) quantile, with ``phi`` the quasi-Poisson dispersion (1 otherwise).  With a
single parameter the profile is the likelihood itself and is computed in one batch.

References
----------
.. [1] Braselmann H et al. (2015) CFAssay: statistical analysis of the colony formation
   assay. Radiat Oncol 10:223. doi:10.1186/s13014-015-0529-y
.. [2] Raue A et al. (2009) Structural and practical identifiability analysis of partially
   observed dynamical models by exploiting the profile likelihood. Bioinformatics 25:1923.
   doi:10.1093/bioinformatics/btp358
.. [3] McCullagh P, Nelder JA (1989) Generalized Linear Models, 2nd ed. (quasi-likelihood).
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from . import _catalogue as cat

__all__ = ["FitError", "Observations", "read_observations", "FitProblem", "FitResult", "fit", "calibration_problem"]

_UNIT = {"Gy": 1.0, "cGy": 0.01, "mGy": 0.001}
LIKELIHOODS = ("normal", "poisson", "quasipoisson")


class FitError(ValueError):
    """Bad data file or fit request; the message names the file, row and column."""


@dataclass
class Observations:
    """Observations read from a data file (doses in Gy)."""

    source: str
    kind: str  # "survival" | "colonies"
    arm: list[str]
    dose: np.ndarray
    y: np.ndarray  # survival or colonies
    w: np.ndarray  # sd or cells seeded


def read_observations(path, scenario) -> Observations:
    """Read and check a data file against a scenario (arms, dose range)."""
    path = Path(path)
    if not path.is_file():
        raise FitError(f"{path}: no such data file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(row for row in fh if row.strip() and not row.lstrip().startswith("#"))
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = list(reader)
    cols = set(header)
    if {"survival", "sd"} <= cols:
        kind, ycol, wcol = "survival", "survival", "sd"
    elif {"colonies", "seeded"} <= cols:
        kind, ycol, wcol = "colonies", "colonies", "seeded"
    else:
        raise FitError(f"{path}: columns {header}: expected 'dose' with either 'survival' and 'sd' "
                       f"or 'colonies' and 'seeded' (and optionally 'arm')")
    if "dose" not in cols:
        raise FitError(f"{path}: missing column 'dose' (in {scenario.dose_grid.unit if scenario.dose_grid else 'Gy'})")
    if scenario.dose_grid is None:
        raise FitError(f"{path}: scenario {scenario.name!r} has no dose grid to compare doses with")
    arms = [a.name for a in scenario.arms] or ["(single arm)"]
    default_arm = next((a.name for a in scenario.arms if not a.control), arms[0])
    unit = _UNIT[scenario.dose_grid.unit]
    lo, hi = min(scenario.dose_grid.values), max(scenario.dose_grid.values)
    arm, dose, y, w = [], [], [], []
    for r, row in enumerate(rows, start=2):  # row 1 is the header
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}

        def number(col: str) -> float:
            try:
                return float(row[col])
            except (KeyError, ValueError):
                raise FitError(f"{path}: row {r}, column {col!r}: expected a number, got {row.get(col)!r}") from None
        a = row.get("arm") or default_arm
        if a not in arms:
            near = difflib.get_close_matches(a, arms, n=1)
            raise FitError(f"{path}: row {r}, column 'arm': no arm {a!r} in scenario {scenario.name!r}"
                           + (f"; did you mean {near[0]!r}?" if near else f"; arms: {arms}"))
        d, yy, ww = number("dose"), number(ycol), number(wcol)
        if not lo <= d <= hi:
            raise FitError(f"{path}: row {r}, column 'dose': {d:g} {scenario.dose_grid.unit} is outside the "
                           f"scenario's dose grid [{lo:g}, {hi:g}] {scenario.dose_grid.unit}")
        if kind == "survival":
            if not 0 < yy <= 1:
                raise FitError(f"{path}: row {r}, column 'survival': {yy:g} is outside (0, 1]")
            if not ww > 0:
                raise FitError(f"{path}: row {r}, column 'sd': expected a positive standard deviation, got {ww:g}")
        else:
            if yy < 0 or yy != int(yy):
                raise FitError(f"{path}: row {r}, column 'colonies': expected a non-negative count, got {yy:g}")
            if not ww >= 1:
                raise FitError(f"{path}: row {r}, column 'seeded': expected at least one cell, got {ww:g}")
        arm.append(a)
        dose.append(d * unit)
        y.append(yy)
        w.append(ww)
    if not arm:
        raise FitError(f"{path}: no data rows")
    return Observations(str(path), kind, arm, np.array(dose), np.array(y), np.array(w))


@dataclass
class FitProblem:
    """A scenario, observations and the parameters to estimate.

    ``params`` are parameter-table keys (every instance) or ``namespace.key`` (one
    population or medium), estimated in log10 within ``ranges[name]`` (default: the
    table's range); the resolved ranges are ``bounds``, one per parameter.
    """

    scenario: object
    data: Observations
    params: list[str]
    likelihood: str = "normal"
    normalise: str = "control"
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        from ._protocol import CompiledScenario
        table = cat.parameter_table()
        if self.likelihood not in LIKELIHOODS:
            raise FitError(f"likelihood {self.likelihood!r}: expected one of {LIKELIHOODS}")
        if (self.likelihood == "normal") != (self.data.kind == "survival"):
            raise FitError(f"{self.data.source}: likelihood {self.likelihood!r} does not fit {self.data.kind} data "
                           f"(survival+sd: normal; colonies+seeded: poisson or quasipoisson)")
        grid = sorted(set(self.scenario.dose_grid.values) | set(self.data.dose / _UNIT[self.scenario.dose_grid.unit]))
        self.scenario = self.scenario.model_copy(update={"dose_grid": self.scenario.dose_grid.model_copy(
            update={"values": grid})})
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
        arms = [a.name for a in self.scenario.arms] or ["(single arm)"]
        self._arm = np.array([arms.index(a) for a in self.data.arm])
        self._control = next((i for i, a in enumerate(self.scenario.arms) if a.control), None)
        if self.normalise == "control" and self._control is None:
            raise FitError(f"--normalise control: scenario {self.scenario.name!r} has no control arm")
        if self.normalise != "none" and 0 not in self.scenario.dose_grid.values:
            raise FitError(f"--normalise {self.normalise}: the dose grid of {self.scenario.name!r} has no dose 0 "
                           f"to normalise to; use --normalise none")
        self.evaluations = 0

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Model survival at the observations for parameter sets ``theta`` (R, k); NaN where a run failed."""
        from ._protocol import CompiledScenario
        theta = np.atleast_2d(theta)
        reps = theta.shape[0]
        compiled = CompiledScenario(self.scenario, replicates=reps)
        p = compiled.parameters.copy()
        per = self.n_members
        for j, cols in enumerate(self.columns):
            p[:, cols] = np.repeat(theta[:, j], per)[:, None]
        res = compiled.run(parameters=p, time_courses=False)
        self.evaluations += reps
        sf = np.where(res.status == 0, res.surviving_fraction, np.nan).reshape(reps, per)
        arm, grid = res.arm_index[:per], res.grid[:per]
        out = np.empty((reps, self.data.dose.size))
        for i, (a, d) in enumerate(zip(self._arm, self.data.dose)):
            m = np.flatnonzero((arm == a) & np.isclose(grid, d, rtol=0, atol=1e-12))[0]
            ref = 1.0
            if self.normalise == "control":
                ref = sf[:, np.flatnonzero((arm == self._control) & (grid == 0))[0]]
            elif self.normalise == "within_arm":
                ref = sf[:, np.flatnonzero((arm == a) & (grid == 0))[0]]
            out[:, i] = sf[:, m] / ref
        return out

    def nll(self, pred: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (up to a constant) per row of predictions."""
        y, w = self.data.y, self.data.w
        if self.likelihood == "normal":
            return 0.5 * np.sum(((y - pred) / w) ** 2, axis=1)
        mu_unit = w * pred  # expected colonies per unit plating efficiency
        pe = y.sum() / mu_unit.sum(axis=1, keepdims=True)
        mu = pe * mu_unit
        return np.sum(mu - y * np.log(np.where(mu > 0, mu, 1e-300)), axis=1)

    def plating_efficiency(self, pred: np.ndarray) -> float:
        """Closed-form maximum-likelihood plating efficiency for one prediction (colony data)."""
        return float(self.data.y.sum() / (self.data.w * pred).sum())


@dataclass
class FitResult:
    """Estimates, profile intervals, goodness of fit and the fitted curve."""

    params: list[str]
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    nll: float
    dispersion: float
    gof: dict
    predicted: np.ndarray
    plating_efficiency: float | None
    profiles: dict
    evaluations: int
    converged: bool
    message: str


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
    lo = np.log10([b[0] for b in problem.bounds])
    hi = np.log10([b[1] for b in problem.bounds])
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


def fit(problem: FitProblem, level: float = 0.95, points: int = 25) -> FitResult:
    """Maximum-likelihood estimates with profile-likelihood intervals."""
    k = len(problem.params)
    lo = np.log10([b[0] for b in problem.bounds])
    hi = np.log10([b[1] for b in problem.bounds])
    x0 = np.clip(np.log10(problem.nominal), lo, hi)
    # multi-start on a coarse batch first: the best of a few points seeds the optimiser
    starts = np.vstack([x0] + [lo + (hi - lo) * f for f in (0.2, 0.5, 0.8)])
    vals = problem.nll(problem.predict(10.0 ** starts))
    x0 = starts[int(np.nanargmin(vals))] if np.isfinite(vals).any() else x0
    x_hat, f_hat, res = _minimise(problem, x0, np.ones(k, bool), x0.copy())
    pred = problem.predict(10.0 ** x_hat)[0]
    n = problem.data.y.size
    dof = max(n - k - (problem.data.kind == "colonies"), 1)
    gof: dict = {"n_observations": int(n), "n_parameters": k, "dof": int(dof)}
    phi = 1.0
    pe = None
    if problem.data.kind == "survival":
        chi2 = float(np.sum(((problem.data.y - pred) / problem.data.w) ** 2))
        gof.update(chi_square=chi2, p_value=float(stats.chi2.sf(chi2, dof)))
    else:
        pe = problem.plating_efficiency(pred)
        mu = pe * problem.data.w * pred
        y = problem.data.y
        pearson = float(np.sum((y - mu) ** 2 / mu))
        dev = float(2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0) - (y - mu)))
        gof.update(deviance=dev, pearson_chi_square=pearson, p_value=float(stats.chi2.sf(dev, dof)))
        if problem.likelihood == "quasipoisson":
            phi = max(pearson / dof, 1.0)
            gof["dispersion"] = phi
    crit = stats.chi2.ppf(level, 1)
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    profiles = {}
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
            start = x_hat.copy()
            for j in np.argsort(np.abs(grid - x_hat[i])):
                fixed = start.copy()
                fixed[i] = grid[j]
                _, prof[j], _ = _minimise(problem, fixed, free, fixed)
        stat = 2 * (prof - f_hat) / phi
        profiles[problem.params[i]] = {"log10_value": grid.tolist(), "statistic": stat.tolist()}
        low[i], high[i] = _crossing(grid, stat, x_hat[i], crit)
    return FitResult(problem.params, 10.0 ** x_hat, 10.0 ** low, 10.0 ** high, f_hat, phi, gof, pred, pe,
                     profiles, problem.evaluations, bool(res.success), str(res.message))


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


def plot_fit(problem: FitProblem, result: FitResult, path) -> None:
    """Data with error bars over the fitted model, one panel; profiles in a second panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = problem.data
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax, axp = fig.subplots(1, 2)
    if data.kind == "survival":
        obs, err = data.y, data.w
        ylabel = {"control": "survival relative to control", "within_arm": "surviving fraction (within arm)",
                  "none": "surviving fraction"}[problem.normalise]
    else:
        pe = result.plating_efficiency
        obs = data.y / (data.w * pe)
        err = np.sqrt(np.maximum(data.y, 1.0) * result.dispersion) / (data.w * pe)
        ylabel = "surviving fraction (colonies / seeded / PE)"
    unit = problem.scenario.dose_grid.unit
    scale = _UNIT[unit]
    for a in sorted(set(data.arm), key=data.arm.index):
        sel = np.array([x == a for x in data.arm])
        order = np.argsort(data.dose[sel])
        line = ax.errorbar(data.dose[sel] / scale, obs[sel], yerr=err[sel], fmt="o", capsize=3, label=f"{a} (data)")
        ax.plot(data.dose[sel][order] / scale, result.predicted[sel][order], "-", color=line[0].get_color(),
                label=f"{a} (model)")
    ax.set_xlabel(f"{problem.scenario.dose_grid.label or 'dose'} ({unit})")
    ax.set_ylabel(ylabel)
    if np.ptp(data.dose) > 0 and data.dose.max() / max(data.dose[data.dose > 0].min(initial=1), 1e-12) > 50:
        ax.set_xscale("symlog", linthresh=max(data.dose[data.dose > 0].min(initial=1) / scale, 1e-6))
    ax.set_title(f"{problem.scenario.name}: fit of {', '.join(problem.params)}", fontsize=9)
    ax.legend(fontsize=7)
    crit = stats.chi2.ppf(0.95, 1)
    for name, prof in result.profiles.items():
        axp.plot(10.0 ** np.array(prof["log10_value"]), prof["statistic"], label=name)
    axp.axhline(crit, color="k", lw=0.8, ls="--", label="95% threshold")
    axp.set_xscale("log")
    axp.set_ylim(0, max(4 * crit, 1))
    axp.set_xlabel("parameter value")
    axp.set_ylabel("2 (NLL - NLL_min) / dispersion")
    axp.set_title("profile likelihood", fontsize=9)
    axp.legend(fontsize=7)
    fig.savefig(path, dpi=120)


def write_fit(problem: FitProblem, result: FitResult, outdir, provenance: dict) -> list:
    """estimates.csv, fit.json (provenance, goodness of fit, profiles) and fit.png, atomically."""
    import json

    from ._outputs import _rows_csv, staged_outputs
    table = cat.parameter_table()
    rows = [{"parameter": n, "estimate": e, "low": lo, "high": hi,
             "unit": table[n.split(".")[-1]]["unit"], "nominal": nom, "range_low": b[0], "range_high": b[1]}
            for n, e, lo, hi, nom, b in zip(result.params, result.estimate, result.low, result.high,
                                              problem.nominal, problem.bounds)]
    stage = staged_outputs(outdir)
    with stage as tmp:
        (tmp / "estimates.csv").write_text(_rows_csv(rows))
        doc = dict(provenance, estimates=rows, goodness_of_fit=result.gof, nll=result.nll,
                   dispersion=result.dispersion, plating_efficiency=result.plating_efficiency,
                   converged=result.converged, optimiser_message=result.message,
                   model_runs=result.evaluations, profiles=result.profiles,
                   observations=[{"arm": a, "dose_Gy": d, "observed": y, "weight": w, "model": m}
                                 for a, d, y, w, m in zip(problem.data.arm, problem.data.dose, problem.data.y,
                                                          problem.data.w, result.predicted)])
        (tmp / "fit.json").write_text(json.dumps(doc, indent=1, default=float))
        plot_fit(problem, result, tmp / "fit.png")
    return stage.written


def calibration_problem(scenario) -> FitProblem:
    """The fit problem a scenario's ``calibration`` block declares (data path relative to the file)."""
    spec = scenario.calibration
    path = Path(scenario.source).parent / spec.data
    data = read_observations(path, scenario)
    likelihood = spec.likelihood if spec.likelihood != "auto" else (
        "normal" if data.kind == "survival" else "quasipoisson")
    return FitProblem(scenario, data, list(spec.params), likelihood=likelihood, normalise=spec.normalise,
                      ranges=dict(spec.ranges))
