"""Over the last segment, only the states the read outputs depend on are integrated.

After the last event nothing reaches the recipients from the donors of a medium transfer, and no
rate reads a cumulative counter: when a caller reads a few outputs at scoring (an analysis through
:class:`exosim.analysis.batch.BatchModel`), the runner holds the other states constant over the
last segment and leaves them out of the error control (``SolverOptions.frozen``).  Checked here:
the relevance analysis is closed under the rates, the solvers hold frozen states exactly and
control the others to their tolerance (against the closed form), the compiled right-hand side of a
frozen module equals the full one on the other states, and the outputs equal the full run's.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS
from exosim.analysis.batch import BatchModel
from exosim.model import catalogue as cat
from exosim.scenario.observables import sample_output_symbols
from exosim.scenario.runner import CompiledScenario
from exosim.simulate import dopri5
from exosim.simulate.solver import SolverOptions, numba_available

HNSCC = SCENARIOS / "hnscc_exosome_radioresistance.yaml"
ICCM = SCENARIOS / "iccm_bystander_medium_transfer.yaml"
COURSE = SCENARIOS / "fractionated_course_exosome_buildup.yaml"
UPTAKE = [k for k, row in cat.parameter_table().items() if "uptake" in row.get("groups", [])]
BACKENDS = ["numpy"] + (["numba"] if numba_available() else [])


def load(path, backend: str = "numpy") -> exosim.Scenario:
    sc = exosim.load_scenario(path)
    return sc.model_copy(update={"solver": sc.solver.model_copy(update={"backend": backend})})


@pytest.mark.parametrize("path", [HNSCC, ICCM, COURSE])
def test_relevant_states_are_closed_under_the_rates(path):
    """Every state a relevant state's rate reads is relevant, and so is every state an output reads;
    after a medium transfer the donors and their harvested flask are not."""
    sc = load(path)
    compiled = CompiledScenario(sc)
    m = compiled.model
    outputs = sample_output_symbols(sc)
    relevant = set(m.relevant_states(outputs))
    pattern = m.jacobian_pattern()
    assert all(set(pattern[i]) <= relevant for i in relevant)
    reads = m.state_reads()
    assert set().union(*(reads(o) for o in outputs)) <= relevant
    names = {m.state_names[i] for i in relevant}
    frozen = {m.state_names[i] for i in compiled.frozen_states(outputs)}
    assert names.isdisjoint(frozen) and len(names) + len(frozen) == m.n_states
    # no rate reads a cumulative counter: never relevant
    assert not any(n.endswith(("_released_particles", "_decayed_particles")) for n in names)
    if path != COURSE:  # the medium transfers: the donors are disconnected after the harvest
        assert not any(n.startswith(("donors__", "donor_flask__")) for n in names)
        assert "recipients__bound_vesicles" in names


def test_the_numpy_solver_holds_frozen_states_and_controls_the_others():
    """y0' = -y0, y1' = -1000 y1: with y1 frozen it keeps its value exactly, y0 follows exp(-t) to
    the tolerance, and the steps are no longer limited by the fast state."""

    def rhs(t, y, p):
        return -p * y

    y0 = np.array([[1.0, 1.0], [2.0, 0.5]])
    p = np.array([[1.0, 1000.0], [1.0, 1000.0]])
    rtol = 1e-8
    free = dopri5.integrate(rhs, 0.0, 3.0, y0, p, options=SolverOptions(rtol=rtol, atol=1e-12))
    held = dopri5.integrate(rhs, 0.0, 3.0, y0, p, options=SolverOptions(rtol=rtol, atol=1e-12, frozen=(1,)))
    assert np.all(held.status == 0) and np.all(free.status == 0)
    np.testing.assert_array_equal(held.y[:, 1], y0[:, 1])
    np.testing.assert_allclose(held.y[:, 0], y0[:, 0] * np.exp(-3.0), rtol=100 * rtol)
    np.testing.assert_allclose(free.y[:, 1], y0[:, 1] * np.exp(-3000.0), atol=1e-12)
    assert held.stats["steps"] < free.stats["steps"] / 5


@pytest.mark.skipif(not numba_available(), reason="the test extra installs numba; this guards plain installs")
def test_the_frozen_compiled_rhs_is_the_full_one_on_the_other_states():
    """The frozen module's right-hand side computes only the relevant rates (and the rules they
    read): equal to the full module's there, zero for the frozen states."""
    from exosim.simulate.dopri5_numba import _module_for

    compiled = CompiledScenario(load(ICCM))
    m = compiled.model
    frozen = compiled.frozen_states(sample_output_symbols(compiled.scenario))
    full, reduced = _module_for(m, "dopri5"), _module_for(m, "dopri5", frozen)
    rng = np.random.default_rng(3)
    p = compiled.parameters
    y = m.initial_state(p) * rng.uniform(0.5, 2.0, (p.shape[0], m.n_states)) + rng.uniform(0, 1, m.n_states)
    for i in range(p.shape[0]):
        want, got = np.empty(m.n_states), np.full(m.n_states, np.nan)
        full.rhs1(y[i], p[i], want)
        reduced.rhs1(y[i], p[i], got)
        active = np.setdiff1d(np.arange(m.n_states), frozen)
        # the same expressions; fast-math contraction may round them differently in the last bit
        np.testing.assert_allclose(got[active], want[active], rtol=1e-14, atol=1e-300)
        np.testing.assert_array_equal(got[list(frozen)], 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", [HNSCC, ICCM])
def test_outputs_of_a_run_reading_few_states_equal_the_full_run(path, backend):
    """The runner with ``outputs``: survival, alpha_eff/beta_eff and the delivered cargo as in the
    full run to the solver's tolerance; the frozen states are NaN (not integrated), the others finite."""
    sc = load(path, backend)
    compiled = CompiledScenario(sc)
    outputs = sample_output_symbols(sc)
    full = compiled.run(time_courses=False)
    fast = compiled.run(time_courses=False, outputs=outputs)
    frozen = list(compiled.frozen_states(outputs))
    assert fast.timing["frozen_states"] == len(frozen) > 0
    assert "frozen_states" not in full.timing
    assert np.all(fast.status == 0) and np.all(full.status == 0)
    tolerance = 10 * sc.solver.rtol
    np.testing.assert_allclose(fast.surviving_fraction, full.surviving_fraction, rtol=tolerance)
    for key in ("alpha_eff", "beta_eff", *(f"{c}_delivered_at_scoring" for c in sc.cargo)):
        np.testing.assert_allclose(fast.reference[key], full.reference[key], rtol=tolerance, atol=1e-12)
    assert np.isnan(fast.final_states[:, frozen]).all()
    active = np.setdiff1d(np.arange(compiled.model.n_states), frozen)
    assert np.isfinite(fast.final_states[:, active]).all()
    np.testing.assert_allclose(fast.final_states[:, active], full.final_states[:, active], rtol=1e-5, atol=1e-9)


def test_time_courses_and_events_at_scoring_integrate_every_state(tmp_path):
    """Time courses record every state, and an event at the scoring time may read any: nothing is
    frozen then."""
    sc = load(ICCM)
    compiled = CompiledScenario(sc)
    outputs = sample_output_symbols(sc)
    assert "frozen_states" not in compiled.run(time_courses=True, outputs=outputs).timing
    doc = yaml.safe_load(ICCM.read_text())
    doc["arms"][1]["events"] = [{"at": "169 h", "treat": {"medium": "recipient_flask", "treatment": "heat"}}]
    path = tmp_path / "iccm_event_at_scoring.yaml"
    path.write_text(yaml.safe_dump(doc))
    late = CompiledScenario(load(path))
    assert late.frozen_states(outputs) == ()
    assert "frozen_states" not in late.run(time_courses=False, outputs=outputs).timing


def test_a_sensitivity_batch_freezes_the_last_segment():
    """The analyses read a few outputs (:class:`BatchModel` with ``outputs``): their runs freeze."""
    sc = load(ICCM, "numba" if numba_available() else "numpy")
    batch = BatchModel(sc, UPTAKE, strict=False, outputs=sample_output_symbols(sc))
    res = batch.simulate(np.array([batch.nominal]))
    assert res.timing["frozen_states"] == len(batch.template.frozen_states(batch.outputs)) > 0
    assert np.all(res.status == 0)
