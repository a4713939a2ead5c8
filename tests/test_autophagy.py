"""Autophagy (docs/model.md section 3.4): a modifier that is lethal only where a system's
evidence says so (autophagic_death_rate), never part of alpha or beta."""

from __future__ import annotations

import numpy as np

from exosim.model.assemble import Model, PopulationSpec


def test_lethal_autophagy_rate_follows_autophagy_above_baseline():
    m = Model([PopulationSpec("cells", "well", "hn5")], ["well"], ["mir_7_5p"])
    p = np.repeat(m.default_parameters()[None, :], 4, axis=0)
    p[:, m.parameter_index["cells__autophagic_death_rate"]] = [0.0, 0.01, 0.01, 0.01]
    y = m.initial_state(p)
    level = np.array([0.5, 0.5, 1.0, 2.0])  # EGFR/Akt/mTOR level; autophagy = level^-1
    y[:, m.state_index["cells__EGFR_Akt_mTOR_level"]] = level
    obs = m.observe(y, p)
    autophagy = obs[:, m.observable_index["cells__autophagy"]]
    np.testing.assert_allclose(autophagy, 1 / level)
    rate = m.rhs(0.0, y, p)[:, m.state_index["cells__autophagic_commitment"]]
    np.testing.assert_allclose(rate, [0.0, 0.01 * 1.0, 0.0, 0.0], atol=1e-15)  # only above baseline
    # alpha and beta do not see it: autophagic death does not depend on dose
    np.testing.assert_allclose(obs[:, m.observable_index["cells__alpha_eff"]], 0.289)
    np.testing.assert_allclose(obs[:, m.observable_index["cells__beta_eff"]], 0.0289)
