"""gamma-H2AX foci as a marker of DSBs (docs/model.md section 3.4): closed forms and no feedback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS, as_hypothesis, scenario_from
from conftest import single_well as _single_well

Y, T_HALF = 35.0, 0.28  # hnscc_pooled, parameter table
S_C, T_SLOW = 0.1, 2.68  # complex share of the DSBs and their rejoining half-time, parameter table
T_FORM, T_CLEAR = 0.057, 3.4  # foci formation and clearance half-times, parameter table


def single_well(**changes) -> dict:
    """The one-well scenario with gamma-H2AX foci scored."""
    data = _single_well(**changes)
    data["populations"]["cells"]["assays"] = ["foci"]
    return data


def foci_one_class(b0: float, lam: float, t: float) -> tuple[float, float]:
    """Breaks B0 e^{-lam t} of one class (binary misrepair negligible at small doses):
    M' = kf (DSB - M) - lam M; R' = lam M - kr R, M(0) = R(0) = 0.

    M = B0 e^{-lam t} (1 - e^{-kf t});
    R = lam B0 [(e^{-lam t} - e^{-kr t})/(kr - lam) - (e^{-(kf + lam) t} - e^{-kr t})/(kr - kf - lam)].
    """
    kf, kr = (np.log(2) / h for h in (T_FORM, T_CLEAR))
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


def foci_closed_form(dose: float, t: float) -> tuple[float, float, float]:
    """Foci on open breaks, on open complex breaks, and after rejoining: the system is linear
    without binary misrepair, so the two repair classes add (simple: Y D (1 - s), complex: Y D s)."""
    m_f, r_f = foci_one_class(Y * dose * (1 - S_C), np.log(2) / T_HALF, t)
    m_s, r_s = foci_one_class(Y * dose * S_C, np.log(2) / T_SLOW, t)
    return m_f + m_s, m_s, r_f + r_s


@pytest.mark.parametrize("t", [0.1, 0.5, 2.0, 8.0])
def test_foci_after_an_acute_dose_follow_the_closed_form(t):
    dose = 0.01  # kappa*DSB/lambda ~ 2e-5: the binary term is below the tolerance
    data = single_well(solver={"rtol": 1e-10, "atol": 1e-13})
    data["dose_grid"] = {"values": [dose], "unit": "Gy"}
    data["timeline"][1]["at"] = f"{t} h"
    res = exosim.run(scenario_from(data), time_courses=False)
    m, m_s, r = foci_closed_form(dose, t)
    np.testing.assert_allclose(res.state("cells.foci_on_breaks")[0], m, rtol=1e-4)
    np.testing.assert_allclose(res.state("cells.foci_on_complex_breaks")[0], m_s, rtol=1e-4)
    np.testing.assert_allclose(res.state("cells.foci_after_rejoining")[0], r, rtol=1e-4)


def test_foci_peak_after_the_breaks_and_outlive_them():
    """The marker lags: DSBs are highest at the irradiation, foci some minutes later, and foci
    remain hours after the breaks are rejoined."""
    t = np.linspace(0, 12, 12001)
    m, _, r = foci_closed_form(1.0, t)
    foci = m + r
    dsb = Y * ((1 - S_C) * np.exp(-np.log(2) / T_HALF * t) + S_C * np.exp(-np.log(2) / T_SLOW * t))
    peak = t[np.argmax(foci)]
    assert 0.1 < peak < 0.7  # 6-40 min, the range of the published peaks
    assert foci[t == 4.0][0] > 5 * dsb[t == 4.0][0]


def test_foci_feed_nothing_back():
    """No rate or rule outside the marker reads the foci, so survival and the LQ coefficients
    do not depend on the marker's rates (to the integrator's tolerance: the extra states take
    part in step-size control)."""
    import re

    from exosim.model.modules.repair import repair

    block = repair("cells", foci=True)
    marker = {
        "foci",
        "foci_on_breaks",
        "foci_after_rejoining",
        "foci_formation_rate",
        "foci_clearance_rate",
        "break_rejoining_rate",
        "complex_break_rejoining_rate",
        "marked_rejoining_flux",
        "foci_on_complex_breaks",
        "bystander_lesions",
        "bystander_damage_rate",
    }
    assert {"foci_on_breaks", "bystander_lesions"} <= {s.name for s in block.states}
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


def test_bystander_foci_share_the_plateau_of_bystander_survival():
    """Out-of-field cells respond all-or-none (docs/model.md section 3.4): their foci do not
    depend on the in-field dose above threshold (Yang et al. 2005), they scale with the lesion
    rate of responding cells, and that rate changes no survival (the lesions are a marker)."""
    path = SCENARIOS / "partial_field_bystander.yaml"
    data = yaml.safe_load(path.read_text())
    data["dose_grid"]["values"] = [0, 0.5, 8]
    keep = ("in-field release blocked (GW4869)", "half the flask in field")
    data["arms"] = [a for a in data["arms"] if a["name"] in keep]
    data["solver"] = {"rtol": 1e-9, "atol": 1e-12}
    doubled = copy.deepcopy(data)
    doubled["populations"]["out_of_field"]["parameters"] = {"bystander_damage_rate": "1.0 lesions/cell/h"}
    runs = [exosim.run(scenario_from(d, str(path)), time_courses=True) for d in (data, doubled)]
    peaks = []
    for res in runs:
        j = res.model.observable_index["out_of_field__foci"]
        half = np.array(res.arms)[res.arm_index] == "half the flask in field"
        blocked = ~half
        peak = res.observables[:, :, j].max(axis=1)
        peaks.append(peak)
        assert peak[half & (res.grid == 8)][0] == pytest.approx(peak[half & (res.grid == 0.5)][0], rel=0.02)
        assert peak[half & (res.grid == 8)][0] > 1.0  # a few foci per responding cell
        assert np.all(peak[blocked] < 0.01 * peak[half & (res.grid == 8)][0])  # no signal, no response
    np.testing.assert_allclose(runs[0].surviving_fraction, runs[1].surviving_fraction, rtol=1e-7)
    responding = runs[0].grid > 0
    ratio = peaks[1][responding] / peaks[0][responding]
    half = (np.array(runs[0].arms)[runs[0].arm_index] == "half the flask in field")[responding]
    np.testing.assert_allclose(ratio[half], 2.0, rtol=0.02)
