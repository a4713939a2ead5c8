"""Would a higher-order explicit pair take fewer right-hand-side evaluations than Dormand-Prince 5(4)?

Usage: python benchmarks/bench_order.py [--members 6] [--rtol R]

For three scenarios (the default HNSCC medium transfer, the ICCM medium transfer and the
30-fraction course), every segment of the first ``--members`` members is integrated, from the
states exosim's own run reaches at the segment's start, with scipy's RK45 (Dormand-Prince 5(4),
exosim's method) and DOP853 (Hairer's 8(5,3)), at the scenario's tolerances (``--rtol``: replaced,
atol = rtol/100 as in the sensitivity benchmark) and exosim's absolute tolerance per state, on
the compiled one-member right-hand side.  Prints the evaluations of each and their ratio.

scipy's step-size control differs in detail from exosim's kernel, so the absolute counts are
not exosim's; the ratio between the two methods under the same controller is what decides
whether a higher-order kernel would pay (a DOP853 step costs 12 evaluations, a DOPRI5 step 6).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

import exosim
from exosim.scenario import runner
from exosim.simulate.dopri5_numba import NumbaDopri5, rhs_for

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [
    "hnscc_exosome_radioresistance.yaml",
    "iccm_bystander_medium_transfer.yaml",
    "fractionated_course_exosome_buildup.yaml",
]


class Recording(NumbaDopri5):
    """The compiled solver, recording each segment's start (states, parameters, tolerances)."""

    def __init__(self):
        self.segments = []

    def integrate(self, model, t0, t1, y0, p, **options):
        self.segments.append((t0, t1, y0.copy(), p.copy(), options["atol_scale"], options["options"]))
        return super().integrate(model, t0, t1, y0, p, **options)


def evaluations(path: Path, members: int, rtol: float | None) -> dict[str, int]:
    sc = exosim.load_scenario(path)
    if rtol is not None:
        sc = sc.model_copy(update={"solver": sc.solver.model_copy(update={"rtol": rtol, "atol": rtol * 1e-2})})
    compiled = runner.CompiledScenario(sc)
    recorder = Recording()
    compiled.run(time_courses=False, solver=recorder)
    rhs1 = rhs_for(compiled.model)
    counts = {"RK45": 0, "DOP853": 0}
    for t0, t1, y0, p, scale, opts in recorder.segments:
        for i in range(min(members, len(y0))):

            def f(t, y, row=p[i]):
                dy = np.empty_like(y)
                rhs1(y, row, dy)
                return dy

            for method in counts:
                sol = solve_ivp(f, (t0, t1), y0[i], method=method, rtol=opts.rtol, atol=opts.atol * scale)
                counts[method] += sol.nfev
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=6, help="members per segment (the first ones)")
    ap.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: each scenario's)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    for name in SCENARIOS:
        c = evaluations(ROOT / "scenarios" / name, args.members, args.rtol)
        print(
            f"{name}: RK45 {c['RK45']} evaluations, DOP853 {c['DOP853']} (DOP853/RK45 = {c['DOP853'] / c['RK45']:.2f})"
        )


if __name__ == "__main__":
    main()
