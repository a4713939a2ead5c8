"""Timeline events as declared assignments: what they move, and what the ledger books.

The ledger books what enters or leaves the media (per cargo, and particles for vesicles):
moving content between media or between vesicular and free forms books nothing."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS
from exosim.model import catalogue
from exosim.scenario import actions
from exosim.scenario.actions import Action
from exosim.scenario.schema import Add, Transfer, Treat


@pytest.fixture(scope="module")
def iccm():
    return exosim.compile_scenario(exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml"))


def _apply(compiled, assignments, y, p=None):
    m = compiled.model
    p = compiled.parameters[:1].copy() if p is None else p
    ledger: dict[str, np.ndarray] = {}
    Action(0.0, 0, "test", "test", assignments, {}, np.ones(1, bool)).apply(m, y, p, ledger)
    return ledger


def _content(compiled, y0: float = 100.0):
    m = compiled.model
    y = np.zeros((1, m.n_states))
    for med in m.media:
        for state, _, _ in actions.medium_content(m, med):
            y[0, m.state_index[state]] = y0
    return y


def test_a_lossless_transfer_moves_everything_and_books_nothing(iccm):
    y = _content(iccm)
    m = iccm.model
    move = Transfer.model_validate({"from": "donor_flask", "to": "recipient_flask", "replace": False})
    ledger = _apply(iccm, actions.transfer(m, move), y)
    assert ledger == {}
    assert y[0, m.state_index["donor_flask__vesicles"]] == 0.0
    assert y[0, m.state_index["recipient_flask__vesicles"]] == 200.0


def test_losses_of_a_harvest_are_booked_as_removed(iccm):
    y = _content(iccm)
    m = iccm.model
    move = Transfer.model_validate({"from": "donor_flask", "to": "recipient_flask", "recovery": 0.5, "purify": True})
    ledger = _apply(iccm, actions.transfer(m, move), y)
    # replace: the recipient's 100 are discarded; half the donor's 100 vesicles are lost; free cargo purified away
    assert ledger["particles_removed"][0] == pytest.approx(150.0)
    assert ledger["iccm_bystander_factor_removed"][0] == pytest.approx(100 + 50 + 100 + 100)
    assert "particles_added" not in ledger and "iccm_bystander_factor_added" not in ledger


def test_an_addition_books_the_particles_and_cargo_added(iccm):
    y = _content(iccm, 0.0)
    added = Add.model_validate({"medium": "recipient_flask", "particles": 1e9, "cargo": {"iccm_bystander_factor": 2}})
    ledger = _apply(iccm, actions.add(added), y)
    assert ledger["particles_added"][0] == 1e9 and ledger["iccm_bystander_factor_added"][0] == 2e9


def test_a_concentration_is_added_to_each_members_own_volume(iccm):
    """An arm may change a medium's volume: the same concentration is then more particles."""
    m = iccm.model
    added = Add.model_validate(
        {"medium": "recipient_flask", "concentration": "1e8 particles/mL", "cargo": {"iccm_bystander_factor": 3}}
    )
    p = np.repeat(iccm.parameters[:1], 2, axis=0)
    p[1, m.parameter_index["recipient_flask__volume"]] = 25.0  # mL; the file's 10 mL in row 0
    y = np.zeros((2, m.n_states))
    ledger: dict[str, np.ndarray] = {}
    Action(0.0, 0, "add", "add", actions.add(added), {}, np.ones(2, bool)).apply(m, y, p, ledger)
    np.testing.assert_allclose(ledger["particles_added"], [1e9, 2.5e9], rtol=1e-15)
    np.testing.assert_allclose(ledger["iccm_bystander_factor_added"], [3e9, 7.5e9], rtol=1e-15)


def test_lysis_frees_cargo_without_booking_it(iccm):
    """Detergent lyses vesicles: particles leave, cargo moves from vesicular to free (RNase-free case)."""
    m = iccm.model
    records = {"iccm_bystander_factor": {"kind": "protein"}}
    treatment = next(
        k
        for k, v in catalogue.treatments().items()
        if v.get("lyses_vesicles") and "protein" not in (v.get("destroys") or {})
    )
    y = _content(iccm)
    act = Treat(medium="recipient_flask", treatment=treatment)
    ledger = _apply(iccm, actions.treat(m, records, act), y)
    assert ledger["particles_removed"][0] == 100.0
    assert "iccm_bystander_factor_removed" not in ledger
    assert y[0, m.state_index["recipient_flask__iccm_bystander_factor_free"]] == 200.0
