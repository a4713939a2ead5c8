"""The public API: run, analyse and fit scenarios from Python (what ``import exosim`` offers).

This module sits at the top of the package, beside the CLI: it may use every
stage, and no module of the package imports it.

Examples
--------
>>> import exosim
>>> s = exosim.load_scenario("scenarios/hnscc_exosome_radioresistance.yaml")
>>> r = s.run()                                   # doctest: +SKIP
>>> r.summary[["arm", "d10_Gy", "dmf_at_sf0.1"]]   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exosim.scenario.load import load_scenario, with_parameters
from exosim.scenario.result import RunResult
from exosim.scenario.runner import run as _run
from exosim.scenario.schema import Scenario
from exosim.simulate.solver import Solver

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from exosim.analysis.fit import FitProblem, FitResult
    from exosim.analysis.sensitivity import Analysis
    from exosim.io.petab import PetabExport

# fit and sensitivity (scipy.optimize, SALib) are imported inside the functions that use them,
# so that ``exosim.run`` costs no more than the runner

__all__ = ["run", "bands", "sensitivity", "fit", "export_petab", "fit_petab", "SensitivityResult", "FitOutcome"]


def _scenario(scenario: Scenario | str | Path) -> Scenario:
    return scenario if isinstance(scenario, Scenario) else load_scenario(scenario)


def run(
    scenario: Scenario | str | Path,
    *,
    solver: str | Solver | None = None,
    parameters: Mapping[str, float | str] | None = None,
    time_courses: bool = True,
) -> RunResult:
    """Run every arm and dose of a scenario as one batch.

    Parameters
    ----------
    scenario : a loaded scenario or the path of a scenario file
    solver : ``numpy``, ``numba``, ``auto`` or a :class:`~exosim.simulate.solver.Solver`;
        default the scenario's ``solver.backend``
    parameters : overrides as in a scenario's ``parameters:`` block, ``key`` (every
        instance) or ``population.key`` (one population or medium) -> value with its unit
        (``{"internalisation_rate": "0.4 1/h"}``); checked like the file's
    time_courses : record states and rules every ``output.time_step``

    Returns
    -------
    RunResult
        ``.survival``, ``.summary``, ``.timecourses()``, ``.to_xarray()``, ``.member()``.
    """
    sc = _scenario(scenario)
    if parameters:
        sc = with_parameters(sc, parameters)
    return _run(sc, time_courses=time_courses, solver=solver)


def bands(
    scenario: Scenario | str | Path,
    *,
    draws: int = 200,
    posterior: str | Path | dict | None = None,
    seed: int = 0,
    solver: str | None = None,
):
    """95 % prediction bands of a scenario's survival from posterior draws (``exosim run --bands``).

    Parameters
    ----------
    draws : posterior draws to run, as one batch
    posterior : a calibration record with a posterior (``calibration.yaml`` of
        ``exosim calibrate --sample``, as a path or a mapping); default the catalogue's
    seed : picks the draws
    solver : backend; default the scenario's

    Returns
    -------
    :class:`~exosim.analysis.posterior.Bands`
        ``.survival`` and ``.summary`` rows (``.to_df()``, ``.summary_df()``), ``.params``.
    """
    from exosim.analysis.posterior import prediction_bands

    record = posterior
    if isinstance(posterior, (str, Path)):
        from exosim.scenario.load import read_yaml_mapping

        record = read_yaml_mapping(Path(posterior).read_bytes(), str(posterior), "a calibration record")
    return prediction_bands(_scenario(scenario), record, draws=draws, seed=seed, solver=solver)


@dataclass(frozen=True)
class SensitivityResult:
    """A sensitivity analysis: the indices per output and parameter, the samples and failures.

    Attributes
    ----------
    analysis : :class:`exosim.analysis.sensitivity.Analysis` (indices, samples, values, failures)
    arm, control_arm : analysed arm and the control it is compared with
    inert : factors that do not occur in the scenario (sampled, without effect)
    scenario : the scenario's name
    """

    analysis: Analysis
    arm: str
    control_arm: str | None
    inert: tuple[str, ...] = ()
    #: the analysed scenario's name (the figure's title)
    scenario: str = ""

    def to_df(self) -> pandas.DataFrame:
        """The indices (indices.csv): one row per output and parameter."""
        import pandas as pd

        return pd.DataFrame(self.analysis.indices)

    def samples(self) -> pandas.DataFrame:
        """Sampled parameter values, outputs and status per sample (samples.csv)."""
        import pandas as pd

        a = self.analysis
        df = pd.DataFrame(a.samples, columns=list(a.space.names))
        for k, name in enumerate(a.outputs):
            df[name] = a.values[:, k]
        df["status"] = ["failed" if f else "ok" for f in a.failed]
        return df

    def plot(self, path: str | Path) -> Path:
        """Tornado (local), mu*-sigma (Morris) or S1/ST bars (Sobol), written to ``path``."""
        from exosim.io.figures import plot_analysis

        title = ", ".join([t for t in (self.scenario, f"arm '{self.arm}'") if t])
        plot_analysis(self.analysis, Path(path), title=f"{title}, {self.analysis.samples.shape[0]} samples")
        return Path(path)


def sensitivity(
    scenario: Scenario | str | Path,
    *,
    method: str = "sobol",
    group: str | None = None,
    params: Sequence[str] = (),
    N: int = 1024,
    seed: int = 0,
    arm: str | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    backend: str = "auto",
    workers: int = 1,
) -> SensitivityResult:
    """Local, Morris or Sobol sensitivity of the survival outputs of one arm.

    Parameters
    ----------
    scenario : scenario or path; needs a control arm and the analysed arm
    method : ``local``, ``morris`` or ``sobol``
    group, params : parameter group (``uptake``, ``release``, ``cargo``, ``repair``, ``immune``) and/or
        keys (a sequence, or one comma-separated string as on the command line)
    N : Sobol base samples (a power of two) or Morris trajectories
    seed : seed of sampling and bootstrap
    arm : analysed arm (default: the first non-control arm)
    ranges : key -> (low, high), overriding the table's ranges
    backend : integrator (``auto``: numba when installed)
    workers : worker processes

    Returns
    -------
    SensitivityResult
    """
    from exosim.analysis import sensitivity as _sa
    from exosim.analysis.engine import make_engine

    sc = _scenario(scenario)
    if isinstance(params, str):  # "a,b": the command line's form (a string is not a sequence of keys)
        params = [p.strip() for p in params.split(",") if p.strip()]
    space = _sa.ParameterSpace.from_table(group, list(params), dict(ranges or {}))
    engine = make_engine(workers)
    try:
        ev = _sa.ScenarioEvaluator(sc, arm=arm, engine=engine, backend=backend, progress=False)
        analysis = _sa.analyse(ev, space, method, N, seed)
    finally:
        engine.close()
    control = None if ev.control is None else ev.scenario.arms[ev.control].name
    inert = tuple(_sa.inert_factors(ev.scenario, space.names))
    return SensitivityResult(analysis, ev.target_name, control, inert, scenario=sc.name)


@dataclass(frozen=True)
class FitOutcome:
    """A fit: the problem (data, parameters, ranges) and its result (estimates, intervals, profiles).

    ``estimates`` is the table of estimates.csv; ``intervals`` maps each parameter to its
    (low, high) profile-likelihood interval.
    """

    problem: FitProblem
    result: FitResult

    @property
    def estimates(self) -> pandas.DataFrame:
        """Per parameter: estimate, interval, unit, nominal value, search range, open ends."""
        import pandas as pd

        from exosim.io.outputs import fit_estimate_rows

        return pd.DataFrame(fit_estimate_rows(self.problem, self.result))

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """Parameter -> (low, high) of its profile-likelihood interval."""
        r = self.result
        return {n: (float(lo), float(hi)) for n, lo, hi in zip(r.params, r.low, r.high)}

    def to_df(self) -> pandas.DataFrame:
        """Same as :attr:`estimates`."""
        return self.estimates

    def plot(self, path: str | Path) -> Path:
        """Data over the fitted model, one panel per data file, and the profiles; written to ``path``."""
        from exosim.io.figures import plot_fit

        plot_fit(self.problem, self.result, Path(path))
        return Path(path)


def fit(
    scenario: Scenario | str | Path,
    *,
    data: Sequence[str | Path],
    params: Sequence[str],
    likelihood: str = "auto",
    normalise: str = "control",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    level: float = 0.95,
    backend: str = "auto",
) -> FitOutcome:
    """Maximum-likelihood fit of ``params`` to data files with profile-likelihood intervals.

    Parameters
    ----------
    scenario : scenario or path
    data : CSV files fitted jointly (survival points, colony counts or time courses)
    params : parameter keys (every instance) or ``population.key``
    likelihood : ``auto`` (quasi-Poisson for colony counts, else normal), ``normal``,
        ``poisson`` or ``quasipoisson``
    normalise : survival relative to the ``control`` arm at dose 0, ``within_arm`` or ``none``
    ranges : search ranges (default: the parameter table's)
    level : confidence level of the intervals
    backend : integrator (``auto``: numba when installed)

    Returns
    -------
    FitOutcome
    """
    from exosim.analysis import fit as _fit

    sc = _scenario(scenario)
    datasets = [_fit.read_observations(path, sc) for path in data]
    lik = _fit.default_likelihood(datasets) if likelihood == "auto" else likelihood
    problem = _fit.FitProblem(
        sc, datasets, list(params), likelihood=lik, normalise=normalise, ranges=dict(ranges or {}), backend=backend
    )
    return FitOutcome(problem, _fit.fit(problem, level=level))


def export_petab(
    scenario: Scenario | str | Path,
    *,
    data: Sequence[str | Path],
    params: Sequence[str],
    outdir: str | Path,
    likelihood: str = "auto",
    normalise: str = "control",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    backend: str = "auto",
) -> PetabExport:
    """Write the fit problem of :func:`fit` as a PEtab v1 problem (``exosim export-petab``).

    One SBML model serves every arm and dose the data use (what differs between them is a
    parameter the condition table sets); the tables are checked with PEtab's linter before
    anything is written. What PEtab v1 cannot express (survival relative to another member,
    Poisson colony counts) is described in :mod:`exosim.io.petab` and in the problem's README.md.

    Parameters
    ----------
    scenario : scenario or path
    data : CSV files in the formats of :func:`fit`
    params : parameter keys (every instance) or ``population.key``
    outdir : folder for the problem (its earlier export files are replaced as a whole)
    likelihood, normalise : as for :func:`fit`
    ranges : bounds (default: the parameter table's documented range; log10 scale where positive)
    backend : integrator of the reference-survival check

    Returns
    -------
    :class:`exosim.io.petab.PetabExport`
        The tables (pandas), the SBML text, the exosim fit problem and ``files`` written.

    Examples
    --------
    >>> exosim.export_petab("scenarios/iccm_bystander_medium_transfer.yaml",  # doctest: +SKIP
    ...     data=["scenarios/data/iccm_relative_survival.csv"],
    ...     params=["recipients.bystander_susceptible_fraction"], outdir="iccm-petab",
    ...     ranges={"recipients.bystander_susceptible_fraction": (0.05, 0.6)})
    """
    from exosim.io.petab import export_petab as _export

    return _export(
        _scenario(scenario),
        data,
        params,
        outdir,
        likelihood=likelihood,
        normalise=normalise,
        ranges=ranges,
        backend=backend,
    )


def fit_petab(
    problem: str | Path,
    *,
    scenario: Scenario | str | Path | None = None,
    likelihood: str = "auto",
    ranges: Mapping[str, tuple[float, float]] | None = None,
    level: float = 0.95,
    backend: str = "auto",
) -> FitOutcome:
    """:func:`fit` of a PEtab problem written by :func:`export_petab` (``exosim fit --petab``).

    The problem's measurement and condition tables are mapped back to the scenario's members
    (arm, dose) and to exosim's data formats, its estimated parameters (``estimate`` 1, bounds)
    to exosim keys through ``parameter_map.csv``; see :func:`exosim.io.petab.read_petab`.

    Parameters
    ----------
    problem : ``problem.yaml`` or its folder
    scenario : the scenario to fit (default: the file the export recorded, with its sha256;
        another file is fitted with a :class:`exosim.io.petab.PetabImportWarning`)
    likelihood : ``auto`` (the exported one) or ``poisson`` / ``quasipoisson`` for colony counts
    ranges : bounds replacing those of the parameter table
    level : confidence level of the intervals
    backend : integrator (``auto``: numba when installed)

    Returns
    -------
    FitOutcome

    Examples
    --------
    >>> exosim.fit_petab("iccm-petab/problem.yaml").estimates  # doctest: +SKIP
    """
    from exosim.analysis import fit as _fit
    from exosim.io.petab import read_petab

    imported = read_petab(problem, scenario)
    fit_problem = imported.fit_problem(
        likelihood=None if likelihood == "auto" else likelihood, ranges=ranges, backend=backend
    )
    return FitOutcome(fit_problem, _fit.fit(fit_problem, level=level))
