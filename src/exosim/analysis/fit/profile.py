"""Profile-likelihood intervals.

For each parameter the others are re-optimised on a grid of fixed values; the
interval is where ``2 (NLL - NLL_min)`` stays below the chi-square (1 d.o.f.)
quantile.  With a single parameter the profile is the likelihood itself, computed
in one batch.  A side where the profile stays below the threshold up to the search
range is reported open: the data do not identify the parameter there.

References
----------
.. [1] Raue A et al. (2009) Structural and practical identifiability analysis of partially
   observed dynamical models by exploiting the profile likelihood. Bioinformatics 25:1923.
   doi:10.1093/bioinformatics/btp358
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["profile_intervals", "crossing"]


def profile_intervals(problem, x_hat: np.ndarray, f_hat: float, minimise, level: float = 0.95, points: int = 25):
    """Profile-likelihood intervals around the estimate ``x_hat`` (log10) with NLL ``f_hat``.

    ``minimise(problem, x0, free, fixed)`` re-optimises the free coordinates.  Returns the
    lower and upper ends (log10), the profiles ({parameter: {log10_value, statistic}}) and
    per parameter the open sides ("", "low", "high" or "low, high").
    """
    k = len(problem.params)
    lo, hi = problem.log_bounds
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
                _, prof[j], _ = minimise(problem, fixed, free, fixed)
        stat = 2 * (prof - f_hat)
        profiles[problem.params[i]] = {"log10_value": grid.tolist(), "statistic": stat.tolist()}
        low[i], high[i] = crossing(grid, stat, x_hat[i], crit)
        finite = np.where(np.isfinite(stat), stat, np.inf)
        open_ends.append(", ".join(side for side, v in (("low", finite[0]), ("high", finite[-1])) if v < crit))
    return low, high, profiles, open_ends


def crossing(grid: np.ndarray, stat: np.ndarray, x_hat: float, crit: float) -> tuple[float, float]:
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
