"""Output files: names that look like numbers or NaN survive, missing values are empty cells,
fit data are checked against what a colony assay can give."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS
from exosim.analysis import fit as _fit
from exosim.cli import main


def test_arm_names_containing_nan_are_written_as_given(tmp_path):
    data = yaml.safe_load((SCENARIOS / "mir22_exosome_radiosensitisation.yaml").read_text())
    data["arms"][1]["name"] = "nanovesicles from 0 Gy donors"
    path = tmp_path / "nano.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--no-figure"]) == 0
    with open(tmp_path / "out" / "timecourses.csv") as fh:
        rows = list(csv.reader(fh))
    arms = {r[0] for r in rows[1:]}
    assert "nanovesicles from 0 Gy donors" in arms and not any(a.startswith("ovesicles") for a in arms)
    assert all(cell != "nan" for r in rows[1:] for cell in r[1:])


def test_failed_members_are_empty_cells_in_the_time_courses(tmp_path):
    from exosim.io.tables import timecourses_csv

    sc = exosim.load_scenario(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")
    compiled = exosim.compile_scenario(sc)
    p = compiled.parameters.copy()
    p[3, compiled.model.parameter_index["cancer_cells__dsb_yield"]] = np.inf
    res = compiled.run(parameters=p)
    lines = timecourses_csv(res).splitlines()
    n_t = res.times.size
    failed = lines[1 + 3 * n_t + n_t - 1].split(",")  # the last time of member 3
    ok = lines[1 + 2 * n_t + n_t - 1].split(",")
    assert "" in failed[3:] and "" not in ok[3:]


def test_more_colonies_than_cells_seeded_is_an_error(tmp_path):
    sc = exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")
    bad = tmp_path / "colonies.csv"
    bad.write_text("arm,dose,colonies,seeded\nICCM,0,120,100\n")
    with pytest.raises(_fit.FitError, match=r"row 2, column 'colonies': 120 colonies from 100 cells seeded"):
        _fit.read_observations(bad, sc)


def test_a_dose_between_grid_points_is_simulated_exactly(tmp_path):
    """The fit simulates the data's own doses: a dose between grid points is not snapped to one."""
    sc = exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")
    data = tmp_path / "survival.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0.3,0.6,0.05\n")
    assert 0.3 not in sc.dose_grid.values
    problem = _fit.FitProblem(
        sc,
        _fit.read_observations(data, sc),
        ["recipients.bystander_susceptible_fraction"],
        ranges={"recipients.bystander_susceptible_fraction": (0.03, 0.9)},
    )
    predicted = problem.predict(problem.nominal[None, :])[0, 0]
    grid = sc.dose_grid.model_copy(update={"values": [0, 0.3]})
    res = exosim.run(sc.model_copy(update={"dose_grid": grid}), time_courses=False, solver=problem.backend)
    rel = res.survival.set_index(["arm", "grid_dose_Gy"])["sf_vs_untreated"]
    reference = rel[("ICCM", 0.3 * {"Gy": 1, "cGy": 0.01, "mGy": 1e-3}[sc.dose_grid.unit])]
    assert predicted == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize(
    "args,module,extra",
    [
        (["export", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), "-o", "OUT/m.xml"], "sbmlutils", "sbml"),
        (["export-sbml", "-o", "OUT"], "libsbml", "sbml"),
        (
            ["sensitivity", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), "--group", "uptake", "-o", "OUT"],
            "SALib",
            "sensitivity",
        ),
    ],
)
def test_a_missing_extra_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, args, module, extra):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    out = tmp_path / "out"
    assert main([a.replace("OUT", str(out)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f'pip install "exosim[{extra}]"' in err and module in err, err
    assert not out.exists()


def test_a_numba_scenario_without_numba_is_a_scenario_error(tmp_path, capsys, monkeypatch):
    from exosim.simulate import solver

    monkeypatch.setattr(solver, "numba_available", lambda: False)
    data = yaml.safe_load((SCENARIOS / "mir22_exosome_radiosensitisation.yaml").read_text())
    data["solver"] = {"backend": "numba"}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "solver.backend" in err and "exosim[fast]" in err and err.count("\n") == 0, err


def test_every_command_prints_scenario_warnings_as_one_line(capsys):
    """The survivin scenario's hypothesis sets a value outside its documented range: every command says so."""
    assert main(["delivery", str(SCENARIOS / "survivin_proton_donor_radioresistance.yaml")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert warnings and all(w.startswith("exosim: warning: ") for w in warnings), warnings
    assert any("copies_per_particle" in w and "documented range" in w for w in warnings)


def test_delivery_says_when_a_scenario_has_no_row(capsys):
    """The dsDNA scenario's cargo has no amount for half effect: a note on stderr, the table intact."""
    path = SCENARIOS / "exosomal_dsdna_abscopal_immune.yaml"
    assert main(["delivery", str(path)]) == 0
    out, err = capsys.readouterr()
    assert (
        out.splitlines()[:2]
        == [
            "| scenario | arm | cargo | delivered per cell | / amount for half effect |",
            "|---|---|---|---:|---:|",
        ]
        and len(out.splitlines()) == 2
    )
    assert f"exosim: note: {path}: no cargo with an amount for half effect" in err


@pytest.mark.parametrize(
    "name", ["hnscc_exosome_radioresistance", "fractionated_course_exosome_buildup", "exosomal_dsdna_abscopal_immune"]
)
def test_summary_columns_list_every_column_the_summary_writes(runs, name):
    """Evidence entries are checked against ``summary_columns`` before any run: it must name every
    column ``summary_rows`` writes (dose grid or not, tumour volumes, cargo)."""
    from exosim.scenario.observables import summary_columns

    res = runs(name)
    written = {k for row in res.summary_rows() for k in row}
    assert written and written <= set(summary_columns(res.model)), written - set(summary_columns(res.model))


def test_provenance_names_the_hypothesis_that_sets_a_value(tmp_path):
    """A value from a hypothesis block is not the catalogue's: the parameter's source names the
    block's key path (the catalogue's source is kept beside it) and the scenario lists what changed."""
    import json

    from conftest import as_hypothesis, single_well

    data = as_hypothesis(single_well(parameters={"cells.alpha0": "0.3 1/Gy"}))
    f = tmp_path / "hyp.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", str(f), "-o", str(tmp_path / "out"), "--no-figure", "--no-timecourses"]) == 0
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    entry = next(p for p in prov["parameters"] if p["name"] == "cells.alpha0")
    assert entry["value"] == 0.3 and entry["source"] == "hypothesis: hypothesis.parameters.cells.alpha0"
    assert "hnscc_pooled" in entry["catalogue_source"]
    assert prov["scenario"]["changed"] == ["hypothesis.parameters.cells.alpha0"]
    others = [p for p in prov["parameters"] if p["name"] != "cells.alpha0"]
    assert not any(p["source"].startswith("hypothesis") for p in others)
