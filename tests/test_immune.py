"""Tumour volume and the immune arm (docs/model.md section 3.5): closed forms, limiting cases and
the published directions of the abscopal scenario."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS, scenario_from
from exosim.model import catalogue as cat
from exosim.scenario.observables import time_to_multiple

TABLE = cat.parameter_table()


def _one_tumour(doses, *, max_volume=None, until="480 h"):
    data = {
        "exosim": 1,
        "name": "tumour_growth",
        "type": "custom",
        "description": "growth and regrowth of one tumour",
        "media": {"site": {"volume": "1 mL", "kind": "interstitium"}},
        "populations": {
            "tumour": {"cell_line": "hnscc_pooled", "cells": 1e7, "medium": "site", "tumour_volume": "50 mm3"}
        },
        "dose_grid": {"values": list(doses), "unit": "Gy"},
        "timeline": [
            {"at": "0 h", "irradiate": {"population": "tumour", "dose": "grid"}},
            {"at": until, "score": {"population": "tumour"}},
        ],
        "output": {"time_step": "6 h"},
    }
    if max_volume is not None:
        data["parameters"] = {"tumour_max_volume": max_volume}
    return exosim.run(scenario_from(data))


def _obs(res, name):
    return res.observables[:, :, res.model.observable_index[name]]


def test_an_untreated_tumour_grows_on_the_logistic_curve():
    res = _one_tumour([0.0])
    r, vmax = TABLE["tumour_growth_rate"]["value"], TABLE["tumour_max_volume"]["value"]
    t = res.times - res.times[0]
    expected = vmax / (1.0 + (vmax / 0.05 - 1.0) * np.exp(-r * t))
    np.testing.assert_allclose(_obs(res, "tumour__tumour_volume")[0], expected, rtol=1e-6)


def test_an_irradiated_tumour_loses_its_dying_share_and_keeps_its_clonogenic_share():
    """Exponential growth (no carrying capacity): V_irr/V_0Gy = 1 - Z(t) and the clonogenic
    volume is SF times the untreated volume, so the regrowth lags by -ln(SF)/r."""
    res = _one_tumour([0.0, 6.0], max_volume="1e9 mL")
    v = _obs(res, "tumour__tumour_volume")
    dead = res.states[1, :, res.model.state_index["tumour__dead_share"]]
    np.testing.assert_allclose(v[1] / v[0], 1.0 - dead, rtol=1e-6)
    clonogenic = _obs(res, "tumour__clonogenic_volume")
    np.testing.assert_allclose(clonogenic[1, -1] / v[0, -1], res.surviving_fraction[1], rtol=1e-6)
    r = TABLE["tumour_growth_rate"]["value"]
    delay = time_to_multiple(res.times, v[1], 20.0) - time_to_multiple(res.times, v[0], 20.0)
    assert delay == pytest.approx(-np.log(res.surviving_fraction[1]) / r, rel=0.1)


def test_a_growing_tumour_releases_in_proportion_to_its_living_cells():
    res = _one_tumour([0.0, 6.0])
    m = res.model
    x = res.states[:, :, m.state_index["tumour__tumour_expansion"]]
    z = res.states[:, :, m.state_index["tumour__dead_share"]]
    flux = _obs(res, "tumour__release_flux")
    np.testing.assert_allclose(_obs(res, "tumour__vesicle_output"), 1e7 * x * (1.0 - z) * flux, rtol=1e-9)


@pytest.fixture(scope="module")
def abscopal():
    sc = exosim.load_scenario(SCENARIOS / "exosomal_dsdna_abscopal_immune.yaml")
    return sc, exosim.run(sc)


def _days_to_4x(res, arm, pop="distant_tumour"):
    i = res.arms.index(arm)
    return time_to_multiple(res.times, _obs(res, f"{pop}__tumour_volume")[i]) / 24.0


def test_radiotherapy_and_pd_l1_blockade_delay_the_distant_tumour_most_together(abscopal):
    """Abscopal regression needs the immune arm and is strongest with PD-L1 blockade (Serre et al.
    2016; Kosinsky et al. 2018; Vanpouille-Box et al. 2017)."""
    _, res = abscopal
    assert not any(res.messages)
    none = _days_to_4x(res, "no treatment")
    rt = _days_to_4x(res, "primary 3 x 8 Gy")
    both = _days_to_4x(res, "primary 3 x 8 Gy + anti-PD-L1")
    assert none < rt < both
    assert both > 1.3 * none
    # the irradiated primary regresses under the course
    primary = _obs(res, "primary_tumour__tumour_volume")
    i = res.arms.index("primary 3 x 8 Gy")
    assert primary[i].min() < 0.1 * primary[i, 0]


def test_radiotherapy_raises_dendritic_cell_activation_through_tumour_dsdna(abscopal):
    _, res = abscopal
    m = res.model
    a = res.states[:, :, m.state_index["immune__dc_activation"]]
    day2 = np.searchsorted(res.times, 48.0)
    assert a[res.arms.index("primary 3 x 8 Gy"), day2] > 1.5 * a[res.arms.index("no treatment"), day2]


def test_checkpoint_suppression_is_the_closed_form_of_the_tumours_exosomal_pd_l1(abscopal):
    _, res = abscopal
    m = res.model
    k = float(TABLE["pdl1_half_suppression"]["value"])
    c = res.states[:, :, m.state_index["distant_site__exosomal_pdl1_vesicular"]]  # in 1 mL
    s = _obs(res, "distant_tumour__checkpoint_suppression")
    blocked = res.arms.index("anti-PD-L1 alone")
    efficacy = float(cat.agents()["anti_pd_l1"]["efficacy"])
    np.testing.assert_allclose(s[0, 1:], 1.0 / (1.0 + c[0, 1:] / k), rtol=1e-9)
    np.testing.assert_allclose(s[blocked, 1:], 1.0 / (1.0 + (1.0 - efficacy) * c[blocked, 1:] / k), rtol=1e-9)


def test_without_t_cells_the_distant_tumour_does_not_see_the_primarys_treatment():
    data = yaml.safe_load((SCENARIOS / "exosomal_dsdna_abscopal_immune.yaml").read_text())
    data["parameters"] = {"t_cell_influx_rate": "0 cells/h"}
    data["arms"] = data["arms"][::2]  # no treatment, primary 3 x 8 Gy
    res = exosim.run(scenario_from(data))
    v = _obs(res, "distant_tumour__tumour_volume")
    # equal to the solver's tolerance (rtol 1e-7): each member has its own steps, and the
    # irradiated one is stiff enough to be switched to Rodas4 (exosim.simulate.rosenbrock)
    np.testing.assert_allclose(v[1], v[0], rtol=1e-6)
    r, vmax = TABLE["tumour_growth_rate"]["value"], TABLE["tumour_max_volume"]["value"]
    t = res.times - res.times[0]
    np.testing.assert_allclose(v[0], vmax / (1.0 + (vmax / 0.05 - 1.0) * np.exp(-r * t)), rtol=1e-6)
