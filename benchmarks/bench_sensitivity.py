"""The standard sensitivity job, timed against a tuned libRoadRunner loop doing the same job.

Usage: python benchmarks/bench_sensitivity.py [--N 1024] [--rr-runs 1000] [--scenarios hnscc iccm]
       [--backend numba|numpy] [--rtol 1e-8] [--workers 1] [--subset 16] [--save DIR]
       [--method dopri5|dop853]

Job: Sobol indices of 6 uptake parameters (binding rate constant, unbinding rate, binding
sites, internalisation, endosomal escape, extracellular decay), N base samples (N*(6+2)
samples), each sample run for the control arm and the analysed arm over 6 grid doses.

Both sides do the whole job through the same code (exosim's Sobol sampling, its survival
summaries and SALib's analysis); only the simulator differs:
- exosim: the batched analysis (`--backend`), wall time and peak resident memory;
- libRoadRunner, written as a competent tellurium user would: one SBML model per member,
  loaded and compiled once; per sample `resetAll`, the parameter values set, one simulation to
  the grid irradiation (where exosim reads alpha_eff and beta_eff) and one to scoring, only the
  end points; exosim's absolute tolerance per state (`setIndividualTolerance`), and CVODE's
  Adams or BDF, whichever is faster on this scenario (measured); timed on a Sobol job of at
  least `--rr-runs` runs and extrapolated per run to N (stated as such).
Two ratios: at equal rtol, and at matched accuracy, where libRoadRunner's rtol is tightened
until its largest survival error against a reference (exosim, numba, rtol 1e-12, checked
against libRoadRunner at 1e-12) is no larger than exosim's at `--rtol`, on `--subset` samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from pathlib import Path

import numpy as np

import exosim
from exosim.analysis import sensitivity as sa
from exosim.analysis.batch import BatchModel
from exosim.analysis.engine import make_engine
from exosim.io.sbml import export_member
from exosim.scenario.observables import sample_output_symbols, sample_outputs
from exosim.scenario.runner import CompiledScenario
from exosim.simulate.solver import FAILED, SegmentResult, SolverOptions

ROOT = Path(__file__).resolve().parents[1]
KEYS = [
    "binding_rate_constant",
    "unbinding_rate",
    "binding_sites",
    "internalisation_rate",
    "endosomal_escape_rate",
    "vesicle_decay_rate",
]
SCENARIOS = {
    "hnscc": ("hnscc_exosome_radioresistance.yaml", "exosomes from 6 Gy donors", [0, 1, 2, 4, 6, 8]),
    "iccm": ("iccm_bystander_medium_transfer.yaml", "ICCM", [0, 0.01, 0.05, 0.5, 2, 5]),
}


def peak_rss_mb() -> float:
    """Largest resident set of this process or any worker process (ended or still running), MB."""
    kb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return max([kb] + _live_children_peak_kb(os.getpid())) / 1024.0


def _live_children_peak_kb(pid: int) -> list[int]:
    """Peak resident sets (VmHWM, kB) of the running descendants of ``pid`` (Linux /proc; else none):
    a worker pool's processes are only counted by RUSAGE_CHILDREN once they have ended."""
    peaks = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return peaks
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        peaks += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
        peaks += _live_children_peak_kb(int(child))
    return peaks


class RoadRunnerEvaluator:
    """``evaluate(keys, values) -> (outputs, failed, messages)`` like exosim's ScenarioEvaluator,
    by a libRoadRunner loop over the members of each sample (see the module docstring)."""

    def __init__(self, evaluator, rtol: float, stiff: bool):
        import libsbml
        import roadrunner

        self.ev = evaluator
        compiled = CompiledScenario(evaluator.scenario)
        t0 = compiled.scenario.timeline_start  # SBML time 0 is the timeline start
        self.t_end = compiled.score_event.at - t0
        # exosim reads alpha_eff and beta_eff just before the grid irradiation of the scored cells,
        # or at scoring when the grid irradiates other cells
        # (just before it: a simulation that ends at an event's time leaves the event to the next
        # one, which starts with the trigger already true and never fires it)
        recorded = [a for a in compiled.actions if a.record]
        self.t_ref = recorded[0].time - t0 - 1e-6 if recorded else self.t_end
        self.scored = compiled.score_event.score.population
        model = compiled.model
        atol = compiled.scenario.solver.atol
        self.runners = []
        for member in range(compiled.n_members):
            doc, _ = export_member(compiled, member)
            rr = roadrunner.RoadRunner(libsbml.writeSBMLToString(doc))
            rr.integrator.stiff = stiff
            rr.integrator.relative_tolerance = rtol
            for st in model.states:  # exosim's absolute tolerance per state
                rr.integrator.setIndividualTolerance(st.name, atol * st.scale)
            rr.integrator.setValue("maximum_num_steps", 1_000_000)
            self.runners.append(rr)
        self.ids = {k: [model.parameters[i].name for i in compiled.instances(k)] for k in KEYS}
        self.cargo = model.cargos[0] if model.cargos else None
        one = BatchModel(evaluator.scenario, KEYS).simulate(sa.nominal_values(evaluator.scenario, KEYS)[None])
        self.template = one

    def simulate(self, values: np.ndarray):
        """(SF, delivered, alpha_eff, beta_eff) arrays (samples, members)."""
        shape = (values.shape[0], len(self.runners))
        sf, delivered, alpha, beta = (np.full(shape, np.nan) for _ in range(4))
        for s, row in enumerate(values):
            for member, rr in enumerate(self.runners):
                try:
                    rr.resetAll()
                    for k, v in zip(KEYS, row):
                        for name in self.ids[k]:
                            rr.setValue(name, float(v))
                    rr.simulate(0.0, self.t_ref, 2)
                    alpha[s, member] = rr.getValue(f"{self.scored}__alpha_eff")
                    beta[s, member] = rr.getValue(f"{self.scored}__beta_eff")
                    if self.t_ref < self.t_end:
                        rr.simulate(self.t_ref, self.t_end, 2)
                    sf[s, member] = rr.getValue(f"{self.scored}__surviving_fraction")
                    if self.cargo:
                        delivered[s, member] = rr.getValue(f"{self.scored}__{self.cargo}_delivered")
                except RuntimeError:  # a failed run is a failed sample, as in exosim
                    sf[s, member] = np.nan
        return sf, delivered, alpha, beta

    def __call__(self, keys, values: np.ndarray):
        values = np.atleast_2d(np.asarray(values, dtype=float))
        m = values.shape[0]
        sf, delivered, alpha, beta = self.simulate(values)
        t = self.template
        status = (~np.isfinite(sf)).astype(int).reshape(-1)
        reference = {"alpha_eff": alpha.reshape(-1), "beta_eff": beta.reshape(-1)}
        if self.cargo:
            reference[f"{self.cargo}_delivered_at_scoring"] = delivered.reshape(-1)
        result = dataclasses.replace(
            t,
            surviving_fraction=sf.reshape(-1),
            status=status,
            messages=["" if ok == 0 else "libRoadRunner failed" for ok in status],
            reference=reference,
            grid=np.tile(t.grid, m),
            arm_index=np.tile(t.arm_index, m),
        )
        return sample_outputs(result, m, self.ev.target, self.ev.control)


def pick_method(evaluator, rtol: float, values: np.ndarray) -> tuple[bool, dict]:
    """CVODE Adams (stiff False) or BDF (stiff True), whichever runs ``values`` faster."""
    times = {}
    for stiff in (False, True):
        rr = RoadRunnerEvaluator(evaluator, rtol, stiff)
        start = time.perf_counter()
        rr.simulate(values)
        times["BDF" if stiff else "Adams"] = time.perf_counter() - start
    return times["BDF"] < times["Adams"], times


def reference_sf(evaluator, values: np.ndarray) -> np.ndarray:
    """Surviving fractions (samples, members) from exosim at rtol 1e-12 (numba where installed)."""
    sc = evaluator.scenario
    solver = sc.solver.model_copy(update={"rtol": 1e-12, "atol": 1e-14, "backend": "auto"})
    res = BatchModel(sc.model_copy(update={"solver": solver}), KEYS).simulate(values)
    return res.surviving_fraction.reshape(values.shape[0], -1)


class ScipyLSODA:
    """scipy ``solve_ivp`` (LSODA), one member at a time, plugged in through exosim's Solver protocol."""

    name = "scipy-LSODA"

    def integrate(self, model, t0, t1, y0, p, *, atol_scale=None, options=SolverOptions(), t_eval=None, h0=None):
        from scipy.integrate import solve_ivp

        n = y0.shape[1]
        scale = np.ones(n) if atol_scale is None else atol_scale
        t_eval = np.asarray([] if t_eval is None else t_eval, dtype=float)
        y = np.full_like(y0, np.nan)
        ys = np.full((y0.shape[0], t_eval.size, n), np.nan)
        status = np.zeros(y0.shape[0], dtype=int)
        message = [""] * y0.shape[0]
        rhs_calls = 0
        for i in range(y0.shape[0]):
            pm = p[i : i + 1]
            sol = solve_ivp(
                lambda t, yy, pm=pm: model.rhs(t, yy[None], pm)[0],
                (t0, t1),
                y0[i],
                method="LSODA",
                rtol=options.rtol,
                atol=options.atol * scale,
                t_eval=np.unique(np.append(t_eval, t1)),
            )
            rhs_calls += sol.nfev
            if not sol.success:
                status[i], message[i] = FAILED, sol.message
                continue
            y[i] = sol.y[:, -1]
            ys[i] = sol.y[:, : t_eval.size].T if t_eval.size else ys[i]
        return SegmentResult(
            y,
            status,
            np.where(status == FAILED, t0, np.nan),
            message,
            ys,
            {"steps": 0, "rejected": 0, "rhs_evaluations": rhs_calls, "failures": int(status.sum())},
        )


def solve_ivp_subset(evaluator, values: np.ndarray, rtol=1e-8) -> tuple[np.ndarray, float]:
    """Surviving fractions from scipy solve_ivp (LSODA) through the runner's Solver protocol."""
    batch = BatchModel(
        evaluator.scenario.model_copy(
            update={"solver": evaluator.scenario.solver.model_copy(update={"rtol": rtol, "atol": rtol * 1e-2})}
        ),
        KEYS,
    )
    start = time.perf_counter()
    compiled = batch.compiled(values.shape[0])
    res = compiled.run(parameters=batch.parameters(values), time_courses=False, solver=ScipyLSODA())
    return res.surviving_fraction.reshape(values.shape[0], -1), time.perf_counter() - start


def _first_sample(scenario) -> float:
    """Seconds to run one sample, kernels compiled or loaded from the disk cache (in a fresh process)."""
    start = time.perf_counter()
    batch = BatchModel(scenario, KEYS, outputs=sample_output_symbols(scenario))
    batch.simulate(sa.nominal_values(scenario, KEYS)[None])
    return time.perf_counter() - start


def warm_kernel_cache(scenario) -> float:
    """Fill numba's disk cache before timing, in a fresh process: the timed job then loads the
    kernels from the cache in each process that integrates (this one, or each worker), as
    ``exosim sensitivity`` does, and a cold cache's compile (10-30 s) is not timed.  Returns
    the seconds of that process's first sample (its compile or load)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_first_sample, scenario).result()


def run(
    name: str,
    n: int,
    subset: int,
    backend: str,
    rtol: float,
    workers: int,
    rr_runs: int,
    save: Path | None = None,
    method: str = "dopri5",
) -> None:
    fname, arm, doses = SCENARIOS[name]
    sc = exosim.load_scenario(ROOT / "scenarios" / fname)
    sc = sc.model_copy(
        update={
            "dose_grid": sc.dose_grid.model_copy(update={"values": doses}),
            "solver": sc.solver.model_copy(update={"rtol": rtol, "atol": rtol * 1e-2, "method": method}),
        }
    )
    space = sa.ParameterSpace.from_table(names=KEYS)
    # the libraries are imported before either side is timed, as libRoadRunner is: SALib (and
    # scipy.stats, about 0.9 s), which both jobs use (libRoadRunner's, timed second, would
    # otherwise find it imported), and numba (0.08 s; worker processes, forked, have it too)
    import SALib.analyze.sobol  # noqa: F401
    import SALib.sample.sobol  # noqa: F401

    engine = make_engine(workers)
    ev = sa.ScenarioEvaluator(sc, arm=arm, progress=False, backend=backend, engine=engine)
    if ev.backend == "numba":
        import numba  # noqa: F401
    compile_s = warm_kernel_cache(ev.scenario) if ev.backend == "numba" else 0.0
    t = time.perf_counter()
    try:
        res = sa.sobol(ev, space, sa.OUTPUTS, n, seed=1)
        wall = time.perf_counter() - t
        if save is not None:  # outputs and indices, to compare runs (engines, versions) byte for byte
            save.mkdir(parents=True, exist_ok=True)
            np.savez(
                save / f"{name}_N{n}_workers{workers}.npz",
                values=res.values,
                failed=res.failed,
                **{k: np.array([r[k] for r in res.indices], dtype=float) for k in ("S1", "S1_conf", "ST", "ST_conf")},
            )
        _report(name, n, subset, rtol, ev, space, engine, res, wall, compile_s, rr_runs)
    finally:  # the subset below runs through the same engine: close it only at the end
        engine.close()


def _report(name, n, subset, rtol, ev, space, engine, res, wall, compile_s, rr_runs) -> None:
    n_samples = res.samples.shape[0]
    print(
        f"[{name}] exosim ({ev.backend}, {ev.scenario.solver.method}, rtol {rtol:g}, {engine.describe()}) "
        f"Sobol N={n}: {n_samples} samples x "
        f"{ev.members_per_sample} members = {n_samples * ev.members_per_sample} runs in {wall:.2f} s "
        f"(kernels loaded from the disk cache in the job, by each process that integrates; a fresh process's "
        f"first sample took {compile_s:.1f} s, before timing) "
        f"({1e3 * wall / (n_samples * ev.members_per_sample):.3f} ms/run), peak RSS {peak_rss_mb():.0f} MB, "
        f"failed samples {int(res.failed.sum())}"
    )
    for r in res.indices:
        if r["output"] in ("dmf_at_sf0.1", "bystander_survival", "delivered_copies_per_cell"):
            print(
                f"    {r['output']:<26} {r['parameter']:<24} S1 {r['S1']:+.3f} +- {r['S1_conf']:.3f}  "
                f"ST {r['ST']:+.3f} +- {r['ST_conf']:.3f}"
            )
    if not subset:
        return
    sub = res.samples[:subset]
    d = len(KEYS)
    total_runs = n_samples * ev.members_per_sample
    stiff, method_times = pick_method(ev, rtol, sub[:2])
    method = "BDF" if stiff else "Adams"
    ref = reference_sf(ev, sub)
    # as in the timed job: only the outputs' states integrated over the last segment
    exo_sf = BatchModel(ev.scenario, KEYS, outputs=sample_output_symbols(ev.scenario)).simulate(sub)
    exo_sf = exo_sf.surviving_fraction.reshape(subset, -1)

    def err(sf):
        return float(np.nanmax(np.abs(sf - ref) / ref))

    exo_err = err(exo_sf)
    check = err(RoadRunnerEvaluator(ev, 1e-12, True).simulate(sub)[0])
    print(
        f"[{name}] reference: exosim at rtol 1e-12 on {subset} samples ({subset * ev.members_per_sample} runs); "
        f"libRoadRunner at rtol 1e-12 (BDF) agrees to {check:.1e}. Largest survival error at rtol {rtol:g}: "
        f"exosim {exo_err:.1e}"
    )
    errors, matched = {}, None
    for k in range(0, 6):
        r = rtol * 10.0**-k
        if r < 1e-12:
            break
        errors[r] = err(RoadRunnerEvaluator(ev, r, stiff).simulate(sub)[0])
        if errors[r] <= exo_err:
            matched = r
            break
    print(
        f"[{name}] libRoadRunner CVODE {method} (measured on 2 samples: Adams {method_times['Adams']:.2f} s, "
        f"BDF {method_times['BDF']:.2f} s); survival error by rtol: "
        + ", ".join(f"{r:g}: {e:.1e}" for r, e in errors.items())
        + (f" -> matched accuracy at rtol {matched:g}" if matched else " -> not matched down to rtol 1e-12")
    )
    # the whole job (Sobol sampling, runs, summaries, analysis) with libRoadRunner, on >= rr_runs runs
    n_rr = 2
    while n_rr * (d + 2) * ev.members_per_sample < rr_runs:
        n_rr *= 2
    for label, r in (("equal rtol", rtol), ("matched accuracy", matched)):
        if r is None:
            continue
        build = time.perf_counter()
        rr_eval = RoadRunnerEvaluator(ev, r, stiff)
        build = time.perf_counter() - build
        start = time.perf_counter()
        rr_res = sa.sobol(rr_eval, space, sa.OUTPUTS, n_rr, seed=1)
        job = time.perf_counter() - start
        runs = rr_res.samples.shape[0] * ev.members_per_sample
        extrapolated = build + job / runs * total_runs
        print(
            f"[{name}] libRoadRunner whole job, {label} (rtol {r:g}): Sobol N={n_rr}, {runs} runs in {job:.1f} s "
            f"({1e3 * job / runs:.2f} ms/run; models built in {build:.1f} s); extrapolated to N={n}: "
            f"{extrapolated:.0f} s -> exosim is {extrapolated / wall:.1f}x faster"
        )
    exo_out = ev(space.names, sub)[0]
    rr_out = RoadRunnerEvaluator(ev, rtol, stiff)(space.names, sub)[0]
    cols = [k for k, o in enumerate(sa.OUTPUTS) if o not in ("alpha_eff", "beta_eff")]
    diff = np.abs(rr_out[:, cols] - exo_out[:, cols]) / np.maximum(np.abs(exo_out[:, cols]), 1e-12)
    print(
        f"[{name}] largest relative difference of the analysed outputs, exosim vs libRoadRunner at rtol {rtol:g}: "
        + ", ".join(
            f"{sa.OUTPUTS[c]} " + (f"{np.nanmax(diff[:, i]):.1e}" if np.isfinite(diff[:, i]).any() else "n/a")
            for i, c in enumerate(cols)
        )
    )
    k = max(1, subset // 4)
    sp_sf, sp_time = solve_ivp_subset(ev, sub[:k], rtol)
    sp_run = sp_time / sp_sf.size
    print(
        f"[{name}] scipy solve_ivp (LSODA) loop: {sp_sf.size} runs in {sp_time:.1f} s ({1e3 * sp_run:.1f} ms/run); "
        f"extrapolated: {sp_run * n_samples * ev.members_per_sample:.0f} s; max rel diff of SF vs exosim "
        f"{np.nanmax(np.abs(sp_sf - exo_sf[:k]) / exo_sf[:k]):.1e}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1024)
    ap.add_argument(
        "--subset", type=int, default=16, help="samples for the accuracy comparison (0: skip libRoadRunner)"
    )
    ap.add_argument("--rr-runs", type=int, default=1000, help="least runs of libRoadRunner's timed whole job")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "numba"])
    ap.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance of all three simulators")
    ap.add_argument("--workers", type=int, default=1, help="worker processes for exosim (libRoadRunner: 1)")
    ap.add_argument(
        "--method", default="dopri5", choices=["dopri5", "dop853"], help="exosim's explicit pair (solver.method)"
    )
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument(
        "--save", type=Path, help="write each job's outputs and indices to DIR/<scenario>_N<N>_workers<w>.npz"
    )
    args = ap.parse_args()
    for name in args.scenarios:
        run(name, args.N, args.subset, args.backend, args.rtol, args.workers, args.rr_runs, args.save, args.method)
