"""Members that enter a segment identical are integrated once.

The grid doses of one parameter set (and arms that differ only in later events) share their
states, parameters and step until the event that tells them apart; the runner integrates such
a group once per segment and copies the result (:func:`exosim.scenario.runner._identical`).
Both shipped integrators give bitwise equal results for bitwise equal members, so a run with
the sharing is checked bitwise against the same run with it switched off.
"""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS
from exosim.scenario import runner
from exosim.simulate.solver import numba_available

BACKENDS = ["numpy"] + (["numba"] if numba_available() else [])


def test_identical_groups_members_in_order():
    y = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 2.0], [1.0, 2.0], [0.0, 2.0]])
    p = np.array([[3.0], [3.0], [3.0], [3.0], [4.0]])
    first, copies = runner._identical(y, p, None)
    assert first.tolist() == [0, 2, 4]  # the first of each group, in member order
    assert copies.tolist() == [0, 0, 1, 0, 2]
    assert np.array_equal(y[first][copies][:4], y[:4]) and np.array_equal(p[first][copies], p)
    # a different first step keeps members apart; all distinct members: nothing to share
    first, copies = runner._identical(y, p, np.array([0.1, 0.2, 0.1, 0.1, 0.1]))
    assert first.tolist() == [0, 1, 2, 4] and copies.tolist() == [0, 1, 2, 0, 3]
    assert runner._identical(y[2:], p[2:], None) == (None, None)
    # -0.0 and 0.0 differ in their bits: kept apart (the comparison is conservative)
    assert runner._identical(np.array([[0.0], [-0.0]]), np.zeros((2, 1)), None) == (None, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_sharing_is_bitwise_the_full_run(backend, monkeypatch):
    sc = exosim.load_scenario(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    compiled = runner.CompiledScenario(sc)
    shared = compiled.run(time_courses=True, solver=backend)
    # the grid irradiation comes at 49 h: before it, each arm's nine doses are one member
    assert shared.timing["member_segments_shared"] >= 3 * (compiled.n_members - compiled.n_members // 9)
    monkeypatch.setattr(runner, "_identical", lambda y, p, h: (None, None))
    full = compiled.run(time_courses=True, solver=backend)
    assert "member_segments_shared" not in full.timing
    assert np.array_equal(shared.states, full.states, equal_nan=True)
    assert np.array_equal(shared.observables, full.observables, equal_nan=True)
    assert np.array_equal(shared.status, full.status)
    assert np.array_equal(shared.surviving_fraction, full.surviving_fraction, equal_nan=True)
    assert np.array_equal(shared.final_states, full.final_states, equal_nan=True)
