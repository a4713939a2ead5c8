"""Doomed cells stop secreting (and may shed a burst) when they die; radiation-enhanced uptake
sets in with a lag (docs/model.md sections 3.1 and 3.2)."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import scenario_from
from exosim.model import catalogue as cat

TABLE = cat.parameter_table()


def _donor_runs(doses, *, arms=None, until="240 h"):
    data = {
        "exosim": 1,
        "name": "donor_loss",
        "type": "custom",
        "description": "release and death of irradiated donors",
        "media": {"flask": {"volume": "10 mL"}},
        "populations": {
            "donors": {"cell_line": "hnscc_pooled", "cells": 1e6, "medium": "flask", "packages": ["mir_1246_nsclc"]}
        },
        "cargo": {"mir_1246_nsclc": {}},
        "dose_grid": {"values": list(doses), "unit": "Gy"},
        "timeline": [
            {"at": "0 h", "irradiate": {"population": "donors", "dose": "grid"}},
            {"at": until, "score": {"population": "donors"}},
        ],
        "output": {"time_step": "1 h"},
    }
    if arms:
        data["arms"] = arms
    return exosim.run(scenario_from(data))


def _state(res, name):
    return res.states[:, :, res.model.state_index[name]]


def _obs(res, name):
    return res.observables[:, :, res.model.observable_index[name]]


def test_unirradiated_cells_do_not_die_and_release_at_baseline():
    res = _donor_runs([0.0])
    assert np.all(_state(res, "donors__dead_share") == 0.0)
    baseline = TABLE["baseline_release_rate"]["value"]
    np.testing.assert_allclose(_obs(res, "donors__vesicle_output"), 1e6 * baseline, rtol=1e-9)


def test_doomed_cells_die_through_two_stages_after_a_lag():
    """Z(t) = (1 - SF)*(1 - exp(-k t)*(1 + k t)), k = 2/T, once repair has settled SF (hours << T)."""
    res = _donor_runs([6.0])
    sf = res.surviving_fraction[0]
    k = 2.0 / TABLE["doomed_cell_death_time"]["value"]
    t = res.times - res.times[0]
    z = _state(res, "donors__dead_share")[0]
    expected = (1.0 - sf) * (1.0 - np.exp(-k * t) * (1.0 + k * t))
    late = t >= 24.0
    np.testing.assert_allclose(z[late], expected[late], atol=0.01)
    # the lag: a first-order loss with the same mean time, (1 - SF)*(1 - exp(-k t/2)), would
    # have killed 3.4x more by 12 h
    at12 = np.searchsorted(t, 12.0)
    assert z[at12] < 0.35 * (1.0 - sf) * (1.0 - np.exp(-k * 12.0 / 2.0))
    assert z[-1] == pytest.approx(1.0 - sf, rel=0.01)  # ten days on, the doomed are dead


def test_population_release_falls_to_the_survivors_share():
    """Long after the dose the per-cell flux is back at baseline, so the flask gets N*SF*J0."""
    res = _donor_runs([0.0, 4.0, 8.0], until="480 h")
    output = _obs(res, "donors__vesicle_output")[:, -1]
    np.testing.assert_allclose(output / output[0], res.surviving_fraction, rtol=0.02)
    assert output[2] < output[1] < output[0]


def test_dying_cells_shed_their_burst_with_its_cargo():
    """Extra particles = N*b*Z(t) at every time; they carry the loading of the moment."""
    burst = 2000.0
    res = _donor_runs(
        [6.0],
        arms=[
            {"name": "no burst", "control": True},
            {"name": "burst", "parameters": {"donors.dying_cell_burst": f"{burst} particles/cell"}},
        ],
    )
    released = _state(res, "flask__released_particles")
    dead = _state(res, "donors__dead_share")
    np.testing.assert_allclose(dead[1], dead[0], rtol=1e-9, atol=1e-12)  # the burst changes no death
    extra = released[1] - released[0]
    np.testing.assert_allclose(extra, 1e6 * burst * dead[0], rtol=1e-6, atol=1e-3)
    cargo_extra = _state(res, "flask__mir_1246_nsclc_released")[1] - _state(res, "flask__mir_1246_nsclc_released")[0]
    assert np.all(cargo_extra >= -1e-9) and cargo_extra[-1] > 0.0


def _uptake_runs(add_at: str):
    data = {
        "exosim": 1,
        "name": "uptake_lag",
        "type": "custom",
        "description": "uptake of vesicles added after irradiation",
        "media": {"well": {"volume": "2 mL"}},
        "populations": {"cells": {"cell_line": "hnscc_pooled", "cells": 1e5, "medium": "well"}},
        "cargo": {"mir_22": {}},
        "dose_grid": {"values": [0, 6], "unit": "Gy"},
        "timeline": [
            {"at": "0 h", "irradiate": {"population": "cells", "dose": "grid"}},
            {
                "at": add_at,
                "add": {
                    "medium": "well",
                    "concentration": "1e10 particles/mL",
                    "cargo": {"mir_22": "1 copies/particle"},
                },
            },
            {"at": "72 h", "score": {"population": "cells"}},
        ],
        "output": {"time_step": "0.25 h"},
    }
    return exosim.run(scenario_from(data))


def test_uptake_enhancement_follows_the_dose_with_its_onset_half_time():
    """u(t) = 1 + E*D/(D + D50)*(1 - 2^(-t/t_half)) after an acute dose at t = 0."""
    res = _uptake_runs("1 h")
    e, d50 = (TABLE[k]["value"] for k in ("uptake_radiation_enhancement", "uptake_enhancement_half_dose"))
    t_half = TABLE["uptake_enhancement_onset_half_time"]["value"]
    t = res.times - res.times[0]
    u = _state(res, "cells__uptake_enhancement")
    np.testing.assert_allclose(u[0], 1.0, rtol=1e-12)
    expected = 1.0 + e * 6.0 / (6.0 + d50) * (1.0 - 2.0 ** (-t / t_half))
    np.testing.assert_allclose(u[1, 1:], expected[1:], rtol=1e-6)


def test_vesicles_added_right_after_irradiation_meet_unchanged_cells():
    """The gain in uptake by irradiated cells is smaller when vesicles come before the
    binding capacity has risen (1 h) than when they come after (24 h)."""
    gains = []
    for add_at in ("1 h", "24 h"):
        res = _uptake_runs(add_at)
        t = res.times - res.times[0]
        start = float(add_at.split()[0])
        i = np.searchsorted(t, start + 2.0)  # two hours of binding
        bound = _state(res, "cells__bound_vesicles")[:, i] + _state(res, "cells__internalised_vesicles")[:, i]
        gains.append(bound[1] / bound[0])
    assert 1.0 < gains[0] < gains[1]
