"""The standard sensitivity job, timed against libRoadRunner and scipy.

Usage: python benchmarks/bench_sensitivity.py [--N 1024] [--subset 16] [--scenarios hnscc iccm]
       [--backend numba|numpy] [--rtol 1e-8] [--workers 1]

Job: Sobol indices of 6 uptake parameters (binding rate constant, unbinding rate, binding
sites, internalisation, endosomal escape, extracellular decay), N base samples (N*(6+2)
samples), each sample run for the control arm and the analysed arm over 6 grid doses.

Reported per scenario:
- exosim: wall time of the whole analysis (sampling, batched integration, Sobol analysis)
  and the peak resident memory of the process; with the numba backend, the time to compile
  (or load from the on-disk cache) the kernel is reported separately and included in the total;
- libRoadRunner: the same runs from exported SBML (one SBML model per arm and dose, loaded
  once; per sample: resetAll, set the parameter values, simulate), timed on the first
  `subset` samples and extrapolated to all samples (stated as such);
- scipy solve_ivp (LSODA, per member, segment by segment) on the first `subset` samples,
  extrapolated likewise;
- the largest relative difference of the analysed outputs (exosim vs libRoadRunner) on the
  subset, and of every member's surviving fraction.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import time
from pathlib import Path

import numpy as np

import exosim
from exosim.analysis import sensitivity as sa
from exosim.analysis.batch import BatchModel
from exosim.analysis.engine import make_engine
from exosim.io.sbml import export_member
from exosim.scenario.observables import sample_outputs
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
    """Largest resident set of this process or any worker process, MB."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024.0


def roadrunner_subset(evaluator, values: np.ndarray, rtol: float):
    """Surviving fractions (samples, members) and delivered copies from libRoadRunner."""
    import libsbml
    import roadrunner

    compiled = CompiledScenario(evaluator.scenario)
    t_end = compiled.score_event.at - compiled.scenario.timeline_start  # SBML time 0 is the timeline start
    scored = compiled.score_event.score.population
    model = compiled.model
    runners = []
    for member in range(compiled.n_members):
        doc, _ = export_member(compiled, member)
        rr = roadrunner.RoadRunner(libsbml.writeSBMLToString(doc))
        rr.integrator.relative_tolerance = rtol
        rr.integrator.absolute_tolerance = 1e-12
        rr.integrator.setValue("maximum_num_steps", 1_000_000)
        runners.append(rr)
    ids = {k: [model.parameters[i].name for i in compiled.instances(k)] for k in KEYS}
    cargo = model.cargos[0] if model.cargos else None
    sf = np.empty((values.shape[0], compiled.n_members))
    delivered = np.zeros_like(sf)
    start = time.perf_counter()
    for s, row in enumerate(values):
        for member, rr in enumerate(runners):
            rr.resetAll()
            for k, v in zip(KEYS, row):
                for name in ids[k]:
                    rr.setValue(name, float(v))
            rr.simulate(0.0, t_end, 2)
            sf[s, member] = rr.getValue(f"{scored}__surviving_fraction")
            if cargo:
                delivered[s, member] = rr.getValue(f"{scored}__{cargo}_delivered")
    return sf, delivered, time.perf_counter() - start


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


def run(name: str, n: int, subset: int, backend: str, rtol: float, workers: int) -> None:
    fname, arm, doses = SCENARIOS[name]
    sc = exosim.load_scenario(ROOT / "scenarios" / fname)
    sc = sc.model_copy(
        update={
            "dose_grid": sc.dose_grid.model_copy(update={"values": doses}),
            "solver": sc.solver.model_copy(update={"rtol": rtol, "atol": rtol * 1e-2}),
        }
    )
    space = sa.ParameterSpace.from_table(names=KEYS)
    engine = make_engine(workers)
    ev = sa.ScenarioEvaluator(sc, arm=arm, progress=False, backend=backend, engine=engine)
    t = time.perf_counter()
    if ev.backend == "numba":
        from exosim.simulate.dopri5_numba import kernel_for

        kernel_for(CompiledScenario(ev.scenario).model)
    compile_s = time.perf_counter() - t
    try:
        res = sa.sobol(ev, space, sa.OUTPUTS, n, seed=1)
        wall = time.perf_counter() - t
        _report(name, n, subset, rtol, ev, space, engine, res, wall, compile_s)
    finally:  # the subset below runs through the same engine: close it only at the end
        engine.close()


def _report(name, n, subset, rtol, ev, space, engine, res, wall, compile_s) -> None:
    n_samples = res.samples.shape[0]
    print(
        f"[{name}] exosim ({ev.backend}, rtol {rtol:g}, {engine.describe()}) Sobol N={n}: {n_samples} samples x "
        f"{ev.members_per_sample} members = {n_samples * ev.members_per_sample} runs in {wall:.1f} s "
        f"(kernel compile/load in this process {compile_s:.1f} s included; worker processes load it from the "
        f"disk cache) "
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
    exo_out, _, _ = ev(space.names, sub)
    batch = BatchModel(ev.scenario, KEYS)
    exo = batch.simulate(sub)
    compiled = batch.template
    exo_sf = exo.surviving_fraction.reshape(subset, -1)
    rr_sf, rr_delivered, rr_time = roadrunner_subset(ev, sub, rtol)
    per_run = rr_time / rr_sf.size
    total_runs = n_samples * ev.members_per_sample
    print(
        f"[{name}] libRoadRunner loop: {rr_sf.size} runs in {rr_time:.1f} s ({1e3 * per_run:.2f} ms/run); "
        f"extrapolated to all {total_runs} runs: {per_run * total_runs:.0f} s"
        f" -> exosim is {per_run * total_runs / wall:.1f}x faster"
    )
    # outputs from libRoadRunner survival, through the same survival observables
    cargo = compiled.model.cargos[0] if compiled.model.cargos else None
    reference = dict(exo.reference)
    if cargo:
        reference[f"{cargo}_delivered_at_scoring"] = rr_delivered.reshape(-1)
    rr_res = dataclasses.replace(exo, surviving_fraction=rr_sf.reshape(-1), reference=reference)
    rr_out, _, _ = sample_outputs(rr_res, subset, ev.target, ev.control)
    cols = [k for k, o in enumerate(sa.OUTPUTS) if o not in ("alpha_eff", "beta_eff")]
    diff = np.abs(rr_out[:, cols] - exo_out[:, cols]) / np.maximum(np.abs(exo_out[:, cols]), 1e-12)
    print(
        f"[{name}] largest relative difference exosim vs libRoadRunner: surviving fraction "
        f"{np.nanmax(np.abs(rr_sf - exo_sf) / exo_sf):.2e}; outputs "
        + ", ".join(f"{sa.OUTPUTS[c]} {np.nanmax(diff[:, i]):.1e}" for i, c in enumerate(cols))
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
    ap.add_argument("--subset", type=int, default=16, help="samples timed with libRoadRunner (0: skip)")
    ap.add_argument("--backend", default="auto", choices=["auto", "numpy", "numba"])
    ap.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance of all three simulators")
    ap.add_argument("--workers", type=int, default=1, help="worker processes for exosim (libRoadRunner: 1)")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = ap.parse_args()
    for name in args.scenarios:
        run(name, args.N, args.subset, args.backend, args.rtol, args.workers)
