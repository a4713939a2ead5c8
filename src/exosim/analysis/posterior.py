"""Posterior sampling of calibrated parameters, and prediction bands from its draws.

The likelihood is the calibration objective (:class:`~exosim.analysis.calibrate.CalibrationObjective`):
``log L = -chi2 / 2`` over the ``calibration`` entries only, each entry's band read as
+/- 2 standard deviations.  The prior of every parameter is log-uniform over its documented
range (or a given range).  The sampler is emcee's affine-invariant ensemble (Foreman-Mackey
et al. 2013); its walkers are evaluated as one batch, each protocol run once for all of them
(:func:`~exosim.analysis.evidence.run_evidence_sets`).

Diagnostics follow emcee's guidance (Goodman & Weare 2010; Foreman-Mackey et al. 2013):
the integrated autocorrelation time ``tau`` of each parameter, an effective sample size
``walkers * kept_steps / tau``, the acceptance fraction, and ``converged`` when the chain is
longer than :data:`TAU_MULTIPLE` autocorrelation times.

The posterior of the catalogue (``posterior.yaml`` beside the other catalogues) is written by
``exosim calibrate --sample N --write-catalogue``; :func:`prediction_bands` runs a scenario
for draws of it and gives each surviving fraction a 95 % prediction band.

References
----------
Foreman-Mackey D, Hogg DW, Lang D, Goodman J 2013 emcee: the MCMC hammer.
PASP 125:306, doi:10.1086/670067.
Goodman J, Weare J 2010 Ensemble samplers with affine invariance.
Commun Appl Math Comput Sci 5:65, doi:10.2140/camcos.2010.5.65.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from exosim.analysis.calibrate import CalibrationObjective, calibration_objective, search_bounds
from exosim.analysis.evidence import Evidence

__all__ = [
    "Posterior",
    "sample_posterior",
    "TAU_MULTIPLE",
    "posterior_from_record",
    "Bands",
    "BandsError",
    "prediction_bands",
]

#: a chain is called converged when it is longer than this many autocorrelation times (emcee docs)
TAU_MULTIPLE = 50
#: draws kept in the catalogue's posterior (thinned over the kept chain)
KEEP_DRAWS = 400


@dataclass
class Posterior:
    """Draws of the calibrated parameters and the sampler's diagnostics.

    Attributes
    ----------
    params : parameter names (``key``, ``cell_line.key``, ``cargo.key`` ...)
    bounds : prior range of each (log-uniform)
    draws : ndarray (S, k), values (not logs), after burn-in, thinned
    chi_square : ndarray (S,), objective of each draw
    tau : integrated autocorrelation time of each parameter (steps)
    ess : effective sample size of each parameter
    acceptance : mean acceptance fraction of the walkers
    walkers, steps, burn, thin, seed : the run
    converged : steps > TAU_MULTIPLE * max(tau)
    evaluations : parameter sets evaluated; seconds : wall time
    """

    params: list[str]
    bounds: dict[str, tuple[float, float]]
    draws: np.ndarray
    chi_square: np.ndarray
    tau: np.ndarray
    ess: np.ndarray
    acceptance: float
    walkers: int
    steps: int
    burn: int
    thin: int
    seed: int
    converged: bool
    evaluations: int = 0
    seconds: float = 0.0
    entries: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Median and central 95 % interval of each parameter, with its diagnostics."""
        out = {}
        for j, name in enumerate(self.params):
            lo, med, hi = np.percentile(self.draws[:, j], [2.5, 50.0, 97.5])
            out[name] = {
                "median": float(med),
                "interval_95": [float(lo), float(hi)],
                "prior_range": [float(b) for b in self.bounds[name]],
                "tau_steps": float(self.tau[j]),
                "effective_samples": float(self.ess[j]),
            }
        return out

    def diagnostics(self) -> dict:
        """The sampler's run and its convergence, for outputs and provenance."""
        return {
            "sampler": "emcee EnsembleSampler (stretch move), walkers evaluated as one batch",
            "walkers": self.walkers,
            "steps": self.steps,
            "burn_in_steps": self.burn,
            "thin": self.thin,
            "seed": self.seed,
            "acceptance_fraction": round(float(self.acceptance), 4),
            "autocorrelation_time_steps": {n: float(t) for n, t in zip(self.params, self.tau)},
            "effective_sample_size": {n: float(e) for n, e in zip(self.params, self.ess)},
            "converged": self.converged,
            "convergence_rule": f"steps > {TAU_MULTIPLE} x the longest autocorrelation time",
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 1),
        }


def sample_posterior(
    ev: Evidence,
    params: Sequence[str],
    *,
    ranges: dict[str, tuple[float, float]] | None = None,
    start: dict[str, float] | None = None,
    walkers: int = 16,
    steps: int = 500,
    seed: int = 0,
    solver: str | None = None,
    objective: CalibrationObjective | None = None,
) -> Posterior:
    """Sample the posterior of ``params`` given the calibration entries of ``ev``.

    Parameters
    ----------
    start : centre of the walkers' initial ball (default: the catalogue values, clipped
        into the ranges); a calibration's estimates are a good start
    walkers : ensemble size (at least twice the number of parameters, even)
    steps : steps of every walker; burn-in is the larger of 2 max(tau) and steps / 5
    solver : backend; default ``auto`` (the compiled one when numba is installed: the
        walkers' batch then costs about 0.3 s per step here instead of 2 s)
    objective : the objective to use (tests); default the calibration objective of ``ev``
    """
    import emcee

    params = list(params)
    k = len(params)
    if walkers < 2 * k or walkers % 2:
        raise ValueError(f"walkers must be even and at least 2 x {k} parameters, got {walkers}")
    if objective is None:
        objective, _ = calibration_objective(ev, params, solver=solver or "auto")
    bounds, nominal = search_bounds(params, ranges)
    lb = np.log([bounds[n][0] for n in params])
    ub = np.log([bounds[n][1] for n in params])

    def log_prob(z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z)
        out = np.full(z.shape[0], -np.inf)
        inside = np.all((z >= lb) & (z <= ub), axis=1)
        if inside.any():
            out[inside] = -0.5 * objective.batch(np.exp(z[inside]))
        return out

    rng = np.random.default_rng(seed)
    centre = np.log([max((start or nominal).get(n, nominal[n]), bounds[n][0]) for n in params])  # 0: the low end
    centre = np.clip(centre, lb + 1e-6, ub - 1e-6)
    width = 0.02 * (ub - lb)
    z0 = np.clip(centre + width * rng.standard_normal((walkers, k)), lb + 1e-9, ub - 1e-9)
    sampler = emcee.EnsembleSampler(walkers, k, log_prob, vectorize=True)
    sampler.random_state = np.random.RandomState(seed).get_state()
    t0 = time.perf_counter()
    sampler.run_mcmc(z0, steps, progress=False)
    seconds = time.perf_counter() - t0
    tau = np.asarray(sampler.get_autocorr_time(tol=0, quiet=True), dtype=float)
    # a chain too short for an estimate gives a non-finite or non-positive one (emcee's
    # estimator on a few steps can be negative): count it as the whole chain (not converged)
    tau = np.where(np.isfinite(tau) & (tau > 0), tau, float(steps))
    burn = int(min(steps // 2, max(steps // 5, math.ceil(2 * tau.max()))))
    chain = sampler.get_chain(discard=burn, flat=True)
    lp = sampler.get_log_prob(discard=burn, flat=True)
    thin = max(1, chain.shape[0] // KEEP_DRAWS)
    keep = np.arange(0, chain.shape[0], thin)[:KEEP_DRAWS]
    ess = walkers * (steps - burn) / np.maximum(tau, 1.0)
    return Posterior(
        params=params,
        bounds=bounds,
        draws=np.exp(chain[keep]),
        chi_square=-2.0 * lp[keep],
        tau=tau,
        ess=ess,
        acceptance=float(np.mean(sampler.acceptance_fraction)),
        walkers=walkers,
        steps=steps,
        burn=burn,
        thin=thin,
        seed=seed,
        converged=bool(steps > TAU_MULTIPLE * tau.max()),
        evaluations=objective.evaluations,
        seconds=seconds,
        entries=[e.id for e in objective.cal.entries],
    )


def posterior_from_record(record: dict) -> tuple[list[str], np.ndarray]:
    """Parameter names and draws (S, k) of a posterior record (the catalogue's ``posterior.yaml``)."""
    draws = record["draws"]
    names = list(draws["names"])
    values = np.asarray(draws["values"], dtype=float).reshape(-1, len(names))
    return names, values


# ---------------------------------------------------------------------- prediction bands
#: summary columns that get a band (where the scenario has them)
BAND_SUMMARIES = ("sf2_within_arm", "d10_Gy", "dmf_at_sf0.1", "alpha_eff_per_Gy", "beta_eff_per_Gy2")


class BandsError(ValueError):
    """No posterior to draw from, or one that cannot be read."""


@dataclass
class Bands:
    """95 % prediction bands of a scenario's survival from posterior draws.

    Attributes
    ----------
    params : posterior parameters that occur in the scenario (the others play no part)
    absent : posterior parameters the scenario does not have
    draws, seed : how many draws were run, and the seed that chose them
    survival : one row per member: arm, grid_dose_Gy, sf_vs_untreated median / low / high,
        sf median / low / high, failed_draws
    summary : one row per arm: median / low / high of :data:`BAND_SUMMARIES`
    source : the posterior's provenance (created, evidence hash, exosim version)
    seconds : wall time of the draws' run
    """

    params: list[str]
    absent: list[str]
    draws: int
    seed: int
    survival: list[dict]
    summary: list[dict]
    source: dict
    seconds: float

    def to_df(self):
        """bands.csv as a pandas table: one row per member."""
        import pandas as pd

        return pd.DataFrame(self.survival)

    def summary_df(self):
        """bands_summary.csv as a pandas table: one row per arm."""
        import pandas as pd

        return pd.DataFrame(self.summary)

    def record(self) -> dict:
        """What provenance keeps of the bands."""
        return {
            "parameters": self.params,
            "posterior_parameters_not_in_scenario": self.absent,
            "draws": self.draws,
            "seed": self.seed,
            "interval": "central 95 % of the draws (2.5th to 97.5th percentile)",
            "posterior": self.source,
            "seconds": round(self.seconds, 2),
        }


def _band(values: np.ndarray) -> tuple[float, float, float]:
    ok = values[np.isfinite(values)]
    if not ok.size:
        return math.nan, math.nan, math.nan
    lo, med, hi = np.percentile(ok, [2.5, 50.0, 97.5])
    return float(med), float(lo), float(hi)


def prediction_bands(
    scenario,
    record: dict | None = None,
    *,
    draws: int = 200,
    seed: int = 0,
    solver: str | None = None,
) -> Bands:
    """Run ``scenario`` for ``draws`` posterior draws (one batch) and band its survival.

    Parameters
    ----------
    record : a calibration record with a posterior (``calibration.yaml`` of
        ``exosim calibrate --sample``); default the catalogue's
    draws : draws to run (chosen without replacement when the posterior has enough)
    solver : backend; default the scenario's

    Every draw sets the posterior parameters that occur in the scenario; the scenario's own
    values of everything else stay.  A scenario with none of them gets empty bands.
    """
    from exosim.analysis.batch import BatchModel
    from exosim.model import catalogue as cat
    from exosim.scenario.observables import control_arm, normalise

    if record is None:
        record = cat.calibration()
    if not record or "posterior" not in record:
        raise BandsError(
            "the catalogue has no posterior to draw bands from: run "
            "`exosim calibrate --params ... --sample STEPS --write-catalogue` first"
        )
    try:
        names, values = posterior_from_record(record["posterior"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BandsError(f"the posterior's draws cannot be read: {exc}") from None
    if draws < 1:
        raise BandsError(f"draws must be at least 1, got {draws}")
    source = {
        "created_utc": record.get("created_utc"),
        "evidence_sha256": record.get("evidence_sha256"),
        "exosim_version": record.get("exosim_version"),
        "converged": record["posterior"].get("diagnostics", {}).get("converged"),
    }
    bm = BatchModel(scenario, names, strict=False)
    present = [n for n, cols in zip(names, bm.columns) if cols]
    absent = [n for n in names if n not in present]
    if not present:
        return Bands([], absent, 0, seed, [], [], source, 0.0)
    rng = np.random.default_rng(seed)
    pick = rng.choice(values.shape[0], size=draws, replace=values.shape[0] < draws)
    theta = values[pick]
    t0 = time.perf_counter()
    compiled = bm.compiled(draws)
    res = compiled.run(parameters=bm.parameters(theta), time_courses=False, solver=solver)
    template = bm.template
    n = template.n_members
    sf = np.where(res.status == 0, res.surviving_fraction, np.nan).reshape(draws, n)
    vs = normalise(sf, template.arm_index, template.grid, "control", control_arm(template.arms))
    survival = []
    for i in range(n):
        med, lo, hi = _band(vs[:, i])
        smed, slo, shi = _band(sf[:, i])
        survival.append(
            {
                "arm": template.arms[template.arm_index[i]].name,
                "grid_dose_Gy": float(template.grid[i]),
                "sf_vs_untreated_median": med,
                "sf_vs_untreated_low": lo,
                "sf_vs_untreated_high": hi,
                "sf_median": smed,
                "sf_low": slo,
                "sf_high": shi,
                "failed_draws": int(np.sum(~np.isfinite(sf[:, i]))),
            }
        )
    per_draw = [res.replicate(r, n).summary_rows() for r in range(draws)]
    summary = []
    for a, arm in enumerate(template.arms):
        row: dict = {"arm": arm.name}
        for col in BAND_SUMMARIES:
            if col in per_draw[0][a]:
                med, lo, hi = _band(np.array([float(d[a][col]) for d in per_draw]))
                row.update({f"{col}_median": med, f"{col}_low": lo, f"{col}_high": hi})
        summary.append(row)
    return Bands(present, absent, draws, seed, survival, summary, source, time.perf_counter() - t0)
