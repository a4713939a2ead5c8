"""The second explicit pair, Dormand-Prince 8(5,3) (``solver.method: dop853``).

Its tableau meets the quadrature conditions of order 8 and its two error estimates vanish on
polynomials of the orders they estimate; both solvers integrate closed forms and the model
against scipy's DOP853 at tight tolerance, with fewer steps than Dormand-Prince 5(4); a stiff
member still switches to Rodas4; and a scenario gives the same survival with either pair.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS, assert_matches_reference, model_batch
from exosim.scenario.runner import CompiledScenario
from exosim.simulate import dopri5, rosenbrock
from exosim.simulate.solver import FAILED, SolverOptions, method, numba_available

needs_numba = pytest.mark.skipif(not numba_available(), reason="needs numba (exosim[fast])")


def test_tableau_has_order_eight_and_error_estimates_of_orders_five_and_three():
    rk = method("dop853")
    c, A, b = rk.C, rk.A, rk.B
    assert rk.stages == 12 and A.shape == (13, 13)
    np.testing.assert_allclose(A.sum(axis=1), c, atol=1e-15)  # row sums are the nodes
    np.testing.assert_array_equal(A[12, :12], b[:12])  # the last stage is at the new solution
    for q in range(1, 9):  # quadrature conditions sum(b c^(q-1)) = 1/q up to order 8
        assert math.isclose(b @ c ** (q - 1), 1.0 / q, rel_tol=1e-13), q
    for q in range(1, 6):  # the 5th-order estimate is exact on polynomials of degree < 5 ...
        assert abs(rk.E @ c ** (q - 1)) < 1e-13, q
    for q in range(1, 4):  # ... and the 3rd-order one on degree < 3
        assert abs(rk.E3 @ c ** (q - 1)) < 1e-13, q
    assert abs(rk.E @ c**5) > 1e-6 and abs(rk.E3 @ c**3) > 1e-6  # and not beyond
    with pytest.raises(ValueError, match="dopri5 or dop853"):
        method("rk4")


def test_numpy_dop853_meets_the_closed_form_in_fewer_steps():
    rates = np.array([[0.1], [1.0], [5.0], [20.0]])

    def fun(t, y, p):
        return -p * y

    runs = {}
    for name in ("dopri5", "dop853"):
        runs[name] = dopri5.integrate(
            fun,
            0.0,
            3.0,
            np.ones((4, 1)),
            rates,
            options=SolverOptions(rtol=1e-10, atol=1e-14, method=name),
            t_eval=np.array([1.0, 2.0, 3.0]),
        )
    sol = runs["dop853"]
    assert np.all(sol.status == 0)
    np.testing.assert_allclose(sol.ys[:, :, 0], np.exp(-np.outer(rates[:, 0], [1, 2, 3])), rtol=1e-8, atol=1e-13)
    assert sol.stats["steps"] < runs["dopri5"].stats["steps"] / 2


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_model_batch_matches_solve_ivp_with_dop853(model, backend):
    y0, p, scale = model_batch(model, 4)
    options = SolverOptions(rtol=1e-10, atol=1e-13, method="dop853")
    if backend == "numpy":
        sol = dopri5.integrate(model.rhs, 0.0, 72.0, y0, p, atol_scale=scale, options=options)
    else:
        from exosim.simulate.dopri5_numba import integrate_compiled

        sol = integrate_compiled(model, 0.0, 72.0, y0, p, atol_scale=scale, options=options)
        tight = SolverOptions(rtol=1e-10, atol=1e-13)
        five = integrate_compiled(model, 0.0, 72.0, y0, p, atol_scale=scale, options=tight)
        assert sol.stats["member_steps"] < five.stats["member_steps"] / 2
    assert np.all(sol.status == 0)
    assert_matches_reference(model, sol.y, y0, p, scale)


@needs_numba
def test_stiff_member_switches_to_rodas4_from_dop853():
    """Hairer's stiffness test of dop853 (h*|lambda| > 6.1) hands a stiff member to Rodas4."""
    from exosim.simulate.dopri5_numba import integrate_compiled
    from test_implicit import FAST, SLOW, _exact, _Linear

    model = _Linear()
    y0 = np.array([[1.0, 0.0], [2.0, 1.0]])
    p = np.array([[FAST, SLOW], [FAST, SLOW]])
    explicit = integrate_compiled(model, 0.0, 48.0, y0, p, options=SolverOptions(max_steps=20_000, method="dop853"))
    assert np.all(explicit.status == FAILED)
    switched = integrate_compiled(
        model, 0.0, 48.0, y0, p, options=SolverOptions(max_steps=20_000, stiff_fallback="rosenbrock", method="dop853")
    )
    assert np.all(switched.status == 0) and switched.stats["implicit_members"] == 2
    np.testing.assert_allclose(switched.y, np.stack([_exact(48.0, y) for y in y0]), rtol=1e-5)
    explicit_steps = switched.stats["member_steps"] - switched.stats["implicit_steps"]
    assert explicit_steps <= 2 * rosenbrock.STIFF_WINDOW * len(y0)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_scenario_gives_the_same_survival_with_either_pair(backend):
    sc = exosim.load_scenario(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    runs = {}
    for name in ("dopri5", "dop853"):
        solver = sc.solver.model_copy(update={"method": name, "rtol": 1e-9, "atol": 1e-11})
        runs[name] = CompiledScenario(sc.model_copy(update={"solver": solver})).run(time_courses=False, solver=backend)
    five, eight = runs["dopri5"], runs["dop853"]
    assert np.all(eight.status == 0)
    np.testing.assert_allclose(eight.surviving_fraction, five.surviving_fraction, rtol=1e-6)
    assert "8(5,3)" in eight.timing["method"] and "5(4)" in five.timing["method"]
    assert eight.timing["rhs_evaluations"] < five.timing["rhs_evaluations"]
