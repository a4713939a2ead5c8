"""``exosim export-petab``: the exported PEtab v1 problems pass PEtab's linter, and COPASI (an
independent simulator and optimiser, through basico's PEtab import) simulates them as exosim
does and recovers exosim's own fit estimate.

The numbers compared come from COPASI (LSODA, its own parameter estimation) on the exported
files, never from exosim's output files.

``exosim fit --petab`` (:func:`exosim.io.petab.read_petab`): an exported problem, as written or
with edited tables, fits as ``exosim fit`` fits the equivalent CSV data (exosim's own fit of the
CSV files is the reference), and what exosim cannot map is one message with exit code 2.
"""

from __future__ import annotations

import csv
import json
import shutil
import time

import numpy as np
import pytest
import yaml

import exosim
from conftest import ROOT, SCENARIOS, single_well
from exosim.analysis.fit import FitProblem, read_observations
from exosim.cli import main
from exosim.io.petab import (
    METADATA_KEY,
    PETAB_FILES,
    PetabExportError,
    PetabImportError,
    PetabImportWarning,
    petab_problem,
    read_petab,
)

petab = pytest.importorskip("petab.v1", reason="the PEtab export needs the 'petab' extra")

ICCM = SCENARIOS / "iccm_bystander_medium_transfer.yaml"
ICCM_DATA = SCENARIOS / "data" / "iccm_relative_survival.csv"
KEY = "recipients.bystander_susceptible_fraction"
RANGE = (0.05, 0.6)
HNSCC = SCENARIOS / "hnscc_exosome_radioresistance.yaml"
TIMECOURSES = [ROOT / "examples" / "timecourse" / "nta.csv", ROOT / "examples" / "timecourse" / "uptake.csv"]
TC_PARAMS = ["internalisation_rate", "baseline_release_rate"]
#: COPASI's LSODA at tolerances tighter than exosim's fits (FIT_RTOL = 1e-9)
COPASI_METHOD = {"Relative Tolerance": 1e-10, "Absolute Tolerance": 1e-14, "Max Internal Steps": 1_000_000}


def _iccm_argv(outdir, data=ICCM_DATA, *extra) -> list[str]:
    return [
        "export-petab",
        str(ICCM),
        str(data),
        "--params",
        KEY,
        "--range",
        f"{KEY}={RANGE[0]}:{RANGE[1]}",
        "-o",
        str(outdir),
        *extra,
    ]


@pytest.fixture(scope="module")
def iccm_problem(tmp_path_factory):
    """The ICCM calibration example exported through the command line."""
    out = tmp_path_factory.mktemp("iccm") / "petab"
    assert main(_iccm_argv(out)) == 0
    return out


@pytest.fixture(scope="module")
def iccm_fit():
    """exosim's own fit of the ICCM example (as ``exosim fit ... --range KEY=0.05:0.6``)."""
    return exosim.fit(ICCM, data=[ICCM_DATA], params=[KEY], ranges={KEY: RANGE})


@pytest.fixture(scope="module")
def all_arms(tmp_path_factory):
    """Every ICCM arm (control, heat treatment, release inhibitor from -24 h) at doses on the
    all-or-none threshold and the plateau: the shared model needs arm settings, event doses
    and event switches. The survival values only weight the likelihood."""
    folder = tmp_path_factory.mktemp("all_arms")
    arms = ["fresh medium", "ICCM", "ICCM heated to 70 C", "ICCM from donors with GW4869"]
    rows = [f"{a},{d},{0.95 - 0.1 * i},0.05" for i, a in enumerate(arms) for d in (0, 0.005, 0.01, 0.1, 2)]
    data = folder / "all_arms.csv"
    data.write_text("arm,dose,survival,sd\n" + "\n".join(rows) + "\n")
    export = exosim.export_petab(ICCM, data=[data], params=[KEY], outdir=folder / "petab", ranges={KEY: RANGE})
    return export, folder / "petab"


def _copasi(folder, workdir):
    """Load an exported problem into COPASI with basico's PEtab import (tight LSODA)."""
    basico = pytest.importorskip("basico", reason="COPASI cross-check needs the 'test' extra (copasi-basico)")
    bp = pytest.importorskip("basico.petab", reason="needs copasi-petab-importer (the 'test' extra)")
    bp.load_petab(str(folder / "problem.yaml"), str(workdir), "exported")
    basico.set_task_settings("Time-Course", {"method": COPASI_METHOD})
    return basico, bp


def _copasi_simulation(folder, workdir, values: dict[str, float]):
    """COPASI's simulation of every measurement of an exported problem at parameter ``values``
    (PEtab parameter ids), as a PEtab simulation table."""
    basico, bp = _copasi(folder, workdir)
    try:
        for pid, v in values.items():
            basico.set_parameters(pid, initial_value=float(v))
        problem = petab.Problem.from_yaml(str(folder / "problem.yaml"))
        sim = bp.create_simulation_df(problem.measurement_df, basico.get_simulation_results(values_only=True))
    finally:
        basico.remove_datamodel(basico.get_current_model())
    return problem, sim


def _lint_errors(folder) -> bool:
    return petab.lint_problem(petab.Problem.from_yaml(str(folder / "problem.yaml")))


# ---------------------------------------------------------------------- structure and lint
def test_iccm_export_writes_the_petab_files_and_passes_petablint(iccm_problem, capsys):
    assert sorted(p.name for p in iccm_problem.iterdir()) == sorted(PETAB_FILES)
    assert _lint_errors(iccm_problem) is False
    problem = petab.Problem.from_yaml(str(iccm_problem / "problem.yaml"))
    par = problem.parameter_df.loc["recipients__bystander_susceptible_fraction"]
    assert (par.parameterScale, par.lowerBound, par.upperBound, par.nominalValue, par.estimate) == (
        "log10",
        RANGE[0],
        RANGE[1],
        0.4,
        1,
    )
    # relative survival: the control's survival is a fixed parameter of the observable
    obs = problem.observable_df.loc["relative_survival"]
    assert obs.observableFormula == "recipients__surviving_fraction / observableParameter1_relative_survival"
    assert set(problem.measurement_df.observableParameters) == {"reference_survival"}
    assert problem.parameter_df.loc["reference_survival", "estimate"] == 0
    notes = (iccm_problem / "README.md").read_text()
    assert "What PEtab v1 cannot express" in notes and "Poisson" in notes


def test_catalogue_range_from_zero_is_a_linear_scale(tmp_path, capsys):
    """Without --range the bounds are the parameter table's documented range, [0, 0.6]: linear."""
    out = tmp_path / "petab"
    assert main(["export-petab", str(ICCM), str(ICCM_DATA), "--params", KEY, "-o", str(out)]) == 0
    par = petab.Problem.from_yaml(str(out / "problem.yaml")).parameter_df.loc[
        "recipients__bystander_susceptible_fraction"
    ]
    assert (par.parameterScale, par.lowerBound, par.upperBound) == ("lin", 0.0, 0.6)
    assert _lint_errors(out) is False


def test_one_model_serves_every_arm_with_conditions_for_what_differs(all_arms):
    export, folder = all_arms
    assert _lint_errors(folder) is False
    cond = export.conditions.set_index("conditionId")
    assert len(cond) == 20 and len(list(folder.glob("*.xml"))) == 1
    # the control arm has no donors; the inhibitor event (at -24 h) and the heat treatment only
    # act in their arms; the grid dose is a parameter, off at dose 0
    assert set(cond.loc[cond.conditionName.str.startswith("fresh medium"), "donors__cells"]) == {0.0}
    switches = [c for c in cond.columns if c.endswith("_active")]
    assert len(switches) == 3
    dose = next(c for c in cond.columns if c.endswith("_D"))
    assert cond.loc["ICCM_D0p005", dose] == 0.005 and cond.loc["ICCM_D2", dose] == 2.0
    roles = {r["role"] for r in export.parameter_map}
    assert {"estimated", "arm setting", "event value", "event switch", "reference survival"} <= roles


# ---------------------------------------------------------------------- agreement with COPASI
@pytest.mark.parametrize("value", [0.4, 0.25])
def test_copasi_simulates_every_arm_as_exosim_does(all_arms, tmp_path, value):
    """Every condition of the shared model (arm settings, event switches, doses on the threshold)
    simulated by COPASI agrees with exosim's fit model to 1e-6, and PEtab's likelihood of
    COPASI's simulation is exosim's plus PEtab's Gaussian constant."""
    export, folder = all_arms
    start = time.perf_counter()
    problem, sim = _copasi_simulation(folder, tmp_path, {"recipients__bystander_susceptible_fraction": value})
    seconds = time.perf_counter() - start
    fp = export.fit_problem
    pred = fp.predict(np.array([[value]]))[0]
    dev = np.abs(sim.simulation.to_numpy() - pred) / np.abs(pred)
    assert dev.max() < 1e-6, (dev.max(), sim.simulationConditionId[int(np.argmax(dev))])
    assert np.ptp(pred) > 0.1  # the comparison spans the threshold, not only plateaus
    sd = problem.measurement_df.noiseParameters.astype(float).to_numpy()
    nll_petab = -petab.calculate_llh(problem.measurement_df, sim, problem.observable_df, problem.parameter_df)
    nll_exosim = fp.nll(pred[None, :])[0] + np.sum(0.5 * np.log(2 * np.pi * sd**2))
    assert nll_petab == pytest.approx(nll_exosim, rel=1e-6)
    assert seconds < 30


def test_copasi_reproduces_the_iccm_fit_at_exosims_estimate(iccm_problem, iccm_fit, tmp_path):
    estimate = float(iccm_fit.result.estimate[0])
    problem, sim = _copasi_simulation(iccm_problem, tmp_path, {"recipients__bystander_susceptible_fraction": estimate})
    dev = np.abs(sim.simulation.to_numpy() - iccm_fit.result.predicted) / iccm_fit.result.predicted
    assert dev.max() < 1e-6


#: survival off the published plateau, with a point on the threshold (0.01 Gy): an optimum away
#: from the nominal 0.4 that is not linear in the parameter (made-up numbers for this test)
SHIFTED = """arm,dose,survival,sd
ICCM,0,1.0,0.05
ICCM,0.01,0.85,0.05
ICCM,0.05,0.55,0.05
ICCM,0.5,0.57,0.05
ICCM,2,0.53,0.05
ICCM,5,0.56,0.05
"""


@pytest.mark.parametrize("case", ["iccm_example", "shifted_plateau"])
def test_copasi_recovers_exosims_fit_estimate(case, iccm_problem, iccm_fit, tmp_path, capsys):
    """COPASI's own optimiser (Levenberg-Marquardt, started at 0.2) on the exported problem finds
    exosim's maximum-likelihood estimate: the ICCM example (optimum 0.4, the nominal value) and
    data whose optimum lies elsewhere."""
    if case == "iccm_example":
        folder, fit = iccm_problem, iccm_fit
    else:
        data = tmp_path / "shifted.csv"
        data.write_text(SHIFTED)
        folder = tmp_path / "petab"
        assert main(_iccm_argv(folder, data)) == 0
        fit = exosim.fit(ICCM, data=[data], params=[KEY], ranges={KEY: RANGE})
    basico, _ = _copasi(folder, tmp_path)
    try:
        items = basico.get_fit_parameters()
        items.loc[:, "start"] = 0.2
        basico.set_fit_parameters(items)
        basico.set_parameters("recipients__bystander_susceptible_fraction", initial_value=0.2)
        start = time.perf_counter()
        solution = basico.run_parameter_estimation(method="Levenberg - Marquardt", update_model=False)
        seconds = time.perf_counter() - start
        copasi_estimate = float(solution["sol"].iloc[0])
    finally:
        basico.remove_datamodel(basico.get_current_model())
    exosim_estimate = float(fit.result.estimate[0])
    assert fit.result.converged
    assert copasi_estimate == pytest.approx(exosim_estimate, rel=1e-3)
    assert abs(copasi_estimate - 0.2) > 0.1  # it moved from the start to the optimum
    if case == "shifted_plateau":
        assert abs(exosim_estimate - 0.4) > 0.02  # not the nominal value
    assert seconds < 30


def test_time_courses_with_tied_instances_and_a_relative_scale(tmp_path):
    """NTA counts and relative dye uptake (examples/timecourse): a key with an instance per
    population is one estimated SBML parameter setting both by initial assignments; COPASI agrees
    with exosim except at event times, which the problem's README names."""
    export = exosim.export_petab(HNSCC, data=TIMECOURSES, params=TC_PARAMS, outdir=tmp_path / "petab")
    folder = tmp_path / "petab"
    assert _lint_errors(folder) is False
    assert export.petab_ids == {k: k for k in TC_PARAMS}
    assert 'id="internalisation_rate"' in export.sbml
    assert export.sbml.count('<initialAssignment symbol="donors__internalisation_rate"') == 1
    theta = np.array([[0.3364, 118.2]])  # exosim's estimate (README)
    pred, scales = export.fit_problem.evaluate(theta)
    scale_id = next(p for p in export.parameters.parameterId if p.startswith("scale_"))
    values = dict(zip(TC_PARAMS, theta[0])) | {scale_id: float(next(iter(scales[1].values()))[0])}
    problem, sim = _copasi_simulation(folder, tmp_path, values)
    t_nta = export.fit_problem.datasets[0].time
    at_event = np.r_[np.isin(t_nta, [a.time for a in export.fit_problem.batch.template.actions]), np.zeros(7, bool)]
    dev = np.abs(sim.simulation.to_numpy() - pred[0]) / np.abs(pred[0])
    assert at_event.sum() == 1 and dev[~at_event].max() < 1e-6
    # the NTA point at the harvest (24 h): exosim reports the flask before it, SBML after it
    assert "nta.csv: donor_flask.vesicle_concentration at 24 h" in export.notes


def test_event_times_that_differ_between_doses_are_parameters(tmp_path):
    """Protracted irradiation (1 Gy/h) over a dose grid ends at a time that depends on the dose,
    and coincides with an acute 1 Gy at 2 h for the 2 Gy member: one SBML event whose trigger
    time the condition table sets, ordered before the acute one as exosim applies them."""
    scenario = single_well(
        name="protracted",
        dose_grid={"values": [0, 1, 2, 4], "unit": "Gy"},
        timeline=[
            {"at": "0 h", "irradiate": {"population": "cells", "dose": "grid", "dose_rate": "1 Gy/h"}},
            {"at": "2 h", "irradiate": {"population": "cells", "dose": "1 Gy"}},
            {"at": "24 h", "score": {"population": "cells"}},
        ],
    )
    path = tmp_path / "protracted.yaml"
    path.write_text(yaml.safe_dump(scenario))
    data = tmp_path / "survival.csv"
    rows = ["protracted,0,0.9,0.05", "protracted,1,0.5,0.05", "protracted,2,0.4,0.05", "protracted,4,0.1,0.05"]
    data.write_text("arm,dose,survival,sd\n" + "\n".join(rows) + "\n")
    export = exosim.export_petab(
        path, data=[data], params=["repair_half_time"], outdir=tmp_path / "petab", normalise="none"
    )
    assert _lint_errors(tmp_path / "petab") is False
    cond = export.conditions.set_index("conditionId")
    time_column = next(c for c in cond.columns if c.endswith("_time"))
    assert list(cond[time_column]) == [1.0, 1.0, 2.0, 4.0]  # dose-rate off at D / (1 Gy/h); unused at 0 Gy
    problem, sim = _copasi_simulation(tmp_path / "petab", tmp_path, {"cells__repair_half_time": 0.6})
    pred = export.fit_problem.predict(np.array([[0.6]]))[0]
    assert np.max(np.abs(sim.simulation.to_numpy() / pred - 1)) < 1e-6
    assert pred[0] > pred[1] > pred[2] > pred[3]


def test_colony_counts_are_exported_with_the_poisson_variance_and_an_estimated_plating_efficiency(tmp_path):
    data = tmp_path / "colonies.csv"
    data.write_text("arm,dose,colonies,seeded\nICCM,0.05,58,200\nICCM,2,61,200\nfresh medium,0,98,200\n")
    export = exosim.export_petab(
        ICCM, data=[data], params=[KEY], outdir=tmp_path / "petab", ranges={KEY: RANGE}, likelihood="quasipoisson"
    )
    assert _lint_errors(tmp_path / "petab") is False
    obs = export.observables.set_index("observableId").loc["colonies_colonies"]
    assert obs.noiseDistribution == "normal" and obs.noiseFormula.startswith("sqrt(")
    pars = export.parameters.set_index("parameterId")
    # nominal plating efficiency: exosim's closed form, sum(colonies) / sum(seeded * SF) at the nominal values
    sf = export.fit_problem.predict(np.array([[0.4]]))[0]
    pe = 217 / (200 * sf.sum())
    assert pars.loc["plating_efficiency_colonies", "nominalValue"] == pytest.approx(pe, rel=1e-12)
    # at most 1 (a cell forms at most one colony), unless the data put it higher at the nominal values
    assert pars.loc["plating_efficiency_colonies", "upperBound"] == max(1.0, 2 * pe)
    assert pars.loc["dispersion_colonies", "estimate"] == 1
    assert "Poisson / quasi-Poisson colony counts" in export.notes


# ---------------------------------------------------------------------- what cannot be exported
def test_a_reference_survival_that_depends_on_the_estimate_is_refused_and_nothing_written(tmp_path, capsys):
    data = tmp_path / "damage.csv"
    data.write_text("arm,dose,survival,sd\nconditioned medium,0.5,0.9,0.05\nconditioned medium,2,0.8,0.05\n")
    out = tmp_path / "petab"
    argv = [
        "export-petab",
        str(SCENARIOS / "mir1246_bep2d_bystander_damage.yaml"),
        str(data),
        "--params",
        "repair_half_time",
        "--normalise",
        "within_arm",
        "-o",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reference survival (arm 'conditioned medium' at dose 0) changes" in err and "--normalise none" in err
    assert not out.exists()
    with pytest.raises(PetabExportError):
        petab_problem(
            SCENARIOS / "mir1246_bep2d_bystander_damage.yaml", [data], ["repair_half_time"], normalise="within_arm"
        )


@pytest.mark.parametrize(
    ("data", "params", "message"),
    [
        ("missing.csv", KEY, "missing.csv: no such data file"),
        (str(ICCM_DATA), "no_such_key", "unknown parameter 'no_such_key'"),
    ],
)
def test_bad_input_is_one_message_exit_2_and_nothing_written(tmp_path, capsys, data, params, message):
    out = tmp_path / "petab"
    argv = ["export-petab", str(ICCM), data, "--params", params, "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("exosim: error: ")
    assert not out.exists()


def test_a_range_naming_a_parameter_not_estimated_is_an_error(tmp_path, capsys):
    argv = _iccm_argv(tmp_path / "petab", ICCM_DATA, "--range", "alpha0=0.1:1")
    assert main(argv) == 2
    assert "--range names ['alpha0']" in capsys.readouterr().err
    assert not (tmp_path / "petab").exists()


def test_an_export_with_a_zero_lower_bound_warns_that_exosim_cannot_fit_it_back(tmp_path, capsys):
    """The table's range of the susceptible share starts at 0: written linearly (valid PEtab), but
    ``exosim fit --petab`` estimates in log10 and refuses it; the export says so when it writes."""
    out = tmp_path / "p"
    assert main(["export-petab", str(ICCM), str(ICCM_DATA), "--params", KEY, "-o", str(out)]) == 0
    assert f"{KEY}: lower bound 0, written on a linear scale" in capsys.readouterr().err
    assert main(["fit", "--petab", str(out / "problem.yaml"), "-o", str(tmp_path / "f")]) == 2
    assert "0 < lowerBound < upperBound" in capsys.readouterr().err
    assert main(_iccm_argv(tmp_path / "q")) == 0 and "lower bound 0" not in capsys.readouterr().err


def test_a_second_export_replaces_the_first_as_a_whole(iccm_problem, tmp_path, capsys):
    out = tmp_path / "petab"
    assert main(_iccm_argv(out)) == 0
    (out / "notes_of_mine.txt").write_text("kept")
    (out / "model.xml").write_text("stale")
    assert main(_iccm_argv(out)) == 0
    assert (out / "notes_of_mine.txt").read_text() == "kept"
    assert (out / "model.xml").read_text() == (iccm_problem / "model.xml").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".exosim")]


# ---------------------------------------------------------------------- import: exosim fit --petab
def _copy(folder, tmp_path):
    """A private copy of an exported problem folder (to edit its tables)."""
    return shutil.copytree(folder, tmp_path / "problem")


def _tsv(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _write_tsv(path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_the_export_records_its_scenario_and_the_mapping_in_problem_yaml(iccm_problem):
    meta = yaml.safe_load((iccm_problem / "problem.yaml").read_text())[METADATA_KEY]
    assert meta["scenario"]["path"] == str(ICCM.resolve())
    assert meta["scenario"]["sha256"] == exosim.load_scenario(ICCM).sha256
    assert (iccm_problem / meta["scenario"]["relative_path"]).resolve() == ICCM.resolve()
    assert meta["conditions"]["ICCM_D0p05"] | {"values": None} == {
        "arm": "ICCM",
        "dose": 0.05,
        "reference": "reference_survival",
        "values": None,
    }
    assert (meta["likelihood"], meta["normalise"]) == ("normal", "control")


def test_fit_petab_of_the_iccm_export_is_exosims_fit_of_the_csv(iccm_problem, iccm_fit, tmp_path, capsys):
    """The round trip: ``exosim fit --petab`` on the exported ICCM problem gives the estimate,
    interval and likelihood of exosim's fit of the original CSV file."""
    out = tmp_path / "fit"
    assert main(["fit", "--petab", str(iccm_problem / "problem.yaml"), "-o", str(out)]) == 0
    assert "PEtab problem" in capsys.readouterr().out
    with open(out / "estimates.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    result = iccm_fit.result
    assert row["parameter"] == KEY
    assert float(row["estimate"]) == pytest.approx(float(result.estimate[0]), rel=1e-6)
    assert float(row["low"]) == pytest.approx(float(result.low[0]), rel=1e-6)
    assert float(row["high"]) == pytest.approx(float(result.high[0]), rel=1e-6)
    assert (float(row["range_low"]), float(row["range_high"])) == RANGE
    doc = json.loads((out / "fit.json").read_text())
    assert doc["nll"] == pytest.approx(result.nll, rel=1e-6, abs=1e-12)
    assert {entry["file"].rsplit("/", 1)[-1] for entry in doc["data_files"]} >= {"measurements.tsv", "parameters.tsv"}


#: the ICCM data edited in both forms: survival values scaled by 0.9 and standard deviations by
#: 1.5, the 0.5 Gy point removed (an optimum away from the exported nominal value)
SCALE_Y, SCALE_SD, DROPPED_DOSE = 0.9, 1.5, 0.5


def test_edited_measurements_fit_as_the_correspondingly_edited_csv(iccm_problem, tmp_path):
    folder = _copy(iccm_problem, tmp_path)
    meas = _tsv(folder / "measurements.tsv")
    kept = [r for r in meas if r["simulationConditionId"] != "ICCM_D0p5"]
    for r in kept:
        r["measurement"] = repr(float(r["measurement"]) * SCALE_Y)
        r["noiseParameters"] = repr(float(r["noiseParameters"]) * SCALE_SD)
    assert len(kept) == len(meas) - 1
    _write_tsv(folder / "measurements.tsv", kept)

    with open(ICCM_DATA, newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    edited = tmp_path / "edited.csv"
    lines = [
        f"{r['arm']},{r['dose']},{float(r['survival']) * SCALE_Y!r},{float(r['sd']) * SCALE_SD!r}"
        for r in rows
        if float(r["dose"]) != DROPPED_DOSE
    ]
    edited.write_text("arm,dose,survival,sd\n" + "\n".join(lines) + "\n")

    from_petab = exosim.fit_petab(folder)
    from_csv = exosim.fit(ICCM, data=[edited], params=[KEY], ranges={KEY: RANGE})
    assert from_csv.result.converged and from_petab.result.converged
    assert abs(float(from_csv.result.estimate[0]) - 0.4) > 0.02  # the edit moved the optimum
    assert float(from_petab.result.estimate[0]) == pytest.approx(float(from_csv.result.estimate[0]), rel=1e-6)
    assert from_petab.result.nll == pytest.approx(from_csv.result.nll, rel=1e-6)
    np.testing.assert_allclose(from_petab.result.predicted, from_csv.result.predicted, rtol=1e-6)
    assert from_petab.problem.datasets[0].source.endswith("measurements.tsv:iccm_relative_survival")


def test_time_courses_and_colony_counts_map_back_to_exosims_data(tmp_path):
    """An absolute time course (particles/mL, times on a timeline starting at -24 h), a relative
    one (a closed-form scale) and colony counts under quasi-Poisson read back as the CSV files
    read directly, and the imported problem has exosim's likelihood at the same parameters."""
    hnscc = exosim.load_scenario(HNSCC)
    exosim.export_petab(HNSCC, data=TIMECOURSES, params=TC_PARAMS, outdir=tmp_path / "tc")
    imported = read_petab(tmp_path / "tc")
    assert imported.params == TC_PARAMS and imported.likelihood == "normal"
    for path, got in zip(TIMECOURSES, imported.datasets):
        want = read_observations(path, hnscc)
        assert (got.kind, got.arm, got.observable, got.unit) == (want.kind, want.arm, want.observable, want.unit)
        for name in ("dose", "y", "w", "time", "factor"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert any("closed form" in note for note in imported.notes)  # the relative scale PEtab estimates
    theta = np.array([[0.3364, 118.2]])
    own = FitProblem(hnscc, [read_observations(p, hnscc) for p in TIMECOURSES], TC_PARAMS)
    ours = imported.fit_problem()
    assert ours.nll(ours.predict(theta))[0] == pytest.approx(own.nll(own.predict(theta))[0], rel=1e-9)

    data = tmp_path / "colonies.csv"
    data.write_text("arm,dose,colonies,seeded\nICCM,0.05,58,200\nICCM,2,61,200\nfresh medium,0,98,200\n")
    exosim.export_petab(
        ICCM, data=[data], params=[KEY], outdir=tmp_path / "col", ranges={KEY: RANGE}, likelihood="quasipoisson"
    )
    imported = read_petab(tmp_path / "col")
    (got,) = imported.datasets
    want = read_observations(data, exosim.load_scenario(ICCM))
    assert (imported.likelihood, got.kind, got.arm) == ("quasipoisson", "colonies", want.arm)
    for name in ("dose", "y", "w"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert imported.csv["colonies"].splitlines()[0] == "arm,dose,colonies,seeded"


def _no_map(folder):
    (folder / "parameter_map.csv").unlink()


def _not_utf8(folder):
    with (folder / "measurements.tsv").open("ab") as fh:
        fh.write(b"\xff\xfe\x00")


def _header_only(folder):
    path = folder / "measurements.tsv"
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _petab_v2(folder):
    doc = yaml.safe_load((folder / "problem.yaml").read_text())
    doc["format_version"] = 2
    (folder / "problem.yaml").write_text(yaml.safe_dump(doc))


def _unknown_condition(folder):
    meas = _tsv(folder / "measurements.tsv")
    meas[2]["simulationConditionId"] = "ICCM_D7"
    _write_tsv(folder / "measurements.tsv", meas)


def _unmapped_observable(folder):
    obs = _tsv(folder / "observables.tsv")
    obs.append(obs[0] | {"observableId": "survival_squared", "observableFormula": "recipients__surviving_fraction^2"})
    _write_tsv(folder / "observables.tsv", obs)
    meas = _tsv(folder / "measurements.tsv")
    meas[1]["observableId"] = "survival_squared"
    meas[1]["observableParameters"] = ""
    _write_tsv(folder / "measurements.tsv", meas)


def _not_exported_by_exosim(folder):
    doc = yaml.safe_load((folder / "problem.yaml").read_text())
    del doc[METADATA_KEY]
    (folder / "problem.yaml").write_text(yaml.safe_dump(doc))


def _scenario_changed(folder):
    doc = yaml.safe_load((folder / "problem.yaml").read_text())
    doc[METADATA_KEY]["scenario"]["sha256"] = "0" * 64
    (folder / "problem.yaml").write_text(yaml.safe_dump(doc))


def _reference_estimated(folder):
    par = _tsv(folder / "parameters.tsv")
    par[1]["estimate"] = "1"
    _write_tsv(folder / "parameters.tsv", par)


def _survival_at_another_time(folder):
    meas = _tsv(folder / "measurements.tsv")
    meas[3]["time"] = "24.0"
    _write_tsv(folder / "measurements.tsv", meas)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_no_map, "parameter_map.csv: no such file"),
        (_not_utf8, "measurements.tsv: not a UTF-8 text file"),
        (_header_only, "measurements.tsv: no measurements (the table has its header only)"),
        (_petab_v2, "format_version 2: exosim reads PEtab version 1 problems only"),
        (_unknown_condition, "measurements.tsv: row 4, column 'simulationConditionId': unknown condition id 'ICCM_D7'"),
        (_unmapped_observable, "observables.tsv: row 3: exosim cannot map observable 'survival_squared'"),
        (_not_exported_by_exosim, "not a problem written by exosim export-petab"),
        (_scenario_changed, "the scenario changed since the export"),
        (_reference_estimated, "(reference_survival): estimate 1, but exosim cannot estimate it"),
        (_survival_at_another_time, "row 5, column 'time': 24.0: exosim scores survival at SBML time 193.0 only"),
    ],
)
def test_a_problem_exosim_cannot_map_is_one_message_exit_2_and_nothing_written(
    iccm_problem, tmp_path, capsys, edit, message
):
    folder = _copy(iccm_problem, tmp_path)
    edit(folder)
    out = tmp_path / "fit"
    assert main(["fit", "--petab", str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("exosim: error: ") and message in err[0], err
    assert not out.exists()
    with pytest.raises(PetabImportError):
        read_petab(folder / "problem.yaml")


def test_a_data_file_beside_petab_is_refused_as_data_not_read_as_a_scenario(iccm_problem, tmp_path, capsys):
    """``exosim fit --petab PROBLEM DATA.csv``: the CSV lands in the scenario slot; it is refused as
    data the problem already holds, not parsed as a scenario."""
    data = str(SCENARIOS / "data" / "iccm_relative_survival.csv")
    assert main(["fit", "--petab", str(iccm_problem / "problem.yaml"), data, "-o", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "the data and the estimated parameters come from the PEtab problem" in err and "YAML" not in err


def test_the_scenario_is_found_where_recorded_and_another_one_is_fitted_with_a_warning(iccm_problem, tmp_path, capsys):
    folder = _copy(iccm_problem, tmp_path)
    doc = yaml.safe_load((folder / "problem.yaml").read_text())
    doc[METADATA_KEY]["scenario"].update(path=str(tmp_path / "moved.yaml"), relative_path="moved.yaml")
    (folder / "problem.yaml").write_text(yaml.safe_dump(doc))
    # the recorded file is gone: one message asking for the scenario
    assert main(["fit", "--petab", str(folder), "-o", str(tmp_path / "fit")]) == 2
    assert "give it: exosim fit SCENARIO.yaml --petab PROBLEM" in capsys.readouterr().err
    # the same file given: no warning
    assert read_petab(folder, ICCM).scenario.sha256 == doc[METADATA_KEY]["scenario"]["sha256"]
    # a copy with one comment more is another file: fitted with a warning naming both
    edited = tmp_path / "iccm_edited.yaml"
    edited.write_text(ICCM.read_text() + "\n# edited after the export\n")
    with pytest.warns(PetabImportWarning, match="is not that of the scenario"):
        imported = read_petab(folder, edited)
    assert imported.scenario.source == str(edited) and imported.params == [KEY]
    # options that contradict the problem are refused
    assert main(["fit", str(ICCM), "--petab", str(folder), "--normalise", "none", "-o", str(tmp_path / "f")]) == 2
    assert "holds survival normalised 'control'" in capsys.readouterr().err
    assert main(["fit", "--petab", str(folder), "--params", KEY, "-o", str(tmp_path / "f")]) == 2
    assert "come from the PEtab problem" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
