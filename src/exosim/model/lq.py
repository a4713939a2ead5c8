"""Linear-quadratic closed forms and survival-curve summaries (docs/model.md section 4).

The effective coefficients ``alpha_eff`` and ``beta_eff`` are rules of the
repair module (one definition, also exported to SBML); this module holds what
acts on whole curves: the Lea-Catcheside dose-protraction factor, LQ survival
of a schedule, and SF2, D10 and the dose-modifying factor of a kinetic curve.

References
----------
.. [1] Lea DE, Catcheside DG (1942) J Genet 44:216-245.
.. [2] Fowler JF (1989) The linear-quadratic formula and progress in
   fractionated radiotherapy. Br J Radiol 62:679. doi:10.1259/0007-1285-62-740-679
.. [3] Sachs RK, Hahnfeldt P, Brenner DJ (1997) Int J Radiat Biol 72:351.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "lea_catcheside",
    "lq_neg_log_survival",
    "dose_at_survival",
    "survival_at_dose",
    "dose_at_survival_rows",
    "survival_at_dose_rows",
    "MonotoneCubic",
]


def lea_catcheside(
    mu: np.ndarray | float,
    duration: np.ndarray | float,
    slow_mu: np.ndarray | float | None = None,
    slow_share: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Lea-Catcheside factor G for a constant dose rate over ``duration``.

    Parameters
    ----------
    mu : float or ndarray, 1/h
        First-order repair rate (``lambda*rho``; of the simple breaks with two classes).
    duration : float or ndarray, h
        Irradiation time; 0 gives the acute value G = 1.
    slow_mu : float or ndarray, 1/h, optional
        Repair rate of the complex breaks (``lambda_s*rho``), with ``slow_share`` of the breaks.
    slow_share : float or ndarray
        Share of the breaks in the slow class (0: one class).

    Returns
    -------
    ndarray
        One class: ``G = 2*(x - 1 + exp(-x))/x^2`` with ``x = mu*duration``.  Two classes with
        shares ``w = (1 - s, s)`` and rates ``mu_i``: breaks of classes i and j made over T meet
        for ``D^2*(G_i + G_j)/(2*(mu_i + mu_j))`` (``G_i`` the one-class factor of ``mu_i``), so
        ``G = sum_ij w_i*w_j*(G_i + G_j)/(2*(mu_i + mu_j)) / sum_ij w_i*w_j/(mu_i + mu_j)``.
    """
    g_fast = _lea_catcheside_one(mu, duration)
    if slow_mu is None:
        return g_fast
    g_slow = _lea_catcheside_one(slow_mu, duration)
    w = np.asarray(slow_share, dtype=float)
    mf, ms = np.asarray(mu, dtype=float), np.asarray(slow_mu, dtype=float)
    pairs = (
        ((1 - w) ** 2, g_fast, 2 * mf),
        (2 * w * (1 - w), (g_fast + g_slow) / 2, mf + ms),
        (w**2, g_slow, 2 * ms),
    )
    num = sum(weight * g / rate for weight, g, rate in pairs)
    den = sum(weight / rate for weight, _, rate in pairs)
    return num / den


def _lea_catcheside_one(mu, duration) -> np.ndarray:
    x = np.asarray(mu, dtype=float) * np.asarray(duration, dtype=float)
    small = x < 1e-4
    xs = np.where(small, 1.0, x)
    g = 2.0 * (xs - 1.0 + np.exp(-xs)) / xs**2
    return np.where(small, 1.0 - x / 3.0, g)


def lq_neg_log_survival(alpha, beta, dose_per_fraction, fractions=1, g=1.0) -> np.ndarray:
    """``-ln SF = n*(alpha*d + beta*G*d^2)`` for n well-separated fractions of d Gy."""
    d = np.asarray(dose_per_fraction, dtype=float)
    return np.asarray(fractions) * (np.asarray(alpha) * d + np.asarray(beta) * np.asarray(g) * d**2)


class MonotoneCubic:
    """Piecewise cubic Hermite interpolant with Fritsch-Carlson slopes (monotone data stay monotone).

    The same construction as ``scipy.interpolate.PchipInterpolator`` (checked
    against it in the tests); written here because importing
    ``scipy.interpolate`` costs about half a second, a quarter of the run
    budget of the CLI.

    References
    ----------
    .. [1] Fritsch FN, Carlson RE (1980) Monotone piecewise cubic interpolation.
       SIAM J Numer Anal 17:238. doi:10.1137/0717021
    """

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = np.asarray(x, float), np.asarray(y, float)
        self.d = _row_slopes(self.x, self.y[None, :])[0]

    def __call__(self, xq: np.ndarray | float) -> np.ndarray:
        xq = np.asarray(xq, float)
        return _row_eval(self.x, self.y[None, :], self.d[None, :], xq.reshape(-1))[0].reshape(xq.shape)


def _ln_curve(doses: np.ndarray, sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve's doses, sorted, and ln SF where SF is finite and positive."""
    order = np.argsort(doses)
    d, s = doses[order], sf[order]
    ok = np.isfinite(s) & (s > 0)
    return d[ok], np.log(s[ok])


def survival_at_dose(doses: np.ndarray, sf: np.ndarray, dose: float) -> float:
    """Surviving fraction at ``dose`` (Gy): exact on a grid point, else monotone PCHIP in ln SF.

    NaN if ``dose`` lies outside the grid.
    """
    doses, sf = np.asarray(doses, float), np.asarray(sf, float)
    hit = np.isclose(doses, dose, rtol=0, atol=1e-12)
    if hit.any():
        return float(sf[hit][0])
    d, y = _ln_curve(doses, sf)
    if d.size < 2 or dose < d[0] or dose > d[-1]:
        return float("nan")
    return float(np.exp(MonotoneCubic(d, y)(dose)))


def dose_at_survival(doses: np.ndarray, sf: np.ndarray, level: float = 0.1) -> float:
    """Smallest dose (Gy) at which the curve reaches ``level`` (D10 for 0.1); NaN if never on the grid."""
    d, y = _ln_curve(np.asarray(doses, float), np.asarray(sf, float))
    if d.size < 2:
        return float("nan")
    return float(_dose_at_level(d, y[None, :], level)[0])


# ---------------------------------------------------------------------- many curves at once
def _row_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes of :class:`MonotoneCubic` for every row of ``y`` (M, G) on one
    grid ``x`` (G,): the same formulas, applied to all rows at once."""
    h = np.diff(x)
    delta = np.diff(y, axis=1) / h
    d = np.zeros_like(y)
    if x.size == 2:
        d[:] = delta[:, :1]
        return d
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same = np.sign(delta[:, 1:]) * np.sign(delta[:, :-1]) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:, :-1] + w2 / delta[:, 1:])
    d[:, 1:-1] = np.where(same, harmonic, 0.0)

    def end(h0, h1, m0, m1):
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        e = np.where(np.sign(e) != np.sign(m0), 0.0, e)
        return np.where((np.sign(m0) != np.sign(m1)) & (np.abs(e) > np.abs(3 * m0)), 3 * m0, e)

    d[:, 0] = end(h[0], h[1], delta[:, 0], delta[:, 1])
    d[:, -1] = end(h[-1], h[-2], delta[:, -1], delta[:, -2])
    return d


def _row_eval(x: np.ndarray, y: np.ndarray, d: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """The interpolants of every row at ``xq``: (Q,) points shared by all rows -> (M, Q); (M, 1),
    one point per row -> (M, 1)."""
    i = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, x.size - 2)
    h = np.diff(x)[i]
    t = (xq - x[i]) / h
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t**2 * (3 - 2 * t), t**2 * (t - 1)
    if xq.ndim == 2:  # one point per row: (M, 1)
        rows = np.arange(y.shape[0])[:, None]
        return h00 * y[rows, i] + h10 * h * d[rows, i] + h01 * y[rows, i + 1] + h11 * h * d[rows, i + 1]
    return h00 * y[:, i] + h10 * h * d[:, i] + h01 * y[:, i + 1] + h11 * h * d[:, i + 1]


def _regular(doses: np.ndarray, sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted grid, and which rows the vectorised path serves (every value finite and > 0)."""
    doses, sf = np.asarray(doses, float), np.atleast_2d(np.asarray(sf, float))
    if doses.size < 2 or np.any(np.diff(doses) <= 0):
        return doses, np.zeros(sf.shape[0], dtype=bool)
    return doses, np.all(np.isfinite(sf) & (sf > 0), axis=1)


def survival_at_dose_rows(doses: np.ndarray, sf: np.ndarray, dose: float) -> np.ndarray:
    """:func:`survival_at_dose` of every row of ``sf`` (M, G) on the grid ``doses`` (G,), at once."""
    sf = np.atleast_2d(np.asarray(sf, float))
    doses, fast = _regular(doses, sf)
    result = np.full(sf.shape[0], np.nan)
    for r in np.flatnonzero(~fast):
        result[r] = survival_at_dose(doses, sf[r], dose)
    if fast.any():
        hit = np.isclose(doses, dose, rtol=0, atol=1e-12)
        if hit.any():
            result[fast] = sf[fast][:, np.flatnonzero(hit)[0]]
        elif doses[0] <= dose <= doses[-1]:
            y = np.log(sf[fast])
            result[fast] = np.exp(_row_eval(doses, y, _row_slopes(doses, y), np.array([dose]))[:, 0])
    return result


def dose_at_survival_rows(doses: np.ndarray, sf: np.ndarray, level: float = 0.1) -> np.ndarray:
    """:func:`dose_at_survival` of every row of ``sf`` (M, G) on the grid ``doses`` (G,), at once."""
    sf = np.atleast_2d(np.asarray(sf, float))
    doses, fast = _regular(doses, sf)
    result = np.full(sf.shape[0], np.nan)
    for r in np.flatnonzero(~fast):
        result[r] = dose_at_survival(doses, sf[r], level)
    if fast.any():
        result[fast] = _dose_at_level(doses, np.log(sf[fast]), level)
    return result


def _dose_at_level(x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """Smallest dose at which each row's interpolant of ln SF ``y`` (M, G) on ``x`` (G,) reaches
    ln ``level``: a scan of 2001 points, then 60 bisections on the first piece that reaches it."""
    d = _row_slopes(x, y)
    target = np.log(level)
    fine = np.linspace(x[0], x[-1], 2001)
    below = _row_eval(x, y, d, fine) - target <= 0
    reached = below.any(axis=1)
    j = np.argmax(below, axis=1)
    out = np.full(y.shape[0], np.nan)
    out[reached & (j == 0)] = fine[0]
    todo = reached & (j > 0)
    if todo.any():
        lo, hi = fine[j[todo] - 1], fine[j[todo]]
        yt, dt = y[todo], d[todo]
        for _ in range(60):  # bisection on a monotone cubic piece
            mid = 0.5 * (lo + hi)
            above = _row_eval(x, yt, dt, mid[:, None])[:, 0] - target > 0
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        out[todo] = 0.5 * (lo + hi)
    return out
