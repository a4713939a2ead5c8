"""Fitting exosome counts and uptake over time: closed-form recovery, joint fits of several
files, unit handling, relative data with a fitted scale, and bad time-course files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

import exosim
from conftest import SCENARIOS
from exosim.analysis import fit as _fit
from exosim.cli import main
from exosim.scenario.runner import CompiledScenario

K_TRUE, C0 = 0.035, 1e9  # 1/h: about a 20 h half-life in medium; particles/mL added at t = 0
TIMES = np.array([2, 6, 12, 24, 36, 48, 72.0])

DECAY = {
    "exosim": 1,
    "name": "vesicle_decay_in_medium",
    "type": "custom",
    "description": "Exosomes added to cell-free medium lose their integrity at a first-order rate.",
    "media": {"dish": {"volume": "1 mL"}},
    # no cells (0: absent), non-binding: the scored population only names the end of the protocol
    "populations": {
        "cells": {"cell_line": "hnscc_pooled", "cells": 0, "medium": "dish", "parameters": {"binding_factor": 0}}
    },
    "timeline": [
        {"at": "0 h", "add": {"medium": "dish", "concentration": "1e9 particles/mL"}},
        {"at": "72 h", "score": {"population": "cells"}},
    ],
}


@pytest.fixture(scope="module")
def decay(tmp_path_factory):
    path = tmp_path_factory.mktemp("decay") / "decay.yaml"
    path.write_text(yaml.safe_dump(DECAY))
    return path


def write(path, header, rows):
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def closed_form_data(tmp_path, unit="particles/mL", factor=1.0, seed=5):
    """NTA-like counts from the closed form C0 exp(-k t) with 5% noise, not from the simulator."""
    rng = np.random.default_rng(seed)
    truth = C0 * np.exp(-K_TRUE * TIMES) * factor
    sd = 0.05 * truth
    y = truth + rng.normal(0, sd)
    return write(
        tmp_path / f"nta_{unit.replace('/', '_')}.csv",
        "time,observable,value,sd,unit",
        [(t, "dish.vesicle_concentration", v, s, unit) for t, v, s in zip(TIMES, y, sd)],
    )


def test_decay_rate_is_recovered_from_counts_following_the_closed_form(decay, tmp_path):
    sc = exosim.load_scenario(decay)
    prob = _fit.FitProblem(sc, _fit.read_observations(closed_form_data(tmp_path), sc), ["vesicle_decay_rate"])
    res = _fit.fit(prob)
    assert res.converged
    assert res.low[0] < K_TRUE < res.high[0], (res.low, res.estimate, res.high)
    assert res.high[0] / res.low[0] < 1.3  # seven points at 5% pin a decay rate to a few percent
    assert res.gof["p_value"] > 0.001 and res.gof["dof"] == TIMES.size - 1
    assert res.open_ends == [""]
    # the same counts per microlitre: the unit is converted, the estimate does not move
    per_ul = _fit.read_observations(closed_form_data(tmp_path, "particles/uL", 1e-3), sc)
    res_ul = _fit.fit(_fit.FitProblem(sc, per_ul, ["vesicle_decay_rate"]))
    assert res_ul.estimate[0] == pytest.approx(res.estimate[0], rel=1e-4)


def test_a_parameter_the_data_do_not_inform_is_reported_open_at_both_ends(decay, tmp_path):
    """The cells do not bind vesicles here, so their internalisation rate cannot change the counts."""
    sc = exosim.load_scenario(decay)
    res = _fit.fit(
        _fit.FitProblem(sc, _fit.read_observations(closed_form_data(tmp_path), sc), ["internalisation_rate"])
    )
    assert res.open_ends == ["low, high"]
    assert (res.low[0], res.high[0]) == pytest.approx((0.1, 5.0))  # the table's search range


def test_value_at_an_event_time_is_the_value_just_before_it(decay):
    sc = exosim.load_scenario(decay)
    res = CompiledScenario(sc).run(record_times=np.array([0.0, 24.0, 72.0]))
    conc = res.observables[0, :, res.model.observable_index["dish__vesicle_concentration"]]
    assert conc[0] == 0.0  # the add event at 0 h has not happened yet
    assert conc[1:] == pytest.approx(C0 * np.exp(-0.02 * np.array([24.0, 72.0])), rel=1e-5)  # table value 0.02 /h
    with pytest.raises(ValueError, match="within the timeline"):
        CompiledScenario(sc).run(record_times=np.array([80.0]))


def test_recorded_times_agree_with_the_regular_output_grid():
    sc = exosim.load_scenario(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    c = CompiledScenario(sc)
    regular = c.run()
    picked = c.run(record_times=np.array([6.0, 25.0, 30.0, 49.0]))
    idx = np.searchsorted(regular.times, picked.times)
    assert np.allclose(regular.times[idx], picked.times)
    assert np.allclose(picked.states, regular.states[:, idx], rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def hnscc(tmp_path_factory):
    """The default scenario reduced to two arms and two grid doses, as a file."""
    raw = yaml.safe_load((SCENARIOS / "hnscc_exosome_radioresistance.yaml").read_text())
    raw["arms"] = [a for a in raw["arms"] if a["name"] in ("no exosomes", "exosomes from 6 Gy donors")]
    raw["dose_grid"]["values"] = [0, 4]
    path = tmp_path_factory.mktemp("hnscc") / "hnscc.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


ARM = "exosomes from 6 Gy donors"
UPTAKE = "recipients.bound_vesicles + recipients.internalised_vesicles"  # a membrane dye sees both
PARAMS = ["internalisation_rate", "baseline_release_rate"]


def joint_data(tmp_path, scenario, truth, seed, uptake_scale=1000.0):
    """Files of NTA counts of the donor medium (absolute) and dye uptake by recipients (relative)
    simulated at known parameters with noise; returns the data sets read back from the files."""
    nta = [(ARM, t, "donor_flask.vesicle_concentration") for t in (2, 6, 12, 18, 24)]
    uptake = [(ARM, t, UPTAKE) for t in ("25.5", "26", "27", "29", "33", "41", "49")]
    files = [
        write(tmp_path / "nta.csv", "arm,time,observable,value,sd", [r + (1, 1) for r in nta]),
        write(tmp_path / "uptake.csv", "arm,time,observable,value,sd,unit", [r + (1, 1, "relative") for r in uptake]),
    ]
    prob = _fit.FitProblem(scenario, [_fit.read_observations(p, scenario) for p in files], PARAMS)
    res = prob.simulate(np.array([truth]), prob.record_times)
    rng = np.random.default_rng(seed)
    for ds, members, rows, path in zip(prob.datasets, prob._members, (nta, uptake), files):
        model = prob.timecourse_values(res, ds, members, ds.time, ds.observable)[0]
        if ds.groups:  # fluorescence in a.u.: a scale the fit does not know, noise 5% of the maximum
            model = model * uptake_scale
            sd = np.full(model.size, 0.05 * model.max())
            write(
                path,
                "arm,time,observable,value,sd,unit",
                [r + (max(v, 0.0), s, "relative") for r, v, s in zip(rows, model + rng.normal(0, sd), sd)],
            )
        else:
            sd = 0.1 * model  # NTA: 10% CV
            write(
                path,
                "arm,time,observable,value,sd",
                [r + (max(v, 0.0), s) for r, v, s in zip(rows, model + rng.normal(0, sd), sd)],
            )
    return [_fit.read_observations(p, scenario) for p in files]


def test_release_and_uptake_rates_are_recovered_jointly_from_counts_and_relative_uptake(tmp_path, hnscc):
    truth = [0.4, 120.0]  # 1/h, particles/cell/h; table values 1.0 and 60
    sc = exosim.load_scenario(hnscc)
    data = joint_data(tmp_path, sc, truth, seed=0)
    prob = _fit.FitProblem(sc, data, PARAMS)
    res = _fit.fit(prob)
    assert res.converged
    for lo, t, hi in zip(res.low, truth, res.high):
        assert lo < t < hi, (res.params, res.low, res.estimate, res.high)
    assert res.high[1] / res.low[1] < 1.6  # absolute counts pin the release rate
    assert res.gof["n_nuisance"] == 1 and len(res.gof["files"]) == 2 and res.gof["p_value"] > 0.001
    scale = res.nuisance[f"scale[{data[1].source}: {UPTAKE}]"]
    assert 500 < scale < 2000  # the unknown a.u. per particle (1000) is estimated on the way

    # relative data carry no unit: multiplying values and errors by 7 changes only the scale
    data[1].y, data[1].w = data[1].y * 7, data[1].w * 7
    res7 = _fit.fit(prob)
    assert res7.estimate == pytest.approx(res.estimate, rel=1e-3)
    assert res7.nuisance[f"scale[{data[1].source}: {UPTAKE}]"] == pytest.approx(7 * scale, rel=1e-3)


def test_cli_fits_several_files_and_reports_each(tmp_path, hnscc, capsys):
    data = joint_data(tmp_path, exosim.load_scenario(hnscc), [0.4, 120.0], seed=1)
    out = tmp_path / "out"
    code = main(
        ["fit", str(hnscc), data[0].source, data[1].source, "--params", "baseline_release_rate", "-o", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "fit.json").read_text())
    assert [f["file"] for f in doc["data_files"]] == [data[0].source, data[1].source]
    assert {f["kind"] for f in doc["goodness_of_fit"]["files"]} == {"timecourse"}
    assert {o["observable"] for o in doc["observations"]} == {"donor_flask.vesicle_concentration", UPTAKE}
    assert 60 < doc["estimates"][0]["estimate"] < 240 and (out / "fit.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "nta.csv" in printed and "uptake.csv" in printed


@pytest.mark.parametrize(
    "content, words",
    [
        (
            "time,observable,value,sd\n2,dish.vesicle_concentraton,1e8,1e7\n",
            ["row 2", "'observable'", "did you mean 'dish.vesicle_concentration'"],
        ),
        ("time,observable,value,sd\n100,dish.vesicle_concentration,1e8,1e7\n", ["row 2", "'time'", "outside"]),
        ("time,observable,value,sd\n2 fortnights,dish.vesicle_concentration,1e8,1e7\n", ["row 2", "'time'", "unit"]),
        ("time,observable,value,sd\n2,dish.vesicle_concentration,-5,1e7\n", ["row 2", "'value'", "non-negative"]),
        ("time,observable,value,sd\n2,dish.vesicle_concentration,5,0\n", ["row 2", "'sd'", "positive"]),
        (
            "time,observable,value,sd,unit\n2,dish.vesicle_concentration,5,1,particles/cell\n",
            ["row 2", "'unit'", "cannot be converted"],
        ),
        (
            "time,observable,value,sd,unit\n2,dish.vesicle_concentration,5,1,particles/ml\n",
            ["row 2", "'unit'", "case-sensitive: did you mean 'particles/mL'?"],
        ),
        (
            "time,observable,value,sd,unit\n2,dish.vesicle_concentration,5,1,relative\n"
            "6,dish.vesicle_concentration,5,1,particles/mL\n",
            ["'unit'", "both in relative and in absolute"],
        ),
        ("time,observable,value,sd,dose\n2,dish.vesicle_concentration,5,1,2\n", ["'dose'", "no dose grid"]),
        (
            "time,observable,value,sd\n2,dish.vesicle_concentration + cells.dsb,5,1\n",
            ["row 2", "'observable'", "different units"],
        ),
        ("time,value,sd\n2,5,1\n", ["columns", "'observable'"]),
    ],
)
def test_bad_timecourse_files_name_file_row_column(decay, tmp_path, capsys, content, words):
    data = tmp_path / "bad.csv"
    data.write_text(content)
    out = tmp_path / "out"
    code = main(["fit", str(decay), str(data), "--params", "vesicle_decay_rate", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and str(data) in err and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_calibration_block_may_name_several_files(tmp_path):
    closed_form_data(tmp_path)
    closed_form_data(tmp_path, "particles/uL", 1e-3, seed=6)
    doc = dict(
        DECAY, calibration={"data": ["nta_particles_mL.csv", "nta_particles_uL.csv"], "params": ["vesicle_decay_rate"]}
    )
    path = tmp_path / "decay.yaml"
    path.write_text(yaml.safe_dump(doc))
    prob = _fit.calibration_problem(exosim.load_scenario(path))
    assert [d.source for d in prob.datasets] == [
        str(tmp_path / "nta_particles_mL.csv"),
        str(tmp_path / "nta_particles_uL.csv"),
    ]
    res = _fit.fit(prob)
    assert res.low[0] < K_TRUE < res.high[0] and res.gof["dof"] == 2 * TIMES.size - 1


def test_shipped_example_files_read_against_the_default_scenario():
    """examples/timecourse (synthetic, README) stays in the format the reader accepts."""
    sc = exosim.load_scenario(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    folder = SCENARIOS.parent / "examples" / "timecourse"
    nta, uptake = (_fit.read_observations(folder / f, sc) for f in ("nta.csv", "uptake.csv"))
    assert nta.kind == uptake.kind == "timecourse" and uptake.groups == [UPTAKE] and not nta.groups
    assert nta.time.max() <= 25.0 < uptake.time.min()  # release before, uptake after the transfer at 25 h
    assert "SYNTHETIC" in (folder / "nta.csv").read_text().splitlines()[0]
