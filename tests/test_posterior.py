"""Posterior sampling and prediction bands: the batched evidence run equals runs one by one, the
sampler recovers a known posterior, bands follow the draws (closed forms: a posterior of one value
gives no band; survival is monotone in alpha, so a band's ends are the runs at the alpha
percentiles), and the command line writes and reads the calibration record."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

from conftest import ROOT, SCENARIOS, scenario_from, single_well
from exosim.analysis.evidence import load_evidence, run_evidence, run_evidence_sets
from exosim.analysis.posterior import BandsError, prediction_bands, sample_posterior
from exosim.cli import main
from exosim.model import catalogue as cat

EVIDENCE = ROOT / "evidence"


def _record(names, values):
    return {"posterior": {"draws": {"names": list(names), "values": [list(map(float, v)) for v in values]}}}


# ------------------------------------------------------------------ one batch for many parameter sets
def test_a_batch_of_parameter_sets_gives_the_rows_of_each_set_run_alone():
    ev = load_evidence(EVIDENCE / "qi2012.yaml")
    names = ["hnscc_pooled.alpha0", "hnscc_pooled.beta0"]
    theta = np.array([[0.22, 0.0272], [0.30, 0.05], [0.15, 0.015]])
    batch = run_evidence_sets(ev, names, theta)
    for row, rows in zip(theta, batch):
        alone = run_evidence(ev, parameters=dict(zip(names, row)))
        assert [r["entry"] for r in rows] == [r["entry"] for r in alone]
        for a, b in zip(rows, alone):
            assert a["model"] == pytest.approx(b["model"], rel=1e-9)
    # and the sets differ where they should: alpha_eff is alpha0 without exosomes
    alpha = [next(r["model"] for r in rows if r["entry"] == "qi2012_alpha_hnscc") for rows in batch]
    assert alpha == pytest.approx(theta[:, 0], rel=1e-3)


# ------------------------------------------------------------------ the sampler
class _Gaussian:
    """A stand-in objective: chi-square of x against 2 +- 0.25 (SD), y plays no part."""

    def __init__(self):
        self.evaluations = 0
        self.cal = load_evidence(EVIDENCE / "qi2012.yaml")

    def batch(self, theta):
        theta = np.atleast_2d(theta)
        self.evaluations += theta.shape[0]
        return ((theta[:, 0] - 2.0) / 0.25) ** 2


def test_the_sampler_recovers_a_known_posterior_and_reports_its_diagnostics():
    post = sample_posterior(
        None,
        ["damage_max_rate", "unbinding_rate"],
        ranges={"damage_max_rate": (0.5, 8.0), "unbinding_rate": (0.01, 1.0)},
        start={"damage_max_rate": 1.0, "unbinding_rate": 0.1},
        walkers=16,
        steps=1500,
        seed=3,
        objective=_Gaussian(),
    )
    # the exact posterior of x: exp(-chi2/2) times the log-uniform prior 1/x, by quadrature
    z = np.linspace(np.log(0.5), np.log(8.0), 200_001)
    cdf = np.cumsum(np.exp(-0.5 * ((np.exp(z) - 2.0) / 0.25) ** 2))
    exact = np.exp(z[np.searchsorted(cdf / cdf[-1], [0.025, 0.5, 0.975])])  # 1.473, 1.968, 2.461
    # 400 kept draws of ~600 effective samples: Monte Carlo error about 0.02 on the median
    lo, med, hi = np.percentile(post.draws[:, 0], [2.5, 50.0, 97.5])
    assert med == pytest.approx(exact[1], abs=0.07)
    assert lo == pytest.approx(exact[0], abs=0.1) and hi == pytest.approx(exact[2], abs=0.1)
    # y is unconstrained: its draws fill the log-uniform prior (median near the geometric centre 0.1)
    y = post.draws[:, 1]
    assert 0.01 <= y.min() and y.max() <= 1.0 and np.median(y) == pytest.approx(0.1, rel=0.5)
    d = post.diagnostics()
    assert 0.2 < d["acceptance_fraction"] < 0.9
    assert all(t > 0 for t in d["autocorrelation_time_steps"].values())
    assert d["converged"] == (post.steps > 50 * max(post.tau))
    # proposals outside the prior are never run: at most one evaluation per walker and step (+ the start)
    assert 0 < post.evaluations <= 16 * 1501 and post.draws.shape[1] == 2


def test_a_chain_of_a_few_steps_is_never_called_converged():
    """emcee's estimate of tau on a few steps can be negative; such a chain is not converged."""
    kw = dict(ranges={"damage_max_rate": (0.5, 8.0), "unbinding_rate": (0.01, 1.0)}, walkers=4)
    # seeds and lengths whose estimate was <= 0 (two of them called converged) before the fix
    for seed, steps in ((0, 5), (2, 3), (4, 3), (4, 4)):
        names = ["damage_max_rate", "unbinding_rate"]
        post = sample_posterior(None, names, seed=seed, objective=_Gaussian(), steps=steps, **kw)
        d = post.diagnostics()
        assert all(t > 0 for t in d["autocorrelation_time_steps"].values()), d
        assert d["converged"] is False


def test_the_same_seed_gives_the_same_draws():
    kw = dict(ranges={"damage_max_rate": (0.5, 8.0), "unbinding_rate": (0.01, 1.0)}, walkers=4, steps=30)
    a = sample_posterior(None, ["damage_max_rate", "unbinding_rate"], seed=5, objective=_Gaussian(), **kw)
    b = sample_posterior(None, ["damage_max_rate", "unbinding_rate"], seed=5, objective=_Gaussian(), **kw)
    c = sample_posterior(None, ["damage_max_rate", "unbinding_rate"], seed=6, objective=_Gaussian(), **kw)
    np.testing.assert_array_equal(a.draws, b.draws)
    assert not np.array_equal(a.draws, c.draws)


def test_the_sampler_refuses_too_few_walkers():
    with pytest.raises(ValueError, match="walkers"):
        sample_posterior(None, ["damage_max_rate", "unbinding_rate"], walkers=3, objective=_Gaussian())


# ------------------------------------------------------------------ prediction bands
def test_a_posterior_of_one_value_gives_no_band_around_the_catalogue_run():
    sc = scenario_from(single_well())
    line = cat.cell_lines()["hnscc_pooled"]
    bands = prediction_bands(sc, _record(["hnscc_pooled.alpha0"], [[line["alpha0"]]] * 5), draws=5)
    from exosim import run

    rows = run(sc, time_courses=False).survival_rows()
    for b, r in zip(bands.survival, rows):
        assert b["sf_vs_untreated_low"] == pytest.approx(r["sf_vs_untreated"], rel=1e-9)
        assert b["sf_vs_untreated_high"] == pytest.approx(r["sf_vs_untreated"], rel=1e-9)
        assert b["failed_draws"] == 0


def test_band_ends_are_the_runs_at_the_alpha_percentiles():
    # survival falls monotonically with alpha, so the 2.5 % survival is the run at the 97.5 %
    # alpha and the other way round; unexposed members have no band at all
    sc = scenario_from(single_well())
    alphas = np.linspace(0.15, 0.30, 41)
    bands = prediction_bands(sc, _record(["hnscc_pooled.alpha0", "cargo_hill"], [[a, 1.0] for a in alphas]), draws=41)
    assert bands.params == ["hnscc_pooled.alpha0"] and bands.absent == ["cargo_hill"]
    ends = {}
    for q in (2.5, 97.5):
        a = float(np.percentile(alphas, q))
        ends[q] = prediction_bands(sc, _record(["hnscc_pooled.alpha0"], [[a]]), draws=1).survival
    for b, low, high in zip(bands.survival, ends[97.5], ends[2.5]):
        if b["grid_dose_Gy"] == 0:
            assert b["sf_vs_untreated_low"] == b["sf_vs_untreated_high"] == 1.0
            continue
        # percentiles of a monotone function of 41 evenly spaced draws: equal up to interpolation
        assert b["sf_vs_untreated_low"] == pytest.approx(low["sf_vs_untreated_median"], rel=2e-3)
        assert b["sf_vs_untreated_high"] == pytest.approx(high["sf_vs_untreated_median"], rel=2e-3)
        assert b["sf_vs_untreated_low"] < b["sf_vs_untreated_median"] < b["sf_vs_untreated_high"]
    sf2 = bands.summary[0]
    assert sf2["sf2_within_arm_low"] < sf2["sf2_within_arm_median"] < sf2["sf2_within_arm_high"]


def test_the_python_api_draws_bands_from_a_record_file(tmp_path):
    import exosim

    f = tmp_path / "calibration.yaml"
    f.write_text(yaml.safe_dump(_record(["hnscc_pooled.alpha0"], [[0.2], [0.25]])))
    b = exosim.bands(scenario_from(single_well()), posterior=f, draws=2)
    df = b.to_df()
    assert b.params == ["hnscc_pooled.alpha0"] and len(df) == 6 and len(b.summary_df()) == 1
    assert (df["sf_vs_untreated_low"] <= df["sf_vs_untreated_high"]).all()


def test_bands_of_a_scenario_without_the_posterior_parameters_are_empty():
    sc = scenario_from(single_well())
    bands = prediction_bands(sc, _record(["hela.alpha0"], [[0.3]]), draws=3)
    assert bands.params == [] and bands.absent == ["hela.alpha0"] and bands.survival == []


def test_bands_need_a_posterior():
    sc = scenario_from(single_well())
    with pytest.raises(BandsError, match="--write-catalogue"):
        prediction_bands(sc, {"calibrated_parameters": {}})


# ------------------------------------------------------------------ command line
def test_calibrate_samples_writes_the_catalogue_record_and_run_draws_bands_from_it(tmp_path, monkeypatch, capsys):
    target = tmp_path / "calibration.yaml"
    monkeypatch.setattr(cat, "calibration_path", lambda: target)
    out = tmp_path / "cal"
    argv = ["calibrate", str(EVIDENCE / "qi2012.yaml"), "--params", "hnscc_pooled.alpha0", "--profile-points", "0"]
    assert main(argv + ["--sample", "20", "--walkers", "4", "-o", str(out), "--write-catalogue"]) == 0
    text = capsys.readouterr().out
    assert "posterior: 4 walkers x 20 steps" in text
    record = yaml.safe_load(target.read_text())
    assert record == yaml.safe_load((out / "calibration.yaml").read_text())
    post = record["posterior"]
    assert post["draws"]["names"] == ["hnscc_pooled.alpha0"] and len(post["draws"]["values"]) > 10
    assert set(post["diagnostics"]) >= {"autocorrelation_time_steps", "effective_sample_size", "converged"}
    assert len(record["evidence_sha256"]) == 64 and record["created_utc"] and "chi_square" in record["objective"]
    draws = list(csv.DictReader((out / "posterior.csv").open()))
    assert len(draws) == len(post["draws"]["values"]) and all(
        0.14 <= float(d["hnscc_pooled.alpha0"]) <= 0.30 for d in draws
    )

    res = tmp_path / "run"
    scenario = SCENARIOS / "hnscc_exosome_radioresistance.yaml"
    assert main(["run", str(scenario), "--bands", "20", "--no-timecourses", "-o", str(res)]) == 0
    assert "95 % prediction bands from 20 posterior draws of hnscc_pooled.alpha0" in capsys.readouterr().out
    bands = list(csv.DictReader((res / "bands.csv").open()))
    survival = list(csv.DictReader((res / "survival.csv").open()))
    assert len(bands) == len(survival)
    whole = json.loads((res / "provenance.json").read_text())
    prov = whole["bands"]
    assert prov["draws"] == 20 and prov["posterior"]["evidence_sha256"] == record["evidence_sha256"]
    assert whole["seed"] == prov["seed"] == 0 and "posterior draws" in whole["randomness"]
    assert (res / "survival.png").stat().st_size > 0 and (res / "bands_summary.csv").is_file()
    # a run without --bands removes the bands of an earlier run from the folder
    assert main(["run", str(scenario), "--no-timecourses", "-o", str(res)]) == 0
    assert not (res / "bands.csv").exists()


def test_bad_bands_input_is_one_message_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cat, "calibration_path", lambda: tmp_path / "none.yaml")
    scenario = str(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    out = tmp_path / "o"
    assert main(["run", scenario, "--bands", "-o", str(out)]) == 2
    assert "no posterior" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("calibrated_parameters: {}\n")
    assert main(["run", scenario, "--bands", "--posterior", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "posterior" in err and not out.exists()
    assert main(["calibrate", "--params", "alpha0", "--write-catalogue", "-o", str(out)]) == 2
    assert "needs --sample" in capsys.readouterr().err
