"""The batched integrator against scipy and closed forms; failures stay per member."""

from __future__ import annotations

import numpy as np
import pytest

import exosim
import exosim.model.expr
from conftest import SCENARIOS, assert_matches_reference, model_batch
from exosim.simulate.dopri5 import integrate
from exosim.simulate.solver import SolverOptions


def test_linear_decay_batch_matches_closed_form():
    rates = np.array([[0.1], [1.0], [5.0], [20.0]])

    def fun(t, y, p):
        return -p * y

    sol = integrate(
        fun,
        0.0,
        3.0,
        np.ones((4, 1)),
        rates,
        options=SolverOptions(rtol=1e-10, atol=1e-14),
        t_eval=np.array([1.0, 2.0, 3.0]),
    )
    np.testing.assert_allclose(sol.y[:, 0], np.exp(-3.0 * rates[:, 0]), rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(sol.ys[:, :, 0], np.exp(-np.outer(rates[:, 0], [1, 2, 3])), rtol=1e-8, atol=1e-13)
    assert np.all(sol.status == 0)


def test_model_batch_matches_solve_ivp_at_tight_tolerance(model):
    y0, p, scale = model_batch(model, 5)
    sol = integrate(model.rhs, 0.0, 72.0, y0, p, atol_scale=scale, options=SolverOptions(rtol=1e-10, atol=1e-13))
    assert_matches_reference(model, sol.y, y0, p, scale)


def test_a_failing_member_is_reported_and_the_rest_completes(model):
    p = np.tile(model.default_parameters(), (3, 1))
    p[1, model.parameter_index["recipients__repair_half_time"]] = np.nan
    y0 = model.initial_state(p)
    y0[:, model.state_index["recipients__dsb"]] = 70.0
    sol = integrate(model.rhs, 0.0, 24.0, y0, p, atol_scale=np.array([s.scale for s in model.states]))
    assert list(sol.status) == [0, 1, 0]
    assert sol.message[1] and np.isfinite(sol.t_failed[1])
    assert np.all(np.isfinite(sol.y[[0, 2]]))
    ok = integrate(model.rhs, 0.0, 24.0, y0[[0]], p[[0]], atol_scale=np.array([s.scale for s in model.states]))
    np.testing.assert_allclose(sol.y[0], ok.y[0], rtol=1e-6, atol=1e-8)


def test_scenario_failure_names_scenario_arm_member_and_time(runs):
    res = runs("mir22_exosome_radiosensitisation")
    compiled = exosim.compile_scenario(res.scenario)
    p = compiled.parameters.copy()
    p[3, compiled.model.parameter_index["cancer_cells__dsb_yield"]] = np.inf
    out = compiled.run(parameters=p, time_courses=False)
    assert out.status[3] == 1 and np.isnan(out.surviving_fraction[3])
    msg = out.messages[3]
    assert "mir22_exosome_radiosensitisation" in msg and "no exosomes" in msg and "member 3" in msg and "t =" in msg
    others = np.delete(np.arange(out.status.size), 3)
    assert np.all(out.status[others] == 0)
    np.testing.assert_allclose(out.surviving_fraction[others], res.surviving_fraction[others], rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["hnscc_exosome_radioresistance", "partial_field_bystander", "angptl4_nsclc_hypoxic_exosome_ferroptosis"]
)
def test_prepared_rhs_equals_the_reference_rhs(name):
    """The numpy solver reads the parameter-only constants once per segment (Model.prepare):
    the same derivatives as Model.rhs, and the prepared columns depend on parameters alone."""
    model = exosim.compile_scenario(exosim.load_scenario(SCENARIOS / f"{name}.yaml")).model
    rng = np.random.default_rng(3)
    p = model.default_parameters()[None, :] * rng.uniform(0.5, 2.0, (4, model.n_parameters))
    y = model.initial_state(p) + rng.uniform(0.0, 5.0, (4, model.n_states))
    prepared = model.prepare(p)
    static, dynamic = model.rate_dependencies()
    assert prepared.shape == (4, model.n_parameters + len(static)) and static
    np.testing.assert_array_equal(prepared[:, : model.n_parameters], p)
    assert all(model.kinds[n] != "state" for s in static for n in exosim.model.expr.names(s.expr))
    np.testing.assert_allclose(model.rhs_prepared(0.0, y, prepared), model.rhs(0.0, y, p), rtol=1e-14, atol=0)


def test_a_rejected_step_restarts_from_the_derivative_at_its_start():
    """A rejected step must be retried from f(t, y), not from the rejected trial's last stage
    (first-same-as-last). With the stale derivative every rejection cascaded to tiny steps, and
    a trial that overflowed poisoned every retry and failed the member at the minimum step."""
    rates = np.array([[40.0]])

    def fun(t, y, p):
        return -p * y

    sol = integrate(
        fun, 0.0, 720.0, np.ones((1, 1)), rates, options=SolverOptions(rtol=1e-8, atol=1e-12), t_eval=np.array([1e-6])
    )
    assert np.all(sol.status == 0)
    np.testing.assert_allclose(sol.ys[0, 0, 0], np.exp(-40.0 * 1e-6), rtol=1e-9)
    assert sol.y[0, 0] == pytest.approx(0.0, abs=1e-12)
    # the stiff decay keeps the explicit step at its stability limit, so steps are rejected now and
    # then; each rejection costs one retry (measured 223 in 8,851 steps), not a cascade down to a
    # step small enough for the stale derivative (11,006 in 11,163 before the fix)
    assert sol.stats["rejected"] < 0.1 * sol.stats["steps"]
