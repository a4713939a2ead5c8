"""The compiled Rosenbrock method (Rodas4) for stiff members: its coefficients have order 4, it
agrees with exact solutions and with scipy's Radau at tight tolerance, and the compiled solver
switches a stiff member to it, so that members the explicit solver fails now succeed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from scipy.integrate import solve_ivp

import exosim
from conftest import SCENARIOS, scenario_from
from exosim.scenario import runner
from exosim.simulate import rosenbrock
from exosim.simulate.solver import FAILED, SolverOptions

pytestmark = pytest.mark.filterwarnings("ignore:.*outside the documented range")
numba = pytest.importorskip("numba", reason="the compiled Rosenbrock method needs numba")

from exosim.simulate.dopri5_numba import integrate_compiled  # noqa: E402

FAST, SLOW = 1.0e6, 0.1  # /h: a fast decay feeding a slow one


def _rodas_step(f, jac, y, h):
    """One Rodas4 step in numpy from the module's coefficients (autonomous f)."""
    n = y.size
    G = np.eye(n) / (h * rosenbrock.GAMMA) - jac(y)
    K = np.zeros((6, n))
    for s in range(6):
        rhs = f(y + rosenbrock.A[s, :s] @ K[:s]) + (rosenbrock.C[s, :s] / h) @ K[:s]
        K[s] = np.linalg.solve(G, rhs)
    return y + rosenbrock.M @ K, K[5]


def test_rodas4_coefficients_have_order_four():
    """Fixed steps on a non-linear problem with a known solution (y' = -y^2, y = 1/(1 + t)): the
    error falls 2^4 = 16-fold per halving of the step; the embedded estimate 2^4 per step
    (local error of the order-3 solution, h^4)."""

    def f(y):
        return -(y**2)

    def jac(y):
        return np.array([[-2.0 * y[0]]])

    errors, estimates = [], []
    for steps in (20, 40, 80):
        h, y = 1.0 / steps, np.array([1.0])
        for _ in range(steps):
            y, _ = _rodas_step(f, jac, y, h)
        errors.append(abs(y[0] - 0.5))
        estimates.append(abs(_rodas_step(f, jac, np.array([1.0]), h)[1][0]))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 12) & (ratios < 20)), ratios
    est = np.array(estimates[:-1]) / np.array(estimates[1:])
    assert np.all((est > 12) & (est < 20)), est


def test_rodas4_is_l_stable():
    """Steps far beyond the stability limit of explicit methods (h*lambda = -1e4 ... -1e8) damp
    the fast mode, the more the stiffer (L-stability: R(z) -> 0 like 1/z as z -> -inf)."""
    damping = [
        abs(_rodas_step(lambda y, z=z: z * y, lambda y, z=z: np.array([[z]]), np.array([1.0]), 1.0)[0][0])
        for z in (-1e4, -1e6, -1e8)
    ]
    assert max(damping) < 1e-2
    ratios = np.array(damping[:-1]) / np.array(damping[1:])
    assert np.all((ratios > 50) & (ratios < 200)), ratios


class _Linear:
    """A two-state model object with what the compiled module needs: y0' = -a y0 (fast),
    y1' = a y0 - b y1 (slow), a and b parameters."""

    parameters = ("a", "b")
    n_states = 2

    def rate_dependencies(self):
        return [], []

    def prepared_size(self) -> int:
        return 2

    def jacobian_pattern(self):
        return [[0], [0, 1]]

    def prepared_scalar_source(self, prepare="prep1", rhs="rhsp", power=None, frozen=()):
        rates = ["-P[0] * y[0]", "P[0] * y[0] - P[1] * y[1]"]
        rates = ["0.0" if i in frozen else r for i, r in enumerate(rates)]  # as Model's: frozen rates are 0
        return (
            f"def {prepare}(p, P):\n    P[:2] = p[:2]\n"
            f"def {rhs}(y, P, dy):\n    dy[0] = {rates[0]}\n    dy[1] = {rates[1]}\n"
        )


def _exact(t, y0, a=FAST, b=SLOW):
    fast = y0[0] * np.exp(-a * t)
    slow = y0[1] * np.exp(-b * t) + a * y0[0] / (a - b) * (np.exp(-b * t) - np.exp(-a * t))
    return np.stack([fast, slow], axis=-1)


@pytest.fixture(scope="module")
def linear():
    model = _Linear()
    y0 = np.array([[1.0, 0.0], [2.0, 1.0]])
    p = np.array([[FAST, SLOW], [FAST, SLOW]])
    return model, y0, p


@pytest.mark.parametrize("tolerance", [1e-6, 1e-9])
def test_rodas4_agrees_with_the_closed_form_of_a_stiff_linear_system(linear, tolerance):
    model, y0, p = linear
    t_eval = np.array([1e-6, 1e-3, 1.0, 10.0, 48.0])
    sol = integrate_compiled(
        model,
        0.0,
        48.0,
        y0,
        p,
        t_eval=t_eval,
        options=SolverOptions(rtol=tolerance, atol=tolerance),
        implicit_only=True,
    )
    assert np.all(sol.status == 0) and sol.stats["implicit_members"] == 2
    exact = np.stack([_exact(t_eval, y) for y in y0])
    err = np.abs(sol.ys - exact) / (tolerance + tolerance * np.abs(exact))
    assert err.max() < 10.0, err.max()  # error control is local: a small multiple of the tolerance
    # a stiff problem: Rodas4 needs tens of steps where explicit steps would need 1e6*48/3.3
    assert sol.member_steps.max() < 2000


def test_stiff_member_switches_to_rodas4_where_explicit_steps_fail(linear):
    """The explicit solver gives up on the stiff system (step budget judged by pace); with
    ``stiff_fallback: rosenbrock`` the compiled solver switches it to Rodas4 and it succeeds."""
    model, y0, p = linear
    explicit = integrate_compiled(model, 0.0, 48.0, y0, p, options=SolverOptions(max_steps=20_000))
    assert np.all(explicit.status == FAILED)
    assert all(m.startswith("would need more than") for m in explicit.message), explicit.message
    switched = integrate_compiled(
        model, 0.0, 48.0, y0, p, options=SolverOptions(max_steps=20_000, stiff_fallback="rosenbrock")
    )
    assert np.all(switched.status == 0) and switched.stats["implicit_members"] == 2
    np.testing.assert_allclose(switched.y, np.stack([_exact(48.0, y) for y in y0]), rtol=1e-5)
    # switched early: within two stiffness windows of explicit steps per member
    explicit_steps = switched.stats["member_steps"] - switched.stats["implicit_steps"]
    assert explicit_steps <= 2 * rosenbrock.STIFF_WINDOW * len(y0)


# ------------------------------------------------------------------ a stiff member of a scenario
#: a member of the 30-fraction course the explicit solver cannot integrate in budget: fast,
#: saturable binding (the uptake group's upper ranges)
STIFF = {
    "binding_sites": "1e5 sites/cell",
    "binding_rate_constant": "1e-9 mL/(h*site)",
    "unbinding_rate": "5 1/h",
    "internalisation_rate": "5 1/h",
    "vesicle_decay_rate": "10 1/h",
}


def _course(fallback: str, stiff_arm: bool = True) -> exosim.Scenario:
    """The course with the communication arm and, first, a copy of it with the stiff values."""
    data = yaml.safe_load((SCENARIOS / "fractionated_course_exosome_buildup.yaml").read_text())
    arm = data["arms"][1]
    data["arms"] = ([{"name": "stiff", "parameters": dict(STIFF)}] if stiff_arm else []) + [copy.deepcopy(arm)]
    data["solver"] = {"backend": "numba", "stiff_fallback": fallback}
    return scenario_from(data)


def _stiff_segment():
    """Model, parameters and a state just after the first 2 Gy fraction of the stiff member,
    with vesicles in the medium."""
    compiled = runner.compile_scenario(_course("rosenbrock"))
    m = compiled.model
    p = compiled.parameters[:1].copy()
    y0 = m.initial_state(p)
    y0[0, m.state_index["tumour__dsb"]] = 2.0 * p[0, m.parameter_index["tumour__dsb_yield"]]
    y0[0, m.state_index["interstitium__vesicles"]] = 1e10
    return m, p, y0


@pytest.mark.parametrize("implicit_only", [False, True])
def test_a_frozen_fast_state_is_held_and_the_slow_one_follows_its_closed_form(linear, implicit_only):
    """``SolverOptions.frozen``: the stiff component y0 frozen, the compiled explicit pair holds it
    exactly (Rodas4, whose linear solves mix the components, to rounding), y1' = a y0 - b y1
    relaxes to a y0 / b as in the closed form, and the explicit steps are no longer limited by
    the fast component (the same budget failed above)."""
    model, y0, p = linear
    options = SolverOptions(rtol=1e-9, atol=1e-12, max_steps=20_000, frozen=(0,))
    sol = integrate_compiled(model, 0.0, 48.0, y0, p, options=options, implicit_only=implicit_only)
    assert np.all(sol.status == 0)
    np.testing.assert_allclose(sol.y[:, 0], y0[:, 0], rtol=1e-14 if implicit_only else 0.0)
    steady = FAST * y0[:, 0] / SLOW
    exact = steady + (y0[:, 1] - steady) * np.exp(-SLOW * 48.0)
    np.testing.assert_allclose(sol.y[:, 1], exact, rtol=1e-7)
    assert sol.member_steps.max() < 500


def test_rodas4_agrees_with_radau_on_a_stiff_member_of_the_course():
    """One day after a fraction, the stiff member by compiled Rodas4 (the scenario's tolerances)
    against scipy's Radau at rtol 1e-11, to 1e-5 relative on the non-negligible states."""
    m, p, y0 = _stiff_segment()
    scale = np.array([s.scale for s in m.states])
    t_eval = np.array([0.5, 6.0, 24.0])
    sol = integrate_compiled(m, 0.0, 24.0, y0, p, atol_scale=scale, t_eval=t_eval, implicit_only=True)
    assert sol.status[0] == 0, sol.message
    ref = solve_ivp(
        lambda t, y: m.rhs(t, y[None], p)[0],
        (0.0, 24.0),
        y0[0],
        method="Radau",
        rtol=1e-11,
        atol=1e-14 * scale,
        t_eval=t_eval,
    )
    assert ref.success
    big = np.abs(ref.y.T) > 1e-3 * scale
    np.testing.assert_allclose(sol.ys[0][big], ref.y.T[big], rtol=1e-5)
    np.testing.assert_array_equal(sol.y[0], sol.ys[0, -1])
    # and the switching solver (explicit until the member proves stiff) agrees as well
    auto = integrate_compiled(
        m, 0.0, 24.0, y0, p, atol_scale=scale, t_eval=t_eval, options=SolverOptions(stiff_fallback="rosenbrock")
    )
    assert auto.status[0] == 0 and auto.stats["implicit_members"] == 1
    np.testing.assert_allclose(auto.ys[0][big], ref.y.T[big], rtol=1e-5)


def test_stiff_course_member_fails_explicitly_and_succeeds_with_rodas4():
    """The whole 30-fraction course of the stiff member: ``none`` fails it (step budget), the
    default ``rosenbrock`` integrates it (and says how many member segments needed Rodas4); the
    other arm is the same in both runs."""
    explicit = exosim.run(_course("none"), time_courses=False)
    implicit = exosim.run(_course("rosenbrock"), time_courses=False)
    assert explicit.status[0] == FAILED and "steps" in explicit.messages[0], explicit.messages[0]
    assert explicit.status[1] == 0
    assert not implicit.status.any() and np.all(np.isfinite(implicit.final_states))
    assert implicit.timing["implicit_members"] >= 1
    np.testing.assert_allclose(implicit.surviving_fraction[1], explicit.surviving_fraction[1], rtol=1e-12)
