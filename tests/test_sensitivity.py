"""Sensitivity analysis: known indices of test functions, finite differences of the full model,
inert parameters, seeds, engines (processes, Dask on loopback), failures, bad input."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("SALib", reason="sensitivity tests need the 'test' extra (SALib)")

import exosim  # noqa: E402
from conftest import SCENARIOS  # noqa: E402
from exosim.analysis import sensitivity as sa  # noqa: E402
from exosim.analysis.engine import ProcessEngine, SerialEngine  # noqa: E402
from exosim.cli import main  # noqa: E402

PI = np.pi
ISHIGAMI = sa.ParameterSpace(("x1", "x2", "x3"), (-PI,) * 3, (PI,) * 3, (False,) * 3)
# analytic indices (a = 7, b = 0.1): Ishigami & Homma 1990; Sobol' & Levitan 1999
V = 7**2 / 8 + 0.1 * PI**4 / 5 + 0.1**2 * PI**8 / 18 + 0.5
S1 = np.array([0.5 * (1 + 0.1 * PI**4 / 5) ** 2, 7**2 / 8, 0.0]) / V
ST = np.array([0.5 * (1 + 0.1 * PI**4 / 5) ** 2 + 8 * 0.1**2 * PI**8 / 225, 7**2 / 8, 8 * 0.1**2 * PI**8 / 225]) / V


def test_sobol_reproduces_ishigami_indices_within_intervals():
    res = sa.sobol(sa.ishigami, ISHIGAMI, ("y",), 2048, seed=3)
    s1 = np.array([r["S1"] for r in res.indices])
    st = np.array([r["ST"] for r in res.indices])
    s1c = np.array([r["S1_conf"] for r in res.indices])
    stc = np.array([r["ST_conf"] for r in res.indices])
    assert np.all(np.abs(s1 - S1) <= np.maximum(1.5 * s1c, 0.02)), (s1, S1, s1c)
    assert np.all(np.abs(st - ST) <= np.maximum(1.5 * stc, 0.02)), (st, ST, stc)


def test_morris_on_a_linear_function_gives_the_slopes_exactly():
    space = sa.ParameterSpace(("a", "b", "c"), (0.0,) * 3, (1.0,) * 3, (False,) * 3)
    slopes = np.array([2.0, -0.5, 0.0])

    def linear(names, x):
        return (x @ slopes)[:, None], np.zeros(len(x), bool), [""] * len(x)

    res = sa.morris(linear, space, ("y",), 20, seed=1)
    np.testing.assert_allclose([r["mu_star"] for r in res.indices], np.abs(slopes), atol=1e-12)
    np.testing.assert_allclose([r["mu"] for r in res.indices], slopes, atol=1e-12)
    np.testing.assert_allclose([r["sigma"] for r in res.indices], 0.0, atol=1e-12)


def test_morris_flags_all_ishigami_inputs_as_influential():
    res = sa.morris(sa.ishigami, ISHIGAMI, ("y",), 60, seed=2)
    mu = {r["parameter"]: r["mu_star"] for r in res.indices}
    sigma = {r["parameter"]: r["sigma"] for r in res.indices}
    assert min(mu.values()) > 0.5
    assert sigma["x3"] > 0.5  # x3 acts only through its interaction with x1


@pytest.fixture(scope="module")
def mir22():
    sc = exosim.load_scenario(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")
    return sc.model_copy(update={"dose_grid": sc.dose_grid.model_copy(update={"values": [0, 2, 4, 8]})})


def test_local_coefficients_match_finite_differences_of_the_full_model(mir22):
    ev = sa.ScenarioEvaluator(mir22, arm="miR-22 exosomes")
    space = sa.ParameterSpace.from_table(names=["endosomal_escape_rate", "vesicle_decay_rate"])
    nominal = sa.nominal_values(ev.scenario, space.names)
    res = sa.local(ev, space, nominal, sa.OUTPUTS)
    assert res.settings == {"relative_step": sa.LOCAL_STEP}  # recorded in the provenance
    h = 1e-3  # an independent forward/backward pair at a different step
    for j, name in enumerate(space.names):
        up, dn = nominal.copy(), nominal.copy()
        up[j] *= np.exp(h)
        dn[j] *= np.exp(-h)
        y, failed, _ = ev(space.names, np.array([up, dn]))
        assert not failed.any()
        for k, out in enumerate(sa.OUTPUTS):
            fd = (np.log(y[0, k]) - np.log(y[1, k])) / (2 * h)
            coef = next(r["coefficient"] for r in res.indices if r["output"] == out and r["parameter"] == name)
            if np.isfinite(fd):
                assert coef == pytest.approx(fd, rel=2e-3, abs=1e-5), (out, name)
    delivered = next(
        r
        for r in res.indices
        if r["output"] == "delivered_copies_per_cell" and r["parameter"] == "endosomal_escape_rate"
    )
    assert 0.5 < delivered["coefficient"] <= 1.0  # more escape, more cargo; at most proportional


def test_a_parameter_that_does_not_enter_gets_zero_indices(mir22):
    """No free (non-vesicular) cargo in this scenario: its uptake clearance cannot matter."""
    ev = sa.ScenarioEvaluator(mir22, arm="miR-22 exosomes")
    space = sa.ParameterSpace.from_table(names=["endosomal_escape_rate", "free_cargo_uptake_clearance"])
    res = sa.sobol(ev, space, sa.OUTPUTS, 8, seed=0, resamples=100)
    inert = [r for r in res.indices if r["parameter"] == "free_cargo_uptake_clearance"]
    for r in inert:
        if np.isfinite(r["ST"]):
            assert abs(r["ST"]) < 1e-9 and abs(r["S1"]) < 1e-9, r
    active = next(
        r
        for r in res.indices
        if r["parameter"] == "endosomal_escape_rate" and r["output"] == "delivered_copies_per_cell"
    )
    assert active["ST"] > 0.5


def test_outputs_a_scenario_does_not_define_do_not_void_the_others():
    """ICCM has no recipient dose curve: SF2 and DMF are undefined, bystander survival is not."""
    sc = exosim.load_scenario(SCENARIOS / "iccm_bystander_medium_transfer.yaml")
    sc = sc.model_copy(update={"dose_grid": sc.dose_grid.model_copy(update={"values": [0, 0.05, 2]})})
    ev = sa.ScenarioEvaluator(sc, arm="ICCM", backend="numpy")
    space = sa.ParameterSpace.from_table(names=["endosomal_escape_rate", "vesicle_decay_rate"])
    res = sa.sobol(ev, space, sa.OUTPUTS, 8, seed=0, resamples=100)
    by = {(r["output"], r["parameter"]): r for r in res.indices}
    assert np.isnan(by["sf2", "vesicle_decay_rate"]["ST"]) and res.dropped == 0
    for p in space.names:
        assert np.isfinite(by["bystander_survival", p]["ST"]) and np.isfinite(by["delivered_copies_per_cell", p]["ST"])


def test_seeded_runs_are_identical_and_engines_agree(mir22):
    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    serial = sa.ScenarioEvaluator(mir22, engine=SerialEngine(), chunk_members=40)
    a = sa.sobol(serial, space, sa.OUTPUTS, 4, seed=11, resamples=50)
    b = sa.sobol(serial, space, sa.OUTPUTS, 4, seed=11, resamples=50)
    np.testing.assert_array_equal(a.values, b.values)
    for key in ("S1", "S1_conf", "ST", "ST_conf"):  # seeded bootstrap too: identical, NaN where undefined
        np.testing.assert_array_equal([r[key] for r in a.indices], [r[key] for r in b.indices])
    engine = ProcessEngine(2)
    try:
        c = sa.sobol(
            sa.ScenarioEvaluator(mir22, engine=engine, chunk_members=40), space, sa.OUTPUTS, 4, seed=11, resamples=50
        )
    finally:
        engine.close()
    np.testing.assert_array_equal(a.values, c.values)


def test_dask_local_cluster_gives_the_serial_result(mir22):
    distributed = pytest.importorskip("distributed")
    from exosim.analysis.engine import DaskEngine

    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    serial = sa.sobol(sa.ScenarioEvaluator(mir22, chunk_members=40), space, sa.OUTPUTS, 4, seed=5, resamples=50)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1")
        engine = DaskEngine(cluster.scheduler_address)
        try:
            dask = sa.sobol(
                sa.ScenarioEvaluator(mir22, engine=engine, chunk_members=40), space, sa.OUTPUTS, 4, seed=5, resamples=50
            )
            record = engine.record()
        finally:
            engine.close()
    np.testing.assert_array_equal(serial.values, dask.values)
    # provenance counts the tasks restarted after a worker died and the workers lost: none here
    assert record["retried_tasks"] == 0 and record["lost_workers"] == 0 and record["workers"] == 1


def test_failed_members_are_counted_and_their_blocks_dropped(mir22):
    ev = sa.ScenarioEvaluator(mir22, arm="miR-22 exosomes")
    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])

    def breaks_sample_5(names, values):
        values = values.copy()
        values[5, 0] = np.inf  # a real solver failure in the full model
        return ev(names, values)

    res = sa.sobol(breaks_sample_5, space, sa.OUTPUTS, 8, seed=1, resamples=50)
    assert res.failed.sum() == 1 and res.failed[5]
    assert res.dropped == 1 and res.blocks == 8
    assert res.messages and "solver failed" in res.messages[0]
    assert np.isfinite([r["ST"] for r in res.indices if r["output"] == "delivered_copies_per_cell"]).all()


def test_cli_sensitivity_writes_indices_samples_provenance_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXOSIM_SENSITIVITY_MAX_N", "4")
    out = tmp_path / "s"
    args = [
        "sensitivity",
        str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"),
        "--params",
        "binding_rate_constant,endosomal_escape_rate",
        "--method",
        "sobol",
        "-N",
        "1024",
        "--seed",
        "3",
        "--doses",
        "0,2,6",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["indices.csv", "provenance.json", "samples.csv", "sensitivity.png"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["N"] == 4 and prov["N_requested"] == 1024 and prov["seed"] == 3
    assert prov["parameters"][0]["scale"] == "log-uniform" and prov["failed_samples"] == 0
    # the bootstrap behind the intervals, so that they can be reproduced
    assert prov["settings"] == {"bootstrap_resamples": 1000, "confidence_level": 0.95, "second_order": False}


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--group", "uptak"], ["unknown parameter group", "'uptake'"]),
        (["--params", "binding_rate_constnt"], ["unknown parameter", "'binding_rate_constant'"]),
        (["--params", "binding_sites", "--range", "binding_sites=10:1"], ["must be below"]),
        (["--params", "binding_sites", "--range", "binding_sites=-1:10"], ["expected non-negative bounds"]),
        (["--params", "binding_sites", "--range", "binding_sites=10:inf"], ["expected finite bounds"]),
        (["--group", "uptake", "-N", "1000"], ["power of two"]),
        (["--group", "uptake", "-N", str(2**20)], ["exceed the limit"]),
        (["--group", "uptake", "--chunk-members", str(10**9)], ["GiB"]),
        (["--group", "uptake", "--scheduler", "tcp://127.0.0.1:9"], ["cannot reach the Dask scheduler"]),
        (["--group", "uptake", "--doses", "0,-2"], ["error: --doses 0,-2:", "non-negative"]),
        (["--group", "uptake", "--doses", "0,two"], ["--doses", "comma-separated numbers"]),
        (["--params", "binding_sites", "--range", "unbinding_rate=1:2"], ["not analysed factors"]),
    ],
)
def test_cli_sensitivity_bad_input(tmp_path, capsys, extra, words):
    out = tmp_path / "s"
    code = main(["sensitivity", str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml"), *extra, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and all(w in err for w in words), err
    assert not out.exists()


def test_a_factor_the_scenario_lacks_is_inert_for_every_method(tmp_path, capsys):
    """partial_field has no cargo target: target_turnover_rate is sampled but acts on nothing."""
    out = tmp_path / "s"
    path = str(SCENARIOS / "partial_field_bystander.yaml")
    assert main(["sensitivity", path, "--group", "cargo", "--method", "local", "-o", str(out)]) == 0
    assert "'target_turnover_rate' does not occur" in capsys.readouterr().err
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inert_factors"] == ["target_turnover_rate"]
    rows = [r for r in (out / "indices.csv").read_text().splitlines() if ",target_turnover_rate," in r]
    assert rows and all(r.split(",")[-1] in ("0", "") for r in rows)  # no effect (or undefined output)


def test_more_workers_than_cores_are_said_and_workers_beside_a_scheduler_are_noted(tmp_path, capsys, monkeypatch):
    from exosim.analysis import engine

    def no_cluster(address):
        raise engine.EngineError(f"cannot reach the Dask scheduler at {address!r}")

    monkeypatch.setattr(engine, "usable_cores", lambda: 1)
    monkeypatch.setattr(engine, "DaskEngine", no_cluster)
    path = str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")
    args = ["sensitivity", path, "--params", "binding_sites", "--method", "local"]
    assert main([*args, "--workers", "2", "-o", str(tmp_path / "a")]) == 0
    assert "--workers 2 on 1 usable core: the processes share them" in capsys.readouterr().err
    assert main([*args, "--workers", "1", "-o", str(tmp_path / "b")]) == 0
    assert "usable core" not in capsys.readouterr().err
    assert main([*args, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "-o", str(tmp_path / "c")]) == 2
    assert "--workers 2 is not used with --scheduler" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 7])
def test_sobol_bootstrap_intervals_are_reproducible_for_every_seed(seed):
    """Seed 0 included: SALib treats an integer seed of 0 as 'no seed' unless given a generator."""
    one = sa.sobol(sa.ishigami, ISHIGAMI, ("y",), 64, seed=seed, resamples=100)
    two = sa.sobol(sa.ishigami, ISHIGAMI, ("y",), 64, seed=seed, resamples=100)
    assert [r["S1_conf"] for r in one.indices] == [r["S1_conf"] for r in two.indices]
    assert all(np.isfinite(r["S1_conf"]) and r["S1_conf"] > 0 for r in one.indices)


def test_compiled_chunks_are_cut_for_the_workers_without_changing_results(mir22, monkeypatch):
    """With per-member steps (numba) a sample's result does not depend on its chunk: a pool of
    two workers gets eight tasks each instead of one chunk, and the values equal the serial run's."""
    pytest.importorskip("numba")
    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    serial = sa.sobol(sa.ScenarioEvaluator(mir22, backend="numba"), space, sa.OUTPUTS, 4, seed=3, resamples=20)
    tasks = []

    class Recording(SerialEngine):
        workers = 2

        def map(self, func, batch):
            batch = list(batch)
            tasks.append(len(batch))
            return super().map(func, batch)

    pooled = sa.sobol(
        sa.ScenarioEvaluator(mir22, backend="numba", engine=Recording()), space, sa.OUTPUTS, 4, seed=3, resamples=20
    )
    assert tasks and tasks[0] == 16  # 16 samples, default chunk of 8192 members: 16 tasks, not 1
    assert len(tasks) == 2 and 1 <= tasks[1] <= len(sa.OUTPUTS)  # then one task per analysable output
    np.testing.assert_array_equal(serial.values, pooled.values)


def _index_bytes(analysis) -> bytes:
    return np.array([[r[k] for k in ("S1", "S1_conf", "ST", "ST_conf")] for r in analysis.indices]).tobytes()


def test_workers_auto_runs_a_one_chunk_job_here_and_a_larger_job_on_one_process_per_core(mir22):
    """--workers auto: no pool for a job of one chunk; a job of several chunks gets one process per
    usable core (never more than its chunks), and the values equal the serial run's."""
    from exosim.analysis.engine import AutoEngine

    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    serial = sa.sobol(sa.ScenarioEvaluator(mir22, backend="numpy", chunk_members=40), space, sa.OUTPUTS, 4, seed=3)
    small = AutoEngine(cores=2)
    try:
        one = sa.sobol(sa.ScenarioEvaluator(mir22, backend="numpy", engine=small), space, sa.OUTPUTS, 4, seed=3)
    finally:
        small.close()
    assert small.workers == 1 and small.describe().startswith("SerialEngine")  # 24 samples: one chunk
    big = AutoEngine(cores=2)
    try:
        two = sa.sobol(
            sa.ScenarioEvaluator(mir22, backend="numpy", engine=big, chunk_members=40), space, sa.OUTPUTS, 4, seed=3
        )
    finally:
        big.close()
    assert big.workers == 2 and big.describe().startswith("ProcessEngine(workers=2)")
    np.testing.assert_array_equal(serial.values, two.values)
    # the indices, computed in the workers (one task per output), are the serial run's bytes
    assert _index_bytes(serial) == _index_bytes(two) and np.isfinite(np.frombuffer(_index_bytes(two))).any()
    whole = sa.sobol(sa.ScenarioEvaluator(mir22, backend="numpy"), space, sa.OUTPUTS, 4, seed=3)
    np.testing.assert_array_equal(whole.values, one.values)  # the same one chunk of 24 samples
    lone = AutoEngine(cores=8)
    assert lone.size(3) == 3 and lone.size(100) == 3  # no more processes than tasks; decided once
    lone.close()


class _NoisyModel:
    """Outputs of two factors: one constant but for rounding noise (3e-13 relative, as delivery
    under cargo parameters), one that responds, one not defined where x1 > 0.7 (as DMF where
    survival does not reach 0.1)."""

    tolerance = 1e-8  # the solver's rtol

    def __call__(self, names, x):
        y = np.column_stack(
            [1931.7 * (1 + 3e-13 * x[:, 0]), x[:, 0] + 2 * x[:, 1], np.where(x[:, 1] > 0.7, np.nan, x[:, 1])]
        )
        return y, np.zeros(len(x), bool), [""] * len(x)


def test_outputs_constant_within_the_solvers_tolerance_or_partly_undefined_are_screened_and_said():
    space = sa.ParameterSpace(("x0", "x1"), (0.0, 0.0), (1.0, 1.0), (False, False))
    outputs = ("flat", "real", "partial")
    with pytest.warns(sa.SensitivityWarning, match=r"partial in \d+ of 64 samples \(\d+ of 16 blocks analysed\)"):
        res = sa.sobol(_NoisyModel(), space, outputs, 16, seed=1, resamples=50)
    s1 = {o: [r["S1"] for r in res.indices if r["output"] == o] for o in outputs}
    assert np.isnan(s1["flat"]).all() and np.isfinite(s1["real"]).all() and np.isfinite(s1["partial"]).all()
    flat, partial = res.screening["flat"], res.screening["partial"]
    assert flat["constant"] and "constant" in flat["note"] and not res.screening["real"]["constant"]
    assert 2 <= partial["blocks_analysed"] < 16 and partial["undefined_samples"] > 0 and partial["note"] is None
    assert np.ptp(res.values[:, 0]) > 0  # the samples keep the values as computed
    # without a solver (tolerance 0) only an exactly constant output is constant: the noise is analysed
    with pytest.warns(sa.SensitivityWarning):
        plain = sa.sobol(lambda names, x: _NoisyModel()(names, x), space, outputs, 16, seed=1, resamples=50)
    assert np.isfinite([r["S1"] for r in plain.indices if r["output"] == "flat"]).all()
    # Morris: the constant output's effects are 0; the partial one is defined in trajectories counted
    # from the samples, and in fewer than two its indices are empty (not sigma NaN, interval 0)
    with pytest.warns(sa.SensitivityWarning, match="partial"):
        morris = sa.morris(_NoisyModel(), space, outputs, 4, seed=2)
    assert [r["mu_star"] for r in morris.indices if r["output"] == "flat"] == [0.0, 0.0]
    whole = (morris.samples[:, 1] <= 0.7).reshape(4, 3).all(axis=1)
    assert morris.screening["partial"]["blocks_defined"] == whole.sum()
    assert morris.screening["partial"]["undefined_samples"] == (morris.samples[:, 1] > 0.7).sum()
    assert whole.sum() == 1 and "too few" in morris.screening["partial"]["note"]  # this seed: one trajectory
    assert morris.screening["partial"]["blocks_analysed"] == 0
    assert np.isnan([r["mu_star"] for r in morris.indices if r["output"] == "partial"]).all()
    with pytest.warns(sa.SensitivityWarning, match="no analysed output varies over the samples"):
        sa.sobol(_NoisyModel(), space, ("flat",), 4, seed=1, resamples=10)
    # every run failed: said so, not "not defined" and not "nothing varies"
    broken = type("Broken", (), {"tolerance": 1e-8})()
    broken.__class__.__call__ = lambda self, names, x: (
        np.full((len(x), 3), np.nan),
        np.ones(len(x), bool),
        ["x"] * len(x),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.SensitivityWarning)
        failed = sa.local(broken, space, np.array([0.5, 0.5]), outputs)
        sobol_failed = sa.sobol(broken, space, outputs, 4, seed=1, resamples=10)
    assert {rec["note"] for rec in failed.screening.values()} == {"every run failed"}
    assert all("failed sample" in rec["note"] for rec in sobol_failed.screening.values())


def _template_id(task) -> int:
    token, scenario, keys = task
    return id(sa._batch_model(token, scenario, keys).template)


def test_batch_models_start_from_the_evaluators_compiled_scenario_here_and_in_forked_workers(mir22):
    """The model is assembled once per evaluator: its batch models (in this process, and in
    workers forked from it, where the object has the same address) reuse the compiled scenario
    it built when it was made."""
    import multiprocessing

    ev = sa.ScenarioEvaluator(mir22, backend="numpy")
    task = ((ev._token, ("binding_rate_constant",), False), ev.scenario, ("binding_rate_constant",))
    assert _template_id(task) == id(ev._template)
    sa._BATCHES.clear()
    if multiprocessing.get_start_method() == "fork":
        engine = ProcessEngine(2)
        try:
            assert set(engine.map(_template_id, [task] * 4)) == {id(ev._template)}
        finally:
            engine.close()
    other = sa.ScenarioEvaluator(mir22, backend="numpy")  # another evaluator: its own
    assert _template_id(((other._token, (), False), other.scenario, ())) == id(other._template) != id(ev._template)
    sa._BATCHES.clear()


def _freeze_count(_task) -> int:
    import gc

    return gc.get_freeze_count()


def _frozen_in_a_nested_batch(_task) -> tuple[int, int, bool]:
    """Inside a task: the freeze count in a nested batch, after it, and whether a cycle made
    during the task is collected."""
    import gc
    import weakref

    class Node:
        pass

    nested = list(SerialEngine().map(_freeze_count, [0]))[0]
    after = gc.get_freeze_count()
    cycle = Node()
    cycle.itself = cycle
    ref = weakref.ref(cycle)
    del cycle
    gc.collect()
    return nested, after, ref() is None


def test_a_batch_exempts_the_objects_alive_before_it_from_collection_only_while_a_step_runs():
    """Full collections during a batch walk only what it made (engine.frozen_heap): the objects
    alive before a task (or before the wait for a worker's result) are frozen while it runs, here
    and in the workers; a nested batch keeps them frozen; garbage made during the task is still
    collected; between steps (a map suspended or abandoned) nothing is frozen; and a heap the
    application froze itself stays frozen."""
    import gc

    assert gc.get_freeze_count() == 0
    serial = SerialEngine()
    for nested, after, collected in serial.map(_frozen_in_a_nested_batch, [0, 1]):
        assert nested > 0 and after > 0 and collected
        assert gc.get_freeze_count() == 0  # between steps
    suspended = serial.map(_freeze_count, [0, 1])
    assert next(suspended) > 0 and gc.get_freeze_count() == 0
    del suspended
    engine = ProcessEngine(2)
    try:
        results = engine.map(_freeze_count, range(4))
        assert next(results) > 0 and gc.get_freeze_count() == 0
        assert min(results) > 0 and gc.get_freeze_count() == 0
    finally:
        engine.close()
    gc.freeze()  # the application's own freeze
    try:
        mine = gc.get_freeze_count()
        assert list(serial.map(_freeze_count, [0])) == [mine] and gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    "n,resamples,block", [(2, 3, 1), (16, 101, 40), (64, 1000, 2**19), (256, 3, 700), (512, 50, 4096)]
)
def test_bounded_memory_sobol_indices_are_salibs_exactly(n, resamples, block):
    """The bootstrap in blocks of resamples (its draws kept as 32-bit indices, drawn row block by
    row block) gives SALib's numbers bit for bit: point estimates and intervals, also for an
    output with three distinct values (some resamples constant) and blocks that leave one column."""
    from SALib.analyze import sobol as sobol_analyze

    d = 4
    problem = {"num_vars": d, "names": [f"x{i}" for i in range(d)], "bounds": [[0.0, 1.0]] * d}
    rng = np.random.default_rng(n + resamples)
    for y in (rng.lognormal(size=n * (d + 2)), rng.integers(0, 3, size=n * (d + 2)).astype(float)):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # SALib: "constant values" of some resamples
            want = sobol_analyze.analyze(
                problem,
                y,
                calc_second_order=False,
                num_resamples=resamples,
                conf_level=0.9,
                seed=np.random.default_rng(5),
                print_to_console=False,
            )
            got = sa.sobol_indices(problem, y, resamples, 0.9, np.random.default_rng(5), block=block)
        for key in ("S1", "S1_conf", "ST", "ST_conf"):
            assert np.asarray(want[key], dtype=float).tobytes() == got[key].tobytes(), key


@pytest.mark.parametrize(
    "n,resamples,block,workers", [(16, 101, 40, 2), (64, 1000, 2**19, 2), (8, 7, 16, 3), (4, 5, 8, 8)]
)
def test_the_bootstrap_in_parts_of_resample_columns_gives_the_whole_runs_bytes(n, resamples, block, workers):
    """Sobol on workers cuts the resample columns into one part per worker, for all outputs at once;
    the parts joined are the bytes of the bootstrap run whole, and no part is a single column."""
    d = 3
    problem = {"num_vars": d, "names": ["a", "b", "c"], "bounds": [[0.0, 1.0]] * d}
    rng = np.random.default_rng(n)
    ys = [rng.lognormal(size=n * (d + 2)), rng.integers(0, 3, size=n * (d + 2)).astype(float)]
    parts = sa._column_parts(resamples, workers)
    assert parts[0][0] == 0 and parts[-1][1] == resamples and min(hi - lo for lo, hi in parts) >= 2
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        whole = sa._bootstrap(problem, ys, resamples, np.random.default_rng(9), block, 0, resamples)
        pieces = [sa._bootstrap(problem, ys, resamples, np.random.default_rng(9), block, lo, hi) for lo, hi in parts]
    for k, (s1, st, spread) in enumerate(whole):
        assert np.concatenate([p[k][0] for p in pieces], axis=1).tobytes() == s1.tobytes()
        assert np.concatenate([p[k][1] for p in pieces], axis=1).tobytes() == st.tobytes()
        assert all(p[k][2] == spread for p in pieces)


def test_outputs_do_not_depend_on_the_chunk_size_and_the_batch_model_is_built_once(mir22, monkeypatch):
    """Compiled backend: one sample per chunk, a few, or the default give the same bytes (values and
    indices); the chunks of one evaluation share one batch model, dropped when it ends."""
    pytest.importorskip("numba")
    from exosim.analysis import batch

    built = []

    class Counting(batch.BatchModel):
        def __init__(self, *args, **kwargs):
            built.append(args[1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sa, "BatchModel", Counting)
    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    runs = {}
    for chunk in (8, 24, sa.DEFAULT_CHUNK_MEMBERS):  # 8 members: one sample of 2 arms x 4 doses
        ev = sa.ScenarioEvaluator(mir22, backend="numba", chunk_members=chunk)
        built.clear()
        runs[chunk] = sa.sobol(ev, space, sa.OUTPUTS, 4, seed=2, resamples=30)
        assert len(built) == 1 and not sa._BATCHES  # 24 samples in 24, 8 or 1 chunks: one model
    one = runs[8]
    assert np.isfinite(one.values[:, sa.OUTPUTS.index("delivered_copies_per_cell")]).all()
    for res in runs.values():
        assert res.values.tobytes() == one.values.tobytes()
        assert res.failed.tobytes() == one.failed.tobytes() and res.messages == one.messages
        for key in ("S1", "S1_conf", "ST", "ST_conf"):
            np.testing.assert_array_equal([r[key] for r in res.indices], [r[key] for r in one.indices])


def test_chunks_keep_every_worker_busy_on_large_jobs(mir22):
    """Compiled backend: at most COMPILED_CHUNK_MEMBERS members per chunk and at least eight tasks
    per worker; numpy chunks stay as given (its steps are shared within a chunk)."""
    pytest.importorskip("numba")

    class Pool(SerialEngine):
        workers = 2

    compiled = sa.ScenarioEvaluator(mir22, backend="numba", engine=Pool())
    per = compiled.members_per_sample
    big = compiled.chunk_samples(8192)
    assert big * per <= sa.COMPILED_CHUNK_MEMBERS and -(-8192 // big) >= 2 * sa.TASKS_PER_WORKER
    assert compiled.chunk_samples(32) == 2  # a small job: eight tasks per worker
    serial = sa.ScenarioEvaluator(mir22, backend="numba")
    assert serial.chunk_samples(8192) == sa.COMPILED_CHUNK_MEMBERS // per
    numpy = sa.ScenarioEvaluator(mir22, backend="numpy", engine=Pool())
    assert numpy.chunk_samples(8192) == sa.DEFAULT_CHUNK_MEMBERS // per


def test_groups_with_ranges_from_zero_sample_those_factors_uniformly():
    """The repair group has shares whose documented range starts at 0: sampled uniformly, not refused."""
    space = sa.ParameterSpace.from_table("repair")
    by = dict(zip(space.names, zip(space.lows, space.log)))
    assert by["slow_repair_share"] == (0.0, False) and by["repair_half_time"][1] is True
    x = space.to_values(np.array([space.problem()["bounds"][i][1] for i in range(space.dimension)]))
    np.testing.assert_allclose(x, space.highs, rtol=1e-12)


def test_local_coefficients_are_taken_at_the_scenarios_own_values(tmp_path, capsys):
    """The systemic scenario clears vesicles at different rates in the interstitium and the blood:
    the local method moves each about its own value, so its value at the nominal point is the run's."""
    import csv

    path = SCENARIOS / "systemic_mir208a_abscopal.yaml"
    out = tmp_path / "s"
    argv = ["sensitivity", str(path), "--params", "vesicle_decay_rate", "--method", "local", "-N", "64"]
    assert main([*argv, "--workers", "1", "-o", str(out)]) == 0
    assert "--method local does not use -N" in capsys.readouterr().err
    rows = {r["output"]: r for r in csv.DictReader((out / "indices.csv").open())}
    run = exosim.run(exosim.load_scenario(path), time_courses=False)
    arm = json.loads((out / "provenance.json").read_text())["arm"]
    summary = {r["arm"]: r for r in run.summary_rows()}[arm]
    cargo = run.model.cargos[0]
    assert float(rows["delivered_copies_per_cell"]["value_at_nominal"]) == pytest.approx(
        summary[f"{cargo}_delivered_copies_per_cell"], rel=1e-6
    )
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["N"] is None and prov["seed"] is None and "nominal" in prov["parameters"][0]


def test_a_hypothesis_is_noted_and_recorded_and_can_be_left_out(tmp_path, capsys):
    path = str(SCENARIOS / "mir194_dying_cell_pancreatic_radioresistance.yaml")
    out = tmp_path / "s"
    argv = ["sensitivity", path, "--params", "binding_sites", "--method", "local", "--workers", "1"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "exosim: note: analyses a hypothesis" in capsys.readouterr().err
    assert json.loads((out / "provenance.json").read_text())["hypotheses"]
    assert main([*argv, "--no-hypotheses", "-o", str(tmp_path / "t")]) == 0
    assert "note: analyses a hypothesis" not in capsys.readouterr().err
    assert json.loads((tmp_path / "t" / "provenance.json").read_text())["hypotheses"] == []


def test_a_job_in_which_every_sample_fails_exits_3(tmp_path, capsys):
    path = SCENARIOS / "mir22_exosome_radiosensitisation.yaml"
    text = path.read_text().replace("exosim: 1\n", "exosim: 1\nsolver: {max_seconds: 1.0e-9}\n", 1)
    assert "solver:" not in path.read_text()  # the only solver block is the one added
    f = tmp_path / "slow.yaml"
    f.write_text(text)
    out = tmp_path / "s"
    code = main(["sensitivity", str(f), "--params", "binding_sites", "-N", "2", "--workers", "1", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "every sample failed" in err, err
    assert (out / "provenance.json").exists()  # the failures are data: written and reported


def test_outputs_read_at_0_gy_are_empty_without_a_0_gy_dose(tmp_path, capsys):
    out = tmp_path / "s"
    path = str(SCENARIOS / "hnscc_exosome_radioresistance.yaml")
    argv = ["sensitivity", path, "--params", "binding_sites", "--method", "local", "--doses", "1,2,3"]
    assert main([*argv, "--workers", "1", "-o", str(out)]) == 0
    err = capsys.readouterr().err  # said, not left to be found in the table
    assert "exosim: warning:" in err and "has no 0 dose: sf2, dmf_at_sf0.1 and bystander_survival" in err
    import csv

    rows = {r["output"]: r for r in csv.DictReader((out / "indices.csv").open())}
    for name in ("sf2", "bystander_survival"):
        assert rows[name]["value_at_nominal"] in ("", "nan"), rows[name]


def test_sensitivity_option_messages(tmp_path, capsys):
    """An unknown arm is one line; an empty --doses is an error; a range beyond the documented one warns."""
    path = str(SCENARIOS / "mir22_exosome_radiosensitisation.yaml")
    base = ["sensitivity", path, "--params", "binding_sites", "--method", "local", "--workers", "1"]
    assert main([*base, "--arm", "nonexistent", "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no arm named 'nonexistent'" in err, err
    assert main([*base, "--doses", "", "-o", str(tmp_path / "b")]) == 2
    assert "--doses '': expected comma-separated numbers" in capsys.readouterr().err
    sobol = ["sensitivity", path, "--params", "binding_sites", "-N", "2", "--workers", "1"]
    assert main([*sobol, "--range", "binding_sites=100:1e6", "-o", str(tmp_path / "c")]) == 0
    assert "reaches outside its documented range [1000, 100000]" in capsys.readouterr().err


def _sleep(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


def test_an_interrupted_pool_ends_its_running_workers_at_once():
    """``close(abort=True)`` (a signal or an error in the job): the pool does not wait for the
    tasks still running, and no worker is left behind holding the parent's pipes."""
    import time

    engine = ProcessEngine(2)
    results = engine.map(_sleep, [0.0, 60.0, 60.0])
    assert next(results) == 0.0
    workers = list(engine._pool._processes.values())
    assert workers and all(w.is_alive() for w in workers)
    start = time.monotonic()
    engine.close(abort=True)
    assert time.monotonic() - start < 10.0
    # ended (the pool's own thread may reap them first, so ask the system, not the handles)
    deadline = time.monotonic() + 5.0
    while not all(_ended(w.pid) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_ended(w.pid) for w in workers)


def _ended(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting to be)."""
    import os
    from pathlib import Path

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_failure_messages_name_the_sample_whatever_the_chunks(mir22):
    """A failed sample's message starts with its row of the samples and names the member within
    the sample, so it is the same text however the job is cut into chunks (serial, workers): the
    run's own set numbers count within a chunk."""
    pytest.importorskip("numba")
    failing = mir22.model_copy(update={"solver": mir22.solver.model_copy(update={"max_steps": 20})})
    space = sa.ParameterSpace.from_table(names=["binding_rate_constant", "endosomal_escape_rate"])
    values = space.to_values(np.random.default_rng(1).uniform(size=(6, 2)))
    runs = [
        sa.ScenarioEvaluator(failing, backend="numba", chunk_members=size)(space.names, values) for size in (8, 10**5)
    ]
    (_, failed_small, small), (_, failed_whole, whole) = runs
    assert failed_small.all() and failed_whole.all() and small == whole
    assert [m.split(":")[0] for m in small] == [f"sample {s}" for s in range(6)]
    assert (
        not re.search(r"\bset \d+, member", " ".join(small)) and "member 4, grid dose 0 Gy: solver failed" in small[5]
    )
