"""gamma-H2AX foci as a marker of DSBs (docs/model.md section 3.4): closed forms and no feedback."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import as_hypothesis, scenario_from
from conftest import single_well as _single_well

Y, T_HALF = 35.0, 0.28  # hnscc_pooled, parameter table
T_FORM, T_CLEAR = 0.057, 3.4  # foci formation and clearance half-times, parameter table


def single_well(**changes) -> dict:
    """The one-well scenario with gamma-H2AX foci scored."""
    data = _single_well(**changes)
    data["populations"]["cells"]["assays"] = ["foci"]
    return data


def foci_closed_form(dose: float, t: float) -> tuple[float, float]:
    """Acute dose, first-order rejoining at lam (binary misrepair negligible at small doses):
    DSB = B0 e^{-lam t}; M' = kf (DSB - M) - lam M; R' = lam M - kr R, M(0) = R(0) = 0.

    M = B0 e^{-lam t} (1 - e^{-kf t});
    R = lam B0 [(e^{-lam t} - e^{-kr t})/(kr - lam) - (e^{-(kf + lam) t} - e^{-kr t})/(kr - kf - lam)].
    """
    lam, kf, kr = (np.log(2) / h for h in (T_HALF, T_FORM, T_CLEAR))
    b0 = Y * dose
    m = b0 * np.exp(-lam * t) * (1 - np.exp(-kf * t))
    r = (
        lam
        * b0
        * (
            (np.exp(-lam * t) - np.exp(-kr * t)) / (kr - lam)
            - (np.exp(-(kf + lam) * t) - np.exp(-kr * t)) / (kr - kf - lam)
        )
    )
    return m, r


@pytest.mark.parametrize("t", [0.1, 0.5, 2.0, 8.0])
def test_foci_after_an_acute_dose_follow_the_closed_form(t):
    dose = 0.01  # kappa*DSB/lambda ~ 2e-5: the binary term is below the tolerance
    data = single_well(solver={"rtol": 1e-10, "atol": 1e-13})
    data["dose_grid"] = {"values": [dose], "unit": "Gy"}
    data["timeline"][1]["at"] = f"{t} h"
    res = exosim.run(scenario_from(data), time_courses=False)
    m, r = foci_closed_form(dose, t)
    np.testing.assert_allclose(res.state("cells.foci_on_breaks")[0], m, rtol=1e-4)
    np.testing.assert_allclose(res.state("cells.foci_after_rejoining")[0], r, rtol=1e-4)


def test_foci_peak_after_the_breaks_and_outlive_them():
    """The marker lags: DSBs are highest at the irradiation, foci some minutes later, and foci
    remain hours after the breaks are rejoined."""
    t = np.linspace(0, 12, 12001)
    m, r = foci_closed_form(1.0, t)
    foci = m + r
    dsb = Y * np.exp(-np.log(2) / T_HALF * t)
    peak = t[np.argmax(foci)]
    assert 0.1 < peak < 0.7  # 6-40 min, the range of the published peaks
    assert foci[t == 4.0][0] > 5 * dsb[t == 4.0][0]


def test_foci_feed_nothing_back():
    """No rate or rule outside the marker reads the foci, so survival and the LQ coefficients
    do not depend on the marker's rates (to the integrator's tolerance: the extra states take
    part in step-size control)."""
    import re

    from exosim.model.modules.repair import repair

    block = repair("cells")
    marker = {"foci", "foci_on_breaks", "foci_after_rejoining", "foci_formation_rate", "foci_clearance_rate"}
    for item in [*block.rates, *block.rules]:
        name = getattr(item, "state", None) or item.name
        if name in marker:
            continue
        assert not marker & set(re.findall(r"[A-Za-z_]\w*", item.expr)), name
    tight = {"rtol": 1e-10, "atol": 1e-13}
    base = single_well(solver=tight)
    other = as_hypothesis(
        single_well(
            solver=tight,
            parameters={"cells.foci_formation_half_time": "0.2 h", "cells.foci_clearance_half_time": "0.7 h"},
        )
    )
    a = exosim.run(scenario_from(base), time_courses=False)
    b = exosim.run(scenario_from(other), time_courses=False)
    np.testing.assert_allclose(a.surviving_fraction, b.surviving_fraction, rtol=1e-8)
    irradiated = a.grid > 0
    assert np.all(np.abs(a.state("cells.foci_after_rejoining") - b.state("cells.foci_after_rejoining"))[irradiated] > 0)


def test_foci_are_built_only_where_the_assay_is_scored():
    """Without ``assays: [foci]`` the model has no marker states (they would set the step size
    of every run); an observable of foci then names the population and the missing assay."""
    plain = exosim.compile_scenario(scenario_from(_single_well()))
    scored = exosim.compile_scenario(scenario_from(single_well()))
    names = {s.name for s in plain.model.states}
    assert "cells__dsb" in names and "cells__foci_on_breaks" not in names
    assert "cells__foci_on_breaks" in {s.name for s in scored.model.states}
