"""Hypoxia (docs/model.md sections 3.1 and 3.4): the oxygen modification factor against its
closed form and limits, survival of hypoxic cells as a dose-modifying factor, and hypoxic
release."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import scenario_from, single_well

M, K, P_REF = 3.0, 3.0, 142.0  # oer_max, oer_half_pressure, reference_oxygen_pressure
ALPHA0, BETA0 = 0.22, 0.0272  # hnscc_pooled
TIGHT = {"rtol": 1e-10, "atol": 1e-13}


def omf(p):
    oer = lambda x: (M * x + K) / (x + K)  # noqa: E731 - the closed form, once
    return oer(p) / oer(P_REF)


def at_oxygen(p_mmhg: float, **changes):
    data = single_well(solver=TIGHT, **changes)
    data["populations"]["cells"]["parameters"] = {"oxygen_pressure": f"{p_mmhg} mmHg"}
    return exosim.run(scenario_from(data), time_courses=False)


@pytest.mark.parametrize("p", [0.0, 0.7, 3.0, 7.1, 38.0, 142.0, 160.0])
def test_lq_coefficients_scale_with_the_oxygen_modification_factor(p):
    """alpha = alpha0*O and beta = beta0*O^2, O = OER(p)/OER(p_ref): limits 1 at the culture
    pO2, (p_ref + K)/(m*p_ref + K), about 1/m, in anoxia."""
    res = at_oxygen(p)
    o = omf(p)
    np.testing.assert_allclose(res.reference["alpha_eff"], ALPHA0 * o, rtol=1e-12)
    np.testing.assert_allclose(res.reference["beta_eff"], BETA0 * o**2, rtol=1e-12)
    if p == 0.0:
        assert o == pytest.approx((P_REF + K) / (M * P_REF + K)) and 0.33 < o < 0.34
    if p == P_REF:
        assert o == 1.0


def test_hypoxic_survival_is_culture_survival_at_the_modified_dose():
    """Acute doses: every lesion yield scales with O, so SF(D; p) = SF(O*D; p_ref) exactly."""
    p = 3.0
    hypoxic = at_oxygen(p)
    data = single_well(solver=TIGHT)
    data["dose_grid"] = {"values": [float(omf(p) * d) for d in hypoxic.grid], "unit": "Gy"}
    culture = exosim.run(scenario_from(data), time_courses=False)
    np.testing.assert_allclose(hypoxic.surviving_fraction, culture.surviving_fraction, rtol=1e-7)
    assert np.all(hypoxic.surviving_fraction[1:] > at_oxygen(P_REF).surviving_fraction[1:])


def test_hypoxic_cells_release_more_vesicles():
    """Unirradiated cells at steady state: release rises by 1 + e_h*X, X = 1 in anoxia and 0 in
    culture (release_hypoxia_enhancement, 1.0: a doubling)."""
    from exosim.model.assemble import Model, PopulationSpec

    m = Model([PopulationSpec("cells", "well", "hnscc_pooled")], ["well"])
    p = np.repeat(m.default_parameters()[None, :], 3, axis=0)
    p[:, m.parameter_index["cells__oxygen_pressure"]] = [P_REF, 12.0, 0.0]
    y = m.initial_state(p)
    obs = m.observe(y, p)
    x = obs[:, m.observable_index["cells__hypoxia_signal"]]
    flux = obs[:, m.observable_index["cells__release_flux"]]
    assert x[0] == pytest.approx(0.0, abs=1e-15) and x[2] == pytest.approx(1.0)
    assert 0.3 < x[1] < 0.7  # half-maximal near 1.5-2 % O2
    np.testing.assert_allclose(flux / flux[0], 1 + 1.0 * x, rtol=1e-10)
