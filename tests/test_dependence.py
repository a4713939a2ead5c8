"""Members whose outputs cannot depend on the varied parameters are integrated once.

The dependence analysis (:mod:`exosim.model.dependence`) is checked on its algebra, on the two
medium-transfer scenarios (which arms depend on uptake parameters, and why), and against the
full run: :meth:`BatchModel.simulate` with shared members gives what every member integrated
per parameter set gives, while integrating fewer members.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS
from exosim.analysis.batch import BatchModel
from exosim.model import catalogue as cat
from exosim.model.dependence import dependencies, value
from exosim.scenario.observables import sample_output_symbols
from exosim.simulate.solver import numba_available

HNSCC = SCENARIOS / "hnscc_exosome_radioresistance.yaml"
ICCM = SCENARIOS / "iccm_bystander_medium_transfer.yaml"
#: the compiled backend steps every member on its own: a member's result is the same in any batch
BACKEND = "numba" if numba_available() else "numpy"
#: the uptake group of the parameter table (the standard sensitivity job)
UPTAKE = [k for k, row in cat.parameter_table().items() if "uptake" in row.get("groups", [])]


def load(path, backend: str = BACKEND) -> exosim.Scenario:
    sc = exosim.load_scenario(path)
    return sc.model_copy(update={"solver": sc.solver.model_copy(update={"backend": backend})})


def by_arm(batch: BatchModel) -> dict[str, np.ndarray]:
    """Per arm name, which of its members (grid doses) are integrated once."""
    t = batch.template
    return {arm.name: batch.shared[t.arm_index == a] for a, arm in enumerate(t.arms)}


def theta_within_ranges(keys: list[str], sets: int = 3) -> np.ndarray:
    """``sets`` parameter sets spread inside each key's documented range (log-uniformly if positive)."""
    table = cat.parameter_table()
    lo, hi = np.array([[float(v) for v in table[k]["range"]] for k in keys]).T
    u = np.mod((np.arange(sets)[:, None] + 1.0) / (sets + 1.0) + 0.29 * np.arange(len(keys)), 1.0)
    log = lo > 0  # log-uniform where the range allows it
    return np.where(log, lo ** (1 - u) * hi**u, lo + u * (hi - lo))


# ---------------------------------------------------------------------- the algebra
def expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k * x", 0.0),  # a zero factor
        ("k * x + y", None),
        ("k + z - z", None),  # k + z is unknown: not simplified further
        ("u - u", 0.0),  # two known, equal values
        ("1 + k * x", 1.0),
        ("exp(-x)", 1.0),
        ("1 - exp(-x)", 0.0),
        ("x / k", 0.0),
        ("k / x", None),  # division by zero: not a number
        ("x ** 2", 0.0),
        ("x ** n", 0.0),  # n a positive parameter
        ("x ** k", None),  # k of unknown sign: 0**k may be 1 or infinite
        ("k ** x", 1.0),
        ("hill(x, K, n)", 0.0),
        ("hill(x, K, k)", None),
        ("hill(k, K, n)", None),
        ("pos(x)", 0.0),
        ("log(u)", 0.0),
    ],
)
def test_provable_values(text, expected):
    known = {"x": 0.0, "z": 0.0, "u": 1.0}
    assert value(expr(text), known, positive={"n"}) == expected


def test_dependencies_drop_provably_constant_terms():
    known = {"x": 0.0, "u": 1.0}
    assert dependencies(expr("a * x + b * (u - u) + c"), known) == {"c"}
    assert dependencies(expr("a * (1 + s * hill(x, K, n))"), known, {"n"}) == {"a"}
    assert dependencies(expr("a * (1 + s * hill(x, K, m))"), known, {"n"}) == {"a", "s", "K", "m"}
    assert dependencies(expr("k * x"), known) == set()


# ---------------------------------------------------------------------- the scenarios
def test_control_arms_do_not_depend_on_uptake_parameters():
    """Without donor cells no vesicles and no cargo reach the recipients: their survival, alpha,
    beta and delivered cargo cannot depend on uptake; wherever exosomes are transferred they do."""
    hnscc = BatchModel(load(HNSCC), UPTAKE, strict=False, outputs=sample_output_symbols(load(HNSCC)))
    arms = by_arm(hnscc)
    assert arms.pop("no exosomes").all()
    for name, shared in arms.items():  # transferred, destabilised (decay before lysis) or blocked: 95 %
        assert not shared.any(), name

    iccm = BatchModel(load(ICCM), UPTAKE, strict=False, outputs=sample_output_symbols(load(ICCM)))
    arms = by_arm(iccm)
    assert arms["fresh medium"].all()
    assert arms["ICCM heated to 70 C"].all()  # heat destroys the (heat-labile) factor in the medium
    assert not arms["ICCM"].any() and not arms["ICCM from donors with GW4869"].any()

    control = iccm.dependence[0]
    assert "recipients__iccm_bystander_factor_delivered" not in control.tainted
    assert "recipients__surviving_fraction" not in control.tainted


def test_every_state_counts_by_default():
    """Recipients take up their own (cargo-free) vesicles: in the control arm the bound and
    internalised vesicles do depend on uptake parameters, so with every state and rule as an
    output (the default) the control arm is integrated per parameter set."""
    batch = BatchModel(load(HNSCC), UPTAKE, strict=False)
    assert not batch.shared.any()
    control = batch.dependence[0]
    assert {"recipients__bound_vesicles", "recipient_well__vesicles"} <= control.through_states
    assert "recipients__surviving_fraction" not in control.through_states


def test_a_parameter_of_the_cell_line_makes_every_irradiated_member_depend():
    """alpha0 of the recipients' line matters wherever recipients are irradiated, in every arm;
    unirradiated recipients (grid dose 0, no bystander damage) survive with SF 1 whatever it is."""
    sc = load(HNSCC)
    batch = BatchModel(sc, ["hnscc_pooled.alpha0"], outputs=["recipients.surviving_fraction"])
    irradiated = batch.template.grid > 0
    assert not batch.shared[irradiated].any()
    assert batch.shared[~irradiated].all()
    # alpha0 of the donors sets how many irradiated donors die and stop releasing, so the cargo
    # delivered to unirradiated recipients (and their alpha_eff) depends on it after 6 Gy donors
    arms = by_arm(BatchModel(sc, ["hnscc_pooled.alpha0"], outputs=sample_output_symbols(sc)))
    for name, shared in arms.items():
        assert not shared[1:].any(), name
        assert shared[0] == (name in ("no exosomes", "exosomes from 0 Gy donors")), name


def test_an_event_that_adds_cargo_makes_a_member_depend():
    """Vesicles with cargo added to the recipients' medium make survival depend on uptake;
    vesicles without cargo do not (only the recipients' own vesicle states do)."""
    data = yaml.safe_load(ICCM.read_text())
    add = {"medium": "recipient_flask", "concentration": "1e8 particles/mL"}
    data["arms"] = [
        data["arms"][0],
        {
            "name": "fresh medium with vesicles",
            "parameters": {"donors.cells": 0},
            "events": [{"at": "1 h", "add": {**add, "cargo": {"iccm_bystander_factor": "1 copies/particle"}}}],
        },
        {
            "name": "fresh medium with empty vesicles",
            "parameters": {"donors.cells": 0},
            "events": [{"at": "1 h", "add": add}],
        },
    ]
    sc = exosim.parse_scenario(yaml.safe_dump(data, sort_keys=False), source="<test>")
    arms = by_arm(BatchModel(sc, UPTAKE, strict=False, outputs=sample_output_symbols(sc)))
    assert arms["fresh medium"].all()
    assert not arms["fresh medium with vesicles"].any()
    assert arms["fresh medium with empty vesicles"].all()


# ---------------------------------------------------------------------- against the full run
def assert_same(a: np.ndarray, b: np.ndarray, rtol: float) -> None:
    if rtol == 0:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (HNSCC, ["cytosolic_half_life", "half_effect_copies", "target_turnover_rate"]),
        (ICCM, ["recipients.bystander_susceptible_fraction"]),
    ],
)
def test_shared_members_give_the_full_run(path, params):
    """With every state and rule as output, a member is shared only if none of its states depends
    on the parameters: the run equals the full run (bitwise with per-member steps)."""
    batch = BatchModel(load(path), params)
    assert batch.shared.any() and not batch.shared.all()
    theta = theta_within_ranges([p.split(".")[-1] for p in params])
    full = batch.simulate(theta, share=False)
    fast = batch.simulate(theta)
    exact = 0.0 if BACKEND == "numba" else 1e-6
    assert_same(fast.surviving_fraction, full.surviving_fraction, exact)
    assert_same(fast.final_states, full.final_states, exact)
    for key in full.reference:
        assert_same(fast.reference[key], full.reference[key], exact)
    np.testing.assert_array_equal(fast.parameters, full.parameters)
    np.testing.assert_array_equal(fast.status, full.status)
    assert fast.messages == full.messages
    n, reps = batch.n_members, theta.shape[0]
    assert full.timing["members_integrated"] == reps * n
    assert fast.timing["members_integrated"] == reps * n - (reps - 1) * int(batch.shared.sum())


@pytest.mark.parametrize("path", [HNSCC, ICCM])
def test_uptake_sensitivity_outputs_equal_the_full_run(path):
    """The sensitivity job's outputs: the control arm integrated once; the other members exactly
    as in the full run, the shared ones to the solver's tolerance (their steps are controlled on
    every state, including the recipients' own vesicles that do depend on uptake)."""
    sc = load(path)
    batch = BatchModel(sc, UPTAKE, strict=False, outputs=sample_output_symbols(sc))
    theta = theta_within_ranges(UPTAKE)
    full = batch.simulate(theta, share=False)
    fast = batch.simulate(theta)
    shared = np.tile(batch.shared, theta.shape[0])
    assert fast.timing["members_integrated"] < full.timing["members_integrated"]
    assert np.all(full.status == 0) and np.all(fast.status == 0)
    exact = 0.0 if BACKEND == "numba" else 1e-6
    tolerance = 10 * sc.solver.rtol
    for got, want in [(fast.surviving_fraction, full.surviving_fraction)] + [
        (fast.reference[k], full.reference[k])
        for k in ("alpha_eff", "beta_eff", *(f"{c}_delivered_at_scoring" for c in sc.cargo))
    ]:
        assert_same(got[~shared], want[~shared], exact)
        assert_same(got[shared], want[shared], tolerance)
    # what depends on uptake in a shared member is not computed per set: NaN, never another set's value
    m = fast.model
    bound = m.state_index["recipients__bound_vesicles"]
    assert np.isnan(fast.final_states[shared, bound]).all()
    assert np.isfinite(full.final_states[:, bound]).all()
    # over the last segment only the states the outputs depend on are integrated (the donors'
    # after the harvest are NaN: tests/test_frozen_states.py)
    active = batch.template.model.relevant_states(batch.outputs)
    assert np.isfinite(fast.final_states[np.ix_(~shared, active)]).all()
    assert np.isnan(fast.reference["binding_flux"][shared]).all()


def test_a_shared_member_that_fails_is_run_again_per_set():
    """Failures stay data: when the one integration of a shared member fails, its members are
    integrated per parameter set, as in the full run (here the shared run is made to fail)."""
    sc = load(ICCM)
    batch = BatchModel(sc, UPTAKE, strict=False, outputs=sample_output_symbols(sc))
    theta = theta_within_ranges(UPTAKE, sets=2)
    full = batch.simulate(theta, share=False)
    n, reps = batch.n_members, theta.shape[0]
    poisoned = batch.compiled(reps + 1)  # the batch of the shared run: its last replicate is integrated once
    volume = batch.template.model.parameter_index["recipient_flask__volume"]
    poisoned.parameters[reps * n :, volume] = np.nan
    fast = batch.simulate(theta)
    np.testing.assert_array_equal(fast.status, full.status)
    assert np.all(fast.status == 0)
    np.testing.assert_allclose(fast.surviving_fraction, full.surviving_fraction, rtol=1e-12)
    assert fast.timing["members_integrated"] == reps * n


def test_the_runner_checks_share():
    compiled = BatchModel(load(ICCM), []).template
    with pytest.raises(ValueError, match="shares with itself"):
        compiled.run(time_courses=False, share=np.roll(np.arange(compiled.n_members), 1))
    with pytest.raises(ValueError, match="member indices"):
        compiled.run(time_courses=False, share=np.zeros(3, dtype=int))
