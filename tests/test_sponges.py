"""Sponges (competing endogenous RNAs): titration of an endogenous repressor's sites
(docs/model.md section 3.3) against closed forms and limiting cases."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import scenario_from, single_well
from exosim.model.assemble import Model, ModelError, PopulationSpec

M, P, KD = 5000.0, 20000.0, 0.1  # repressor copies, endogenous sites, K_D (parameter table)
E = -0.4  # miR-4709-3p on GRB14 (repressor catalogue)


@pytest.fixture(scope="module")
def model():
    return Model([PopulationSpec("cells", "well", "hnscc_pooled")], ["well"], ["circ_metrn"])


def observe(model, name: str, sponge_copies: np.ndarray) -> np.ndarray:
    p = np.repeat(model.default_parameters()[None, :], sponge_copies.size, axis=0)
    y = model.initial_state(p)
    y[:, model.state_index["cells__circ_metrn_cytosolic"]] = sponge_copies
    return model.observe(y, p)[:, model.observable_index[name]]


def test_occupancy_solves_the_binding_equilibrium(model):
    """theta*N is the bound repressor b of (M - b)(N - b) = K_D b, for every sponge load."""
    z = np.array([0.0, 1e2, 1e4, 2e4, 1e5, 1e7])
    theta = observe(model, "cells__mir_4709_3p_occupancy", z)
    n = P + z
    b = theta * n
    np.testing.assert_allclose((M - b) * (n - b), KD * b, rtol=1e-6)
    assert np.all((b > 0) & (b <= M))


def test_tight_binding_limit_is_copies_over_sites(model):
    """With tight binding and sites in excess, theta = M/(P + Z): the ceRNA threshold is the
    site pool P (Denzler et al. 2014), not the repressor's copy number."""
    z = np.array([0.0, 2e3, 2e4, 2e5])
    theta = observe(model, "cells__mir_4709_3p_occupancy", z)
    np.testing.assert_allclose(theta, M / (P + z), rtol=1e-4)


def test_target_relief_follows_the_closed_form(model):
    z = np.array([0.0, 2e3, 2e4, 2e5])
    setpoint = observe(model, "cells__GRB14_setpoint", z)
    theta, theta0 = M / (P + z), M / P
    np.testing.assert_allclose(setpoint, (1 + E * theta) / (1 + E * theta0), rtol=1e-4)
    assert setpoint[0] == pytest.approx(1.0, abs=1e-12)
    # a sponge load of a tenth of the site pool relieves repression by about 1 %
    assert 1.0 < setpoint[1] < 1.02 and setpoint[3] > setpoint[2] > setpoint[1]


def test_no_sponge_leaves_the_cell_line_unchanged():
    """Exosomes without sponge copies: the recipients keep the control's survival."""
    tight = {"rtol": 1e-10, "atol": 1e-13}
    base = exosim.run(scenario_from(single_well(solver=tight)), time_courses=False)
    with_cargo = exosim.run(scenario_from(single_well(solver=tight, cargo={"circ_metrn": {}})), time_courses=False)
    np.testing.assert_allclose(with_cargo.surviving_fraction, base.surviving_fraction, rtol=1e-8)


def test_unknown_sponge_target_is_a_named_error():
    rec = {"kind": "rna", "sponges": {"mir_unknown": 1}}
    with pytest.raises(ModelError, match="sponges unknown repressor 'mir_unknown'"):
        Model([PopulationSpec("cells", "well", "hnscc_pooled")], ["well"], ["x"], cargo_records={"x": rec})
