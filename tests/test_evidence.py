"""The evidence scorecard: entries as data, bad input, failed rows, pass rates, calibration
reading only calibration entries, and the hypothesis rule of scenarios."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

import exosim
from conftest import ROOT, SCENARIOS
from exosim.analysis import calibrate as calibrate_module
from exosim.analysis.calibrate import CHI2_95, calibrate, calibration_objective
from exosim.analysis.evidence import (
    MODULES,
    Observed,
    load_evidence,
    pass_rates,
    run_evidence,
)
from exosim.cli import main

EVIDENCE = ROOT / "evidence"


@pytest.fixture(scope="module")
def evidence():
    return load_evidence(EVIDENCE)


# ------------------------------------------------------------------ the shipped evidence
def test_the_evidence_covers_thirty_entries_from_twelve_papers_a_third_validation(evidence):
    entries = evidence.entries
    papers = {e.source.identifier for e in entries}
    roles = [e.role for e in entries]
    assert len(entries) >= 30 and len(papers) >= 12
    assert roles.count("validation") >= len(entries) / 3
    assert {e.spec.module for e in entries} <= set(MODULES)
    # every entry says how its number was obtained and runs a protocol file that exists
    assert all(e.spec.obtained.strip() and e.protocol.is_file() for e in entries)


def test_evidence_runs_on_catalogue_biology_even_where_a_scenario_states_a_hypothesis(tmp_path):
    # an entry whose protocol is a shipped scenario with a hypothesis block (survivin loading)
    doc = json.loads(json.dumps(GOOD))
    doc["entries"][0].update(
        protocol=str(SCENARIOS / "survivin_proton_donor_radioresistance.yaml"),
        observable={"quantity": "survival", "arm": "exosomes from 4 Gy donors", "dose": "4 Gy"},
        observed={"value": 0.3, "sd": 0.1},
    )
    f = tmp_path / "h.yaml"
    f.write_text(yaml.safe_dump(doc, sort_keys=False))
    plain = load_evidence(f)
    assert all(not plain.protocols[e.protocol].hypotheses for e in plain.entries)
    assert {r["status"] for r in run_evidence(plain)} <= {"ok"}
    flagged = load_evidence(f, with_hypotheses=True)
    rows = run_evidence(flagged)
    assert {r["status"] for r in rows} == {"hypothesis (not counted)"}
    assert all(r["hypothesis"] for r in rows)
    rates = pass_rates(rows)
    assert rates["calibration"]["entries"] == 0 and rates["validation"]["entries"] == 0


def test_a_subset_runs_from_the_command_line_and_reads_the_catalogue(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evidence", str(EVIDENCE / "qi2012.yaml"), "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"scorecard.csv", "scorecard.md", "scorecard.png", "provenance.json"}
    import csv

    rows = {r["entry"]: r for r in csv.DictReader((out / "scorecard.csv").open())}
    # no exosomes: alpha_eff is the cell line's alpha0 and alpha/beta its ratio (closed forms)
    from exosim.model.catalogue import cell_lines

    line = cell_lines()["hnscc_pooled"]
    assert float(rows["qi2012_alpha_hnscc"]["model"]) == pytest.approx(line["alpha0"], rel=1e-3)
    assert float(rows["qi2012_alpha_beta_hnscc"]["model"]) == pytest.approx(line["alpha0"] / line["beta0"], rel=1e-3)
    # two repair classes: DSBs halve when (1 - s) e^{-lambda t} + s e^{-lambda_s t} = 1/2
    # (binary misrejoining at 2 Gy shortens it by under 2 %)
    from scipy.optimize import brentq

    from exosim.model.catalogue import parameter_table

    table = parameter_table()
    share, lam = table["slow_repair_share"]["value"], np.log(2) / line["repair_half_time"]
    lam_s = np.log(2) / table["slow_repair_half_time"]["value"]
    t_half = brentq(lambda t: (1 - share) * np.exp(-lam * t) + share * np.exp(-lam_s * t) - 0.5, 0, 10)
    assert float(rows["qi2012_repair_half_time"]["model"]) == pytest.approx(t_half * 60, rel=0.02)
    assert all(r["within"] == "yes" for r in rows.values())
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["entries"] == 3 and len(prov["evidence_sha256"]) == 64 and "parameters.yaml" in prov["catalogue_sha256"]
    assert "calibration: 3/3 within uncertainty" in capsys.readouterr().out


# ------------------------------------------------------------------ bands and failed rows
def test_bands_follow_the_reported_uncertainty():
    assert Observed(value=2.0, sd=0.5).bounds() == (1.0, 3.0)
    assert Observed(value=2.0, sem=0.1, n=4).bounds() == pytest.approx((1.6, 2.4))  # SD = SEM * sqrt(n)
    assert Observed(value=2.0, interval=(1.5, 3.0)).bounds() == (1.5, 3.0)
    assert Observed(value=2.0, tolerance=0.25, tolerance_reason="r").bounds() == (1.5, 2.5)


def test_a_direction_or_bound_is_an_interval_without_a_value_and_fits_anywhere_inside():
    """A paper that reports only a direction gives a band, no value: the calibration objective
    adds nothing for a model value inside the band and the squared distance outside it, so no
    made-up central value pulls a fit."""
    from exosim.analysis.calibrate import _chi_square

    bound = Observed(interval=(1.1, 3.0))
    assert bound.bound_only and bound.bounds() == (1.1, 3.0)
    assert bound.shown == pytest.approx((1.1 * 3.0) ** 0.5)
    assert "no value reported" in bound.describe()
    row = {"status": "ok", "low": 1.1, "high": 3.0, "observed": bound.shown, "bound_only": True}
    assert _chi_square([{**row, "model": 1.2}]) == 0.0 == _chi_square([{**row, "model": 2.9}])
    sd = (3.0 - 1.1) / 4.0
    assert _chi_square([{**row, "model": 1.0}]) == pytest.approx((0.1 / sd) ** 2)
    assert _chi_square([{**row, "model": 3.5}]) == pytest.approx((0.5 / sd) ** 2)
    # a reported value keeps its residual inside the band
    valued = {**row, "observed": 2.0, "bound_only": False}
    assert _chi_square([{**valued, "model": 1.2}]) == pytest.approx((0.8 / sd) ** 2)
    with pytest.raises(ValueError, match="reported value"):
        Observed(sd=0.5)


def test_a_failed_run_is_a_failed_row_never_a_dropped_one(evidence):
    sub = evidence.select(ids=["qi2012_alpha_hnscc", "jbpe_sf2_hela"])

    def broken(compiled, p, times):
        raise FloatingPointError("solver blew up")

    rows = run_evidence(sub, runner=broken)
    assert sorted(r["entry"] for r in rows) == ["jbpe_sf2_hela", "qi2012_alpha_hnscc"]
    assert all(r["status"] == "failed" and r["within"] == "no" and "solver blew up" in r["message"] for r in rows)
    rates = pass_rates(rows)
    assert rates["calibration"] == {"entries": 2, "passed": 0, "failed_runs": 2, "rate": 0.0}


# ------------------------------------------------------------------ bad input
GOOD = {
    "source": {"citation": "A et al. 2020 J 1:1", "doi": "10.1000/xyz"},
    "entries": [
        {
            "id": "a2020_sf2",
            "measured": "SF2",
            "cells": "HeLa",
            "module": "lq",
            "role": "calibration",
            "protocol": str(EVIDENCE / "protocols" / "direct_irradiation_hela.yaml"),
            "observable": {"quantity": "survival", "normalise": "within_arm", "dose": "2 Gy"},
            "observed": {"value": 0.42, "sd": 0.06},
            "obtained": "table 1",
        }
    ],
}


def _with(path: str, value):
    data = json.loads(json.dumps(GOOD))
    keys = path.split(".")
    target = data
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


BAD = [
    ("missing field", "entries.0.observed", None, "entries[0].observed", "required"),
    (
        "unknown observable",
        "entries.0.observable.quantity",
        "cells.dsbb",
        "entries[0].observable.quantity",
        "did you mean 'cells.dsb'",
    ),
    (
        "foci of a population without the assay",
        "entries.0.observable.quantity",
        "cells.foci",
        "entries[0].observable.quantity",
        "add 'assays: [foci]' to population 'cells'",
    ),
    (
        "unit that does not convert",
        "entries.0.observable.unit",
        "mL",
        "entries[0].observable.unit",
        "cannot be converted",
    ),
    ("uncertainty not positive", "entries.0.observed.sd", 0, "entries[0].observed.sd", "greater than 0"),
    ("two uncertainties", "entries.0.observed.sem", 0.01, "entries[0].observed", "exactly one of"),
    (
        "tolerance without a reason",
        "entries.0.observed",
        {"value": 0.4, "tolerance": 0.1},
        "entries[0].observed",
        "tolerance_reason",
    ),
    ("unknown role", "entries.0.role", "training", "entries[0].role", "'calibration' or 'validation'"),
    ("no doi", "source.doi", None, "source", "doi"),
    (
        "dose not in the grid",
        "entries.0.observable.dose",
        "3 Gy",
        "entries[0].observable.dose",
        "not a dose of the protocol",
    ),
    ("unknown arm", "entries.0.observable.arm", "treated", "entries[0].observable.arm", "no arm 'treated'"),
    ("missing protocol file", "entries.0.protocol", "nowhere.yaml", "entries[0].protocol", "no scenario file"),
    ("dose left out of a grid", "entries.0.observable.dose", None, "entries[0].observable.dose", "name one of"),
    (
        "window without a statistic",
        "entries.0.observable.window",
        ["0 h", "4 h"],
        "entries[0].observable.window",
        "statistic",
    ),
    ("survival per something", "entries.0.observable.per", "cells.dsb", "entries[0].observable.per", "same kind"),
    (
        "window from its end to its start",
        "entries.0.observable",
        {"quantity": "cells.dsb", "statistic": "max", "window": ["3 h", "1 h"], "dose": "2 Gy"},
        "entries[0].observable.window",
        "with the start before the end",
    ),
    (
        "misspelt summary column",
        "entries.0.observable.quantity",
        "summary.alfa_eff_per_Gy",
        "entries[0].observable.quantity",
        "did you mean 'summary.alpha_eff_per_Gy'",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_evidence_gives_one_clear_error_exit_2_and_writes_nothing(tmp_path, capsys, case):
    _, path, value, key_path, words = case
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(_with(path, value), sort_keys=False))
    out = tmp_path / "out"
    assert main(["evidence", str(f), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(f) in err and key_path in err and words in err, err
    assert not out.exists()


def test_the_good_base_of_the_bad_cases_runs(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    assert main(["evidence", str(f), "-o", str(tmp_path / "out")]) == 0


# ------------------------------------------------------------------ calibration
def test_the_calibration_objective_reads_only_calibration_entries(evidence):
    seen = []

    def recording(compiled, p, times):
        seen.append(compiled.scenario.name)
        return compiled.run(time_courses=times is not None, parameters=p, record_times=times)

    objective, cal = calibration_objective(evidence, ["bystander_susceptible_fraction"], runner=recording)
    assert {e.role for e in cal.entries} == {"calibration"}
    validation_ids = {e.id for e in evidence.entries if e.role == "validation"}
    assert validation_ids and not validation_ids & {e.id for e in cal.entries}
    value = objective(np.array([0.4]))
    assert math.isfinite(value)
    calibration_only = {evidence.protocols[e.protocol].name for e in cal.entries}
    validation_only = {evidence.protocols[e.protocol].name for e in evidence.entries if e.role == "validation"}
    assert set(seen) == calibration_only
    assert validation_only - calibration_only and not (validation_only - calibration_only) & set(seen)


def test_calibration_recovers_a_known_value_and_says_what_is_not_identified(evidence, monkeypatch):
    # a stand-in model: entry 0 reads parameter x directly (observed 2 +- 0.25); the other
    # parameter y plays no part, so its profile is flat
    def fake_sets(ev, names, theta, *, solver=None, runner=None):
        rows = []
        for row in np.atleast_2d(theta):
            x = dict(zip(names, row)).get("bystander_commitment_rate", 0.0)  # no names: the catalogue values
            rows.append([{"status": "ok", "model": x, "observed": 2.0, "low": 1.5, "high": 2.5}])
        return rows

    monkeypatch.setattr(calibrate_module, "run_evidence_sets", fake_sets)
    res = calibrate(
        evidence,
        ["bystander_commitment_rate", "unbinding_rate"],
        ranges={"bystander_commitment_rate": (0.1, 10)},
        profile_points=9,
    )
    assert res.estimates["bystander_commitment_rate"] == pytest.approx(2.0, rel=1e-2)
    assert res.objective == pytest.approx(0.0, abs=1e-3)
    lo, hi = res.intervals["bystander_commitment_rate"]
    assert lo <= 2.0 <= hi and res.identified["bystander_commitment_rate"]
    # the exact interval is 2 +- 1.96 x 0.25 = [1.51, 2.49]; the crossings interpolated on a grid of
    # 9 log-spaced points over [0.1, 10] land near it, and neither end is open
    assert 1.4 < lo < 1.7 and 2.1 < hi < 2.6 and res.open_ends["bystander_commitment_rate"] == (False, False)
    assert not res.identified["unbinding_rate"]  # chi-square flat in it: the evidence says nothing
    assert res.open_ends["unbinding_rate"] == (True, True)  # its interval is the whole searched range
    assert CHI2_95 == pytest.approx(3.841, abs=1e-3)


def test_profile_interval_interpolates_the_crossings_and_flags_open_ends():
    from exosim.analysis.calibrate import profile_interval

    z = np.log([0.5, 1.0, 2.0, 4.0, 8.0])
    (lo, hi), opened = profile_interval(z, np.array([10.0, 2.0, 0.5, 3.0, 12.0]), np.log(2.2))
    # between 1 (rise 2) and 0.5 (rise 10), and between 4 (rise 3) and 8 (rise 12), in log space
    assert lo == pytest.approx(np.log(1.0) + (3.841 - 2.0) / 8.0 * np.log(0.5), rel=1e-12)
    assert hi == pytest.approx(np.log(4.0) + (3.841 - 3.0) / 9.0 * np.log(2.0), rel=1e-12)
    assert opened == (False, False)
    # a profile that never crosses: the interval is the grid's range, open at both ends
    (lo, hi), opened = profile_interval(z, np.array([1.0, 1.0, 0.2, 1.0, 1.0]), np.log(2.2))
    assert (lo, hi) == (pytest.approx(np.log(0.5)), pytest.approx(np.log(8.0))) and opened == (True, True)
    # the estimate between the estimate-side grid point and a crossing: no collapse onto the estimate
    (lo, hi), opened = profile_interval(np.log([0.5, 3.397, 8.0]), np.array([0.1, 0.4, 50.0]), np.log(3.397))
    assert hi > np.log(3.397) and opened == (True, False)


# ------------------------------------------------------------------ hypotheses in scenarios
def test_run_flags_a_hypothesis_and_no_hypotheses_runs_catalogue_biology(tmp_path, capsys):
    path = SCENARIOS / "survivin_proton_donor_radioresistance.yaml"
    with_h, without = tmp_path / "h", tmp_path / "c"
    assert main(["run", str(path), "-o", str(with_h), "--no-timecourses", "--no-figure"]) == 0
    assert "exosim: note: runs a hypothesis" in capsys.readouterr().err
    assert main(["run", str(path), "-o", str(without), "--no-timecourses", "--no-figure", "--no-hypotheses"]) == 0
    assert "runs a hypothesis" not in capsys.readouterr().err
    ph = json.loads((with_h / "provenance.json").read_text())["scenario"]
    pc = json.loads((without / "provenance.json").read_text())["scenario"]
    assert ph["hypotheses"] and "changed by the hypotheses" in ph["biology"]
    assert pc["hypotheses"] == [] and pc["biology"] == "catalogue values only"
    import csv

    def dmf(d):
        rows = csv.DictReader((d / "summary.csv").open())
        return float(next(r["dmf_at_sf0.1"] for r in rows if r["arm"] == "exosomes from 4 Gy donors"))

    # DMF below 1: protection; ten survivin copies per vesicle protect more than the catalogue's loading
    assert dmf(with_h) < dmf(without) <= 1.0


def test_no_shipped_scenario_changes_biology_outside_a_hypothesis_block():
    # every shipped scenario loads (the loader refuses biology outside a hypothesis block), and
    # those that state one say so in their description
    for path in sorted(SCENARIOS.glob("*.yaml")):
        sc = exosim.load_scenario(path, hypotheses=False)
        assert not sc.hypotheses
        full = exosim.load_scenario(path)
        if full.hypotheses:
            assert "hypothesis" in full.description, path.name


def test_a_window_statistic_does_not_depend_on_the_other_entries_of_its_protocol(evidence):
    # entries sharing a protocol share one run; each window statistic reads its own time grid
    alone = run_evidence(evidence.select(ids=["sharma2015_peak_time"]))[0]["model"]
    shared = [e.id for e in evidence.entries if e.protocol.name == "direct_irradiation_hnscc.yaml"]
    together = {r["entry"]: r["model"] for r in run_evidence(evidence.select(ids=shared))}
    assert len(shared) > 3 and together["sharma2015_peak_time"] == alone


def test_biology_set_through_the_api_is_recorded_in_provenance(tmp_path):
    from exosim.io.provenance import run_record
    from exosim.scenario.load import with_parameters

    sc = with_parameters(
        exosim.load_scenario(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), {"unbinding_rate": "1 1/h"}
    )
    assert sc.biology_changes == ["parameters.unbinding_rate"]
    record = run_record(exosim.run(sc), ["test"])
    assert record["scenario"]["biology"] == "catalogue values changed by overrides: parameters.unbinding_rate"


def test_a_role_or_entry_selection_that_keeps_nothing_is_an_error(tmp_path, capsys):
    """It wrote an empty scorecard.csv (no header) and exited 0."""
    out = tmp_path / "out"
    assert main(["evidence", str(ROOT / "evidence" / "qi2012.yaml"), "--role", "validation", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "exosim: error: evidence: no entry with role validation (of 3 entries)", err
    assert not out.exists()


def test_a_left_out_hypothesis_is_still_checked_for_errors_but_its_ranges_are_not(tmp_path, capsys):
    """--no-hypotheses: the hypothesis' value outside its documented range (survivin at 10
    copies per vesicle) is neither a warning nor, with --strict, a refusal (it is not used); with
    the hypothesis it is both.  A malformed hypothesis is still an error."""
    import yaml

    from exosim.scenario.schema import ScenarioError

    path = SCENARIOS / "survivin_proton_donor_radioresistance.yaml"
    argv = ["run", str(path), "--no-timecourses", "--no-figure", "--strict"]
    assert main([*argv, "-o", str(tmp_path / "c"), "--no-hypotheses"]) == 0
    assert "documented range" not in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "h")]) == 2
    assert "hypothesis.cargo.survivin.copies_per_particle" in capsys.readouterr().err
    data = yaml.safe_load(path.read_text())
    data["hypothesis"]["cargo"]["survivin"]["copies_per_partcle"] = "1 copies/particle"  # a typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match="copies_per_partcle"):
        exosim.load_scenario(bad, hypotheses=False)
