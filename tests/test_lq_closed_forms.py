"""Kinetic survival against closed forms: exact acute solution, LQ, Lea-Catcheside (docs/model.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import scenario_from, single_well

Y, ALPHA0, BETA0, T_HALF, SHARE = 35.0, 0.22, 0.0272, 0.28, 0.2  # hnscc_pooled, parameter table
SHARE_F = 0.1  # ferroptotic share of alpha0, parameter table
S_C, T_SLOW = 0.1, 2.68  # complex (slowly rejoined) share of the DSBs and their half-time, parameter table
ONE_CLASS = {"cells.slow_repair_share": 0.0}  # the one-class model, for the exact closed form


def calibrated(s_c: float = S_C):
    """Calibrated constants (docs/model.md section 4): kappa = beta0/(Y^2 T_b), gamma =
    s alpha0/(Y tau), with the mean break lifetime tau and the pair time T_b of the two classes."""
    lam, lam_s = np.log(2) / T_HALF, np.log(2) / T_SLOW
    tau = (1 - s_c) / lam + s_c / lam_s
    t_b = (1 - s_c) ** 2 / (2 * lam) + 2 * s_c * (1 - s_c) / (lam + lam_s) + s_c**2 / (2 * lam_s)
    return {
        "lam": lam,
        "lam_s": lam_s,
        "kappa": BETA0 / (Y**2 * t_b),
        "gamma": SHARE * ALPHA0 / (Y * tau),
        "mis": (1 - SHARE - SHARE_F) * ALPHA0 / Y,
    }


def exact_acute_neg_log_sf(dose):
    """One repair class: dB/dt = -mu B - k B^2, B(0) = Y D integrates in closed form:
    int B dt = ln(1 + k B0/mu)/k, so L + A = mis*mu*I + (B0 - mu*I) + gamma*I; lipid peroxides
    D*e^{-k_p t} commit F = gamma_F*D/k_p = SHARE_F*alpha0*D to ferroptosis."""
    c = calibrated(0.0)
    b0 = Y * np.asarray(dose, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        integral = np.where(b0 > 0, np.log1p(c["kappa"] * b0 / c["lam"]) / c["kappa"], 0.0)
    ferroptosis = SHARE_F * ALPHA0 * np.asarray(dose, float)
    return c["mis"] * c["lam"] * integral + (b0 - c["lam"] * integral) + c["gamma"] * integral + ferroptosis


TIGHT = {"rtol": 1e-10, "atol": 1e-13}


@pytest.fixture(scope="module")
def acute():
    return exosim.run(scenario_from(single_well(solver=TIGHT)), time_courses=False)


def test_acute_survival_of_one_repair_class_matches_exact_solution():
    res = exosim.run(scenario_from(single_well(solver=TIGHT, parameters=ONE_CLASS)), time_courses=False)
    expected = np.exp(-exact_acute_neg_log_sf(res.grid))
    np.testing.assert_allclose(res.surviving_fraction, expected, rtol=1e-7)


def test_breaks_of_the_two_classes_decay_biexponentially():
    """At a dose where binary misrejoining is negligible, DSBs after an acute dose are
    Y D ((1 - s) e^{-lambda t} + s e^{-lambda_s t}) and the complex ones Y D s e^{-lambda_s t}."""
    c = calibrated()
    dose = 0.01
    for t in (0.25, 1.0, 6.0):
        data = single_well(solver=TIGHT, dose_grid={"values": [dose], "unit": "Gy"})
        data["timeline"][1]["at"] = f"{t} h"
        res = exosim.run(scenario_from(data), time_courses=False)
        slow = Y * dose * S_C * np.exp(-c["lam_s"] * t)
        np.testing.assert_allclose(res.state("cells.complex_dsb")[0], slow, rtol=1e-4)
        np.testing.assert_allclose(
            res.state("cells.dsb")[0], Y * dose * (1 - S_C) * np.exp(-c["lam"] * t) + slow, rtol=1e-4
        )


def test_acute_survival_matches_lq_within_first_order_term(acute):
    """-ln SF differs from alpha0*D + beta0*D^2 by a term of relative order kappa*Y*D/lambda_s
    (binary misrejoining depletes the breaks; the complex ones live longest)."""
    c = calibrated()
    d = acute.grid
    kinetic = -np.log(acute.surviving_fraction)
    lq = ALPHA0 * d + BETA0 * d**2
    x = c["kappa"] * Y * d / c["lam_s"]
    assert np.all(np.abs(kinetic - lq) <= x * lq + 1e-12)
    # and the deviation really is of that order, not an accident of zero (the bound takes the
    # slow class's rate; nine breaks in ten are fast, so the deviation sits an order below it)
    assert np.abs(kinetic - lq)[-1] > 0.03 * (x * lq)[-1]


def test_effective_coefficients_of_the_control_equal_the_cell_line(acute):
    np.testing.assert_allclose(acute.reference["alpha_eff"], ALPHA0, rtol=1e-12)
    np.testing.assert_allclose(acute.reference["beta_eff"], BETA0, rtol=1e-12)


@pytest.mark.parametrize("duration_h", [0.1, 0.5, 2.0, 8.0])
def test_protracted_dose_reproduces_lea_catcheside(duration_h):
    """Constant dose rate over T: -ln SF = alpha D + beta G D^2, G of the two classes
    (exosim.lea_catcheside), from the one-class G_i = 2(x_i - 1 + e^-x_i)/x_i^2, x_i = mu_i T."""
    doses = np.array([2.0, 4.0, 8.0])
    data = single_well(solver=TIGHT)
    results = []  # one run per dose: the dose rate is chosen so each dose takes duration_h
    for d in doses:
        data["dose_grid"] = {"values": [float(d)], "unit": "Gy"}
        data["timeline"][0]["irradiate"]["dose_rate"] = f"{d / duration_h} Gy/h"
        results.append(exosim.run(scenario_from(data), time_courses=False).surviving_fraction[0])
    kinetic = -np.log(np.array(results))
    c = calibrated()

    def one(mu):
        return 2 * (mu * duration_h - 1 + np.exp(-mu * duration_h)) / (mu * duration_h) ** 2

    lam, lam_s, w = c["lam"], c["lam_s"], np.array([1 - S_C, S_C])
    mu = np.array([lam, lam_s])
    g_i = one(mu)
    pair = w[:, None] * w[None, :] / (mu[:, None] + mu[None, :])
    g = (pair * (g_i[:, None] + g_i[None, :]) / 2).sum() / pair.sum()
    lq = ALPHA0 * doses + BETA0 * g * doses**2
    x = c["kappa"] * Y * doses / c["lam_s"]
    assert np.all(np.abs(kinetic - lq) <= x * lq)
    np.testing.assert_allclose(exosim.lea_catcheside(lam, duration_h, lam_s, S_C), g, rtol=1e-12)
    np.testing.assert_allclose(exosim.lea_catcheside(lam, duration_h), one(lam), rtol=1e-12)
    # the protraction factor of the two classes lies between those of each class alone
    # (slow repair spares less)
    assert one(lam) < g < one(lam_s)


def test_protraction_spares_and_lea_catcheside_limits():
    assert exosim.lea_catcheside(2.0, 0.0) == pytest.approx(1.0)
    assert exosim.lea_catcheside(2.0, 1e-6) == pytest.approx(1.0, rel=1e-5)
    # long irradiation: G -> 2/(mu T)
    assert exosim.lea_catcheside(2.0, 1e4) == pytest.approx(2 / 2e4, rel=1e-3)
    g = exosim.lea_catcheside(2.0, np.array([0.1, 1, 10]))
    assert np.all(np.diff(g) < 0)


def test_fractionation_with_full_repair_multiplies_single_fraction_survival():
    """n well-separated fractions of d: SF = SF(d)^n (complete repair between fractions)."""
    # 72 h apart: complex breaks (half-time 2.7 h) are rejoined to 1e-8 between fractions
    base = single_well(dose_grid={"values": [2.0], "unit": "Gy"}, solver=TIGHT)
    base["timeline"][1]["at"] = "72 h"
    one = exosim.run(scenario_from(base), time_courses=False).surviving_fraction[0]
    frac = single_well(dose_grid={"values": [10.0], "unit": "Gy"}, solver=TIGHT)
    frac["timeline"][0]["irradiate"].update({"fractions": 5, "interval": "72 h"})
    frac["timeline"][1]["at"] = "360 h"
    five = exosim.run(scenario_from(frac), time_courses=False).surviving_fraction[0]
    assert five == pytest.approx(one**5, rel=1e-8)


def test_d10_and_sf2_helpers_on_an_lq_curve():
    d = np.linspace(0, 10, 11)
    sf = np.exp(-(0.3 * d + 0.03 * d**2))
    d10 = exosim.dose_at_survival(d, sf, 0.1)
    assert 0.3 * d10 + 0.03 * d10**2 == pytest.approx(np.log(10), rel=1e-3)
    assert exosim.survival_at_dose(d, sf, 2.0) == pytest.approx(np.exp(-0.72))
    assert np.isnan(exosim.dose_at_survival(d[:3], sf[:3], 0.1))


def test_monotone_cubic_matches_scipy_pchip():
    from scipy.interpolate import PchipInterpolator

    from exosim.model.lq import MonotoneCubic

    rng = np.random.default_rng(7)
    for n in (2, 3, 6, 10):
        x = np.sort(rng.uniform(0, 8, n))
        y = -np.cumsum(rng.uniform(0.01, 1, n))
        q = np.linspace(x[0], x[-1], 57)
        np.testing.assert_allclose(MonotoneCubic(x, y)(q), PchipInterpolator(x, y)(q), atol=1e-12)


def test_ferroptosis_defence_removes_its_share_of_alpha():
    """alpha = alpha0*(1 - s_F*(1 - 1/g_F)) with the GPX4 defence g_F frozen (docs/model.md 4):
    a two-fold GPX4 rise removes half of the ferroptotic share, and beta is untouched."""
    from exosim.model.assemble import Model, PopulationSpec

    m = Model([PopulationSpec("cells", "well", "hn5")], ["well"], ["angptl4"])
    p = np.repeat(m.default_parameters()[None, :], 3, axis=0)
    y = m.initial_state(p)
    g = np.array([1.0, 2.0, 4.0])
    y[:, m.state_index["cells__GPX4_level"]] = g
    obs = m.observe(y, p)
    alpha0, beta0 = 0.289, 0.0289  # hn5, cell-line catalogue
    np.testing.assert_allclose(obs[:, m.observable_index["cells__alpha_eff"]], alpha0 * (1 - SHARE_F * (1 - 1 / g)))
    np.testing.assert_allclose(obs[:, m.observable_index["cells__beta_eff"]], beta0)


def test_acute_ferroptosis_follows_its_closed_form():
    """Lipid peroxides D*exp(-k_p t) commit F = s_F*alpha0*D: the ferroptotic state after an
    acute dose, read at scoring, matches it (the other lesions follow the exact solution above)."""
    data = single_well(solver={"rtol": 1e-10, "atol": 1e-13})
    res = exosim.run(scenario_from(data), time_courses=False)
    np.testing.assert_allclose(res.state("cells.ferroptotic_commitment"), SHARE_F * ALPHA0 * res.grid, rtol=1e-8)


def test_row_summaries_equal_the_scalar_helpers():
    """Sensitivity summarises every sample's curve at once (lq.*_rows): the same numbers as the
    scalar helpers, including curves that never reach 10 % and curves with a missing point."""
    from exosim.model.lq import dose_at_survival_rows, survival_at_dose_rows

    rng = np.random.default_rng(1)
    grid = np.array([0, 1, 2, 4, 6, 8.0])
    a, b = rng.uniform(0.05, 0.6, 200), rng.uniform(0.005, 0.08, 200)
    sf = np.exp(-(a[:, None] * grid + b[:, None] * grid**2))
    sf[3, 2] = np.nan  # a failed member: the scalar path
    sf[5] = np.exp(-0.01 * grid)  # never reaches 10 %
    d10 = np.array([exosim.dose_at_survival(grid, row, 0.1) for row in sf])
    np.testing.assert_array_equal(dose_at_survival_rows(grid, sf, 0.1), d10)
    assert np.isnan(d10[5]) and np.isfinite(d10[3])
    for dose in (2.0, 3.0, 9.0):
        expected = np.array([exosim.survival_at_dose(grid, row, dose) for row in sf])
        np.testing.assert_array_equal(survival_at_dose_rows(grid, sf, dose), expected)
