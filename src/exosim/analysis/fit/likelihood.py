"""Likelihoods of survival, colony and time-course data, and goodness of fit.

* survival and time courses: Gaussian (weighted least squares);
* colony counts: Poisson, or quasi-Poisson with a dispersion ``phi`` estimated from
  the Pearson statistic; ``colonies ~ seeded * PE * SF`` with the plating efficiency
  PE profiled out in closed form, ``PE = sum(colonies) / sum(seeded * SF)``
  (CFAssay's model, Braselmann et al. 2015).

References
----------
.. [1] Braselmann H et al. (2015) CFAssay: statistical analysis of the colony formation
   assay. Radiat Oncol 10:223. doi:10.1186/s13014-015-0529-y
.. [2] McCullagh P, Nelder JA (1989) Generalized Linear Models, 2nd ed. (quasi-likelihood).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["LIKELIHOODS", "GAUSSIAN", "negative_log_likelihood", "expected_colonies", "goodness_of_fit"]

LIKELIHOODS = ("normal", "poisson", "quasipoisson")
#: data kinds with a Gaussian likelihood
GAUSSIAN = ("survival", "timecourse")


def negative_log_likelihood(problem, pred: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (up to a constant) per row of predictions (R, n_observations)."""
    total = np.zeros(pred.shape[0])
    for ds, sl in zip(problem.datasets, problem.slices):
        p, y, w = pred[:, sl], ds.y, ds.w
        if ds.kind in GAUSSIAN:
            total += 0.5 * np.sum(((y - p) / w) ** 2, axis=1)
            continue
        mu = expected_colonies(y, w, p)[1]
        total += np.sum(mu - y * np.log(np.where(mu > 0, mu, 1e-300)), axis=1) / problem.dispersion
    return total


def expected_colonies(colonies, seeded, sf) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood plating efficiency given SF (rows of ``sf``), ``sum(colonies) /
    sum(seeded * SF)``, and the expected colonies ``PE * seeded * SF`` (CFAssay's model)."""
    per_unit_pe = seeded * sf
    pe = colonies.sum() / per_unit_pe.sum(axis=1, keepdims=True)
    return pe, pe * per_unit_pe


def goodness_of_fit(problem, pred: np.ndarray, scales: dict) -> tuple[dict, float, dict]:
    """Goodness of fit (totals and, for several files, per file), quasi-Poisson dispersion, nuisance estimates."""
    k = len(problem.params)
    n = sum(d.y.size for d in problem.datasets)
    dof = n - k - problem.n_nuisance  # 0 or less: the data cannot test the fit (p_value None)
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
            pe, mu = expected_colonies(y, ds.w, p[None, :])
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
    gof["p_value"] = float(stats.chi2.sf(chi2 + dev, dof)) if dof > 0 else None
    if len(per_file) > 1:
        gof["files"] = per_file
    return gof, phi, nuisance
