"""Fitting: synthetic data from known parameters are recovered within the reported intervals;
bad data files get one message naming file, row and column (exit 2), nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

import exosim
from conftest import SCENARIOS, errors_of
from exosim.analysis import fit as _fit
from exosim.analysis.fit.data import FitWarning, read_observations
from exosim.cli import main

ICCM = SCENARIOS / "iccm_bystander_medium_transfer.yaml"
#: what the published plateau identifies: the susceptible share of the all-or-none bystander response
PLATEAU = "recipients.bystander_susceptible_fraction"
PARAM = PLATEAU


@pytest.fixture(scope="module")
def iccm():
    sc = exosim.load_scenario(ICCM)
    return sc.model_copy(update={"dose_grid": sc.dose_grid.model_copy(update={"values": [0, 0.01, 0.05, 0.5, 5]})})


def synthetic(iccm, kind, truth, rng):
    doses = np.array([0, 0.01, 0.05, 0.5, 5, 0, 5.0])
    arms = ["ICCM"] * 5 + ["fresh medium"] * 2
    obs = _fit.Observations("synthetic", kind, arms, doses, np.zeros(doses.size), np.zeros(doses.size))
    norm = "control" if kind == "survival" else "none"
    lik = "normal" if kind == "survival" else "poisson"
    prob = _fit.FitProblem(iccm, obs, [PARAM], likelihood=lik, normalise=norm, ranges={PARAM: (0.03, 0.9)})
    true_sf = prob.predict(np.array([[truth]]))[0]
    if kind == "survival":
        obs.w = np.full(doses.size, 0.03)
        obs.y = np.clip(true_sf + rng.normal(0, 0.03, doses.size), 1e-3, 1.0)
    else:
        obs.w = np.full(doses.size, 400.0)  # cells seeded
        obs.y = rng.poisson(400 * 0.5 * true_sf).astype(float)  # plating efficiency 0.5
    return prob, true_sf


@pytest.mark.parametrize("kind", ["survival", "colonies"])
def test_synthetic_data_are_recovered_within_the_interval(iccm, kind):
    truth = 0.25  # a quarter of the recipients respond and die: a plateau at 0.75
    prob, true_sf = synthetic(iccm, kind, truth, np.random.default_rng(7))
    res = _fit.fit(prob)
    assert res.converged
    assert res.low[0] < truth < res.high[0], (res.low, res.estimate, res.high)
    assert res.low[0] < res.estimate[0] < res.high[0]
    # the interval is informative: well inside the search range (a factor of 30)
    assert res.high[0] / res.low[0] < 5
    assert res.gof["p_value"] > 0.001
    if kind == "colonies":
        assert res.plating_efficiency == pytest.approx(0.5, rel=0.15)


def test_profile_interval_has_nominal_coverage_on_repeated_synthetic_data(iccm):
    """200 synthetic survival data sets: a 95% profile interval should miss the truth about 5% of the time."""
    truth, sd = 0.2, 0.03
    prob, true_sf = synthetic(iccm, "survival", truth, np.random.default_rng(0))
    x = np.log10(truth)
    grid = np.linspace(x - 0.6, x + 0.6, 121)  # one parameter: the profile is the likelihood itself
    pred = prob.predict(10.0 ** grid[:, None])  # the model does not depend on the data: one batch
    rng = np.random.default_rng(11)
    misses = 0
    for _ in range(200):
        prob.data.y = true_sf + rng.normal(0, sd, true_sf.size)
        nll = prob.nll(pred)
        misses += 2 * (nll[60] - nll.min()) > 3.841
    assert 2 <= misses <= 22  # binomial(200, 0.05): mean 10, P(outside [2, 22]) < 0.001


def test_cli_fit_writes_estimates_json_figure(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0,1.0,0.05\nICCM,0.05,0.6,0.05\nICCM,5,0.6,0.05\n")
    out = tmp_path / "out"
    code = main(["fit", str(ICCM), str(data), "--params", PLATEAU, "--range", f"{PLATEAU}=0.05:0.6", "-o", str(out)])
    assert code == 0
    doc = json.loads((out / "fit.json").read_text())
    est = doc["estimates"][0]
    assert est["parameter"] == PLATEAU and est["low"] < est["estimate"] < est["high"]
    assert est["estimate"] == pytest.approx(0.4, abs=0.02)  # a plateau of 0.6: 40 % of the cells respond
    assert doc["scenario"]["sha256"] and doc["data_files"][0]["sha256"] and doc["exosim_version"]
    assert (out / "fit.png").stat().st_size > 0 and (out / "estimates.csv").exists()
    assert "95% profile" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, words",
    [
        ("arm,dose,survival\nICCM,0,1.0\n", ["columns", "sd"]),
        ("arm,dose,colonies,seeded\nICCM,0,-3,100\n", ["row 2", "'colonies'", "non-negative"]),
        ("arm,dose,survival,sd\nICCM,0,1.0,0.1\nICCM,0.5,60,0.1\n", ["row 3", "'survival'", "[0, 2]", "percentage"]),
        ("arm,dose,survival,sd\nICCM,0,1.0,0.1\nICCM,0.5,-0.1,0.1\n", ["row 3", "'survival'", "[0, 2]"]),
        ("arm,dose,survival,sd\nICCM,12,0.5,0.1\n", ["row 2", "'dose'", "outside"]),
        ("arm,dose,survival,sd\nICM,1,0.5,0.1\n", ["row 2", "'arm'", "did you mean 'ICCM'"]),
        ("arm,dose,survival,sd\nICCM,one,0.5,0.1\n", ["row 2", "'dose'", "number"]),
        ("# measured 2026\narm,dose,survival,sd\n\nICCM,one,0.5,0.1\n", ["row 4", "'dose'", "number"]),  # file line
        # a header that is not read as written would put every row in the default arm
        ("Arm,dose,survival,sd\nICCM,0,1.0,0.1\n", ["unknown column 'Arm'", "did you mean 'arm'"]),
        ("arm,dose,survival,sd,survival\nICCM,0,1.0,0.1,0.9\n", ["column 'survival' appears twice"]),
        ("arm,dose,survival,sd\nICCM,0,1.0,0.1,extra\n", ["row 2 has 5 fields", "'extra' is extra"]),
        ("arm,dose,survival,sd\n,0,1.0,0.1\n", ["row 2", "'arm'", "empty"]),
        ("dose,survival,sd\n0,1.0,0.1\n", ["no column 'arm'", "several arms"]),
        (b"arm,dose,survival,sd\nICCM n\xe9,0,1.0,0.1\n", ["not a UTF-8 text file (byte 27)"]),
        ("", ["no header row", "empty"]),
    ],
)
def test_bad_data_files_name_file_row_column(tmp_path, capsys, content, words):
    data = tmp_path / "bad.csv"
    data.write_bytes(content) if isinstance(content, bytes) else data.write_text(content)
    out = tmp_path / "out"
    code = main(["fit", str(ICCM), str(data), "--params", PARAM, "--range", f"{PARAM}=0.03:0.9", "-o", str(out)])
    err = errors_of(capsys.readouterr().err)
    assert code == 2 and str(data) in err and err.count("\n") == 1
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()


def test_a_spreadsheet_csv_reads_as_written_and_unread_columns_are_noted(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; the header's first column is still
    'arm'. A column the format does not have is noted, not silently dropped."""
    sc = exosim.load_scenario(ICCM)
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    text = "arm,dose,survival,sd,note\nICCM heated to 70 C,0.05,0.95,0.05,plate 3\n"
    plain.write_text(text)
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    with pytest.warns(FitWarning, match="column 'note' is not read"):
        a = read_observations(plain, sc)
    with pytest.warns(FitWarning, match="column 'note' is not read"):
        b = read_observations(marked, sc)
    assert a.arm == b.arm == ["ICCM heated to 70 C"]


def test_one_data_file_twice_is_refused_and_repeated_rows_are_noted(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0,1.0,0.05\nICCM,0.05,0.6,0.05\nICCM,0.05,0.6,0.05\n")
    out = tmp_path / "out"
    args = ["--params", PLATEAU, "--range", f"{PLATEAU}=0.05:0.6", "-o", str(out)]
    assert main(["fit", str(ICCM), str(data), str(tmp_path / "." / "d.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert "the data file is given twice" in err and not out.exists()
    assert main(["fit", str(ICCM), str(data), *args]) == 0
    assert "row 4 repeats row 3 exactly" in capsys.readouterr().err


def test_bad_fit_requests(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0,1.0,0.05\n")
    for extra, word in [
        (["--params", "damage_max_rat"], "did you mean 'damage_max_rate'"),
        (["--params", PARAM], "positive range"),
        (["--params", PARAM, "--likelihood", "poisson", "--range", f"{PARAM}=0.03:0.9"], "does not fit"),
        (["--params", PARAM, "--range", "vesicle_decay_rate=0.1:1"], "not fitted"),
    ]:
        assert main(["fit", str(ICCM), str(data), *extra, "-o", str(tmp_path / "o")]) == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predictions_equal_a_run_of_the_whole_scenario(iccm):
    """A fit simulates only the arms and doses its data need; the values must not change."""
    arms, doses = ["ICCM", "ICCM heated to 70 C", "ICCM"], np.array([0.05, 0.5, 0.02])  # 0.02 Gy: off the grid
    obs = _fit.Observations("x", "survival", arms, doses, np.full(3, 0.5), np.full(3, 0.1))
    prob = _fit.FitProblem(iccm, obs, [PARAM], ranges={PARAM: (0.03, 0.9)}, backend="numpy")
    pred = prob.predict(prob.nominal[None, :])[0]
    assert prob.n_members < 3 * 5  # pruned: control and two arms, four doses
    # the whole scenario (every arm; the GW4869 arm starts the timeline at -24 h) on the fit's dose grid
    full = exosim.run(iccm.model_copy(update={"dose_grid": prob.scenario.dose_grid}), time_courses=False)

    def sf(arm, dose):
        return full.surviving_fraction[(np.array(full.arms)[full.arm_index] == arm) & np.isclose(full.grid, dose)][0]

    expected = [sf(a, d) / sf("fresh medium", 0.0) for a, d in zip(arms, doses)]
    assert pred == pytest.approx(expected, rel=1e-6)  # shared steps of a different batch: within tolerance


def test_a_failed_line_search_at_a_minimum_counts_as_converged(tmp_path):
    """L-BFGS-B stops ABNORMAL where the objective is flat to its finite-difference noise (an
    exact fit of summary values); a probe of every free coordinate decides whether that is a
    minimum, and only then is the fit called converged."""
    from exosim.analysis.fit.optimise import _is_local_minimum

    class Quadratic:
        log_bounds = (np.full(2, -3.0), np.full(2, 3.0))

        def predict(self, theta):
            return np.log10(theta)

        def nll(self, x):
            return ((x - np.array([0.5, -1.0])) ** 2).sum(axis=1)

    q, free = Quadratic(), np.ones(2, bool)
    assert _is_local_minimum(q, np.array([0.5, -1.0]), 0.0, free)
    assert not _is_local_minimum(q, np.array([0.6, -1.0]), 0.01, free)
    assert _is_local_minimum(q, np.array([0.6, -1.0]), 0.01, np.array([False, True]))  # only y is free
    res = exosim.fit(
        exosim.load_scenario(ICCM),
        data=[SCENARIOS / "data" / "iccm_relative_survival.csv"],
        params=[PLATEAU],
        ranges={PLATEAU: (0.05, 0.6)},
    )
    assert res.result.converged and res.result.estimate[0] == pytest.approx(0.4, abs=1e-3)


def test_a_fit_with_no_degrees_of_freedom_says_so(tmp_path, capsys):
    """One observation, one parameter: 0 degrees of freedom, no goodness-of-fit test (it read
    'dof 1 ... p_value 1')."""
    data = tmp_path / "one.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0.05,0.6,0.05\n")
    out = tmp_path / "out"
    assert (
        main(["fit", str(ICCM), str(data), "--params", PLATEAU, "--range", f"{PLATEAU}=0.05:0.6", "-o", str(out)]) == 0
    )
    gof = json.loads((out / "fit.json").read_text())["goodness_of_fit"]
    assert gof["dof"] == 0 and gof["p_value"] is None
    assert "p_value n/a (no degrees of freedom)" in capsys.readouterr().out


def test_relative_survival_above_1_is_data_and_absolute_is_not(tmp_path, capsys):
    """Relative to the control, plating noise puts points above 1: they are fitted, not refused
    (refusing them would bias the fit down); absolute surviving fractions stay at most 1."""
    data = tmp_path / "d.csv"
    data.write_text("arm,dose,survival,sd\nICCM,0,1.08,0.05\nICCM,0.05,0.6,0.05\nICCM,5,0.6,0.05\n")
    args = ["--params", PLATEAU, "--range", f"{PLATEAU}=0.05:0.6"]
    assert main(["fit", str(ICCM), str(data), *args, "-o", str(tmp_path / "rel")]) == 0
    capsys.readouterr()
    assert main(["fit", str(ICCM), str(data), *args, "--normalise", "none", "-o", str(tmp_path / "abs")]) == 2
    err = capsys.readouterr().err
    assert "survival 1.08 above 1 with --normalise none" in err and not (tmp_path / "abs").exists()


def test_the_fit_figure_draws_survival_over_decades_on_a_log_axis_and_relative_survival_linear(iccm):
    """Clonogenic survival over recipient doses spans decades: a log axis (it was linear, the low
    doses' points crushed at the bottom); relative survival of medium transfer (0.6-1) stays linear."""
    from types import SimpleNamespace

    from matplotlib.figure import Figure

    from exosim.io.figures import _dose_panel

    hnscc = exosim.load_scenario(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    doses = np.array([0.0, 2.0, 4.0, 8.0])
    clonogenic = _fit.Observations("sf", "survival", ["no exosomes"] * 4, doses, np.ones(4), np.full(4, 0.05))
    problem = _fit.FitProblem(hnscc, clonogenic, ["internalisation_rate"], normalise="none")
    estimate = SimpleNamespace(estimate=np.array([0.5]))
    clonogenic.y = problem.predict(estimate.estimate[None, :])[0]
    assert clonogenic.y.max() / clonogenic.y.min() > 10  # the premise: decades of survival
    relative, _ = synthetic(iccm, "survival", 0.25, np.random.default_rng(3))
    relative.data.y = np.clip(relative.data.y, 0.5, 1.0)
    for prob, scale in ((problem, "log"), (relative, "linear")):
        ax = Figure().add_subplot()
        _dose_panel(ax, prob, SimpleNamespace(estimate=np.array([0.5 if prob is problem else 0.25])), prob.datasets[0])
        assert ax.get_yscale() == scale
