"""The public Python API: the example of the README runs, tables carry the CSV names, results
are frozen, solvers plug in through the protocol, and events render identically for numpy and SBML."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS
from exosim.io.outputs import write_outputs
from exosim.scenario.actions import Action
from exosim.simulate.dopri5 import NumpyDopri5
from exosim.simulate.solver import get_solver

HNSCC = SCENARIOS / "hnscc_exosome_radioresistance.yaml"
ARM = "exosomes from 6 Gy donors"


@pytest.fixture(scope="module")
def result():
    return exosim.load_scenario(HNSCC).run()


def test_tables_have_the_names_of_the_csv_files(result, tmp_path):
    write_outputs(result, tmp_path, figure=False)
    with open(tmp_path / "survival.csv") as fh:
        assert list(result.survival.columns) == next(csv.reader(fh))
    with open(tmp_path / "summary.csv") as fh:
        assert list(result.summary.columns) == next(csv.reader(fh))
    with open(tmp_path / "timecourses.csv") as fh:
        assert list(result.timecourses(long=False).columns) == next(csv.reader(fh))
    survival = result.survival
    np.testing.assert_array_equal(survival["sf"].to_numpy(), result.surviving_fraction)
    assert (survival["arm"] == ARM).sum() == (result.arm_index == result.arms.index(ARM)).sum()


def test_long_time_courses_and_the_cube_hold_the_same_numbers(result):
    long = result.timecourses(long=True)
    assert list(long.columns) == ["arm", "grid_dose_Gy", "time_h", "variable", "unit", "value"]
    row = long[(long.arm == ARM) & (long.grid_dose_Gy == 4) & (long.variable == "recipients.dsb")]
    cube = result.to_xarray()
    assert cube["recipients.dsb"].dims == ("arm", "dose", "time") and cube["recipients.dsb"].attrs["unit"] == "DSB/cell"
    np.testing.assert_array_equal(row["value"].to_numpy(), cube["recipients.dsb"].sel(arm=ARM, dose=4.0).values)
    member = result.member(arm=ARM, dose=4)
    i = member.index
    assert result.arms[result.arm_index[i]] == ARM and result.grid[i] == 4
    np.testing.assert_array_equal(
        row["value"].to_numpy(), result.states[i, :, result.model.state_index["recipients__dsb"]]
    )
    assert member.final_states["recipients.dsb"] == result.state("recipients.dsb")[i]
    assert member.surviving_fraction == result.surviving_fraction[i]
    with pytest.raises(KeyError, match="no arm"):
        result.member(arm="nope")
    with pytest.raises(KeyError, match="not on the grid"):
        result.member(arm=ARM, dose=3.3)


def test_results_are_frozen(result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.surviving_fraction = None
    with pytest.raises(ValueError, match="read-only"):
        result.surviving_fraction[0] = 0.5
    with pytest.raises(TypeError):
        result.reference["alpha_eff"] = None


def test_run_with_parameter_overrides_checks_them_like_a_file():
    sc = exosim.load_scenario(HNSCC)
    base = exosim.run(sc, time_courses=False)
    blocked = exosim.run(sc, time_courses=False, parameters={"recipients.internalisation_rate": "1e-6 1/h"})
    i = base.member(arm=ARM, dose=4).index
    key = "hnscc_irradiated_exosome_factor_delivered_at_scoring"
    assert blocked.reference[key][i] < 1e-3 * base.reference[key][i]
    assert not np.allclose(blocked.surviving_fraction, base.surviving_fraction)
    with pytest.raises(exosim.ScenarioError, match="does not match"):
        exosim.run(sc, parameters={"internalisation_rate": "1 mL/h"})
    with pytest.raises(exosim.ScenarioError, match="unknown population or medium"):
        exosim.run(sc, parameters={"recipeints.internalisation_rate": "1 1/h"})


def test_a_solver_plugs_in_through_the_protocol():
    class Counting(NumpyDopri5):
        name = "counting"
        calls = 0

        def integrate(self, model, t0, t1, y0, p, **kw):
            Counting.calls += 1
            return super().integrate(model, t0, t1, y0, p, **kw)

    sc = exosim.load_scenario(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")
    ref = exosim.run(sc, time_courses=False, solver="numpy")
    mine = exosim.run(sc, time_courses=False, solver=Counting())
    assert Counting.calls > 0 and mine.timing["backend"] == "counting"
    np.testing.assert_array_equal(mine.surviving_fraction, ref.surviving_fraction)
    with pytest.raises(TypeError, match="integrate"):
        get_solver(object())


def _python(formula: str) -> str:
    return formula.replace("^", "**")


@pytest.mark.parametrize(
    "name",
    [
        "hnscc_exosome_radioresistance",
        "iccm_bystander_medium_transfer",
        "fractionated_course_exosome_buildup",
        "partial_field_bystander",
    ],
)
def test_every_event_renders_the_same_change_for_numpy_and_sbml(name):
    """Apply each event to a random pre-event batch with numpy, and evaluate its SBML event
    assignments for every member on the same values: the new values agree."""
    compiled = exosim.compile_scenario(exosim.load_scenario(SCENARIOS / f"{name}.yaml"))
    m = compiled.model
    rng = np.random.default_rng(1)
    n = compiled.n_members
    y0 = rng.uniform(0.5, 2.0, (n, m.n_states)) * np.array([s.scale for s in m.states])
    p0 = compiled.parameters * rng.uniform(0.9, 1.1, compiled.parameters.shape)
    kinds = set()
    for action in compiled.actions:
        assert isinstance(action, Action)
        y, p = y0.copy(), p0.copy()
        action.apply(m, y, p, {})
        for i in range(n):
            env = {s: y0[i, j] for s, j in m.state_index.items()}
            env |= {q: p0[i, j] for q, j in m.parameter_index.items()}
            # derived constants are SBML assignment rules of the parameters
            observed = m.observe(y0[i : i + 1], p0[i : i + 1])[0]
            env |= {d.name: observed[m.observable_index[d.name]] for d in m.derived}
            expected_y, expected_p = y0[i].copy(), p0[i].copy()
            for symbol, formula in action.sbml_assignments(i):
                value = eval(_python(formula), {}, env)  # noqa: S307 - formulas exosim generated
                if symbol in m.state_index:
                    expected_y[m.state_index[symbol]] = value
                else:
                    expected_p[m.parameter_index[symbol]] = value
            np.testing.assert_allclose(y[i], expected_y, rtol=1e-13, atol=0)
            np.testing.assert_allclose(p[i], expected_p, rtol=1e-13, atol=0)
        kinds.add(action.kind)
    assert "irradiate" in kinds


def test_sensitivity_and_fit_from_python(tmp_path):
    sc = exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")
    local = exosim.sensitivity(sc, method="local", params=["internalisation_rate", "endosomal_escape_rate"])
    df = local.to_df()
    assert set(df["parameter"]) == {"internalisation_rate", "endosomal_escape_rate"}
    assert len(df) == 2 * len(local.analysis.outputs) and np.isfinite(df["coefficient"]).any()
    assert local.plot(tmp_path / "local.png").stat().st_size > 0
    same = exosim.sensitivity(sc, method="local", params="internalisation_rate, endosomal_escape_rate")  # as on the CLI
    assert same.to_df().equals(df)
    fitted = exosim.fit(
        sc,
        data=[SCENARIOS / "data" / "iccm_relative_survival.csv"],
        params=["recipients.bystander_susceptible_fraction"],
        ranges={"recipients.bystander_susceptible_fraction": (0.05, 0.6)},
    )
    est = fitted.estimates
    lo, hi = fitted.intervals["recipients.bystander_susceptible_fraction"]
    assert lo < est["estimate"][0] < hi and est["unit"][0] == "1"
    assert fitted.plot(tmp_path / "fit.png").stat().st_size > 0
